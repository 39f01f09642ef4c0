//! `feelings bench`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use feelings_core::manifest::MODEL_FILE;
use feelings_core::{Bundle, Classifier as Core};
use feelings_trainer::data::{load_dataset, DataOptions};
use feelings_trainer::model::ModelFiles;
use feelings_trainer::{bench, device};
use serde_json::json;

use crate::values::{self, MAX_BENCH_COUNT};
use crate::{set_threads, HardwareArgs};

#[derive(Args)]
pub struct BenchArgs {
    /// Labelled reviews: training steps use the `train` split, inference the `test` split
    /// (all rows when there is no `split` column).
    #[arg(long)]
    data: PathBuf,
    /// Time fine-tuning steps of this base model.
    #[arg(long, required_unless_present = "bundle")]
    model: Option<PathBuf>,
    /// Time inference of this model bundle (at its sequence length).
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// Sequence lengths of the training steps, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "128,256",
          value_parser = values::positive_count)]
    seq: Vec<usize>,
    /// Reviews per training step, 1 to 100000.
    #[arg(long, default_value_t = 16, value_parser = values::count_in(1, MAX_BENCH_COUNT))]
    batch_size: usize,
    /// Batch sizes of the inference calls, comma-separated, each 1 to 100000.
    #[arg(long, value_delimiter = ',', default_value = "1,16",
          value_parser = values::count_in(1, MAX_BENCH_COUNT))]
    infer_batch: Vec<usize>,
    /// Timed training steps per sequence length (the median is reported), 1 to 100000.
    #[arg(long, default_value_t = 5, value_parser = values::count_in(1, MAX_BENCH_COUNT))]
    steps: usize,
    /// Timed inference calls per batch size, 1 to 100000.
    #[arg(long, default_value_t = 20, value_parser = values::count_in(1, MAX_BENCH_COUNT))]
    runs: usize,
    /// Untimed steps or calls first, 0 to 100000.
    #[arg(long, default_value_t = 1, value_parser = values::count_in(0, MAX_BENCH_COUNT))]
    warmup: usize,
    /// Folder of the peer benchmark scripts; ONNX Runtime is run on the bundle's model.onnx in
    /// the same invocation when given.
    #[arg(long)]
    peers: Option<PathBuf>,
    /// Also time the classifier's server build (the WebAssembly component made by
    /// `web/build.sh`) in a wasmtime sandbox on the same reviews, against native tract.
    /// Needs the `sandbox` feature.
    #[arg(long, requires = "bundle")]
    wasm: Option<PathBuf>,
    /// Folder caching the compiled, pre-initialised component between runs.
    #[arg(long, default_value = "target/feelings-sandbox-cache")]
    wasm_cache: PathBuf,
    /// The Python with onnxruntime and tokenizers for the peers.
    #[arg(long, default_value = "python3")]
    python: String,
    /// Print one JSON object per measurement.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    hardware: HardwareArgs,
}

fn texts_of(dataset: &feelings_trainer::data::Dataset, split: &str) -> Vec<(String, u32)> {
    dataset
        .examples
        .iter()
        .filter(|e| e.split.as_deref().is_none_or(|s| s == split))
        .map(|e| (e.text.clone(), e.label))
        .collect()
}

