//! The training loop: data → tokens → epochs of AdamW steps → checkpoints and metrics.

mod epoch;
pub mod lineage;
pub mod optim;
pub mod partial;
mod prepare;
pub mod run_dir;
pub mod settings;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use candle_core::Device;
use feelings_core::Labels;
use sha2::{Digest, Sha256};
use tracing::info;

use crate::error::{Error, Result};
use crate::model::{checkpoint_config, CandleClassifier, Head, ModelFiles};
use crate::train::epoch::{derive_seed, evaluate_subset, train_epoch, Steps, TrainEpoch};
use crate::train::optim::{AdamW, Schedule};
use crate::train::partial::PartialEpoch;
use crate::train::prepare::{encode, prepare, with_windows, Prepared};
use crate::train::run_dir::{
    best_of, read_json, write_json, EpochRecord, RunDir, OPTIMIZER_FILE, RUN_FILE, WEIGHTS_FILE,
};
use crate::train::settings::{RunInfo, RunStatus, SubsetSizes, TrainSettings};

/// How (not what) to train: these may change between a run and its resumption.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Where tensors live.
    pub device: Device,
    /// CPU threads in use (recorded in run.json).
    pub threads: usize,
    /// Show progress bars.
    pub progress: bool,
    /// Stop after this many epochs in this invocation, leaving the run to be resumed.
    pub stop_after: Option<usize>,
    /// Stop after this many optimiser steps in this invocation (saving a partial epoch).
    pub stop_after_steps: Option<usize>,
    /// Save the epoch in progress this often, so a kill loses at most this much work.
    pub save_every: Option<Duration>,
    /// Set (by the CLI on Ctrl-C or SIGTERM) to stop before the next step: the epoch in
    /// progress is saved as after `stop_after_steps`, and the run can be resumed.
    pub stop: Arc<AtomicBool>,
}

/// Starts a new run in `out` (refused if `out` holds anything, unless `overwrite`).
pub fn train(
    settings: TrainSettings,
    out: &Path,
    overwrite: bool,
    options: &TrainOptions,
) -> Result<RunInfo> {
    let mut settings = settings;
    settings.data = absolute(&settings.data)?;
    settings.model = absolute(&settings.model)?;
    validate(&settings)?;
    // Check the inputs before touching the output folder.
    let files = ModelFiles::locate(&settings.model)?;
    let prepared = prepare(&settings, &files, options.progress)?;
    // A stop asked while the data was prepared leaves the output folder (and any run
    // `overwrite` would replace) as it was.
    if options.stop.load(Ordering::Relaxed) {
        return Err(Error::run(
            out,
            "stopped before training started: nothing was written",
        ));
    }
    let dir = RunDir::create(out, overwrite)?;
    run(dir, settings, files, prepared, None, options)
}

/// Continues the run in `out` from its last complete epoch, with the settings of its run.json.
pub fn resume(out: &Path, options: &TrainOptions) -> Result<RunInfo> {
    let dir = RunDir::open(out)?;
    let info: RunInfo = read_json(&dir.path().join(RUN_FILE))?;
    let files = ModelFiles::locate(&info.settings.model)?;
    let prepared = prepare(&info.settings, &files, options.progress)?;
    if prepared.data_sha256 != info.data_sha256 {
        return Err(Error::run(
            dir.path(),
            format!(
                "{} changed since this run started: its data hash differs",
                info.settings.data.display()
            ),
        ));
    }
    run(
        dir,
        info.settings.clone(),
        files,
        prepared,
        Some(info),
        options,
    )
}

fn validate(s: &TrainSettings) -> Result<()> {
    let bad = |m: &str| Err(Error::Setting(m.to_string()));
    if s.batch_size == 0 || s.eval_batch_size == 0 {
        return bad("batch sizes must be positive");
    }
    if s.epochs == 0 {
        return bad("--epochs must be at least 1");
    }
    if !(s.optimizer.lr > 0.0 && s.optimizer.lr.is_finite()) {
        return bad("--lr must be a positive number");
    }
    if !(0.0..1.0).contains(&s.warmup_fraction) {
        return bad("--warmup must be in [0, 1)");
    }
    if !(0.0..=1.0).contains(&s.sentence_windows) {
        return bad("--sentence-windows must be a share from 0 to 1");
    }
    Ok(())
}

