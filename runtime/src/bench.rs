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
    /// Each timed call in a sandbox made for it (made, called, dropped: what the gateway does
    /// per call), on the same texts as the reused sandbox's call beside it; the two go in
    /// turns, first one then the other.
    pub fresh_ms: Vec<f64>,
    /// The guest loading the bundle itself (what every instance would pay without the
    /// snapshot).
    pub guest_load_ms: f64,
    /// Largest difference between the two probabilities of positive over every review timed.
    pub max_score_difference: f32,
}

/// Interleaves `warmup + runs` calls of the native `core`, of one reused sandbox and of a
/// sandbox made for the call on consecutive batches of `batch` of `texts` (which must hold
/// `batch * (warmup + runs)`), and times `runs` fresh instantiations and a guest-side load of
/// `bundle`.
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
    let (mut guest_ms, mut native_ms, mut fresh_ms) = (vec![], vec![], vec![]);
    let mut max_score_difference = 0f32;
    for (i, calls) in texts.chunks(batch).enumerate() {
        let refs: Vec<&str> = calls.iter().map(String::as_str).collect();
        let start = Instant::now();
        let ours = core
            .classify_batch(&refs)
            .map_err(|e| SandboxError::Refused(format!("the native core: {e}")))?;
        let native = ms(start);
        let mut reused = || -> Result<_, SandboxError> {
            let start = Instant::now();
            Ok((sandbox.classify(calls)?, ms(start)))
        };
        let fresh = || -> Result<_, SandboxError> {
            let start = Instant::now();
            let answers = sandboxes.instance()?.0.classify(calls)?;
            Ok((answers, ms(start)))
        };
        let ((theirs, guest), (again, made)) = if i % 2 == 0 {
            (reused()?, fresh()?)
        } else {
            let made = fresh()?;
            (reused()?, made)
        };
        for ((a, b), c) in ours.iter().zip(&theirs).zip(&again) {
            let difference = (a.score - b.score).abs().max((a.score - c.score).abs());
            max_score_difference = max_score_difference.max(difference);
        }
        if i >= warmup {
            native_ms.push(native);
            guest_ms.push(guest);
            fresh_ms.push(made);
        }
    }
    let (mut fresh, _) = sandboxes.instance()?;
    let guest_load_ms = fresh.load(bundle)?.as_secs_f64() * 1e3;
    Ok(GuestTimings {
        batch,
        seq: core.manifest().max_seq_len,
        guest_ms,
        native_ms,
        instantiate_ms,
        fresh_ms,
        guest_load_ms,
        max_score_difference,
    })
}
