//! `feelings`: fine-tune BERT on labelled movie reviews, and inspect the data.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use feelings_core::{ReviewEncoder, Truncation};
use feelings_trainer::data::{load_dataset, DataOptions};
use feelings_trainer::model::ModelFiles;
use feelings_trainer::optim::AdamWConfig;
use feelings_trainer::run_dir::{Monitor, RunDir};
use feelings_trainer::settings::{RunInfo, TrainSettings};
use feelings_trainer::split::SplitOptions;
use feelings_trainer::train::{resume, train, TrainOptions};
use feelings_trainer::{bench, device, progress, tokens};

/// Movie review feelings: fine-tune BERT to tell positive from negative reviews.
#[derive(Parser)]
#[command(name = "feelings", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fine-tune a BERT checkpoint; writes a checkpoint per epoch, the best one marked
    /// (best.json), metrics.jsonl and run.json into the output folder.
    Train(Box<TrainArgs>),
    /// Print the token-length distribution of a dataset and how much 128/256/512 tokens cut.
    Tokens(TokensArgs),
    /// Time fine-tuning steps (forward, backward, AdamW) on real reviews of exactly --seq tokens.
    Bench(BenchArgs),
}

/// Which columns of the labelled reviews hold what.
#[derive(Args)]
struct DataArgs {
    /// Column (or JSON field) holding the review text.
    #[arg(long, default_value = "review")]
    text_column: String,
    /// Column (or JSON field) holding the label.
    #[arg(long, default_value = "sentiment")]
    label_column: String,
    /// Label value of the positive class; the other value found is the negative class.
    #[arg(long, default_value = "positive")]
    positive: String,
    /// Refuse rows with an empty text instead of skipping them.
    #[arg(long)]
    strict: bool,
}

impl DataArgs {
    fn options(&self, split_column: Option<String>) -> DataOptions {
        DataOptions {
            text_column: self.text_column.clone(),
            label_column: self.label_column.clone(),
            positive: self.positive.clone(),
            split_column,
            strict: self.strict,
        }
    }
}