/// The absolute, `..`-free form of a path that exists (as given, if it does not).
fn absolute(path: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .map_err(|e| Error::io(path, e))
}

/// Where a run stands when its epochs start: the model and optimiser restored from the last
/// complete epoch (or fresh), the epochs done, and a partial epoch to continue.
struct Restored {
    model: CandleClassifier,
    optimizer: AdamW,
    step: usize,
    records: Vec<EpochRecord>,
    partial: Option<PartialEpoch>,
}

/// What every part of a run reads.
struct RunContext<'a> {
    dir: &'a RunDir,
    settings: &'a TrainSettings,
    files: &'a ModelFiles,
    options: &'a TrainOptions,
}

/// Restores the state, runs the epochs still to do and, once the run is complete, finishes
/// it (test metrics, status); `run.json` is rewritten after every epoch.
fn run(
    dir: RunDir,
    settings: TrainSettings,
    files: ModelFiles,
    prepared: Prepared,
    previous: Option<RunInfo>,
    options: &TrainOptions,
) -> Result<RunInfo> {
    let started = Instant::now();
    let ctx = RunContext {
        dir: &dir,
        settings: &settings,
        files: &files,
        options,
    };
    let mut state = restore(&ctx, previous.is_some())?;
    let mut info = run_info(&ctx, &prepared, previous.as_ref(), state.records.len())?;
    let wall_before = info.wall_seconds;
    let wall = || wall_before + started.elapsed().as_secs_f64();
    write_json(&dir.path().join(RUN_FILE), &info)?;
    let stopped_early = run_epochs(&ctx, &prepared, &mut state, &mut info, &wall)?;
    if stopped_early || state.records.len() == settings.epochs {
        finish(&ctx, &prepared, &state, &mut info, stopped_early)?;
    }
    info.wall_seconds = wall();
    write_json(&dir.path().join(RUN_FILE), &info)?;
    Ok(info)
}

/// The model and optimiser of a new run, or of the last complete epoch of a resumed one,
/// plus the partial epoch saved after it, if any.
fn restore(ctx: &RunContext, resuming: bool) -> Result<Restored> {
    let (dir, settings, device) = (ctx.dir, ctx.settings, &ctx.options.device);
    let mut records = dir.records()?;
    records.truncate(if resuming { records.len() } else { 0 });
    let done = records.len();
    let (mut model, mut step) = if done == 0 {
        // A run continued from a checkpoint keeps its head unless asked for a new one.
        let head = match &settings.from {
            Some(parent) if !parent.new_head => Head::FromFile,
            _ => Head::Fresh {
                seed: derive_seed(settings.seed, 0, 1),
            },
        };
        (CandleClassifier::load(ctx.files, device, head)?, 0)
    } else {
        let last = dir.checkpoint(done);
        let model = CandleClassifier::load(&ModelFiles::locate(&last)?, device, Head::FromFile)?;
        info!("resuming after epoch {done} from {}", last.display());
        (model, records[done - 1].global_step)
    };
    let frozen = model.freeze_word_embeddings(settings.freeze_embeddings);
    let mut optimizer = AdamW::new(model.varmap(), settings.optimizer, frozen)?;
    if done > 0 {
        optimizer.load(&dir.checkpoint(done).join(OPTIMIZER_FILE), step)?;
    }
    // A partial epoch saved after the last complete one carries on from where it stopped.
    let saved = match resuming {
        true => partial::load(dir.path())?.filter(|(p, _)| p.epoch == done + 1),
        false => None,
    };
    let partial = match saved {
        Some((progress, folder)) => {
            model.reload(&folder.join(WEIGHTS_FILE))?;
            optimizer.load(&folder.join(OPTIMIZER_FILE), progress.global_step)?;
            step = progress.global_step;
            info!(
                "resuming epoch {} after {} batches from {}",
                progress.epoch,
                progress.batches_done,
                folder.display()
            );
            Some(progress)
        }
        None => None,
    };
    Ok(Restored {
        model,
        optimizer,
        step,
        records,
        partial,
    })
}

