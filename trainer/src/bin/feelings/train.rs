//! `feelings train`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use feelings_core::Truncation;
use feelings_trainer::device;
use feelings_trainer::optim::AdamWConfig;
use feelings_trainer::run_dir::{Monitor, RunDir};
use feelings_trainer::settings::{RunInfo, TrainSettings};
use feelings_trainer::train::{resume, train, TrainOptions};

use crate::{set_threads, DataArgs, HardwareArgs, SplitArgs};

#[derive(Args)]
pub struct TrainArgs {
    /// Labelled reviews: CSV (plain or .gz), JSON Lines (.jsonl), or an aclImdb/ folder.
    #[arg(long, required_unless_present = "resume")]
    data: Option<PathBuf>,
    #[command(flatten)]
    columns: DataArgs,
    /// Base model folder in Hugging Face layout: config.json, model.safetensors, tokenizer.json.
    #[arg(long, required_unless_present = "resume")]
    model: Option<PathBuf>,
    /// Output folder [default: runs/<model folder name>].
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    split: SplitArgs,
    /// Train on at most this many reviews (a random sample), for quick runs.
    #[arg(long)]
    max_train: Option<usize>,
    /// Validate and test on at most this many reviews each.
    #[arg(long)]
    max_eval: Option<usize>,
    /// Tokens per review fed to the model, [CLS] and [SEP] included.
    #[arg(long, default_value_t = 256)]
    seq_len: usize,
    /// What to keep of a longer review: `tail` keeps the beginning, `head+tail` the first
    /// quarter and the last three quarters of the budget.
    #[arg(long = "truncate", default_value = "tail")]
    truncation: Truncation,
    /// Reviews per training step.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Passes over the training data.
    #[arg(long, default_value_t = 2)]
    epochs: usize,
    /// Peak learning rate of AdamW.
    #[arg(long, default_value_t = 2e-5)]
    lr: f64,
    /// Decoupled weight decay (biases and layer norms are exempt).
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f64,
    /// Share of all steps spent warming the learning rate up (then linear decay to 0).
    #[arg(long, default_value_t = 0.1)]
    warmup: f64,
    /// Clip gradients to this global L2 norm.
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    /// Stop when the validation metric has not improved for this many epochs.
    #[arg(long, default_value_t = 1)]
    patience: usize,
    /// Never stop early.
    #[arg(long)]
    no_early_stopping: bool,
    /// Validation metric that marks the best checkpoint and drives early stopping.
    #[arg(long, value_enum, default_value = "loss")]
    monitor: MonitorArg,
    /// Seed of the split, shuffles, initialisation and drop-out.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Replace a previous run in the output folder.
    #[arg(long, conflicts_with = "resume")]
    overwrite: bool,
    /// Continue the run in this folder from its last complete epoch, with its own settings.
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = [
        "data", "model", "out", "split_column", "max_train", "max_eval", "seq_len", "truncation",
        "batch_size", "epochs", "lr", "weight_decay", "warmup", "max_grad_norm", "patience",
        "no_early_stopping", "seed", "strict"])]
    resume: Option<PathBuf>,
    /// Stop after this many epochs in this invocation; continue later with --resume.
    #[arg(long)]
    stop_after: Option<usize>,
    /// Stop after this many optimiser steps in this invocation, saving the epoch in progress;
    /// continue later with --resume.
    #[arg(long)]
    stop_after_steps: Option<usize>,
    /// Save the epoch in progress every this many minutes, so a kill (or Ctrl-C) loses at most
    /// that much work; 0 saves only complete epochs.
    #[arg(long, default_value_t = 10.0, value_parser = minutes)]
    save_minutes: f64,
    #[command(flatten)]
    hardware: HardwareArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum MonitorArg {
    Loss,
    Accuracy,
}

/// Where to compute.
pub fn run(args: TrainArgs) -> Result<()> {
    let threads = set_threads(args.hardware.threads);
    let options = TrainOptions {
        device: device::parse_device(&args.hardware.device)?,
        threads,
        progress: std::io::stderr().is_terminal(),
        stop_after: args.stop_after,
        stop_after_steps: args.stop_after_steps,
        save_every: (args.save_minutes > 0.0)
            .then(|| Duration::from_secs_f64(60.0 * args.save_minutes)),
    };
    let (info, out) = if let Some(dir) = &args.resume {
        (resume(dir, &options)?, dir.clone())
    } else {
        let model = args.model.clone().context("--model is required")?;
        let data = args.data.clone().context("--data is required")?;
        let out = args.out.clone().unwrap_or_else(|| {
            PathBuf::from("runs").join(model.file_name().unwrap_or(model.as_os_str()))
        });
        let mut settings = TrainSettings::new(data, model);
        settings.columns = args.columns.options(args.split.split_column.clone());
        settings.split = args.split.options(args.max_train, args.max_eval);
        settings.seq_len = args.seq_len;
        settings.truncation = args.truncation;
        settings.batch_size = args.batch_size;
        settings.epochs = args.epochs;
        settings.optimizer = AdamWConfig {
            lr: args.lr,
            weight_decay: args.weight_decay,
            max_grad_norm: args.max_grad_norm,
            ..AdamWConfig::default()
        };
        settings.warmup_fraction = args.warmup;
        settings.patience = (!args.no_early_stopping).then_some(args.patience.max(1));
        settings.monitor = match args.monitor {
            MonitorArg::Loss => Monitor::Loss,
            MonitorArg::Accuracy => Monitor::Accuracy,
        };
        settings.seed = args.seed;
        (train(settings, &out, args.overwrite, &options)?, out)
    };
    print_summary(&info, &out)
}

/// A non-negative number of minutes.
fn minutes(text: &str) -> std::result::Result<f64, String> {
    match text.parse::<f64>() {
        Ok(m) if m.is_finite() && m >= 0.0 => Ok(m),
        _ => Err(format!("'{text}' is not a number of minutes (0 or more)")),
    }
}

fn print_summary(info: &RunInfo, out: &Path) -> Result<()> {
    let dir = RunDir::open(out)?;
    println!("epoch  train loss  train acc  val loss  val acc  val F1   val AUC   seconds");
    for r in dir.records()? {
        let mark = if Some(r.epoch) == info.best_epoch {
            "*"
        } else {
            " "
        };
        println!(
            "{mark}{:<5} {:>10.4} {:>9.2}% {:>9.4} {:>7.2}% {:>7.4} {:>9} {:>8.0}",
            r.epoch,
            r.train_loss,
            100.0 * r.train_accuracy,
            r.validation.loss,
            100.0 * r.validation.accuracy,
            r.validation.f1,
            r.validation.auc_text(),
            r.seconds
        );
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
