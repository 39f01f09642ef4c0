//! The training loop: data → tokens → epochs of AdamW steps → checkpoints and metrics.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use candle_core::{Device, D};
use feelings_core::ReviewEncoder;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use sha2::{Digest, Sha256};
use tracing::info;

use crate::batch::{bucketed_batches, make_batch};
use crate::data::{load_dataset, Example};
use crate::error::{Error, Result};
use crate::evaluate::positive_probabilities;
use crate::metrics::{compute, Metrics};
use crate::model::{Classifier, Head, ModelFiles};
use crate::optim::{AdamW, Schedule};
use crate::partial::{self, PartialEpoch};
use crate::progress::bar;
use crate::run_dir::{
    read_json, write_json, EpochRecord, RunDir, OPTIMIZER_FILE, RUN_FILE, WEIGHTS_FILE,
};
use crate::settings::{RunInfo, RunStatus, SubsetSizes, TrainSettings};
use crate::split::split;

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
    let prepared = prepare(&settings, &files, options)?;
    let dir = RunDir::create(out, overwrite)?;
    run(dir, settings, files, prepared, None, options)
}

/// Continues the run in `out` from its last complete epoch, with the settings of its run.json.
pub fn resume(out: &Path, options: &TrainOptions) -> Result<RunInfo> {
    let dir = RunDir::open(out)?;
    let info: RunInfo = read_json(&dir.path().join(RUN_FILE))?;
    let files = ModelFiles::locate(&info.settings.model)?;
    let prepared = prepare(&info.settings, &files, options)?;
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
    Ok(())
}

/// The absolute, `..`-free form of a path that exists (as given, if it does not).
fn absolute(path: &Path) -> Result<std::path::PathBuf> {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .map_err(|e| Error::io(path, e))
}

/// Encoded subsets ready for batching.
struct Encoded {
    ids: Vec<Vec<u32>>,
    labels: Vec<u32>,
}

