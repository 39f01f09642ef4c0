//! `feelings evaluate` and `feelings compare`.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use feelings_core::sentences::Excerpt;
use feelings_trainer::data::DataOptions;
use feelings_trainer::device;
use feelings_trainer::evaluate::compare::{compare_runs, comparison_html, summary_text};
use feelings_trainer::evaluate::metrics::{Metrics, COLUMNS_HEADER};
use feelings_trainer::evaluate::report::evaluation_html;
use feelings_trainer::evaluate::{
    evaluate_source, record_test_metrics, DataChoice, EvaluateOptions, Evaluation, Subset,
};

use crate::values;
use crate::{set_threads, DataArgs, HardwareArgs, SplitArgs};

#[derive(Args)]
pub struct EvaluateArgs {
    /// A run folder (its best checkpoint, through candle) or a model bundle (through tract, as
    /// deployed).
    source: PathBuf,
    /// Other labelled reviews than the run's own; required for a bundle.
    #[arg(long)]
    data: Option<PathBuf>,
    #[command(flatten)]
    columns: DataArgs,
    /// With --data: how to divide it (as `feelings train` does).
    #[command(flatten)]
    split: SplitArgs,
    /// With --data: seed of the split.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// With --data: also report the metrics per value of this column (e.g. `language`).
    #[arg(long, requires = "data")]
    group_column: Option<String>,
    /// The subset to evaluate on.
    #[arg(long, value_enum, default_value = "test")]
    subset: SubsetArg,
    /// Evaluate at most this many reviews of the subset (a fixed sample for a given seed).
    #[arg(long, value_parser = values::positive_count)]
    max: Option<usize>,
    /// Evaluate the N shortest reviews of the subset (in characters; with --sentences, the
    /// shortest excerpts) instead: short reviews say less, and long ones are cut.
    #[arg(long, value_name = "N", value_parser = values::positive_count, conflicts_with = "max")]
    shortest: Option<usize>,
    /// Evaluate only these sentences of each review: `first:N` or `last:N` (e.g. `last:2`), a
    /// slice of short texts cut from the reviews themselves (a sentence ends at `.`, `!`, `?`,
    /// `…` or a line break). A threshold tuned with --tune-threshold is tuned on the same
    /// sentences of the validation reviews.
    #[arg(long, value_name = "first:N|last:N")]
    sentences: Option<Excerpt>,
    /// Call a review positive from this probability (0 to 1) on [default: the model's own, 0.5
    /// for a run].
    #[arg(long, conflicts_with = "tune_threshold", value_parser = values::probability)]
    threshold: Option<f64>,
    /// Also report the threshold maximising Youden's J (recall - false positive rate) on the
    /// validation subset, and what it does to precision and recall.
    #[arg(long)]
    tune_threshold: bool,
    /// Evaluate the checkpoint of this epoch (numbered from 1) instead of the best one (runs
    /// only).
    #[arg(long, value_parser = values::positive_count)]
    checkpoint: Option<usize>,
    /// Where to write the HTML report [default: report.html in the run or bundle folder].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the metrics as one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Write the figures into the bundle's manifest (`test_metrics` in feelings.json), as a
    /// shipped bundle carries them: bundles only, on the test subset, at the bundle's threshold.
    #[arg(long, conflicts_with = "threshold")]
    record: bool,
    /// Reviews per model call (runs only).
    #[arg(long, default_value_t = 32, value_parser = values::positive_count)]
    batch_size: usize,
    #[command(flatten)]
    hardware: HardwareArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum SubsetArg {
    /// The held-out test subset of the split.
    Test,
    /// The validation subset of the split.
    Validation,
    /// Every row of --data, not split: a file of test reviews only.
    All,
}

#[derive(Args)]
pub struct CompareArgs {
    /// Two or more run folders.
    #[arg(required = true, num_args = 2..)]
    runs: Vec<PathBuf>,
    /// Where to write the HTML report.
    #[arg(long, default_value = "report.html")]
    out: PathBuf,
}

pub fn run_evaluate(args: EvaluateArgs) -> Result<()> {
    set_threads(args.hardware.threads);
    let options = EvaluateOptions {
        data: args.data.clone().map(|path| DataChoice {
            path,
            columns: DataOptions {
                group_column: args.group_column.clone(),
                ..args.columns.options(args.split.split_column.clone())
            },
            split: args.split.options(None, None),
            seed: args.seed,
        }),
        subset: match args.subset {
            SubsetArg::Test => Subset::Test,
            SubsetArg::Validation => Subset::Validation,
            SubsetArg::All => Subset::All,
        },
        max: args.max.or(args.shortest),
        shortest: args.shortest.is_some(),
        excerpt: args.sentences,
        threshold: args.threshold,
        tune_threshold: args.tune_threshold,
        checkpoint: args.checkpoint,
        device: device::parse_device(&args.hardware.device)?,
        batch_size: args.batch_size,
        progress: std::io::stderr().is_terminal(),
    };
    let evaluation = evaluate_source(&args.source, &options)?;
    if args.record {
        record_test_metrics(&evaluation)?;
        eprintln!(
            "recorded in {}",
            args.source
                .join(feelings_core::manifest::MANIFEST_FILE)
                .display()
        );
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.source.join("report.html"));
    std::fs::write(&out, evaluation_html(&evaluation))
        .with_context(|| format!("cannot write {}", out.display()))?;
    if args.json {
        println!("{}", json_summary(&evaluation));
    } else {
        print_summary(&evaluation);
    }
    eprintln!("report: {}", out.display());
    Ok(())
}

fn json_summary(e: &Evaluation) -> serde_json::Value {
    serde_json::json!({
        "source": e.source,
        "engine": e.engine,
        "checkpoint": e.checkpoint,
        "subset": e.subset,
        "sentences": e.excerpt.map(|x| x.to_string()),
        "metrics": e.metrics,
        "groups": e.groups,
        "tuned": e.tuned,
    })
}

fn print_summary(e: &Evaluation) {
    let m = &e.metrics;
    println!(
        "{} ({}{}), {} {}{}",
        e.source.display(),
        e.engine,
        e.checkpoint
            .map_or(String::new(), |c| format!(", checkpoint of epoch {c}")),
        m.count,
        match e.subset {
            Subset::All => "reviews (every row)".to_string(),
            subset => format!("{} reviews", subset.name()),
        },
        e.excerpt
            .map_or(String::new(), |x| format!(", {x} sentences of each"))
    );
    println!("{:<22} {COLUMNS_HEADER}", "");
    let row = |name: &str, m: &Metrics| println!("{name:<22} {}", m.columns());
    row("model's threshold", m);
    if let Some(t) = &e.tuned {
        row("tuned (Youden's J)", &t.metrics);
    }
    for g in &e.groups {
        row(&format!("{} ({})", g.group, g.metrics.count), &g.metrics);
    }
    let c = &m.confusion;
    println!(
        "confusion (true \\ predicted): {p}: {} {} | {n}: {} {}   ({p} first)",
        c.true_positive,
        c.false_negative,
        c.false_positive,
        c.true_negative,
        p = e.labels.positive,
        n = e.labels.negative
    );
}

pub fn run_compare(args: CompareArgs) -> Result<()> {
    let comparison = compare_runs(&args.runs)?;
    std::fs::write(&args.out, comparison_html(&comparison))
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    for (key, values) in &comparison.differing {
        println!("{key}: {}", values.join(" | "));
    }
    print!("{}", summary_text(&comparison));
    eprintln!("report: {}", args.out.display());
    Ok(())
}
