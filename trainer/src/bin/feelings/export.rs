//! `feelings export`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use feelings_trainer::export::hf_layout::{export_hf_layout, ExportedHf};
use feelings_trainer::export::onnx::{EmbeddingFormat, Precision};
use feelings_trainer::export::{export_bundle, ExportOptions, Exported};

use crate::values;

#[derive(Args)]
pub struct ExportArgs {
    /// A run folder (its best checkpoint is exported), one of its checkpoint-epoch-N folders, or
    /// a bundle (its stored weights exported again, e.g. at another --quantize; its test
    /// figures are dropped: measure them with `feelings evaluate --record`).
    run: PathBuf,
    /// The folder to write: a bundle, or with --layout hf a model folder for Hugging Face's tools.
    #[arg(long)]
    out: PathBuf,
    /// What to write: `bundle` (feelings.json, model.onnx, tokenizer.json: what the gateway, the
    /// page and `feelings predict` read) or `hf` (config.json with the labels, tokenizer.json,
    /// tokenizer_config.json, onnx/model.onnx in f32 and onnx/model_quantized.onnx in
    /// int8-dynamic: what transformers.js and ONNX Runtime read; long reviews are cut
    /// at the end there, whatever the truncation trained).
    #[arg(long, value_enum, default_value = "bundle")]
    layout: LayoutArg,
    /// Export this epoch (numbered from 1) instead of the best one.
    #[arg(long, value_parser = values::positive_count)]
    epoch: Option<usize>,
    /// Weight storage: f32 as trained; int8 (a quarter of the size, computed in f32); or
    /// int8-dynamic (the same size, every encoder product computed in 8-bit integers with the
    /// activations quantised at run time: faster, most of all in WebAssembly).
    /// [default: f32] With --layout hf, which writes both f32 and int8-dynamic, it is refused.
    #[arg(long, value_enum)]
    quantize: Option<QuantizeArg>,
    /// Probability of positive, from 0 to 1, from which a review is called positive [default:
    /// 0.5]. Not with --layout hf: those tools call a review by the larger probability.
    #[arg(long, value_parser = values::probability)]
    threshold: Option<f64>,
    /// The model's name in the manifest [default: the output folder's name]; not with --layout
    /// hf, where the folder's name is the model's.
    #[arg(long)]
    name: Option<String>,
    /// Tokens the deployed model reads, at most the model's max_position_embeddings [default:
    /// the training sequence length].
    #[arg(long, value_parser = values::positive_count)]
    seq_len: Option<usize>,
    /// Replace a bundle already in --out.
    #[arg(long)]
    overwrite: bool,
    /// Keep only the word pieces the texts of this corpus use (a CSV with a `review` column,
    /// gzip allowed, or one text per line), every special token and every single-character
    /// piece, so any text still tokenises; repeat for more files. Those texts get the same
    /// logits; the model shrinks by the rows dropped (a multilingual vocabulary is mostly
    /// pieces no review uses). WordPiece and Unigram tokenizers.
    #[arg(long, value_name = "CORPUS")]
    trim_vocab: Vec<PathBuf>,
    /// With --trim-vocab: keep a piece of the corpus only if its texts use it at least N times
    /// (rare names and typos go; a text that needs a dropped piece is spelt with shorter ones,
    /// its logits moving a little). Specials and single characters are always kept.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = values::positive_count, requires = "trim_vocab")]
    trim_min_count: usize,
    /// Also keep every piece of the words in this list (one word or text a line, gzip allowed),
    /// however rarely they occur: e.g. the most frequent words of the languages the model should
    /// keep reading, which a review corpus lacks. Repeat for more files; trims alone too.
    #[arg(long, value_name = "LIST")]
    trim_words: Vec<PathBuf>,
    /// How to store the word embeddings: `int4` (4-bit, blocks of 32 values of a row with an
    /// f16 scale each, as llama.cpp's Q4_0: about half of int8's size, for a large vocabulary
    /// in the browser) [default: as --quantize says]. Needs --quantize int8 or int8-dynamic.
    #[arg(long, value_enum, value_name = "FORMAT")]
    word_embeddings: Option<WordEmbeddingsArg>,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum WordEmbeddingsArg {
    Int4,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum LayoutArg {
    Bundle,
    Hf,
}

#[derive(Clone, Copy, ValueEnum)]
enum QuantizeArg {
    F32,
    Int8,
    Int8Dynamic,
}

impl ExportArgs {
    /// Refuses options that contradict each other, for the command-line parser to report.
    pub fn refuse_conflicts(&self) -> std::result::Result<(), &'static str> {
        if self.word_embeddings.is_some() && self.layout == LayoutArg::Hf {
            return Err("--word-embeddings is a bundle's: --layout hf writes its own f32 and int8-dynamic models");
        }
        if self.word_embeddings.is_some() && matches!(self.quantize, None | Some(QuantizeArg::F32))
        {
            return Err("--word-embeddings int4 goes with --quantize int8 or int8-dynamic");
        }
        if self.layout != LayoutArg::Hf {
            return Ok(());
        }
        if self.quantize.is_some() {
            return Err("--quantize chooses a bundle's weights: --layout hf writes both f32 (onnx/model.onnx) and int8-dynamic (onnx/model_quantized.onnx)");
        }
        if self.threshold.is_some() {
            return Err("--threshold is a bundle's: with --layout hf, transformers.js and ONNX Runtime's users call a review by the larger probability");
        }
        if self.name.is_some() {
            return Err("--name is a bundle's: with --layout hf the folder's name is the model's");
        }
        Ok(())
    }
}

pub fn run(args: ExportArgs) -> Result<()> {
    let options = ExportOptions {
        epoch: args.epoch,
        precision: match args.quantize.unwrap_or(QuantizeArg::F32) {
            QuantizeArg::F32 => Precision::F32,
            QuantizeArg::Int8 => Precision::Int8,
            QuantizeArg::Int8Dynamic => Precision::Int8Dynamic,
        },
        threshold: args.threshold.unwrap_or(0.5) as f32,
        name: args.name,
        seq_len: args.seq_len,
        trim_vocab: args.trim_vocab,
        trim_min_count: args.trim_min_count,
        trim_words: args.trim_words,
        word_embeddings: match args.word_embeddings {
            Some(WordEmbeddingsArg::Int4) => EmbeddingFormat::Int4,
            None => EmbeddingFormat::AsWeights,
        },
    };
    if args.layout == LayoutArg::Hf {
        let exported = export_hf_layout(&args.run, &args.out, args.overwrite, &options)?;
        print_hf_summary(&exported, &args.out.display().to_string());
        return Ok(());
    }
    let exported = export_bundle(&args.run, &args.out, args.overwrite, &options)?;
    print_summary(&exported, &args.out.display().to_string());
    Ok(())
}

/// Prints what an export in Hugging Face layout wrote to `out`: the files, and each model's
/// check against candle.
fn print_hf_summary(exported: &ExportedHf, out: &str) {
    let m = &exported.f32.bundle.manifest;
    println!(
        "exported {} as a Hugging Face model folder to {out} (labels {}/{}, model_max_length {})",
        exported.f32.checkpoint.display(),
        m.labels.negative,
        m.labels.positive,
        m.max_seq_len
    );
    for (file, size) in &exported.files {
        println!("  {file:<28} {:>7.1} MB", *size as f64 / 1e6);
    }
    println!(
        "  largest logit difference to candle on check reviews: f32 {:.2e}, int8-dynamic {:.2e}",
        exported.f32.max_logit_difference, exported.quantized.max_logit_difference
    );
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
    let embeddings = match m.word_embeddings {
        EmbeddingFormat::Int4 => ", 4-bit word embeddings",
        EmbeddingFormat::AsWeights => "",
    };
    println!(
        "  model.onnx {:.1} MB ({:?} weights{embeddings}), tokenizer.json {:.1} MB, {} pieces",
        exported.bundle.model.len() as f64 / 1e6,
        m.weights,
        exported.bundle.tokenizer.len() as f64 / 1e6,
        m.vocab_size
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