/// The record of the run as it starts (or resumes) with `done` epochs complete.
fn run_info(
    ctx: &RunContext,
    prepared: &Prepared,
    previous: Option<&RunInfo>,
    done: usize,
) -> Result<RunInfo> {
    let splits = &prepared.splits;
    Ok(RunInfo {
        feelings_version: env!("CARGO_PKG_VERSION").to_string(),
        candle_version: crate::CANDLE_VERSION.to_string(),
        settings: ctx.settings.clone(),
        data_sha256: prepared.data_sha256.clone(),
        skipped_empty: prepared.skipped_empty,
        labels: prepared.labels.clone(),
        subsets: SubsetSizes {
            train: splits.train.len(),
            validation: splits.validation.len(),
            test: splits.test.len(),
        },
        base_model_sha256: match previous {
            Some(p) => p.base_model_sha256.clone(),
            None => sha256_file(&ctx.files.weights)?,
        },
        base_model_config: prepared.config.clone(),
        device: format!("{:?}", ctx.options.device),
        threads: ctx.options.threads,
        status: RunStatus::Running,
        epochs_completed: done,
        best_epoch: previous.and_then(|p| p.best_epoch),
        test: None,
        wall_seconds: previous.map_or(0.0, |p| p.wall_seconds),
        started_unix: previous.map_or_else(now_unix, |p| p.started_unix),
    })
}

/// Trains the epochs still to do, each followed by validation, a checkpoint and `run.json`,
/// until the last, an early stop, this invocation's `--stop-after*` limit, or a stop asked
/// through `options.stop`; returns whether early stopping ended the run.
fn run_epochs(
    ctx: &RunContext,
    prepared: &Prepared,
    state: &mut Restored,
    info: &mut RunInfo,
    wall: &dyn Fn() -> f64,
) -> Result<bool> {
    let (settings, options) = (ctx.settings, ctx.options);
    let steps_per_epoch = prepared.train_set.ids.len().div_ceil(settings.batch_size);
    let schedule = Schedule::new(
        settings.optimizer.lr,
        steps_per_epoch * settings.epochs,
        settings.warmup_fraction,
    );
    let pad_id = prepared.encoder.pad_id();
    let mut stopped_early = early_stop_due(&state.records, settings);
    let mut steps = Steps {
        done: state.step,
        left: options.stop_after_steps,
    };
    for (ran_now, epoch) in (state.records.len() + 1..=settings.epochs).enumerate() {
        if stopped_early || options.stop_after.is_some_and(|n| ran_now >= n) {
            break;
        }
        let epoch_start = Instant::now();
        let start = state.partial.take();
        let earlier_seconds = start.as_ref().map_or(0.0, |p| p.seconds);
        let at = TrainEpoch {
            settings,
            schedule: &schedule,
            epoch,
            pad_id,
            options,
            run: ctx.dir.path(),
        };
        let windowed;
        let train_set = if settings.sentence_windows > 0.0 {
            let seed = derive_seed(settings.seed, epoch, 5);
            windowed = with_windows(prepared, settings.sentence_windows, seed, options.progress)?;
            &windowed
        } else {
            &prepared.train_set
        };
        let (model, optimizer) = (&state.model, &mut state.optimizer);
        let trained = train_epoch(model, optimizer, train_set, &at, start, &mut steps)?;
        let Some((train_loss, train_accuracy)) = trained else {
            info!(
                "stopped in epoch {epoch} at step {}; continue with --resume",
                steps.done
            );
            break;
        };
        let validation = evaluate_subset(
            model,
            &prepared.val_set,
            settings,
            pad_id,
            "validation",
            options,
        )?;
        let record = EpochRecord {
            epoch,
            global_step: steps.done,
            train_loss,
            train_accuracy,
            validation,
            seconds: earlier_seconds + epoch_start.elapsed().as_secs_f64(),
        };
        stopped_early = close_epoch(ctx, state, info, record, wall)?;
    }
    Ok(stopped_early)
}