pub fn run(args: BenchArgs) -> Result<()> {
    let threads = set_threads(args.hardware.threads);
    let device = device::parse_device(&args.hardware.device)?;
    let columns = DataOptions {
        split_column: Some("split".into()),
        ..DataOptions::default()
    };
    let dataset = load_dataset(&args.data, &columns)
        .or_else(|_| load_dataset(&args.data, &DataOptions::default()))?;
    let mut rows = Vec::new();
    if let Some(model) = &args.model {
        let files = ModelFiles::locate(model)?;
        let train = texts_of(&dataset, "train");
        let texts: Vec<(&str, u32)> = train.iter().map(|(t, l)| (t.as_str(), *l)).collect();
        for &seq in &args.seq {
            let t = bench::time_train_steps(
                &files,
                &texts,
                seq,
                args.batch_size,
                args.warmup,
                args.steps,
                &device,
            )?;
            let mut row = serde_json::to_value(&t)?;
            row["what"] = "train_step".into();
            row["seq"] = seq.into();
            row["batch"] = args.batch_size.into();
            row["ours_ms"] = (1000.0 * t.step_s).into();
            if let Some(peers) = &args.peers {
                let peer = bench::run_peer(
                    &args.python,
                    peers,
                    "torch_train_step.py",
                    &[
                        "--model-dir".into(),
                        model.display().to_string(),
                        "--data".into(),
                        args.data.display().to_string(),
                        "--seq".into(),
                        seq.to_string(),
                        "--batch".into(),
                        args.batch_size.to_string(),
                        "--steps".into(),
                        args.steps.to_string(),
                        "--warmup".into(),
                        args.warmup.to_string(),
                        "--threads".into(),
                        threads.to_string(),
                    ],
                )?;
                let Some(peer_s) = peer["median_s_per_step"].as_f64() else {
                    bail!("the PyTorch peer printed no median_s_per_step: {peer}");
                };
                row["peer"] = format!("pytorch {}", peer["version"].as_str().unwrap_or("?")).into();
                row["peer_ms"] = (1000.0 * peer_s).into();
                row["ratio"] = (t.step_s / peer_s).into();
            }
            rows.push(row);
        }
    }
    if let Some(dir) = &args.bundle {
        let core = Core::new(&Bundle::read_dir(dir)?)?;
        let test = texts_of(&dataset, "test");
        let texts: Vec<&str> = test.iter().map(|(t, _)| t.as_str()).collect();
        for &batch in &args.infer_batch {
            let t = bench::time_inference(&core, &texts, batch, args.warmup, args.runs)?;
            let mut row = json!({"what": "infer", "seq": t.seq_len, "batch": batch, "ours_ms": t.median_ms,
                                 "ours_ms_per_review": t.ms_per_review, "ours_p90_ms": t.p90_ms});
            if let Some(peers) = &args.peers {
                let peer = bench::run_peer(
                    &args.python,
                    peers,
                    "ort_infer.py",
                    &[
                        dir.join(MODEL_FILE).display().to_string(),
                        "--seq".into(),
                        t.seq_len.to_string(),
                        "--batch".into(),
                        batch.to_string(),
                        "--threads".into(),
                        threads.to_string(),
                        "--n".into(),
                        args.runs.to_string(),
                    ],
                )?;
                let Some(peer_ms) = peer["median_ms"].as_f64() else {
                    bail!("the ONNX Runtime peer printed no median_ms: {peer}");
                };
                row["peer"] =
                    format!("onnxruntime {}", peer["version"].as_str().unwrap_or("?")).into();
                row["peer_ms"] = peer_ms.into();
                row["ratio"] = (t.median_ms / peer_ms).into();
            }
            rows.push(row);
        }
        if let Some(wasm) = &args.wasm {
            rows.extend(guest_rows(&args, wasm, &core, &texts)?);
        }
    }
    for row in rows.iter_mut() {
        row["threads"] = threads.into();
        row["peak_rss_mib"] = bench::peak_rss_mib().into();
    }
    if args.json {
        for row in &rows {
            println!("{row}");
        }
        return Ok(());
    }
    println!("{threads} threads, {device:?}");
    for row in &rows {
        match row["what"].as_str() {
            Some("train_step") => println!(
                "train step  seq {:>3} batch {:>2}: {:>6.2} s/step (forward {:.2}, backward {:.2}, optimiser {:.2}), {:.2} reviews/s{}",
                row["seq_len"], row["batch_size"], row["step_s"].as_f64().unwrap_or(0.0),
                row["forward_s"].as_f64().unwrap_or(0.0), row["backward_s"].as_f64().unwrap_or(0.0),
                row["optimizer_s"].as_f64().unwrap_or(0.0), row["reviews_per_s"].as_f64().unwrap_or(0.0),
                row["peer"].as_str().map_or(String::new(), |peer| format!(
                    " | {peer} {:.2} s | ours/peer {:.2}",
                    row["peer_ms"].as_f64().unwrap_or(0.0) / 1000.0,
                    row["ratio"].as_f64().unwrap_or(0.0)
                ))
            ),
            Some("infer_wasm") => println!(
                "wasmtime    seq {:>3} batch {:>2}: guest {:>7.1} ms/call | native tract {:.1} ms | guest/native {:.2} | fresh sandbox {:.3} ms (a guest-side load: {:.0} ms), its first call {:.1} ms | max |score diff| {:.1e} | component ready in {:.1} s{}",
                row["seq"], row["batch"], row["ours_ms"].as_f64().unwrap_or(0.0),
                row["peer_ms"].as_f64().unwrap_or(0.0), row["ratio"].as_f64().unwrap_or(0.0),
                row["instantiate_ms"].as_f64().unwrap_or(0.0), row["guest_load_ms"].as_f64().unwrap_or(0.0), row["fresh_call_ms"].as_f64().unwrap_or(0.0),
                row["max_score_difference"].as_f64().unwrap_or(0.0),
                row["prepare_s"].as_f64().unwrap_or(0.0),
                if row["prepared_from_cache"] == true { " (cached)" } else { " (snapshot + compile)" }
            ),
            _ => {
                let peer = match (row["peer_ms"].as_f64(), row["ratio"].as_f64()) {
                    (Some(p), Some(r)) => format!(" | {} {p:.1} ms | ours/peer {r:.2}", row["peer"].as_str().unwrap_or("")),
                    _ => String::new(),
                };
                println!(
                    "inference   seq {:>3} batch {:>2}: tract {:>7.1} ms/call ({:.1} ms/review){peer}",
                    row["seq"], row["batch"], row["ours_ms"].as_f64().unwrap_or(0.0),
                    row["ours_ms_per_review"].as_f64().unwrap_or(0.0)
                );
            }
        }
    }
    if let Some(peak) = bench::peak_rss_mib() {
        println!("peak memory of feelings (RSS): {peak:.0} MiB");
    }
    Ok(())
}