#[derive(Args)]
struct TrainArgs {
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
    /// Use this column's train/validation/test values instead of a random 80/10/10 split.
    #[arg(long)]
    split_column: Option<String>,
    /// Share of the data (or of `train`, with --split-column) held out for validation.
    #[arg(long, default_value_t = 0.1)]
    val_fraction: f64,
    /// Share of the data held out for the final test (random split only).
    #[arg(long, default_value_t = 0.1)]
    test_fraction: f64,
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
    #[command(flatten)]
    hardware: HardwareArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum MonitorArg {
    Loss,
    Accuracy,
}

/// Where to compute.
#[derive(Args)]
struct HardwareArgs {
    /// `cpu`, or `cuda:N` in a build with the `cuda` feature.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// CPU threads [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Args)]
struct TokensArgs {
    /// Labelled reviews: CSV (plain or .gz), JSON Lines (.jsonl), or an aclImdb/ folder.
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    columns: DataArgs,
    /// Model folder whose tokenizer.json to use.
    #[arg(long)]
    model: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct BenchArgs {
    /// Labelled reviews to time on (their `train` split when a `split` column exists).
    #[arg(long)]
    data: PathBuf,
    /// Base model folder.
    #[arg(long)]
    model: PathBuf,
    /// Sequence lengths to time, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "128,256")]
    seq: Vec<usize>,
    /// Reviews per step.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Timed steps per sequence length (the median is reported).
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Print one JSON object per measurement.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    hardware: HardwareArgs,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match cli.command {
        Command::Train(args) => run_train(*args),
        Command::Tokens(args) => run_tokens(args),
        Command::Bench(args) => run_bench(args),
    }
}

/// Sets the CPU thread count for candle's kernels before any of them starts.
fn set_threads(threads: Option<usize>) -> usize {
    let n = threads
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // Safe: called first thing, before any other thread exists.
    std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    n
}

fn run_train(args: TrainArgs) -> Result<()> {
    let threads = set_threads(args.hardware.threads);
    let options = TrainOptions {
        device: device::parse_device(&args.hardware.device)?,
        threads,
        progress: std::io::stderr().is_terminal(),
        stop_after: args.stop_after,
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
        settings.columns = args.columns.options(args.split_column.clone());
        settings.split = SplitOptions {
            val_fraction: args.val_fraction,
            test_fraction: args.test_fraction,
            use_split_column: args.split_column.is_some(),
            max_train: args.max_train,
            max_eval: args.max_eval,
        };
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

fn print_summary(info: &RunInfo, out: &std::path::Path) -> Result<()> {
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
            r.validation
                .roc_auc
                .map_or("n/a".into(), |a| format!("{a:.4}")),
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
            test.roc_auc.map_or("n/a".into(), |a| format!("{a:.4}"))
        );
    }
    println!("status: {:?}; run folder: {}", info.status, out.display());
    Ok(())
}

fn run_tokens(args: TokensArgs) -> Result<()> {
    set_threads(None);
    let files = ModelFiles::locate(&args.model)?;
    let tokenizer =
        std::fs::read(&files.tokenizer).with_context(|| files.tokenizer.display().to_string())?;
    let encoder = ReviewEncoder::from_bytes(&tokenizer, 512, Truncation::Tail)?;
    let dataset = load_dataset(&args.data, &args.columns.options(None))?;
    let texts: Vec<&str> = dataset.examples.iter().map(|e| e.text.as_str()).collect();
    let pb = progress::bar(
        texts.len(),
        "tokenising",
        "reviews",
        std::io::stderr().is_terminal(),
    );
    let report = tokens::length_report(&encoder, &texts, |n| pb.inc(n as u64))?;
    pb.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{} reviews; tokens per review (with [CLS] and [SEP]):",
        report.count
    );
    println!(
        "  min {}  mean {:.0}  max {}",
        report.min, report.mean, report.max
    );
    for (p, len) in &report.percentiles {
        println!("  {p:>2}th percentile {len:>6}");
    }
    for (cut, share) in &report.truncated_share {
        println!(
            "  --seq-len {cut:<4} truncates {:>5.1} % of reviews, {:>5.1} % fit whole",
            100.0 * share,
            100.0 * (1.0 - share)
        );
    }
    Ok(())
}

fn run_bench(args: BenchArgs) -> Result<()> {
    let threads = set_threads(args.hardware.threads);
    let device = device::parse_device(&args.hardware.device)?;
    let files = ModelFiles::locate(&args.model)?;
    let columns = DataOptions {
        split_column: Some("split".into()),
        ..DataOptions::default()
    };
    let dataset = load_dataset(&args.data, &columns)
        .or_else(|_| load_dataset(&args.data, &DataOptions::default()))?;
    let texts: Vec<(&str, u32)> = dataset
        .examples
        .iter()
        .filter(|e| e.split.as_deref().is_none_or(|s| s == "train"))
        .map(|e| (e.text.as_str(), e.label))
        .collect();
    if !args.json {
        println!(
            "training step, batch {}, {threads} threads, {:?}",
            args.batch_size, device
        );
        println!("  seq  step s  forward s  backward s  optimiser s  reviews/s");
    }
    for &seq in &args.seq {
        let t = bench::time_train_steps(
            &files,
            &texts,
            seq,
            args.batch_size,
            args.warmup,
            args.steps,
            &device,
        )?;
        if args.json {
            let mut row = serde_json::to_value(&t)?;
            row["what"] = "train_step".into();
            row["threads"] = threads.into();
            row["peak_rss_mib"] = bench::peak_rss_mib().into();
            println!("{row}");
        } else {
            println!(
                "  {:>3} {:>7.2} {:>10.2} {:>11.2} {:>12.2} {:>10.2}",
                t.seq_len, t.step_s, t.forward_s, t.backward_s, t.optimizer_s, t.reviews_per_s
            );
        }
    }
    if !args.json {
        if let Some(peak) = bench::peak_rss_mib() {
            println!("peak memory (RSS): {peak:.0} MiB");
        }
    }
    Ok(())
}
