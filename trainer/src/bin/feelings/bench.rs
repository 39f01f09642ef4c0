//! `feelings bench`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use candle_core::Device;
use clap::Args;
use feelings_core::manifest::{WeightFormat, MODEL_FILE};
use feelings_core::{Bundle, TractClassifier};
use feelings_trainer::bench::{self, GuestBench};
use feelings_trainer::data::{load_dataset, DataOptions, Dataset};
use feelings_trainer::device;
use feelings_trainer::model::ModelFiles;
use serde_json::{json, Value};

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
    /// Time training steps with the word embeddings kept out of training (as `feelings train
    /// --freeze-embeddings`); the PyTorch peer still updates them.
    #[arg(long, requires = "model")]
    freeze_embeddings: bool,
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
    /// `web/build.sh`) in a wasmtime sandbox on the same reviews, against native tract, with
    /// the runtime's `feelings-guest-bench`.
    #[arg(long, requires = "bundle")]
    wasm: Option<PathBuf>,
    /// The runtime's guest benchmark program [default: `feelings-guest-bench` next to this
    /// executable, else on PATH].
    #[arg(long, requires = "wasm")]
    guest_bench: Option<PathBuf>,
    /// Folder caching the compiled, pre-initialised component between runs.
    #[arg(long, default_value = "target/feelings-sandbox-cache")]
    wasm_cache: PathBuf,
    /// The Python with onnxruntime and tokenizers for the peers.
    #[arg(long, default_value = "python3")]
    python: String,
    /// Also time every operator of one full-length review's call (native tract, --runs
    /// calls): the kernel and GMAC/s of each matrix product, the time of every other kind of
    /// operator.
    #[arg(long, requires = "bundle")]
    profile: bool,
    /// Print one JSON object per measurement.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    hardware: HardwareArgs,
}

/// The reviews of one split (all of them when the data has no `split` column), with labels.
fn texts_of<'a>(dataset: &'a Dataset, split: &str) -> Vec<(&'a str, u32)> {
    dataset
        .examples
        .iter()
        .filter(|e| e.split.as_deref().is_none_or(|s| s == split))
        .map(|e| (e.text.as_str(), e.label))
        .collect()
}

/// `feelings bench`: training-step rows for --model, inference rows for --bundle (and the
/// sandbox's with --wasm), each against its peer when --peers is given; printed as a table or
/// as JSON lines.
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
        rows.extend(train_rows(&args, model, &dataset, threads, &device)?);
    }
    if let Some(dir) = &args.bundle {
        rows.extend(infer_rows(&args, dir, &dataset, threads)?);
    }
    for row in rows.iter_mut() {
        row["threads"] = threads.into();
        // A sandbox row's memory is the guest benchmark's process, when it used more.
        let own = bench::peak_rss_mib();
        let peak = match (own, row["guest_peak_rss_mib"].as_f64()) {
            (Some(own), Some(guest)) => Some(own.max(guest)),
            (own, guest) => own.or(guest),
        };
        row["peak_rss_mib"] = peak.into();
    }
    if args.json {
        for row in &rows {
            println!("{row}");
        }
    } else {
        print_table(&rows, threads, &device);
    }
    Ok(())
}

/// `train_step` rows: one per sequence length, with PyTorch's step time beside ours.
fn train_rows(
    args: &BenchArgs,
    model: &Path,
    dataset: &Dataset,
    threads: usize,
    device: &Device,
) -> Result<Vec<Value>> {
    let files = ModelFiles::locate(model)?;
    let texts = texts_of(dataset, "train");
    let mut rows = Vec::new();
    for &seq in &args.seq {
        let (batch, warmup, steps) = (args.batch_size, args.warmup, args.steps);
        let plan = bench::StepPlan {
            seq_len: seq,
            batch_size: batch,
            warmup,
            steps,
            freeze_embeddings: args.freeze_embeddings,
        };
        let t = bench::time_train_steps(&files, &texts, &plan, device)?;
        let mut row = serde_json::to_value(&t)?;
        row["what"] = "train_step".into();
        row["seq"] = seq.into();
        row["batch"] = batch.into();
        row["ours_ms"] = (1000.0 * t.step_s).into();
        row["frozen_embeddings"] = args.freeze_embeddings.into();
        if let Some(peers) = &args.peers {
            let flags = [
                ("--model-dir", model.display().to_string()),
                ("--data", args.data.display().to_string()),
                ("--seq", seq.to_string()),
                ("--batch", batch.to_string()),
                ("--steps", steps.to_string()),
                ("--warmup", warmup.to_string()),
                ("--threads", threads.to_string()),
            ];
            let peer = run_peer(args, peers, "torch_train_step.py", &[], &flags)?;
            let Some(peer_s) = peer["median_s_per_step"].as_f64() else {
                bail!("the PyTorch peer printed no median_s_per_step: {peer}");
            };
            row["peer"] = format!("pytorch {}", peer["version"].as_str().unwrap_or("?")).into();
            row["peer_ms"] = (1000.0 * peer_s).into();
            row["ratio"] = (t.step_s / peer_s).into();
        }
        rows.push(row);
    }
    Ok(rows)
}

