//! `feelings export`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use feelings_trainer::export::onnx::Precision;
use feelings_trainer::export::{export_bundle, ExportOptions, Exported};

use crate::values;

#[derive(Args)]
pub struct ExportArgs {
    /// A run folder (its best checkpoint is exported), one of its checkpoint-epoch-N folders, or
    /// a bundle (its stored weights exported again, e.g. at another --quantize; its test
    /// figures are dropped: measure them with `feelings evaluate --record`).
    run: PathBuf,
    /// The bundle folder to write.
    #[arg(long)]
    out: PathBuf,
    /// Export this epoch (numbered from 1) instead of the best one.
    #[arg(long, value_parser = values::positive_count)]
    epoch: Option<usize>,
    /// Weight storage: f32 as trained; int8 (a quarter of the size, computed in f32); or
    /// int8-dynamic (the same size, every encoder product computed in 8-bit integers with the
    /// activations quantised at run time: faster, most of all in WebAssembly).
    #[arg(long, value_enum, default_value = "f32")]
    quantize: QuantizeArg,
    /// Probability of positive, from 0 to 1, from which a review is called positive.
    #[arg(long, default_value_t = 0.5, value_parser = values::probability)]
    threshold: f64,
    /// The model's name in the manifest [default: the output folder's name].
    #[arg(long)]
    name: Option<String>,
    /// Tokens the deployed model reads, at most the model's max_position_embeddings [default:
    /// the training sequence length].
    #[arg(long, value_parser = values::positive_count)]
    seq_len: Option<usize>,
    /// Replace a bundle already in --out.
    #[arg(long)]
    overwrite: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum QuantizeArg {
    F32,
    Int8,
    Int8Dynamic,
}

pub fn run(args: ExportArgs) -> Result<()> {
    let options = ExportOptions {
        epoch: args.epoch,
        precision: match args.quantize {
            QuantizeArg::F32 => Precision::F32,
            QuantizeArg::Int8 => Precision::Int8,
            QuantizeArg::Int8Dynamic => Precision::Int8Dynamic,
        },
        threshold: args.threshold as f32,
        name: args.name,
        seq_len: args.seq_len,
    };
    let exported = export_bundle(&args.run, &args.out, args.overwrite, &options)?;
    print_summary(&exported, &args.out.display().to_string());
    Ok(())
}

/// Prints what an export wrote to `out` (a folder, in words): the checkpoint and name, the
/// files' sizes, the settings, the check against candle and the test figures.
pub fn print_summary(exported: &Exported, out: &str) {
    let m = &exported.bundle.manifest;
    println!(
        "exported {} as '{}' to {out}",
        exported.checkpoint.display(),
        m.name,
    );
    println!(
        "  model.onnx {:.1} MB ({:?} weights), tokenizer.json {:.1} MB",
        exported.bundle.model.len() as f64 / 1e6,
        m.weights,
        exported.bundle.tokenizer.len() as f64 / 1e6
    );
    println!(
        "  sequence length {}, truncation {}, threshold {}, labels {}/{}",
        m.max_seq_len, m.truncation, m.threshold, m.labels.negative, m.labels.positive
    );
    println!(
        "  largest logit difference to candle on check reviews: {:.2e}",
        exported.max_logit_difference
    );
    if let Some(t) = &m.test_metrics {
        println!(
            "  test accuracy {:.2} % on {} reviews",
            100.0 * t.accuracy,
            t.count
        );
    }
}
