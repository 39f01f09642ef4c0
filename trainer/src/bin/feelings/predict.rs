//! `feelings predict`.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use feelings_core::{Bundle, TractClassifier};
use feelings_trainer::predict::predict_csv;

use crate::values;

#[derive(Args)]
pub struct PredictArgs {
    /// The model bundle folder (made by `feelings export`).
    bundle: PathBuf,
    /// Reviews to classify (or use --file).
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    texts: Vec<String>,
    /// A CSV file (plain or .gz) of reviews to classify.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Where to write the CSV with `label` and `score` added [default: standard output].
    #[arg(long, requires = "file")]
    out: Option<PathBuf>,
    /// The column of --file holding the text.
    #[arg(long, default_value = "review")]
    text_column: String,
    /// A column of --file with the true label: accuracy is reported if it exists.
    #[arg(long, default_value = "sentiment")]
    label_column: String,
    /// One JSON object per review instead of text.
    #[arg(long)]
    json: bool,
    /// Say why: each word (a sentence, or a run of sentences, for a longer review) left out in
    /// turn, and how much the probability of positive falls without it (above 0: it pushed
    /// toward positive). Costs one classification per unit.
    #[arg(long, conflicts_with = "file")]
    explain: bool,
    /// With --explain, the most units (variants classified) per review, 1 to 1000.
    #[arg(long, default_value_t = feelings_core::explain::DEFAULT_MAX_UNITS, requires = "explain", value_parser = values::count_in(1, feelings_core::explain::MAX_UNITS))]
    max_units: usize,
}

pub fn run(args: PredictArgs) -> Result<()> {
    let bundle = Bundle::read_dir(&args.bundle)
        .with_context(|| format!("bundle {}", args.bundle.display()))?;
    let classifier = TractClassifier::new(&bundle)
        .with_context(|| format!("bundle {}", args.bundle.display()))?;
    if args.explain {
        return explain_texts(&classifier, &args);
    }
    let Some(file) = &args.file else {
        let texts: Vec<&str> = args.texts.iter().map(String::as_str).collect();
        for (text, p) in texts.iter().zip(classifier.classify_batch(&texts)?) {
            if args.json {
                println!("{}", serde_json::to_string(&p)?);
            } else {
                let cut = if p.truncated { " (truncated)" } else { "" };
                println!(
                    "{}  p(positive) = {:.4}  threshold {}{cut}  {}",
                    p.label,
                    p.score,
                    p.threshold,
                    preview(text)
                );
            }
        }
        return Ok(());
    };
    let bar = feelings_trainer::progress::spinner("classifying", std::io::stderr().is_terminal());
    let mut output: Box<dyn std::io::Write> = match &args.out {
        Some(out) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(out).with_context(|| out.display().to_string())?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let summary = predict_csv(
        &classifier,
        file,
        &mut output,
        &args.text_column,
        Some(&args.label_column),
        |n| bar.set_position(n as u64),
    )?;
    bar.finish_and_clear();
    eprintln!(
        "{} reviews classified, {} truncated to {} tokens",
        summary.rows,
        summary.truncated,
        classifier.manifest().max_seq_len
    );
    if summary.labelled > 0 {
        eprintln!(
            "accuracy against '{}': {:.2} % ({} of {})",
            args.label_column,
            100.0 * summary.correct as f64 / summary.labelled as f64,
            summary.correct,
            summary.labelled
        );
    }
    Ok(())
}

/// Prints why each of the texts in `args` gets its score: a JSON object each with --json, else
/// the score and the units, most positive and most negative first.
fn explain_texts(classifier: &TractClassifier, args: &PredictArgs) -> Result<()> {
    for text in &args.texts {
        let explanation = classifier.explain(text, args.max_units)?;
        if args.json {
            println!("{}", serde_json::to_string(&explanation)?);
            continue;
        }
        let manifest = classifier.manifest();
        let label = manifest
            .labels
            .decide(explanation.score, manifest.threshold);
        println!(
            "{label}  p(positive) = {:.4}  explained by {} ({:?})  {}",
            explanation.score,
            explanation.units.len(),
            explanation.granularity,
            preview(text)
        );
        let mut units = explanation.units.clone();
        units.sort_by(|a, b| b.weight.total_cmp(&a.weight));
        for unit in &units {
            println!("  {:+.4}  {}", unit.weight, preview(&unit.text));
        }
    }
    Ok(())
}

/// The first words of a review, for the one-line output.
fn preview(text: &str) -> String {
    let short: String = text.chars().take(60).collect();
    if short.len() < text.len() {
        format!("{short}…")
    } else {
        short
    }
}
