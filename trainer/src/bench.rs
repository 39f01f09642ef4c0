//! Timing fine-tuning steps and inference on real reviews against the peers (PyTorch, ONNX
//! Runtime, and the wasmtime guest through the runtime's `feelings-guest-bench`): the numbers
//! behind "seconds per step" and "ms per review".

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use candle_core::Device;
use feelings_core::{ReviewEncoder, TractClassifier, Truncation};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde::Serialize;
use serde_json::{json, Value};

use crate::data::batch::make_batch;
use crate::data::encode::{encode_chunks, ENCODE_CHUNK};
use crate::error::{Error, Result};
use crate::model::{CandleClassifier, Head, ModelFiles};
use crate::train::optim::{AdamW, AdamWConfig};

/// The first `needed` of `texts` that fill the encoder's sequence length, as token ids, with
/// their positions in `texts`: batches of them are exactly `batch x seq_len`, as the peers pad to.
fn full_length(
    encoder: &ReviewEncoder,
    texts: &[&str],
    needed: usize,
) -> Result<(Vec<Vec<u32>>, Vec<usize>)> {
    let seq_len = encoder.seq_len();
    let (mut ids, mut picked) = (Vec::with_capacity(needed), Vec::with_capacity(needed));
    for (c, chunk) in encode_chunks(encoder, texts).enumerate() {
        for (k, encoded) in chunk?.into_iter().enumerate() {
            if encoded.ids.len() == seq_len && ids.len() < needed {
                ids.push(encoded.ids);
                picked.push(c * ENCODE_CHUNK + k);
            }
        }
        if ids.len() == needed {
            return Ok((ids, picked));
        }
    }
    Err(Error::Setting(format!(
        "only {} reviews reach {seq_len} tokens; {needed} are needed",
        ids.len()
    )))
}

/// Every operator of one full-length review's call, timed over `runs` calls (see
/// [`TractClassifier::profile`]).
pub fn profile_inference(
    core: &TractClassifier,
    texts: &[&str],
    runs: usize,
) -> Result<Vec<feelings_core::profile::OpTime>> {
    let (ids, _) = full_length(core.encoder(), texts, 1)?;
    core.profile(&ids[0], runs)
        .map_err(|e| Error::Setting(format!("profiling the bundle failed: {e}")))
}

