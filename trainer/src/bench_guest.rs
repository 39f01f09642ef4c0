//! Timing the classifier's server build in a wasmtime sandbox against native tract, on the same
//! reviews in the same run (`feelings bench --wasm`).

use std::time::Instant;

use feelings_core::{Bundle, Classifier};
use feelings_runtime::Sandboxes;
use serde::Serialize;

use crate::bench::{full_length, median};
use crate::error::{Error, Result};

/// The sandboxed classifier against the native one, medians over the timed calls.
#[derive(Debug, Clone, Serialize)]
pub struct GuestTiming {
    /// Tokens per review (every review reaches the bundle's sequence length).
    pub seq_len: usize,
    /// Reviews per call.
    pub batch_size: usize,
    /// Timed calls of each.
    pub runs: usize,
    /// Median milliseconds per call inside the sandbox (tokenisation included).
    pub guest_ms: f64,
    /// Median milliseconds per call of the native core on the same texts.
    pub native_ms: f64,
    /// Median milliseconds to make a fresh sandbox with the model loaded.
    pub instantiate_ms: f64,
    /// Milliseconds of the first call of a fresh sandbox (memory pages it touches the first
    /// time are mapped then), on the first timed batch.
    pub fresh_call_ms: f64,
    /// Milliseconds for the guest to load the bundle itself (what every instance would pay
    /// without the snapshot).
    pub guest_load_ms: f64,
    /// Largest difference between the two probabilities of positive over every review timed.
    pub max_score_difference: f32,
}

/// Interleaves `warmup + runs` calls of the native core and of one sandbox on the same batches
/// of `batch_size` reviews from `texts` that reach the sequence length, and times `runs` fresh
/// instantiations.
pub fn time_guest(
    bundle: &Bundle,
    core: &Classifier,
    sandboxes: &Sandboxes,
    texts: &[&str],
    batch_size: usize,
    warmup: usize,
    runs: usize,
) -> Result<GuestTiming> {
    let failed = |e: &dyn std::fmt::Display| Error::Setting(e.to_string());
    let (_, picked) = full_length(core.encoder(), texts, batch_size * (warmup + runs))?;
    let picked: Vec<String> = picked.iter().map(|&i| texts[i].to_string()).collect();
    let mut instantiate = Vec::with_capacity(runs);
    for _ in 0..runs {
        instantiate.push(
            sandboxes
                .instance()
                .map_err(|e| failed(&e))?
                .1
                .as_secs_f64()
                * 1e3,
        );
    }
    let (mut sandbox, _) = sandboxes.instance().map_err(|e| failed(&e))?;
    let (mut guest, mut native, mut max_score_difference) = (Vec::new(), Vec::new(), 0f32);
    for (i, batch) in picked.chunks(batch_size).enumerate() {
        let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
        let start = Instant::now();
        let ours = core.classify_batch(&refs).map_err(|e| failed(&e))?;
        let native_ms = start.elapsed().as_secs_f64() * 1e3;
        let start = Instant::now();
        let theirs = sandbox.classify(batch).map_err(|e| failed(&e))?;
        let guest_ms = start.elapsed().as_secs_f64() * 1e3;
        for (a, b) in ours.iter().zip(&theirs) {
            max_score_difference = max_score_difference.max((a.score - b.score).abs());
        }
        if i >= warmup {
            native.push(native_ms);
            guest.push(guest_ms);
        }
    }
    let (mut fresh, _) = sandboxes.instance().map_err(|e| failed(&e))?;
    let first_timed = &picked[batch_size * warmup..batch_size * (warmup + 1)];
    let start = Instant::now();
    fresh.classify(first_timed).map_err(|e| failed(&e))?;
    let fresh_call_ms = start.elapsed().as_secs_f64() * 1e3;
    let guest_load_ms = fresh.load(bundle).map_err(|e| failed(&e))?.as_secs_f64() * 1e3;
    Ok(GuestTiming {
        seq_len: core.manifest().max_seq_len,
        batch_size,
        runs,
        guest_ms: median(&guest),
        native_ms: median(&native),
        instantiate_ms: median(&instantiate),
        fresh_call_ms,
        guest_load_ms,
        max_score_difference,
    })
}