/// Keeps a finished epoch: its checkpoint, the log line, the record, `run.json` with the best
/// epoch so far; returns whether early stopping is now due.
fn close_epoch(
    ctx: &RunContext,
    state: &mut Restored,
    info: &mut RunInfo,
    record: EpochRecord,
    wall: &dyn Fn() -> f64,
) -> Result<bool> {
    let settings = ctx.settings;
    save_checkpoint(ctx, state, &record, &info.labels)?;
    let [epoch, loss, acc, val_loss, val_acc, f1, auc, seconds] = record.cells();
    info!(
        "epoch {epoch}/{}: train loss {loss} acc {acc} | validation loss {val_loss} acc {val_acc} F1 {f1} AUC {auc} | {seconds} s",
        settings.epochs
    );
    info.epochs_completed = record.epoch;
    state.records.push(record);
    info.best_epoch = best_of(&state.records, settings.monitor).map(|r| r.epoch);
    info.wall_seconds = wall();
    write_json(&ctx.dir.path().join(RUN_FILE), info)?;
    Ok(early_stop_due(&state.records, settings))
}

/// Writes the epoch's checkpoint (weights, optimiser, tokenizer and config) and drops the
/// partial epoch it completes.
fn save_checkpoint(
    ctx: &RunContext,
    state: &Restored,
    record: &EpochRecord,
    labels: &Labels,
) -> Result<()> {
    let files = ctx.files;
    ctx.dir
        .write_checkpoint(record, ctx.settings.monitor, |tmp| {
            state.model.save(&tmp.join(WEIGHTS_FILE))?;
            state.optimizer.save(&tmp.join(OPTIMIZER_FILE))?;
            let tokenizer = tmp.join("tokenizer.json");
            std::fs::copy(&files.tokenizer, &tokenizer).map_err(|e| Error::io(&tokenizer, e))?;
            let base = std::fs::read(&files.config).map_err(|e| Error::io(&files.config, e))?;
            let config = checkpoint_config(&base, labels, state.model.has_pooler())
                .map_err(|e| Error::model(&files.config, e))?;
            let path = tmp.join("config.json");
            std::fs::write(&path, config).map_err(|e| Error::io(&path, e))
        })?;
    partial::clear(ctx.dir.path())
}

/// A complete run: the best checkpoint's weights scored on the test subset, and the status.
fn finish(
    ctx: &RunContext,
    prepared: &Prepared,
    state: &Restored,
    info: &mut RunInfo,
    stopped_early: bool,
) -> Result<()> {
    let (dir, settings, options) = (ctx.dir, ctx.settings, ctx.options);
    let records = &state.records;
    let best = info.best_epoch.unwrap_or(records.len());
    if best != records.len() {
        state
            .model
            .reload(&dir.checkpoint(best).join(WEIGHTS_FILE))?;
    }
    let test_reviews = &prepared.splits.test;
    if !test_reviews.is_empty() {
        let test_set = encode(&prepared.encoder, test_reviews, "test", options.progress)?;
        let pad_id = prepared.encoder.pad_id();
        let test = evaluate_subset(&state.model, &test_set, settings, pad_id, "test", options)?;
        info!(
            "test (epoch {best}): loss {:.4} accuracy {:.2} % precision {:.4} recall {:.4} F1 {:.4}",
            test.loss,
            100.0 * test.accuracy,
            test.precision,
            test.recall,
            test.f1
        );
        info.test = Some(test);
    }
    info.status = if stopped_early && records.len() < settings.epochs {
        RunStatus::EarlyStopped
    } else {
        RunStatus::Finished
    };
    Ok(())
}

/// Whether the monitored metric has not improved for `patience` epochs.
fn early_stop_due(records: &[EpochRecord], settings: &TrainSettings) -> bool {
    let (Some(patience), Some(best)) = (settings.patience, best_of(records, settings.monitor))
    else {
        return false;
    };
    records.len() - best.epoch >= patience
}

fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
