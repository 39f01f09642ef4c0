//! One epoch: length-bucketed batches of AdamW steps with seeded drop-out, saved part-way when
//! asked, then the validation subset scored.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

use candle_core::D;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tracing::info;

use crate::data::batch::{bucketed_batches, make_batch, Batch};
use crate::error::Result;
use crate::evaluate::metrics::{compute, Metrics};
use crate::evaluate::probabilities::positive_probabilities;
use crate::model::CandleClassifier;
use crate::progress::bar;
use crate::train::optim::{AdamW, Schedule};
use crate::train::partial::{self, PartialEpoch};
use crate::train::prepare::Encoded;
use crate::train::run_dir::{OPTIMIZER_FILE, WEIGHTS_FILE};
use crate::train::settings::TrainSettings;
use crate::train::TrainOptions;

/// A seed for one purpose in one epoch, derived from the run's seed (splitmix64), so a resumed
/// run draws exactly what an uninterrupted one would have.
pub(super) fn derive_seed(seed: u64, epoch: usize, stream: u64) -> u64 {
    let mut z = seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ stream.rotate_left(32);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What one epoch of training reads.
pub(super) struct TrainEpoch<'a> {
    pub settings: &'a TrainSettings,
    pub schedule: &'a Schedule,
    pub epoch: usize,
    pub pad_id: u32,
    pub options: &'a TrainOptions,
    pub run: &'a Path,
}

/// The optimiser's position in the run: its step, and the steps this invocation may still take.
pub(super) struct Steps {
    pub done: usize,
    pub left: Option<usize>,
}

/// Trains one epoch from `start` (a saved partial epoch) or its beginning; returns the
/// training loss and accuracy, or `None` when the steps left ran out first or a stop was asked
/// (the epoch so far is saved).
pub(super) fn train_epoch(
    model: &CandleClassifier,
    optimizer: &mut AdamW,
    data: &Encoded,
    at: &TrainEpoch,
    start: Option<PartialEpoch>,
    steps: &mut Steps,
) -> Result<Option<(f64, f64)>> {
    let (settings, epoch, options) = (at.settings, at.epoch, at.options);
    let lengths: Vec<usize> = data.ids.iter().map(Vec::len).collect();
    let batches = bucketed_batches(
        &lengths,
        settings.batch_size,
        derive_seed(settings.seed, epoch, 2),
    );
    let mut progress = start.unwrap_or(PartialEpoch {
        epoch,
        batches_done: 0,
        global_step: steps.done,
        loss_sum: 0.0,
        correct: 0,
        seen: 0,
        seconds: 0.0,
    });
    let pb = bar(
        batches.len(),
        &format!("epoch {epoch}/{}", settings.epochs),
        "steps",
        options.progress,
    );
    pb.set_position(progress.batches_done as u64);
    let log_every = (batches.len() / 20).max(1);
    let started = Instant::now();
    let (earlier_seconds, earlier_seen) = (progress.seconds, progress.seen);
    let mut last_save = Instant::now();
    for (i, indices) in batches.iter().enumerate().skip(progress.batches_done) {
        if steps.left == Some(0) || options.stop.load(Ordering::Relaxed) {
            save_partial(model, optimizer, at.run, &progress)?;
            pb.finish_and_clear();
            return Ok(None);
        }
        let batch = make_batch(&data.ids, &data.labels, indices, at.pad_id, &options.device)?;
        let (loss, hits) = train_step(model, optimizer, &batch, at, i, steps)?;
        progress.loss_sum += loss * indices.len() as f64;
        progress.correct += hits;
        progress.seen += indices.len();
        progress.batches_done = i + 1;
        progress.global_step = steps.done;
        progress.seconds = earlier_seconds + started.elapsed().as_secs_f64();
        let rate = (progress.seen - earlier_seen) as f64 / started.elapsed().as_secs_f64();
        let message = format!(
            "loss {:.4} acc {:.1} % {rate:.1} reviews/s",
            progress.loss_sum / progress.seen as f64,
            100.0 * progress.correct as f64 / progress.seen as f64
        );
        pb.set_message(message.clone());
        pb.inc(1);
        if !options.progress && (i + 1) % log_every == 0 {
            info!("epoch {epoch} step {}/{}: {message}", i + 1, batches.len());
        }
        let more_to_do = i + 1 < batches.len();
        if more_to_do
            && options
                .save_every
                .is_some_and(|every| last_save.elapsed() >= every)
        {
            save_partial(model, optimizer, at.run, &progress)?;
            last_save = Instant::now();
        }
    }
    pb.finish_and_clear();
    let seen = progress.seen.max(1) as f64;
    Ok(Some((
        progress.loss_sum / seen,
        progress.correct as f64 / seen,
    )))
}

/// One AdamW step on batch number `index` of the epoch; returns its mean loss and how many of
/// its reviews the model got right.
fn train_step(
    model: &CandleClassifier,
    optimizer: &mut AdamW,
    batch: &Batch,
    at: &TrainEpoch,
    index: usize,
    steps: &mut Steps,
) -> Result<(f64, usize)> {
    // Drop-out masks drawn per batch, so a run resumed mid-epoch draws what it would have.
    let seed = derive_seed(derive_seed(at.settings.seed, at.epoch, 3), index, 4);
    let mut rng = SmallRng::seed_from_u64(seed);
    let logits = model.forward(&batch.input_ids, &batch.attention_mask, Some(&mut rng))?;
    let loss = candle_nn::loss::cross_entropy(&logits, &batch.labels)?;
    let grads = loss.backward()?;
    optimizer.step(&grads, at.schedule.lr(steps.done))?;
    steps.done += 1;
    steps.left = steps.left.map(|n| n - 1);
    let hits = logits
        .argmax(D::Minus1)?
        .eq(&batch.labels)?
        .to_dtype(candle_core::DType::F32)?
        .sum_all()?;
    Ok((
        f64::from(loss.to_scalar::<f32>()?),
        hits.to_scalar::<f32>()? as usize,
    ))
}

/// Saves the epoch in progress (weights, optimiser, position) as the run's partial epoch.
fn save_partial(
    model: &CandleClassifier,
    optimizer: &AdamW,
    run: &Path,
    progress: &PartialEpoch,
) -> Result<()> {
    partial::save(run, progress, |tmp| {
        model.save(&tmp.join(WEIGHTS_FILE))?;
        optimizer.save(&tmp.join(OPTIMIZER_FILE))
    })
}

/// The model's metrics on an encoded subset (drop-out off), at threshold 0.5.
pub(super) fn evaluate_subset(
    model: &CandleClassifier,
    data: &Encoded,
    settings: &TrainSettings,
    pad_id: u32,
    name: &str,
    options: &TrainOptions,
) -> Result<Metrics> {
    let pb = bar(data.ids.len(), name, "reviews", options.progress);
    let probs = positive_probabilities(
        model,
        &data.ids,
        pad_id,
        settings.eval_batch_size,
        &options.device,
        &pb,
    )?;
    pb.finish_and_clear();
    Ok(compute(&probs, &data.labels, 0.5))
}