/// Timings of one training configuration, medians over the timed steps.
#[derive(Debug, Clone, Serialize)]
pub struct StepTiming {
    /// Tokens per review (every review has exactly this many).
    pub seq_len: usize,
    /// Reviews per step.
    pub batch_size: usize,
    /// Timed steps (after the warm-up ones).
    pub steps: usize,
    /// Median seconds per whole step.
    pub step_s: f64,
    /// Median seconds of the forward pass and loss.
    pub forward_s: f64,
    /// Median seconds of the backward pass.
    pub backward_s: f64,
    /// Median seconds of the optimiser update.
    pub optimizer_s: f64,
    /// Reviews per second at the median step time.
    pub reviews_per_s: f64,
    /// Every timed step, seconds.
    pub all_steps_s: Vec<f64>,
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

/// What [`time_train_steps`] times.
#[derive(Debug, Clone, Copy)]
pub struct StepPlan {
    /// Tokens per review.
    pub seq_len: usize,
    /// Reviews per step.
    pub batch_size: usize,
    /// Steps run first and not timed.
    pub warmup: usize,
    /// Steps timed.
    pub steps: usize,
    /// Keep the word embeddings out of training (`feelings train --freeze-embeddings`).
    pub freeze_embeddings: bool,
}

/// Times `warmup + steps` training steps (forward with drop-out, cross-entropy, backward,
/// AdamW) of the classifier built on `files`, on batches of `texts` that are each at least
/// `seq_len` tokens long, so every batch is exactly `batch_size x seq_len` (as the PyTorch
/// peer pads to).
pub fn time_train_steps(
    files: &ModelFiles,
    texts: &[(&str, u32)],
    plan: &StepPlan,
    device: &Device,
) -> Result<StepTiming> {
    let StepPlan {
        seq_len,
        batch_size,
        warmup,
        steps,
        freeze_embeddings,
    } = *plan;
    let tokenizer = std::fs::read(&files.tokenizer).map_err(|e| Error::io(&files.tokenizer, e))?;
    let encoder = ReviewEncoder::from_bytes(&tokenizer, seq_len, Truncation::Tail)?;
    let needed = batch_size * (warmup + steps);
    let strings: Vec<&str> = texts.iter().map(|t| t.0).collect();
    let (ids, picked) = full_length(&encoder, &strings, needed)?;
    let labels: Vec<u32> = picked.iter().map(|&i| texts[i].1).collect();
    let mut model = CandleClassifier::load(files, device, Head::Fresh { seed: 0 })?;
    let frozen = model.freeze_word_embeddings(freeze_embeddings);
    let mut optimizer = AdamW::new(model.varmap(), AdamWConfig::default(), frozen)?;
    let mut rng = SmallRng::seed_from_u64(0);
    let (mut total, mut forward, mut backward, mut update) = (vec![], vec![], vec![], vec![]);
    for (i, indices) in (0..needed)
        .collect::<Vec<_>>()
        .chunks(batch_size)
        .enumerate()
    {
        let start = Instant::now();
        let batch = make_batch(&ids, &labels, indices, encoder.pad_id(), device)?;
        let logits = model.forward(&batch.input_ids, &batch.attention_mask, Some(&mut rng))?;
        let loss = candle_nn::loss::cross_entropy(&logits, &batch.labels)?;
        loss.to_scalar::<f32>()?;
        let forward_done = Instant::now();
        let grads = loss.backward()?;
        let backward_done = Instant::now();
        optimizer.step(&grads, 2e-5)?;
        device.synchronize()?;
        let end = Instant::now();
        if i >= warmup {
            total.push((end - start).as_secs_f64());
            forward.push((forward_done - start).as_secs_f64());
            backward.push((backward_done - forward_done).as_secs_f64());
            update.push((end - backward_done).as_secs_f64());
        }
    }
    let step_s = median(&total);
    Ok(StepTiming {
        seq_len,
        batch_size,
        steps,
        step_s,
        forward_s: median(&forward),
        backward_s: median(&backward),
        optimizer_s: median(&update),
        reviews_per_s: batch_size as f64 / step_s,
        all_steps_s: total,
    })
}

/// The peak resident memory of this process so far, in MiB (Linux; `None` elsewhere).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Latency of the inference core on batches of reviews of exactly `seq_len` tokens.
#[derive(Debug, Clone, Serialize)]
pub struct InferTiming {
    /// Tokens per review.
    pub seq_len: usize,
    /// Reviews per call.
    pub batch_size: usize,
    /// Timed calls (after the warm-up ones).
    pub runs: usize,
    /// Median milliseconds per call.
    pub median_ms: f64,
    /// 90th-percentile milliseconds per call.
    pub p90_ms: f64,
    /// Median milliseconds per review.
    pub ms_per_review: f64,
    /// Reviews per second at the median.
    pub reviews_per_s: f64,
}

/// Times `warmup + runs` calls of `core` on batches of `batch_size` reviews from `texts` that
/// reach `seq_len` tokens (so, as for the ONNX Runtime peer, every call is exactly
/// `batch_size x seq_len`); only the model call is timed, not tokenisation.
pub fn time_inference(
    core: &TractClassifier,
    texts: &[&str],
    batch_size: usize,
    warmup: usize,
    runs: usize,
) -> Result<InferTiming> {
    let seq_len = core.manifest().max_seq_len;
    let needed = batch_size * (warmup + runs);
    let (ids, _) = full_length(core.encoder(), texts, needed)?;
    let mut times = Vec::with_capacity(runs);
    for (i, batch) in ids.chunks(batch_size).enumerate() {
        let start = Instant::now();
        core.logits(batch)
            .map_err(|e| Error::Setting(e.to_string()))?;
        if i >= warmup {
            times.push(start.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let median_ms = median(&times);
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let p90_ms = sorted[((sorted.len() - 1) as f64 * 0.9).round() as usize];
    Ok(InferTiming {
        seq_len,
        batch_size,
        runs,
        median_ms,
        p90_ms,
        ms_per_review: median_ms / batch_size as f64,
        reviews_per_s: 1000.0 * batch_size as f64 / median_ms,
    })
}

/// Runs one peer script from the peers folder with `args`; returns the JSON line it prints.
pub fn run_peer(python: &str, peers: &Path, script: &str, args: &[String]) -> Result<Value> {
    let script = peers.join(script);
    let (stdout, _) = run_captured(Command::new(python).arg(&script).args(args), b"", &script)?;
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    serde_json::from_str(line.trim())
        .map_err(|e| Error::Setting(format!("{}: not one JSON line: {e}", script.display())))
}

/// What makes ONNX Runtime's own int8 model of a bundle: `quantize_dynamic` (int8 weights,
/// one scale per channel) of the f32 file given first, written to the second.
const ORT_QUANTIZE_DYNAMIC: &str = "import sys\n\
from onnxruntime.quantization import quantize_dynamic, QuantType\n\
quantize_dynamic(sys.argv[1], sys.argv[2], weight_type=QuantType.QInt8, per_channel=True)\n";

/// ONNX Runtime's own dynamic quantisation of `bundle`'s model, the peer an int8-dynamic
/// bundle is measured against: the bundle exported again at f32 (from its own weights), then
/// `quantize_dynamic` run by `python` (onnxruntime and onnx installed), into `dir/model.onnx`
/// beside the bundle's `tokenizer.json`.
pub fn ort_quantize_dynamic(python: &str, bundle: &Path, dir: &Path) -> Result<PathBuf> {
    let f32_dir = dir.join("f32");
    let options = crate::export::ExportOptions::default();
    crate::export::export_bundle(bundle, &f32_dir, false, &options)?;
    let quantized = dir.join("model.onnx");
    let mut command = Command::new(python);
    command
        .arg("-c")
        .arg(ORT_QUANTIZE_DYNAMIC)
        .arg(f32_dir.join(feelings_core::manifest::MODEL_FILE))
        .arg(&quantized);
    run_captured(
        &mut command,
        b"",
        Path::new("onnxruntime.quantization.quantize_dynamic"),
    )
    .map_err(|e| {
        Error::Setting(format!(
            "{e} (it needs `{python} -m pip install onnxruntime onnx`)"
        ))
    })?;
    let tokenizer = feelings_core::manifest::TOKENIZER_FILE;
    std::fs::copy(bundle.join(tokenizer), dir.join(tokenizer))
        .map_err(|e| Error::io(bundle.join(tokenizer), e))?;
    Ok(quantized)
}

/// The runtime's guest benchmark, `feelings-guest-bench`: `explicit` when given, else the one
/// built next to this executable (`cargo build -p feelings-runtime` puts them side by side),
/// else whatever `PATH` finds.
pub fn guest_bench_program(explicit: Option<&Path>) -> PathBuf {
    const NAME: &str = "feelings-guest-bench";
    if let Some(path) = explicit {
        return path.to_path_buf();
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join(NAME)))
        .filter(|sibling| sibling.is_file())
        .unwrap_or_else(|| PathBuf::from(NAME))
}

/// What `feelings bench --wasm` asks of the guest benchmark.
pub struct GuestBench<'a> {
    /// `feelings-guest-bench` ([`guest_bench_program`]).
    pub program: &'a Path,
    /// The classifier component (the server build).
    pub component: &'a Path,
    /// The bundle folder.
    pub bundle: &'a Path,
    /// Where the compiled, pre-initialised component is cached between runs.
    pub cache: &'a Path,
    /// Reviews per call, one row each.
    pub batches: &'a [usize],
    /// Untimed calls first.
    pub warmup: usize,
    /// Timed calls per batch size.
    pub runs: usize,
    /// Threads of the native core.
    pub threads: usize,
}

/// Runs the guest benchmark on the first of `texts` that reach the bundle's sequence length
/// (the reviews [`time_inference`] takes) and summarises each batch size as an `infer_wasm`
/// row: medians of the guest's and the native core's calls (interleaved in one process), their
/// ratio, instantiation, a fresh sandbox's first call, a guest-side load, the largest score
/// difference and how the component was prepared.
pub fn time_guest(
    bench: &GuestBench,
    core: &TractClassifier,
    texts: &[&str],
) -> Result<Vec<Value>> {
    let largest = bench.batches.iter().copied().max().unwrap_or(1);
    let (_, picked) = full_length(core.encoder(), texts, largest * (bench.warmup + bench.runs))?;
    let picked: Vec<&str> = picked.iter().map(|&i| texts[i]).collect();
    let batches: Vec<String> = bench.batches.iter().map(usize::to_string).collect();
    let (stdout, stderr) = run_captured(
        Command::new(bench.program)
            .arg("--component")
            .arg(bench.component)
            .arg("--bundle")
            .arg(bench.bundle)
            .arg("--cache")
            .arg(bench.cache)
            .args(["--batch", &batches.join(",")])
            .args(["--warmup", &bench.warmup.to_string()])
            .args(["--runs", &bench.runs.to_string()])
            .args(["--threads", &bench.threads.to_string()]),
        &serde_json::to_vec(&picked).map_err(|e| Error::Setting(e.to_string()))?,
        bench.program,
    )
    .map_err(|e| match e {
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            Error::Setting(format!(
                "{} was not found: build it with the profile `feelings` was built with (`cargo build --release -p feelings-runtime` beside target/release/feelings) or name it with --guest-bench",
                bench.program.display()
            ))
        }
        other => other,
    })?;
    // What the sandbox logged (e.g. a cache it could not use) is the user's to see.
    eprint!("{stderr}");
    let rows: Vec<Value> = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| guest_row(line, bench.program))
        .collect::<Result<_>>()?;
    if rows.len() != bench.batches.len() {
        return Err(Error::Setting(format!(
            "{}: {} rows for {} batch sizes",
            bench.program.display(),
            rows.len(),
            bench.batches.len()
        )));
    }
    Ok(rows)
}

