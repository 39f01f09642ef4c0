//! `feelings export --layout hf`: a model folder in the layout of Hugging Face's ONNX model
//! repositories, as transformers.js reads them (ONNX Runtime runs its files as they are): `config.json` with the labels, `tokenizer.json`,
//! `tokenizer_config.json`, `onnx/model.onnx` (f32 weights) and `onnx/model_quantized.onnx`
//! (int8-dynamic: the form transformers.js loads as `dtype: 'q8'`), each model checked against
//! candle like a bundle.
//!
//! What our inference core does around the tokenizer is carried into the files where their
//! format can say it: the HTML line breaks [`clean_review`](feelings_core::clean_review)
//! removes become a `Replace` normaliser in front of the tokenizer's own, and the sequence
//! length becomes `model_max_length`. Head+tail truncation cannot be said there: those tools
//! keep the beginning of a review longer than that.

use std::path::Path;

use feelings_core::manifest::{Manifest, MANIFEST_FILE, TOKENIZER_FILE};
use feelings_core::LINE_BREAK_PATTERN;
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{NormalizerWrapper, Replace, Sequence};
use tokenizers::Tokenizer;

use super::onnx::{EmbeddingFormat, Precision};
use super::{checked_bundle, open_source, ExportOptions, Exported};
use crate::error::{Error, Result};
use crate::model::checkpoint_config;

/// The model's configuration, with `architectures`, `id2label` and `label2id`.
pub const CONFIG_FILE: &str = "config.json";
/// The tokenizer's settings: its class, special tokens and `model_max_length`.
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
/// The model with f32 weights.
pub const F32_MODEL_FILE: &str = "onnx/model.onnx";
/// The model with int8 weights multiplied in integers.
pub const QUANTIZED_MODEL_FILE: &str = "onnx/model_quantized.onnx";

/// What an export in Hugging Face layout wrote.
#[derive(Debug, Clone)]
pub struct ExportedHf {
    /// The f32 model, as a bundle of ours would hold it (with the source's own tokenizer).
    pub f32: Exported,
    /// The int8-dynamic model, the same way.
    pub quantized: Exported,
    /// The files written, relative to the folder, with their sizes in bytes.
    pub files: Vec<(&'static str, usize)>,
}

/// Exports the checkpoint or bundle `source` (as [`super::export_bundle`] reads it; the
/// precision and threshold of `options` are ignored: both precisions are written, and those
/// tools decide by the larger probability) into `out` in Hugging Face layout, refusing a folder
/// that holds a `config.json` already unless `overwrite`, and one that holds a bundle.
pub fn export_hf_layout(
    source: &Path,
    out: &Path,
    overwrite: bool,
    options: &ExportOptions,
) -> Result<ExportedHf> {
    if options.word_embeddings != EmbeddingFormat::AsWeights {
        return Err(Error::Setting(
            "the Hugging Face layout writes its own two models (f32 and int8-dynamic): 4-bit word embeddings are a bundle's".into(),
        ));
    }
    if out.join(MANIFEST_FILE).exists() {
        return Err(Error::run(
            out,
            "holds a feelings bundle, whose tokenizer.json this layout would replace: choose another folder",
        ));
    }
    if out.join(CONFIG_FILE).exists() && !overwrite {
        return Err(Error::run(
            out,
            "holds a model folder already (config.json): pass --overwrite to replace it",
        ));
    }
    let source = open_source(source, out, options)?;
    let f32 = checked_bundle(
        &source,
        Manifest {
            weights: Precision::F32,
            word_embeddings: EmbeddingFormat::AsWeights,
            ..source.manifest.clone()
        },
    )?;
    let quantized = checked_bundle(
        &source,
        Manifest {
            weights: Precision::Int8Dynamic,
            word_embeddings: EmbeddingFormat::AsWeights,
            ..source.manifest.clone()
        },
    )?;
    let config = checkpoint_config(
        &source.config,
        &source.manifest.labels,
        source.model.has_pooler(),
    )
    .map_err(|e| Error::model(&source.path, format!("its {CONFIG_FILE}: {e}")))?;
    let tokenizer_path = source.path.join(TOKENIZER_FILE);
    let tokenizer = hf_tokenizer(&source.tokenizer, &tokenizer_path)?;
    let tokenizer_json = tokenizer
        .to_string(false)
        .map_err(|e| Error::model(&tokenizer_path, e.to_string()))?;
    let tokenizer_config = tokenizer_config(&tokenizer, source.manifest.max_seq_len);
    // config.json last: a folder that has it is complete. An old one goes first, so a kill
    // while replacing leaves no folder that looks complete.
    let old_config = out.join(CONFIG_FILE);
    if old_config.exists() {
        std::fs::remove_file(&old_config).map_err(|e| Error::io(&old_config, e))?;
    }
    let files: [(&'static str, &[u8]); 5] = [
        (TOKENIZER_FILE, tokenizer_json.as_bytes()),
        (TOKENIZER_CONFIG_FILE, tokenizer_config.as_bytes()),
        (F32_MODEL_FILE, &f32.bundle.model),
        (QUANTIZED_MODEL_FILE, &quantized.bundle.model),
        (CONFIG_FILE, &config),
    ];
    write_files(out, &files)?;
    Ok(ExportedHf {
        files: files
            .iter()
            .map(|(name, bytes)| (*name, bytes.len()))
            .collect(),
        f32,
        quantized,
    })
}

/// Writes each file into `out` (folders created) in order, under a temporary name first (removed
/// if the write fails), so a kill leaves no torn file under the final name.
fn write_files(out: &Path, files: &[(&str, &[u8])]) -> Result<()> {
    for (name, bytes) in files {
        let path = out.join(name);
        let folder = path.parent().unwrap_or(out);
        std::fs::create_dir_all(folder).map_err(|e| Error::io(folder, e))?;
        let tmp = path.with_extension("tmp");
        let written = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io(&path, e));
        }
    }
    Ok(())
}

