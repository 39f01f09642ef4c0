//! `feelings train`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, Command};
use feelings_core::{Bundle, Truncation};
use feelings_trainer::device;
use feelings_trainer::train::lineage::{continue_from, continue_from_bundle};
use feelings_trainer::train::optim::AdamWConfig;
use feelings_trainer::train::run_dir::{Monitor, RunDir, EPOCH_COLUMNS};
use feelings_trainer::train::settings::{RunInfo, RunStatus, TrainSettings};
use feelings_trainer::train::{resume, train, TrainOptions};

use crate::values;
use crate::{set_threads, DataArgs, HardwareArgs, SplitArgs};

#[derive(Args)]
pub struct TrainArgs {
    /// Labelled reviews: CSV (plain or .gz), JSON Lines (.jsonl), or an aclImdb/ folder. With
    /// --from RUN_DIR it may be left out: the parent run's data, columns, split, sequence
    /// length, truncation and seed are used (so its test reviews stay unseen). With --from
    /// BUNDLE it is needed, with the split the bundle was trained with.
    #[arg(long, required_unless_present_any = ["resume", "from"])]
    data: Option<PathBuf>,
    #[command(flatten)]
    columns: DataArgs,
    /// Base model folder in Hugging Face layout: config.json, model.safetensors, tokenizer.json
    /// (or a bundle: its encoder, with a new head).
    #[arg(long, required_unless_present_any = ["resume", "from"])]
    model: Option<PathBuf>,
    /// Start a new run from the weights of another run: RUN_DIR (its best checkpoint) or
    /// RUN_DIR/checkpoint-epoch-N, or of a bundle (`feelings export`'s folder, such as
    /// models/imdb-minilm, whose run is gone: its stored weights in f32), head included (see
    /// --new-head), with this run's own epochs, learning rate and batch size; run.json records
    /// the parent.
    #[arg(long, value_name = "RUN_DIR[/checkpoint-epoch-N]|BUNDLE", conflicts_with_all = ["resume", "model"])]
    from: Option<PathBuf>,
    /// With --from: keep only the encoder (and pooler), and train a new classifier.
    #[arg(long, requires = "from")]
    new_head: bool,
    /// Output folder [default: runs/<model folder name>].
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    split: SplitArgs,
    /// Train on at most this many reviews (a random sample), for quick runs.
    #[arg(long, value_parser = values::positive_count)]
    max_train: Option<usize>,
    /// Validate and test on at most this many reviews each.
    #[arg(long, value_parser = values::positive_count)]
    max_eval: Option<usize>,
    /// Tokens per review fed to the model, [CLS] and [SEP] included (at most the model's
    /// max_position_embeddings) [default: 256; with --from, the parent's].
    #[arg(long, value_parser = values::positive_count)]
    seq_len: Option<usize>,
    /// What to keep of a longer review: `tail` keeps the beginning, `head+tail` the first
    /// quarter and the last three quarters of the budget [default: tail; with --from, the
    /// parent's].
    #[arg(long = "truncate")]
    truncation: Option<Truncation>,
    /// Reviews per training step.
    #[arg(long, default_value_t = 16, value_parser = values::positive_count)]
    batch_size: usize,
    /// Passes over the training data, 1 to 10000.
    #[arg(long, default_value_t = 2, value_parser = values::epochs)]
    epochs: usize,
    /// Peak learning rate of AdamW (above 0).
    #[arg(long, default_value_t = 2e-5, value_parser = values::positive_real)]
    lr: f64,
    /// Decoupled weight decay, 0 or more (biases and layer norms are exempt).
    #[arg(long, default_value_t = 0.01, value_parser = values::non_negative_real)]
    weight_decay: f64,
    /// Share of all steps spent warming the learning rate up (then linear decay to 0), from 0
    /// up to 1.
    #[arg(long, default_value_t = 0.1, value_parser = values::fraction)]
    warmup: f64,
    /// Clip gradients to this global L2 norm (above 0).
    #[arg(long, default_value_t = 1.0, value_parser = values::positive_real)]
    max_grad_norm: f64,
    /// Stop when the validation metric has not improved for this many epochs (1 or more).
    #[arg(long, default_value_t = 1, value_parser = values::positive_count,
          conflicts_with = "no_early_stopping")]
    patience: usize,
    /// Never stop early.
    #[arg(long)]
    no_early_stopping: bool,
    /// Keep the word embeddings as loaded (no gradient, no AdamW moments): for a base model
    /// with a large vocabulary (multilingual-e5-small: 250,037 rows), whose dense embedding
    /// update dominates a step.
    #[arg(long)]
    freeze_embeddings: bool,
    /// Share of the training reviews (0 to 1) shown in each epoch as a window of 1 to 5
    /// consecutive sentences with the review's label instead of whole (drawn anew each epoch
    /// from --seed), so the model also learns to judge short texts; 0 shows every review whole.
    #[arg(long, default_value_t = 0.0, value_name = "SHARE", value_parser = values::probability)]
    sentence_windows: f64,
    /// Validation metric that marks the best checkpoint and drives early stopping.
    #[arg(long, value_enum, default_value = "loss")]
    monitor: MonitorArg,
    /// Seed of the split, shuffles, initialisation and drop-out [default: 42; with --from, the
    /// parent's].
    #[arg(long)]
    seed: Option<u64>,
    /// Replace a previous run in the output folder.
    #[arg(long)]
    overwrite: bool,
    /// Continue the run in this folder from its last complete epoch (or saved partial epoch)
    /// with the settings of its run.json. Only options that say how, not what, to train may
    /// come with it: --stop-after, --stop-after-steps, --save-minutes, --device and
    /// --threads; any other option given is refused.
    #[arg(long, value_name = "RUN_DIR")]
    resume: Option<PathBuf>,
    /// Stop after this many epochs in this invocation; continue later with --resume.
    #[arg(long, value_parser = values::positive_count)]
    stop_after: Option<usize>,
    /// Stop after this many optimiser steps in this invocation, saving the epoch in progress;
    /// continue later with --resume.
    #[arg(long, value_parser = values::positive_count)]
    stop_after_steps: Option<usize>,
    /// Save the epoch in progress every this many minutes (at most 10080, a week), so a kill
    /// loses at most that much work; 0 saves only complete epochs. Ctrl-C and SIGTERM lose
    /// nothing: training stops before its next step with the epoch in progress saved.
    #[arg(long, default_value_t = 10.0, value_parser = values::save_minutes)]
    save_minutes: f64,
    #[command(flatten)]
    hardware: HardwareArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum MonitorArg {
    Loss,
    Accuracy,
}