/// The `infer_wasm` row of one line of the guest benchmark's timings.
fn guest_row(line: &str, program: &Path) -> Result<Value> {
    let failed = |m: String| Error::Setting(format!("{}: {m}", program.display()));
    let raw: Value = serde_json::from_str(line).map_err(|e| failed(format!("{e}: {line}")))?;
    let median_of = |field: &str| -> Result<f64> {
        let values = raw[field]
            .as_array()
            .ok_or_else(|| failed(format!("no {field} in {line}")))?;
        Ok(median(
            &values.iter().filter_map(Value::as_f64).collect::<Vec<_>>(),
        ))
    };
    let (guest_ms, native_ms) = (median_of("guest_ms")?, median_of("native_ms")?);
    let fresh_ms = median_of("fresh_ms")?;
    Ok(
        json!({"what": "infer_wasm", "seq": raw["seq"], "batch": raw["batch"],
        "ours_ms": guest_ms, "peer": "tract native", "peer_ms": native_ms,
        "ratio": guest_ms / native_ms, "instantiate_ms": median_of("instantiate_ms")?,
        "max_score_difference": raw["max_score_difference"], "fresh_ms": fresh_ms, "fresh_over_reused": fresh_ms / guest_ms,
        "guest_load_ms": raw["guest_load_ms"], "prepare_s": raw["prepare_s"],
        "prepared_from_cache": raw["prepared_from_cache"], "guest_peak_rss_mib": raw["peak_rss_mib"]}),
    )
}

/// Runs `command` with `input` on its stdin (written while its output is read, so neither
/// side waits on the other); returns its stdout and stderr, or an error naming `what` (the
/// script or program) with its stderr.
fn run_captured(command: &mut Command, input: &[u8], what: &Path) -> Result<(String, String)> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io(what, e))?;
    let stdin = child.stdin.take();
    let out = std::thread::scope(|scope| {
        scope.spawn(move || {
            // A child that exits without reading it all says why on stderr, reported below.
            let _ = stdin.map(|mut stdin| stdin.write_all(input));
        });
        child.wait_with_output()
    })
    .map_err(|e| Error::io(what, e))?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(Error::Setting(format!(
            "{} failed ({}): {}",
            what.display(),
            out.status,
            stderr.trim()
        )));
    }
    Ok((String::from_utf8_lossy(&out.stdout).into_owned(), stderr))
}