/// `infer` rows: one per inference batch size, with ONNX Runtime on the same model.onnx; then
/// the sandbox's `infer_wasm` rows with --wasm.
fn infer_rows(
    args: &BenchArgs,
    dir: &Path,
    dataset: &Dataset,
    threads: usize,
) -> Result<Vec<Value>> {
    let core = TractClassifier::new(&Bundle::read_dir(dir)?)?;
    let texts: Vec<&str> = texts_of(dataset, "test")
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    // An int8-dynamic bundle also meets ONNX Runtime's own int8 form of the same model.
    // (The folder lives as long as the model in it is timed.)
    let own_quantization = match (&args.peers, core.manifest().weights) {
        (Some(_), WeightFormat::Int8Dynamic) => {
            let folder = tempfile::tempdir()?;
            let model = bench::ort_quantize_dynamic(&args.python, dir, folder.path())?;
            Some((folder, model))
        }
        _ => None,
    };
    let ort_own = own_quantization.as_ref().map(|(_, model)| model);
    let mut rows = Vec::new();
    for &batch in &args.infer_batch {
        let t = bench::time_inference(&core, &texts, batch, args.warmup, args.runs)?;
        let mut row = json!({"what": "infer", "seq": t.seq_len, "batch": batch, "ours_ms": t.median_ms,
                             "ours_ms_per_review": t.ms_per_review, "ours_p90_ms": t.p90_ms});
        if let Some(peers) = &args.peers {
            let model = [dir.join(MODEL_FILE).display().to_string()];
            let flags = [
                ("--seq", t.seq_len.to_string()),
                ("--batch", batch.to_string()),
                ("--threads", threads.to_string()),
                ("--n", args.runs.to_string()),
            ];
            let peer = run_peer(args, peers, "ort_infer.py", &model, &flags)?;
            let Some(peer_ms) = peer["median_ms"].as_f64() else {
                bail!("the ONNX Runtime peer printed no median_ms: {peer}");
            };
            row["peer"] = format!("onnxruntime {}", peer["version"].as_str().unwrap_or("?")).into();
            row["peer_ms"] = peer_ms.into();
            row["ratio"] = (t.median_ms / peer_ms).into();
            if let Some(own) = ort_own {
                let model = [own.display().to_string()];
                let peer = run_peer(args, peers, "ort_infer.py", &model, &flags)?;
                let Some(own_ms) = peer["median_ms"].as_f64() else {
                    bail!("the ONNX Runtime peer printed no median_ms: {peer}");
                };
                row["peer_quantize_dynamic_ms"] = own_ms.into();
                row["ratio_quantize_dynamic"] = (t.median_ms / own_ms).into();
            }
        }
        rows.push(row);
    }
    if args.profile {
        rows.extend(profile_rows(&core, &texts, args.runs)?);
    }
    if let Some(wasm) = &args.wasm {
        let program = bench::guest_bench_program(args.guest_bench.as_deref());
        let guest = GuestBench {
            program: &program,
            component: wasm,
            bundle: dir,
            cache: &args.wasm_cache,
            batches: &args.infer_batch,
            warmup: args.warmup,
            runs: args.runs,
            threads,
        };
        rows.extend(bench::time_guest(&guest, &core, &texts)?);
    }
    Ok(rows)
}

/// `profile_op` rows: each matrix product of the call with its kernel and GMAC/s, then every
/// other kind of operator with its total, in plan order, each with its share of the call.
fn profile_rows(core: &TractClassifier, texts: &[&str], runs: usize) -> Result<Vec<Value>> {
    let ops = bench::profile_inference(core, texts, runs)?;
    let total: f64 = ops.iter().map(|o| o.seconds).sum();
    let mut rows: Vec<Value> = Vec::new();
    let mut others: Vec<(String, f64, usize)> = Vec::new();
    for op in &ops {
        if let (Some(kernel), Some(macs)) = (&op.kernel, op.macs) {
            rows.push(json!({"what": "profile_op", "op": op.op, "node": op.node, "kernel": kernel,
                             "shape": op.shape, "ms": 1000.0 * op.seconds,
                             "share": op.seconds / total, "gmac_per_s": macs as f64 / op.seconds / 1e9}));
        } else if let Some(other) = others.iter_mut().find(|o| o.0 == op.op) {
            other.1 += op.seconds;
            other.2 += 1;
        } else {
            others.push((op.op.clone(), op.seconds, 1));
        }
    }
    others.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (op, seconds, count) in others {
        rows.push(
            json!({"what": "profile_op", "op": op, "nodes": count, "ms": 1000.0 * seconds,
                         "share": seconds / total}),
        );
    }
    rows.push(json!({"what": "profile_total", "ms": 1000.0 * total}));
    Ok(rows)
}