fn encode(
    encoder: &ReviewEncoder,
    examples: &[Example],
    name: &str,
    progress: bool,
) -> Result<Encoded> {
    let pb = bar(examples.len(), name, "reviews tokenised", progress);
    let mut ids = Vec::with_capacity(examples.len());
    for chunk in examples.chunks(512) {
        let texts: Vec<&str> = chunk.iter().map(|e| e.text.as_str()).collect();
        ids.extend(encoder.encode_batch(&texts)?.into_iter().map(|e| e.ids));
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    Ok(Encoded {
        ids,
        labels: examples.iter().map(|e| e.label).collect(),
    })
}

/// A seed for one purpose in one epoch, derived from the run's seed (splitmix64), so a resumed
/// run draws exactly what an uninterrupted one would have.
fn derive_seed(seed: u64, epoch: usize, stream: u64) -> u64 {
    let mut z = seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ stream.rotate_left(32);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
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

/// Everything read and checked before the run folder is touched.
struct Prepared {
    config: crate::bert::BertConfig,
    encoder: ReviewEncoder,
    labels: feelings_core::Labels,
    skipped_empty: usize,
    data_sha256: String,
    splits: crate::split::Splits,
    train_set: Encoded,
    val_set: Encoded,
}

fn prepare(
    settings: &TrainSettings,
    files: &ModelFiles,
    options: &TrainOptions,
) -> Result<Prepared> {
    let config = files.read_config()?;
    if settings.seq_len > config.max_position_embeddings {
        return Err(Error::Setting(format!(
            "--seq-len {} exceeds the model's max_position_embeddings {} ({})",
            settings.seq_len,
            config.max_position_embeddings,
            files.config.display()
        )));
    }
    let tokenizer_json =
        std::fs::read(&files.tokenizer).map_err(|e| Error::io(&files.tokenizer, e))?;
    let encoder = ReviewEncoder::from_bytes(&tokenizer_json, settings.seq_len, settings.truncation)
        .map_err(|e| Error::model(&files.tokenizer, e.to_string()))?;
    if encoder.vocab_size() > config.vocab_size {
        return Err(Error::model(
            &files.tokenizer,
            format!(
                "the tokenizer has {} tokens but the model's embedding has {} rows: they do not belong together",
                encoder.vocab_size(),
                config.vocab_size
            ),
        ));
    }
    let dataset = load_dataset(&settings.data, &settings.columns)?;
    if dataset.skipped_empty > 0 {
        info!(
            "skipped {} rows with an empty text (--strict refuses them)",
            dataset.skipped_empty
        );
    }
    let data_sha256 = dataset.content_hash();
    let labels = dataset.labels.clone();
    let skipped_empty = dataset.skipped_empty;
    let splits = split(dataset.examples, &settings.split, settings.seed)?;
    for line in splits.summary() {
        info!("{line}");
    }
    let train_set = encode(&encoder, &splits.train, "train", options.progress)?;
    let val_set = encode(&encoder, &splits.validation, "validation", options.progress)?;
    Ok(Prepared {
        config,
        encoder,
        labels,
        skipped_empty,
        data_sha256,
        splits,
        train_set,
        val_set,
    })
}

fn run(
    dir: RunDir,
    settings: TrainSettings,
    files: ModelFiles,
    prepared: Prepared,
    previous: Option<RunInfo>,
    options: &TrainOptions,
) -> Result<RunInfo> {
    let started = Instant::now();
    let device = &options.device;
    let Prepared {
        config,
        encoder,
        labels,
        skipped_empty,
        data_sha256,
        splits,
        train_set,
        val_set,
    } = prepared;
    let pad_id = encoder.pad_id();

    let records = dir.records()?;
    let resumed_epochs = if previous.is_some() { records.len() } else { 0 };
    let (model, global_step) = if resumed_epochs == 0 {
        let model = Classifier::load(
            &files,
            device,
            Head::Fresh {
                seed: derive_seed(settings.seed, 0, 1),
            },
        )?;
        (model, 0)
    } else {
        let last = dir.checkpoint(resumed_epochs);
        let checkpoint_files = ModelFiles::locate(&last)?;
        let model = Classifier::load(&checkpoint_files, device, Head::FromFile)?;
        info!(
            "resuming after epoch {resumed_epochs} from {}",
            last.display()
        );
        (model, records[resumed_epochs - 1].global_step)
    };
    let mut optimizer = AdamW::new(model.varmap(), settings.optimizer)?;
    if resumed_epochs > 0 {
        let state = dir.checkpoint(resumed_epochs).join(OPTIMIZER_FILE);
        optimizer.load(&state, global_step)?;
    }
    // A partial epoch saved after the last complete one carries on from where it stopped.
    let mut partial_start = match previous {
        Some(_) => partial::load(dir.path())?.filter(|(p, _)| p.epoch == resumed_epochs + 1),
        None => None,
    };
    let mut global_step = global_step;
    if let Some((progress, folder)) = &partial_start {
        let weights = folder.join(WEIGHTS_FILE);
        model
            .varmap()
            .clone()
            .load(&weights)
            .map_err(|e| Error::run(&weights, e.to_string()))?;
        optimizer.load(&folder.join(OPTIMIZER_FILE), progress.global_step)?;
        global_step = progress.global_step;
        info!(
            "resuming epoch {} after {} batches from {}",
            progress.epoch,
            progress.batches_done,
            folder.display()
        );
    }

    let mut info = RunInfo {
        feelings_version: env!("CARGO_PKG_VERSION").to_string(),
        candle_version: crate::CANDLE_VERSION.to_string(),
        settings: settings.clone(),
        data_sha256,
        skipped_empty,
        labels,
        subsets: SubsetSizes {
            train: splits.train.len(),
            validation: splits.validation.len(),
            test: splits.test.len(),
        },
        base_model_sha256: match &previous {
            Some(p) => p.base_model_sha256.clone(),
            None => sha256_file(&files.weights)?,
        },
        base_model_config: config,
        device: format!("{device:?}"),
        threads: options.threads,
        status: RunStatus::Running,
        epochs_completed: resumed_epochs,
        best_epoch: previous.as_ref().and_then(|p| p.best_epoch),
        test: None,
        wall_seconds: previous.as_ref().map_or(0.0, |p| p.wall_seconds),
        started_unix: previous.as_ref().map_or_else(now_unix, |p| p.started_unix),
    };
    let wall_before = info.wall_seconds;
    write_json(&dir.path().join(RUN_FILE), &info)?;

    let steps_per_epoch = train_set.ids.len().div_ceil(settings.batch_size);
    let schedule = Schedule::new(
        settings.optimizer.lr,
        steps_per_epoch * settings.epochs,
        settings.warmup_fraction,
    );
    let mut records = records[..resumed_epochs].to_vec();
    let mut stopped_early = early_stop_due(&records, &settings);
    let mut step = global_step;
    let mut steps_left = options.stop_after_steps;
    for (ran_now, epoch) in (resumed_epochs + 1..=settings.epochs).enumerate() {
        if stopped_early || options.stop_after.is_some_and(|n| ran_now >= n) {
            break;
        }
        let epoch_start = Instant::now();
        let start = partial_start.take().map(|(p, _)| p);
        let earlier_seconds = start.as_ref().map_or(0.0, |p| p.seconds);
        let trained = train_epoch(
            &model,
            &mut optimizer,
            &train_set,
            &TrainEpoch {
                settings: &settings,
                schedule: &schedule,
                epoch,
                pad_id,
                options,
                run: dir.path(),
            },
            start,
            &mut step,
            &mut steps_left,
        )?;
        let Some((train_loss, train_accuracy)) = trained else {
            info!("stopped in epoch {epoch} at step {step}; continue with --resume");
            break;
        };
        let validation = evaluate(&model, &val_set, &settings, pad_id, "validation", options)?;
        let record = EpochRecord {
            epoch,
            global_step: step,
            train_loss,
            train_accuracy,
            validation,
            seconds: earlier_seconds + epoch_start.elapsed().as_secs_f64(),
        };
        dir.write_checkpoint(&record, settings.monitor, |tmp| {
            model.save(&tmp.join(WEIGHTS_FILE))?;
            optimizer.save(&tmp.join(OPTIMIZER_FILE))?;
            for (from, name) in [
                (&files.tokenizer, "tokenizer.json"),
                (&files.config, "config.json"),
            ] {
                std::fs::copy(from, tmp.join(name)).map_err(|e| Error::io(tmp.join(name), e))?;
            }
            Ok(())
        })?;
        partial::clear(dir.path())?;
        info!(
            "epoch {epoch}/{}: train loss {:.4} acc {:.2} % | validation loss {:.4} acc {:.2} % F1 {:.4} AUC {} | {:.0} s",
            settings.epochs,
            record.train_loss,
            100.0 * record.train_accuracy,
            record.validation.loss,
            100.0 * record.validation.accuracy,
            record.validation.f1,
            record.validation.auc_text(),
            record.seconds
        );
        records.push(record);
        stopped_early = early_stop_due(&records, &settings);
        info.epochs_completed = epoch;
        info.best_epoch = crate::run_dir::best_of(&records, settings.monitor).map(|r| r.epoch);
        info.wall_seconds = wall_before + started.elapsed().as_secs_f64();
        write_json(&dir.path().join(RUN_FILE), &info)?;
    }

    let finished = stopped_early || records.len() == settings.epochs;
    if finished {
        let best = info.best_epoch.unwrap_or(records.len());
        if best != records.len() {
            model
                .varmap()
                .clone()
                .load(dir.checkpoint(best).join(WEIGHTS_FILE))
                .map_err(|e| Error::run(dir.checkpoint(best), e.to_string()))?;
        }
        if !splits.test.is_empty() {
            let test_set = encode(&encoder, &splits.test, "test", options.progress)?;
            let test = evaluate(&model, &test_set, &settings, pad_id, "test", options)?;
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
    }
    info.wall_seconds = wall_before + started.elapsed().as_secs_f64();
    write_json(&dir.path().join(RUN_FILE), &info)?;
    Ok(info)
}

/// Whether the monitored metric has not improved for `patience` epochs.
fn early_stop_due(records: &[EpochRecord], settings: &TrainSettings) -> bool {
    let (Some(patience), Some(best)) = (
        settings.patience,
        crate::run_dir::best_of(records, settings.monitor),
    ) else {
        return false;
    };
    records.len() - best.epoch >= patience
}

/// What one epoch of training reads.
struct TrainEpoch<'a> {
    settings: &'a TrainSettings,
    schedule: &'a Schedule,
    epoch: usize,
    pad_id: u32,
    options: &'a TrainOptions,
    run: &'a Path,
}

/// Trains one epoch from `start` (a saved partial epoch) or its beginning; returns the
/// training loss and accuracy, or `None` when `steps_left` ran out first (the epoch so far is
/// saved).
fn train_epoch(
    model: &Classifier,
    optimizer: &mut AdamW,
    data: &Encoded,
    at: &TrainEpoch,
    start: Option<PartialEpoch>,
    step: &mut usize,
    steps_left: &mut Option<usize>,
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
        global_step: *step,
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
        if *steps_left == Some(0) {
            save_partial(model, optimizer, at.run, &progress)?;
            pb.finish_and_clear();
            return Ok(None);
        }
        let batch = make_batch(&data.ids, &data.labels, indices, at.pad_id, &options.device)?;
        // Drop-out masks drawn per batch, so a run resumed mid-epoch draws what it would have.
        let mut rng =
            SmallRng::seed_from_u64(derive_seed(derive_seed(settings.seed, epoch, 3), i, 4));
        let logits = model.forward(&batch.input_ids, &batch.attention_mask, Some(&mut rng))?;
        let loss = candle_nn::loss::cross_entropy(&logits, &batch.labels)?;
        let grads = loss.backward()?;
        optimizer.step(&grads, at.schedule.lr(*step))?;
        *step += 1;
        *steps_left = steps_left.map(|n| n - 1);
        let hits = logits
            .argmax(D::Minus1)?
            .eq(&batch.labels)?
            .to_dtype(candle_core::DType::F32)?
            .sum_all()?;
        progress.loss_sum += f64::from(loss.to_scalar::<f32>()?) * indices.len() as f64;
        progress.correct += hits.to_scalar::<f32>()? as usize;
        progress.seen += indices.len();
        progress.batches_done = i + 1;
        progress.global_step = *step;
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

fn save_partial(
    model: &Classifier,
    optimizer: &AdamW,
    run: &Path,
    progress: &PartialEpoch,
) -> Result<()> {
    partial::save(run, progress, |tmp| {
        model.save(&tmp.join(WEIGHTS_FILE))?;
        optimizer.save(&tmp.join(OPTIMIZER_FILE))
    })
}

fn evaluate(
    model: &Classifier,
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
