//! `feelings explain`.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use feelings_core::explain::DEFAULT_MAX_UNITS;
use feelings_core::{Bundle, TractClassifier};
use feelings_trainer::data::load_dataset;
use feelings_trainer::evaluate::faithfulness::{measure, BINS};

use crate::{set_threads, values, DataArgs};

#[derive(Args)]
pub struct ExplainArgs {
    /// The model bundle folder (made by `feelings export`).
    bundle: PathBuf,
    /// Labelled reviews (CSV, plain or .gz, or JSON Lines) to explain.
    #[arg(long)]
    data: PathBuf,
    #[command(flatten)]
    columns: DataArgs,
    /// Explain only the rows whose value in this column is --split.
    #[arg(long)]
    split_column: Option<String>,
    /// The value of --split-column to explain.
    #[arg(long, default_value = "test", requires = "split_column")]
    split: String,
    /// Reviews to explain, spread evenly over the rows, 1 to 100000.
    #[arg(long, default_value_t = 200, value_parser = values::count_in(1, 100_000))]
    reviews: usize,
    /// The most units (variants classified) per review, 1 to 1000.
    #[arg(long, default_value_t = DEFAULT_MAX_UNITS, value_parser = values::count_in(1, feelings_core::explain::MAX_UNITS))]
    max_units: usize,
    /// Seed of the random units the explanations are compared with.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// CPU threads, 1 to 1024 [default: all cores].
    #[arg(long, value_parser = values::threads)]
    threads: Option<usize>,
}

pub fn run(args: ExplainArgs) -> Result<()> {
    let threads = set_threads(args.threads);
    let bundle = Bundle::read_dir(&args.bundle)
        .with_context(|| format!("bundle {}", args.bundle.display()))?;
    let classifier = TractClassifier::new(&bundle)
        .with_context(|| format!("bundle {}", args.bundle.display()))?;
    let options = args.columns.options(args.split_column.clone());
    let examples: Vec<String> = load_dataset(&args.data, &options)?
        .examples
        .into_iter()
        .filter(|e| args.split_column.is_none() || e.split.as_deref() == Some(&args.split))
        .map(|e| e.text)
        .collect();
    anyhow::ensure!(
        !examples.is_empty(),
        "{}: no reviews to explain",
        args.data.display()
    );
    // Spread evenly over the rows (all of them if there are no more than asked for).
    let count = args.reviews.min(examples.len());
    let texts: Vec<String> = (0..count)
        .map(|i| examples[i * examples.len() / count].clone())
        .collect();
    let bar = feelings_trainer::progress::bar(
        texts.len(),
        "explaining",
        "reviews",
        std::io::stderr().is_terminal(),
    );
    let measured = measure(
        &classifier,
        &args.bundle,
        &texts,
        args.max_units,
        args.seed,
        |n| bar.set_position(n as u64),
    )?;
    bar.finish_and_clear();
    let bins: Vec<String> = BINS.iter().map(|b| format!("{}", b * 100.0)).collect();
    println!(
        "{} reviews, {:.1} units each, {:.0} ms per explanation ({threads} thread{}); top {} % of the units:",
        measured.reviews,
        measured.units_per_review,
        measured.ms_per_review,
        if threads == 1 { "" } else { "s" },
        bins.join(", ")
    );
    println!("                 comprehensiveness (higher: better)  sufficiency (lower: better)");
    for (name, e) in [
        ("occlusion", measured.explained),
        ("random units", measured.random),
    ] {
        println!(
            "  {name:<14} {:>12.4} {:>34.4}",
            e.comprehensiveness, e.sufficiency
        );
    }
    println!("{}", serde_json::to_string(&measured)?);
    Ok(())
}