/// The tokenizer of `tokenizer_json` (read from `path`, named in errors) as Hugging Face's tools
/// should run it: no truncation or padding fixed in the file (the callers pad and truncate),
/// and the HTML line breaks replaced by a space before the tokenizer's own normaliser, as our
/// encoder cleans them.
pub fn hf_tokenizer(tokenizer_json: &[u8], path: &Path) -> Result<Tokenizer> {
    let bad = |e: tokenizers::Error| Error::model(path, e.to_string());
    let mut tokenizer = Tokenizer::from_bytes(tokenizer_json).map_err(bad)?;
    tokenizer.with_truncation(None).map_err(bad)?;
    tokenizer.with_padding(None);
    let normalizer = match tokenizer.get_normalizer().cloned() {
        Some(own) => NormalizerWrapper::Sequence(Sequence::new(vec![line_breaks().into(), own])),
        None => line_breaks().into(),
    };
    tokenizer.with_normalizer(Some(normalizer)).map_err(bad)?;
    Ok(tokenizer)
}

/// A normaliser that replaces what [`feelings_core::clean_review`] replaces.
fn line_breaks() -> Replace {
    Replace::new(ReplacePattern::Regex(LINE_BREAK_PATTERN.into()), " ")
        .expect("the line-break pattern is a valid regular expression")
}

/// `tokenizer_config.json` for `tokenizer`: the class that makes transformers.js and
/// transformers (5.x) run `tokenizer.json` as it is (`PreTrainedTokenizerFast`; with
/// `BertTokenizer` transformers 5 rebuilds BERT's own normaliser and loses the line-break
/// cleaning), the special tokens it has under their conventional names, and
/// `model_max_length`.
pub fn tokenizer_config(tokenizer: &Tokenizer, model_max_length: usize) -> String {
    let mut config = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": model_max_length,
    });
    for (key, names) in [
        ("cls_token", ["[CLS]", "<s>"]),
        ("sep_token", ["[SEP]", "</s>"]),
        ("pad_token", ["[PAD]", "<pad>"]),
        ("unk_token", ["[UNK]", "<unk>"]),
        ("mask_token", ["[MASK]", "<mask>"]),
    ] {
        if let Some(name) = names
            .into_iter()
            .find(|n| tokenizer.token_to_id(n).is_some())
        {
            config[key] = name.into();
        }
    }
    serde_json::to_string_pretty(&config).expect("a JSON value serialises")
}

#[cfg(test)]
mod tests {
    use feelings_core::clean_review;
    use tokenizers::{NormalizedString, Normalizer};

    use super::line_breaks;

    #[test]
    fn the_normaliser_replaces_what_the_encoder_cleans() {
        for text in [
            "a<br />b<BR/>c<br>d<bR />e",
            "<br  />x<br<br>y<br /",
            "<bro> <b>x</b> <br/ > <br /><br />",
            "é<br />ü",
        ] {
            let mut normalized = NormalizedString::from(text);
            line_breaks().normalize(&mut normalized).unwrap();
            assert_eq!(normalized.get(), clean_review(text), "{text}");
        }
    }
}