/// Runs one peer script with `positional` arguments then `flags`.
fn run_peer(
    args: &BenchArgs,
    peers: &Path,
    script: &str,
    positional: &[String],
    flags: &[(&str, String)],
) -> Result<Value> {
    let mut all = positional.to_vec();
    for (flag, value) in flags {
        all.extend([flag.to_string(), value.clone()]);
    }
    Ok(bench::run_peer(&args.python, peers, script, &all)?)
}

/// The rows as a table for a terminal, one line each.
fn print_table(rows: &[Value], threads: usize, device: &Device) {
    println!("{threads} threads, {device:?}");
    let f = |row: &Value, key: &str| row[key].as_f64().unwrap_or(0.0);
    for row in rows {
        match row["what"].as_str() {
            Some("train_step") => println!(
                "train step  seq {:>3} batch {:>2}: {:>6.2} s/step (forward {:.2}, backward {:.2}, optimiser {:.2}), {:.2} reviews/s{}",
                row["seq_len"], row["batch_size"], f(row, "step_s"), f(row, "forward_s"),
                f(row, "backward_s"), f(row, "optimizer_s"), f(row, "reviews_per_s"),
                row["peer"].as_str().map_or(String::new(), |peer| format!(
                    " | {peer} {:.2} s | ours/peer {:.2}", f(row, "peer_ms") / 1000.0, f(row, "ratio")
                ))
            ),
            Some("infer_wasm") => println!(
                "wasmtime    seq {:>3} batch {:>2}: guest {:>7.1} ms/call | native tract {:.1} ms | guest/native {:.2} | a fresh sandbox per call {:.1} ms (x{:.2} the reused one's; making one {:.3} ms, against a guest-side load of {:.0} ms) | max |score diff| {:.1e} | component ready in {:.1} s{}",
                row["seq"], row["batch"], f(row, "ours_ms"), f(row, "peer_ms"), f(row, "ratio"),
                f(row, "fresh_ms"), f(row, "fresh_over_reused"), f(row, "instantiate_ms"),
                f(row, "guest_load_ms"),
                f(row, "max_score_difference"), f(row, "prepare_s"),
                if row["prepared_from_cache"] == true { " (cached)" } else { " (snapshot + compile)" }
            ),
            Some("profile_op") => match row["kernel"].as_str() {
                Some(kernel) => println!(
                    "  product {:<18} {:>6.2} ms {:>5.1} % {:>6.1} GMAC/s  {kernel}",
                    row["shape"].as_str().unwrap_or(""), f(row, "ms"), 100.0 * f(row, "share"),
                    f(row, "gmac_per_s")
                ),
                None => println!(
                    "  {:<26} {:>6.2} ms {:>5.1} %  ({} nodes)",
                    row["op"].as_str().unwrap_or(""), f(row, "ms"), 100.0 * f(row, "share"), row["nodes"]
                ),
            },
            Some("profile_total") => println!("  every operator of one call: {:.1} ms", f(row, "ms")),
            _ => {
                let mut peer = match (row["peer_ms"].as_f64(), row["ratio"].as_f64()) {
                    (Some(p), Some(r)) => format!(" | {} {p:.1} ms | ours/peer {r:.2}", row["peer"].as_str().unwrap_or("")),
                    _ => String::new(),
                };
                if let (Some(p), Some(r)) = (row["peer_quantize_dynamic_ms"].as_f64(), row["ratio_quantize_dynamic"].as_f64()) {
                    peer.push_str(&format!(" | its own quantize_dynamic {p:.1} ms | ours/that {r:.2}"));
                }
                println!(
                    "inference   seq {:>3} batch {:>2}: tract {:>7.1} ms/call ({:.1} ms/review){peer}",
                    row["seq"], row["batch"], f(row, "ours_ms"), f(row, "ours_ms_per_review")
                );
            }
        }
    }
    if let Some(peak) = bench::peak_rss_mib() {
        println!("peak memory of feelings (RSS): {peak:.0} MiB");
    }
    let guest = rows.iter().filter_map(|r| r["guest_peak_rss_mib"].as_f64());
    if let Some(peak) = guest.reduce(f64::max) {
        println!("peak memory of feelings-guest-bench (RSS): {peak:.0} MiB");
    }
}