/// The arguments of `feelings train` that may come with `--resume`: they say how, not what, to
/// train (the fields of [`TrainOptions`]), so the resumed run stays the run its run.json
/// describes.
const ALLOWED_WITH_RESUME: [&str; 6] = [
    "resume",
    "stop_after",
    "stop_after_steps",
    "save_minutes",
    "device",
    "threads",
];

/// The arguments of `feelings train` that say which reviews it trains on and how they are
/// cut: with `--from` and no `--data`, the parent run's.
const DATA_SETTINGS: [&str; 12] = [
    "text_column",
    "label_column",
    "positive",
    "strict",
    "split_column",
    "val_fraction",
    "test_fraction",
    "max_train",
    "max_eval",
    "seq_len",
    "truncation",
    "seed",
];

/// Refuses options that cannot apply, naming them all: with `--resume`, every option given on
/// the command line (not merely defaulted) that would change the run; with `--from` a run and
/// no `--data`, the options that shape the data (the parent run's are used); `--from` a bundle
/// without `--data`.
pub fn refuse_settings_on_resume(
    command: &Command,
    matches: &ArgMatches,
) -> std::result::Result<(), String> {
    let given = |keep: &dyn Fn(&str) -> bool| -> Vec<String> {
        command
            .get_arguments()
            .filter(|arg| keep(arg.get_id().as_str()))
            .filter(|arg| {
                matches!(matches.value_source(arg.get_id().as_str()),
                         Some(source) if source != ValueSource::DefaultValue)
            })
            .map(|arg| format!("--{}", arg.get_long().unwrap_or(arg.get_id().as_str())))
            .collect()
    };
    if let Some(dir) = matches.get_one::<PathBuf>("resume") {
        let why = format!("--resume continues {} with its own settings", dir.display());
        return refuse(&why, &given(&|id| !ALLOWED_WITH_RESUME.contains(&id)));
    }
    let from = matches.get_one::<PathBuf>("from");
    if from.is_some_and(|f| Bundle::is_in(f)) && !matches.contains_id("data") {
        return Err(
            "--from a bundle needs --data: a bundle keeps no path to the reviews it was \
                    trained on (give them, with the split it was trained with, so that its test \
                    reviews stay unseen)"
                .into(),
        );
    }
    if from.is_some() && matches.get_one::<PathBuf>("data").is_none() {
        let why = "--from without --data trains on the parent run's data, split and tokens \
                   (give --data for another data set)";
        return refuse(why, &given(&|id| DATA_SETTINGS.contains(&id)));
    }
    Ok(())
}

fn refuse(why: &str, given: &[String]) -> std::result::Result<(), String> {
    match given {
        [] => Ok(()),
        [one] => Err(format!("{why}; {one} was given: drop it")),
        many => Err(format!("{why}; {} were given: drop them", many.join(", "))),
    }
}

