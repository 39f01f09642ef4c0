//! Timing the classifier component in a wasmtime sandbox against the native inference core, on
//! the same reviews in the same process, calls interleaved (`feelings-guest-bench`, which
//! `feelings bench --wasm` runs). Only raw timings are reported: the caller summarises them.

use std::time::Instant;

use feelings_core::{Bundle, TractClassifier};
use serde::Serialize;

use crate::sandbox::{SandboxError, Sandboxes};

/// Every timing of one batch size (in milliseconds), with what it was timed on.
#[derive(Debug, Clone, Serialize)]
pub struct GuestTimings {
    /// Reviews per call.
    pub batch: usize,
    /// Tokens per review (the bundle's sequence length).
    pub seq: usize,
    /// Each timed call inside one sandbox (tokenisation included).
    pub guest_ms: Vec<f64>,
    /// Each timed call of the native core on the same texts, just before the guest's.
    pub native_ms: Vec<f64>,
    /// Each fresh sandbox made with the model loaded.
    pub instantiate_ms: Vec<f64>,
    /// The first call of a fresh sandbox (memory pages it touches the first time are mapped
    /// then), on the first timed batch.
    pub fresh_call_ms: f64,
    /// The guest loading the bundle itself (what every instance would pay without the
    /// snapshot).
    pub guest_load_ms: f64,
    /// Largest difference between the two probabilities of positive over every review timed.
    pub max_score_difference: f32,
}

/// Interleaves `warmup + runs` calls of the native `core` and of one sandbox on consecutive
/// batches of `batch` of `texts` (which must hold `batch * (warmup + runs)`), and times `runs`
/// fresh instantiations, a fresh sandbox's first call and a guest-side load of `bundle`.
pub fn time_guest(
    bundle: &Bundle,
    core: &TractClassifier,
    sandboxes: &Sandboxes,
    texts: &[String],
    batch: usize,
    warmup: usize,
    runs: usize,
) -> Result<GuestTimings, SandboxError> {
    let needed = batch * (warmup + runs);
    let texts = texts.get(..needed).ok_or_else(|| {
        SandboxError::Refused(format!("{needed} texts are needed, {} given", texts.len()))
    })?;
    let ms = |start: Instant| start.elapsed().as_secs_f64() * 1e3;
    let mut instantiate_ms = Vec::with_capacity(runs);
    for _ in 0..runs {
        instantiate_ms.push(sandboxes.instance()?.1.as_secs_f64() * 1e3);
    }
    let (mut sandbox, _) = sandboxes.instance()?;
    let (mut guest_ms, mut native_ms, mut max_score_difference) = (vec![], vec![], 0f32);
    for (i, calls) in texts.chunks(batch).enumerate() {
        let refs: Vec<&str> = calls.iter().map(String::as_str).collect();
        let start = Instant::now();
        let ours = core
            .classify_batch(&refs)
            .map_err(|e| SandboxError::Refused(format!("the native core: {e}")))?;
        let native = ms(start);
        let start = Instant::now();
        let theirs = sandbox.classify(calls)?;
        let guest = ms(start);
        for (a, b) in ours.iter().zip(&theirs) {
            max_score_difference = max_score_difference.max((a.score - b.score).abs());
        }
        if i >= warmup {
            native_ms.push(native);
            guest_ms.push(guest);
        }
    }
    let (mut fresh, _) = sandboxes.instance()?;
    let start = Instant::now();
    fresh.classify(&texts[batch * warmup..batch * (warmup + 1)])?;
    let fresh_call_ms = ms(start);
    let guest_load_ms = fresh.load(bundle)?.as_secs_f64() * 1e3;
    Ok(GuestTimings {
        batch,
        seq: core.manifest().max_seq_len,
        guest_ms,
        native_ms,
        instantiate_ms,
        fresh_call_ms,
        guest_load_ms,
        max_score_difference,
    })
}