/// `infer_wasm` rows: the sandboxed server build against native tract, per inference batch size.
#[cfg(feature = "sandbox")]
fn guest_rows(
    args: &BenchArgs,
    wasm: &std::path::Path,
    core: &Core,
    texts: &[&str],
) -> Result<Vec<serde_json::Value>> {
    use anyhow::Context;
    use feelings_runtime::{SandboxOptions, Sandboxes};
    let component = std::fs::read(wasm).with_context(|| format!("{}", wasm.display()))?;
    let options = SandboxOptions {
        cache_dir: Some(args.wasm_cache.clone()),
        ..SandboxOptions::default()
    };
    let bundle = Bundle::read_dir(args.bundle.as_deref().unwrap_or(wasm))?;
    let (sandboxes, prepared) = Sandboxes::new(&component, &bundle, &options)?;
    let mut rows = Vec::new();
    for &batch in &args.infer_batch {
        let t = feelings_trainer::bench_guest::time_guest(
            &bundle,
            core,
            &sandboxes,
            texts,
            batch,
            args.warmup,
            args.runs,
        )?;
        rows.push(json!({"what": "infer_wasm", "seq": t.seq_len, "batch": batch,
            "ours_ms": t.guest_ms, "peer": "tract native", "peer_ms": t.native_ms,
            "ratio": t.guest_ms / t.native_ms, "instantiate_ms": t.instantiate_ms,
            "max_score_difference": t.max_score_difference, "fresh_call_ms": t.fresh_call_ms, "guest_load_ms": t.guest_load_ms,
            "prepare_s": prepared.duration.as_secs_f64(), "prepared_from_cache": prepared.from_cache}));
    }
    Ok(rows)
}

#[cfg(not(feature = "sandbox"))]
fn guest_rows(
    _: &BenchArgs,
    _: &std::path::Path,
    _: &Core,
    _: &[&str],
) -> Result<Vec<serde_json::Value>> {
    bail!("--wasm needs the sandbox feature: cargo build --release -p feelings-trainer --features sandbox")
}