/// `feelings train`: a new run, or the resumption of one.
pub fn run(args: TrainArgs) -> Result<()> {
    let threads = set_threads(args.hardware.threads);
    let options = TrainOptions {
        device: device::parse_device(&args.hardware.device)?,
        threads,
        progress: std::io::stderr().is_terminal(),
        stop_after: args.stop_after,
        stop_after_steps: args.stop_after_steps,
        // At most a week (checked when parsed): far from Duration's limit.
        save_every: (args.save_minutes > 0.0)
            .then(|| Duration::from_secs_f64(60.0 * args.save_minutes)),
        stop: stop_on_signals()?,
    };
    let (info, out) = if let Some(dir) = &args.resume {
        (resume(dir, &options)?, dir.clone())
    } else {
        let (mut settings, default_out) = match &args.from {
            Some(from) => continued_settings(&args, from)?,
            None => {
                let model = args.model.clone().context("--model is required")?;
                let data = args.data.clone().context("--data is required")?;
                let out =
                    PathBuf::from("runs").join(model.file_name().unwrap_or(model.as_os_str()));
                let mut settings = TrainSettings::new(data, model);
                shape_data(&mut settings, &args);
                (settings, out)
            }
        };
        let out = args.out.clone().unwrap_or(default_out);
        settings.batch_size = args.batch_size;
        settings.epochs = args.epochs;
        settings.optimizer = AdamWConfig {
            lr: args.lr,
            weight_decay: args.weight_decay,
            max_grad_norm: args.max_grad_norm,
            ..AdamWConfig::default()
        };
        settings.warmup_fraction = args.warmup;
        settings.freeze_embeddings = args.freeze_embeddings;
        settings.sentence_windows = args.sentence_windows;
        settings.patience = (!args.no_early_stopping).then_some(args.patience);
        settings.monitor = match args.monitor {
            MonitorArg::Loss => Monitor::Loss,
            MonitorArg::Accuracy => Monitor::Accuracy,
        };
        (train(settings, &out, args.overwrite, &options)?, out)
    };
    print_summary(&info, &out)?;
    if options.stop.load(Ordering::Relaxed) && info.status == RunStatus::Running {
        bail!(
            "stopped by a signal; the run is saved: continue with `feelings train --resume {:?}`",
            out.display().to_string()
        );
    }
    Ok(())
}

/// A flag that Ctrl-C (SIGINT) or SIGTERM sets, so that training stops before its next step
/// with the epoch in progress saved. A second signal, while the first is still pending (say
/// during a long evaluation), ends the process at once with status 130.
fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&stop))
            .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&stop)))
            .context("cannot listen for Ctrl-C")?;
    }
    Ok(stop)
}

/// The data settings given on the command line: the columns and the split, and the sequence
/// length, truncation and seed where given (else `settings` keeps its own: the tutorial's for
/// a new run, the parent's for a continued one).
fn shape_data(settings: &mut TrainSettings, args: &TrainArgs) {
    settings.columns = args.columns.options(args.split.split_column.clone());
    settings.split = args.split.options(args.max_train, args.max_eval);
    settings.seq_len = args.seq_len.unwrap_or(settings.seq_len);
    settings.truncation = args.truncation.unwrap_or(settings.truncation);
    settings.seed = args.seed.unwrap_or(settings.seed);
}

/// The settings of a run continued `--from` a checkpoint or a bundle and its default folder:
/// the parent's data settings, unless `--data` is given (which a bundle needs).
fn continued_settings(args: &TrainArgs, from: &Path) -> Result<(TrainSettings, PathBuf)> {
    if Bundle::is_in(from) {
        // Refused when parsed without --data (see refuse_settings_on_resume).
        let data = args.data.clone().context("--from a bundle needs --data")?;
        let (mut settings, out) = continue_from_bundle(from, args.new_head, data)?;
        shape_data(&mut settings, args);
        return Ok((settings, out));
    }
    let (mut settings, out) = continue_from(from, args.new_head)?;
    if let Some(data) = &args.data {
        settings.data = data.clone();
        shape_data(&mut settings, args);
    }
    Ok((settings, out))
}

fn print_summary(info: &RunInfo, out: &Path) -> Result<()> {
    let dir = RunDir::open(out)?;
    println!(" {}", table_row(&EPOCH_COLUMNS.map(String::from)));
    for r in dir.records()? {
        let mark = if Some(r.epoch) == info.best_epoch {
            "*"
        } else {
            " "
        };
        println!("{mark}{}", table_row(&r.cells()));
    }
    if let Some(test) = &info.test {
        println!(
            "test ({} reviews, best epoch {}): accuracy {:.2}%  precision {:.4}  recall {:.4}  F1 {:.4}  AUC {}",
            test.count,
            info.best_epoch.unwrap_or_default(),
            100.0 * test.accuracy,
            test.precision,
            test.recall,
            test.f1,
            test.auc_text()
        );
    }
    println!("status: {:?}; run folder: {}", info.status, out.display());
    Ok(())
}

/// One row of the epoch table: the epoch left-aligned, every other column right-aligned under
/// its header.
fn table_row(cells: &[String; 8]) -> String {
    let widths = EPOCH_COLUMNS.map(|c| c.len().max(8));
    let mut row = format!("{:<5}", cells[0]);
    for (cell, width) in cells.iter().zip(widths).skip(1) {
        row.push_str(&format!(" {cell:>width$}"));
    }
    row
}
