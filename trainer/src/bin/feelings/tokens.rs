//! `feelings tokens`.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use feelings_core::{ReviewEncoder, Truncation};
use feelings_trainer::data::load_dataset;
use feelings_trainer::data::tokens;
use feelings_trainer::model::ModelFiles;
use feelings_trainer::progress;

use crate::{set_threads, DataArgs};

#[derive(Args)]
pub struct TokensArgs {
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

pub fn run(args: TokensArgs) -> Result<()> {
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
