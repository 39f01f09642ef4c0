//! `feelings`: fine-tune BERT on labelled movie reviews, export the model, classify reviews.

mod bench;
mod deploy;
mod evaluate;
mod explain;
mod export;
mod predict;
mod tokens;
mod train;
mod values;

use anyhow::Result;
use clap::error::ErrorKind;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use feelings_trainer::data::split::SplitOptions;
use feelings_trainer::data::DataOptions;

use bench::BenchArgs;
use deploy::DeployArgs;
use evaluate::{CompareArgs, EvaluateArgs};
use explain::ExplainArgs;
use export::ExportArgs;
use predict::PredictArgs;
use tokens::TokensArgs;
use train::TrainArgs;

/// mimalloc keeps freed tensor buffers for reuse; glibc's malloc returns large ones to the
/// kernel and faults fresh zeroed pages in on the next step (a third of a training step's time).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` of mimalloc.h's `mi_option_e` (libmimalloc-sys names no constant).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells mimalloc never to hand freed memory back to the kernel: a training step frees and
/// reallocates gigabytes, and by default mimalloc purges them 10 ms after they are freed, so
/// the next step faults them in again (seq 256: 4.5 s/step instead of 6.5-7.2 s).
fn keep_freed_memory() {
    // SAFETY: sets one process-wide option of the allocator; mimalloc reads it when it next
    // decides whether to purge, and any value is valid.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

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
    /// Time fine-tuning steps (forward, backward, AdamW) on real reviews of exactly --seq
    /// tokens, and a bundle's inference natively and in a wasmtime sandbox, each against its peer.
    Bench(BenchArgs),
    /// Turn a run's best (or chosen) checkpoint into a deployable bundle: model.onnx,
    /// tokenizer.json and feelings.json.
    Export(ExportArgs),
    /// Classify reviews with a bundle, through the same inference core that is deployed.
    Predict(PredictArgs),
    /// Explain many reviews with a bundle (each word or sentence left out in turn) and measure
    /// how faithful the explanations are: ERASER's comprehensiveness and sufficiency against as
    /// many units drawn at random, and the time per explanation.
    Explain(ExplainArgs),
    /// Measure a run's best checkpoint or a bundle on held-out reviews: accuracy, precision,
    /// recall, F1, ROC AUC, log loss, confusion matrix, ROC curve, threshold; writes report.html.
    Evaluate(Box<EvaluateArgs>),
    /// Put two or more runs side by side: settings that differ, metrics per epoch, final
    /// figures, the better run on each metric; writes report.html.
    Compare(CompareArgs),
    /// Upload a bundle (or a run's best or chosen checkpoint, exported first) to a running
    /// gateway, `feelings-serve`, as a named deployment, enabled unless --disabled.
    Deploy(DeployArgs),
}

/// How to divide labelled reviews into training, validation and test subsets.
#[derive(Args)]
pub struct SplitArgs {
    /// Use this column's train/validation/test values instead of a random 80/10/10 split.
    #[arg(long)]
    pub split_column: Option<String>,
    /// Share of the data (or of `train`, with --split-column) held out for validation, from 0
    /// up to 1; with the test share it must leave reviews to train on.
    #[arg(long, default_value_t = 0.1, value_parser = values::fraction)]
    pub val_fraction: f64,
    /// Share of the data held out for the final test (random split only), from 0 up to 1.
    #[arg(long, default_value_t = 0.1, value_parser = values::fraction)]
    pub test_fraction: f64,
}

impl SplitArgs {
    pub fn options(&self, max_train: Option<usize>, max_eval: Option<usize>) -> SplitOptions {
        SplitOptions {
            val_fraction: self.val_fraction,
            test_fraction: self.test_fraction,
            use_split_column: self.split_column.is_some(),
            max_train,
            max_eval,
        }
    }
}

/// Which columns of the labelled reviews hold what.
#[derive(Args)]
pub struct DataArgs {
    /// Column (or JSON field) holding the review text.
    #[arg(long, default_value = "review")]
    pub text_column: String,
    /// Column (or JSON field) holding the label.
    #[arg(long, default_value = "sentiment")]
    pub label_column: String,
    /// Label value of the positive class; the other value found is the negative class.
    #[arg(long, default_value = "positive")]
    pub positive: String,
    /// Refuse rows with an empty text instead of skipping them.
    #[arg(long)]
    pub strict: bool,
}

impl DataArgs {
    pub fn options(&self, split_column: Option<String>) -> DataOptions {
        DataOptions {
            text_column: self.text_column.clone(),
            label_column: self.label_column.clone(),
            positive: self.positive.clone(),
            split_column,
            group_column: None,
            strict: self.strict,
        }
    }
}

/// Where to compute: the device and the CPU threads (train, evaluate, bench).
#[derive(Args)]
pub struct HardwareArgs {
    /// `cpu`, or `cuda:N` in a build with the `cuda` feature.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// CPU threads, 1 to 1024 [default: all cores].
    #[arg(long, value_parser = values::threads)]
    pub threads: Option<usize>,
}

fn main() -> Result<()> {
    keep_freed_memory();
    let cli = parse_command_line();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match cli.command {
        Command::Train(args) => train::run(*args),
        Command::Tokens(args) => tokens::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Export(args) => export::run(args),
        Command::Predict(args) => predict::run(args),
        Command::Explain(args) => explain::run(args),
        Command::Evaluate(args) => evaluate::run_evaluate(*args),
        Command::Compare(args) => evaluate::run_compare(args),
        Command::Deploy(args) => deploy::run(args),
    }
}

/// Parses the command line, exiting with clap's usage error on anything it refuses, including
/// checks that span several options (`train --resume` with settings of its own).
fn parse_command_line() -> Cli {
    let mut command = Cli::command();
    let matches = command.get_matches_mut();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut command).exit());
    if let Some(("train", train_matches)) = matches.subcommand() {
        let train_command = command
            .find_subcommand_mut("train")
            .expect("train is a subcommand");
        if let Err(message) = train::refuse_settings_on_resume(train_command, train_matches) {
            train_command
                .error(ErrorKind::ArgumentConflict, message)
                .exit();
        }
    }
    if let Command::Export(args) = &cli.command {
        if let Err(message) = args.refuse_conflicts() {
            command
                .find_subcommand_mut("export")
                .expect("export is a subcommand")
                .error(ErrorKind::ArgumentConflict, message)
                .exit();
        }
    }
    cli
}

/// Sets the CPU thread count for candle's and tract's kernels before any of them starts: `threads`,
/// or one per core.
pub fn set_threads(threads: Option<usize>) -> usize {
    let n = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // Safe: called first thing, before any other thread exists.
    std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    feelings_core::set_inference_threads(n);
    n
}
