//! `feelings export --trim-vocab CORPUS`: a model that keeps only the word pieces a corpus uses.
//!
//! A multilingual vocabulary (XLM-R's 250,002 pieces) is mostly pieces no review ever needs, and
//! its embedding is most of the model (96 M of multilingual-e5-small's 117.5 M parameters). The
//! trimmed model keeps the pieces the corpus's reviews are tokenised into, every special or added
//! token, and every single-character piece (so any text still tokenises, if more finely), with
//! their embedding rows, and renumbers them in their old order.
//!
//! The texts of the corpus tokenise to the same pieces afterwards: WordPiece takes the longest
//! piece of the vocabulary at each step and Unigram the best-scoring segmentation, and the pieces
//! they chose with the whole vocabulary are all still there, with the same scores. So their
//! logits are the untrimmed model's (tested). BPE tokenizers are refused: their merges name
//! pieces too.
//!
//! A minimum count (`--trim-min-count`) also drops the pieces the corpus uses rarely (names,
//! typos): a text that needs one is then spelt with shorter pieces, and its logits move a
//! little; the texts that need none keep theirs.
//!
//! Word lists (`--trim-words`) add the pieces of languages the corpus lacks: every piece their
//! words use is kept, whatever the minimum, since a list names each word once.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use candle_core::{Device, Tensor};
use feelings_core::clean_review;
use serde_json::Value;
use tokenizers::Tokenizer;

use super::{ExportOptions, ExportSource};
use crate::data::read::open_maybe_gzip;
use crate::error::{Error, Result};
use crate::model::{hf_name, CandleClassifier, Head, ModelFiles, WORD_EMBEDDINGS};

/// The column of a CSV corpus that holds the texts.
pub const CORPUS_TEXT_COLUMN: &str = "review";

/// `source` with its vocabulary trimmed to the pieces the texts of `options.trim_vocab` use at
/// least `options.trim_min_count` times and those of `options.trim_words` use at all (see the
/// module).
pub(crate) fn trim(source: ExportSource, options: &ExportOptions) -> Result<ExportSource> {
    let read = |files: &[std::path::PathBuf]| -> Result<Vec<String>> {
        Ok(files
            .iter()
            .map(|path| read_corpus(path))
            .collect::<Result<Vec<_>>>()?
            .concat())
    };
    let corpus = Corpus {
        counted: read(&options.trim_vocab)?,
        min_count: options.trim_min_count,
        words: read(&options.trim_words)?,
    };
    let bad = |e: String| Error::model(&source.path, format!("its tokenizer.json: {e}"));
    let tokenizer = Tokenizer::from_bytes(&source.tokenizer).map_err(|e| bad(e.to_string()))?;
    let json: Value = serde_json::from_slice(&source.tokenizer).map_err(|e| bad(e.to_string()))?;
    let kept = kept_ids(&tokenizer, &json, &corpus).map_err(bad)?;
    let trimmed = trimmed_tokenizer(&json, &kept).map_err(bad)?;
    let folder = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let dir = folder.path();
    source.model.save(&dir.join("model.safetensors"))?;
    let weights = dir.join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&weights, &Device::Cpu)?;
    let name = hf_name(WORD_EMBEDDINGS);
    let table = tensors
        .get(&name)
        .ok_or_else(|| Error::model(&source.path, format!("no {name}")))?;
    let rows = Tensor::new(kept.as_slice(), &Device::Cpu)?;
    tensors.insert(name, table.index_select(&rows, 0)?);
    candle_core::safetensors::save(&tensors, &weights)?;
    let mut config: Value =
        serde_json::from_slice(&source.config).map_err(|e| bad(e.to_string()))?;
    config["vocab_size"] = kept.len().into();
    let config = serde_json::to_vec_pretty(&config).expect("JSON serialises");
    let tokenizer_bytes = serde_json::to_vec(&trimmed).expect("JSON serialises");
    for (file, bytes) in [
        ("config.json", &config),
        ("tokenizer.json", &tokenizer_bytes),
    ] {
        std::fs::write(dir.join(file), bytes).map_err(|e| Error::io(dir.join(file), e))?;
    }
    let model = CandleClassifier::load(&ModelFiles::locate(dir)?, &Device::Cpu, Head::FromFile)?;
    let mut manifest = source.manifest;
    manifest.vocab_size = kept.len();
    Ok(ExportSource {
        model,
        manifest,
        tokenizer: tokenizer_bytes,
        config,
        path: source.path,
        int8_hint: source.int8_hint,
    })
}

/// The texts of a corpus file: the `review` column of a CSV (gzip allowed), or the lines of
/// any other file.
fn read_corpus(path: &Path) -> Result<Vec<String>> {
    let mut text = String::new();
    std::io::Read::read_to_string(&mut open_maybe_gzip(path)?, &mut text)
        .map_err(|e| Error::data(path, format!("not UTF-8 text: {e}")))?;
    let name = path.to_string_lossy().to_lowercase();
    if !(name.ends_with(".csv") || name.ends_with(".csv.gz")) {
        return Ok(text.lines().map(str::to_string).collect());
    }
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| Error::data(path, format!("cannot read the CSV header: {e}")))?;
    let column = headers
        .iter()
        .position(|h| h == CORPUS_TEXT_COLUMN)
        .ok_or_else(|| {
            let found: Vec<&str> = headers.iter().collect();
            Error::data(
                path,
                format!(
                    "no column '{CORPUS_TEXT_COLUMN}' of texts; the columns are: {}",
                    found.join(", ")
                ),
            )
        })?;
    reader
        .records()
        .enumerate()
        .map(|(i, record)| {
            let record = record.map_err(|e| Error::data(path, format!("row {}: {e}", i + 1)))?;
            Ok(record.get(column).unwrap_or_default().to_string())
        })
        .collect()
}

/// The texts whose pieces a trimmed vocabulary keeps.
struct Corpus {
    /// Texts whose pieces are kept if they use them at least `min_count` times in all.
    counted: Vec<String>,
    min_count: usize,
    /// Texts (word lists) whose pieces are all kept.
    words: Vec<String>,
}

/// How many times the texts use each piece, cleaned as the model reads them.
fn piece_uses(
    tokenizer: &Tokenizer,
    texts: &[String],
) -> std::result::Result<HashMap<u32, usize>, String> {
    let cleaned: Vec<String> = texts.iter().map(|t| clean_review(t)).collect();
    let mut uses: HashMap<u32, usize> = HashMap::new();
    for encoding in tokenizer
        .encode_batch(cleaned, true)
        .map_err(|e| e.to_string())?
    {
        for &id in encoding.get_ids() {
            *uses.entry(id).or_default() += 1;
        }
    }
    Ok(uses)
}

/// The ids to keep, in order: the pieces of the corpus (see [`Corpus`]), every added or special
/// token, and every single-character piece.
fn kept_ids(
    tokenizer: &Tokenizer,
    json: &Value,
    corpus: &Corpus,
) -> std::result::Result<Vec<u32>, String> {
    let mut kept: BTreeSet<u32> = tokenizer.get_added_tokens_decoder().into_keys().collect();
    let counted = piece_uses(tokenizer, &corpus.counted)?;
    kept.extend(
        counted
            .into_iter()
            .filter(|&(_, n)| n >= corpus.min_count)
            .map(|(id, _)| id),
    );
    kept.extend(piece_uses(tokenizer, &corpus.words)?.into_keys());
    let single = |piece: &str| piece.trim_start_matches("##").chars().count() == 1;
    for (piece, id) in pieces(json)? {
        if single(&piece) {
            kept.insert(id);
        }
    }
    let model = &json["model"];
    kept.extend(model["unk_id"].as_u64().map(|id| id as u32));
    if let Some(unk) = model["unk_token"].as_str() {
        kept.extend(tokenizer.token_to_id(unk));
    }
    kept.extend(json["padding"]["pad_id"].as_u64().map(|id| id as u32));
    Ok(kept.into_iter().collect())
}

/// Every piece of the tokenizer's model with its id: Unigram's list, WordPiece's map.
fn pieces(json: &Value) -> std::result::Result<Vec<(String, u32)>, String> {
    let model = &json["model"];
    match (model["type"].as_str(), &model["vocab"]) {
        (Some("Unigram"), Value::Array(list)) => Ok(list
            .iter()
            .enumerate()
            .filter_map(|(id, entry)| Some((entry[0].as_str()?.to_string(), id as u32)))
            .collect()),
        (Some("WordPiece"), Value::Object(map)) => Ok(map
            .iter()
            .filter_map(|(piece, id)| Some((piece.clone(), id.as_u64()? as u32)))
            .collect()),
        (kind, _) => Err(format!(
            "--trim-vocab trims WordPiece and Unigram vocabularies, not {}",
            kind.unwrap_or("this model")
        )),
    }
}

/// `json` with only the pieces `kept` (sorted) and every id renumbered to its place there.
fn trimmed_tokenizer(json: &Value, kept: &[u32]) -> std::result::Result<Value, String> {
    let new_id: HashMap<u32, u32> = kept
        .iter()
        .enumerate()
        .map(|(new, &old)| (old, new as u32))
        .collect();
    let remap = |id: &mut Value| -> std::result::Result<(), String> {
        let old = id.as_u64().ok_or("an id that is not a number")? as u32;
        *id = (*new_id.get(&old).ok_or(format!("id {old} is not kept"))?).into();
        Ok(())
    };
    let mut out = json.clone();
    let model = &mut out["model"];
    match model["type"].as_str() {
        Some("Unigram") => {
            let list = model["vocab"].as_array().ok_or("no Unigram vocab")?;
            let trimmed = kept.iter().map(|&id| list[id as usize].clone()).collect();
            model["vocab"] = Value::Array(trimmed);
            if !model["unk_id"].is_null() {
                remap(&mut model["unk_id"])?;
            }
        }
        _ => {
            let map = model["vocab"].as_object().ok_or("no WordPiece vocab")?;
            let trimmed = map
                .iter()
                .filter_map(|(piece, id)| {
                    let new = new_id.get(&(id.as_u64()? as u32))?;
                    Some((piece.clone(), Value::from(*new)))
                })
                .collect();
            model["vocab"] = Value::Object(trimmed);
        }
    }
    for token in out["added_tokens"].as_array_mut().into_iter().flatten() {
        remap(&mut token["id"])?;
    }
    if !out["padding"]["pad_id"].is_null() {
        remap(&mut out["padding"]["pad_id"])?;
    }
    remap_processor(&mut out["post_processor"], &remap)?;
    Ok(out)
}

/// Renumbers the special token ids a post-processor names.
fn remap_processor(
    processor: &mut Value,
    remap: &impl Fn(&mut Value) -> std::result::Result<(), String>,
) -> std::result::Result<(), String> {
    match processor["type"].as_str() {
        Some("TemplateProcessing") => {
            let specials = processor["special_tokens"].as_object_mut();
            for special in specials.into_iter().flat_map(|m| m.values_mut()) {
                for id in special["ids"].as_array_mut().into_iter().flatten() {
                    remap(id)?;
                }
            }
        }
        Some("BertProcessing" | "RobertaProcessing") => {
            for key in ["sep", "cls"] {
                remap(&mut processor[key][1])?;
            }
        }
        Some("Sequence") => {
            for inner in processor["processors"].as_array_mut().into_iter().flatten() {
                remap_processor(inner, remap)?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An XLM-R-style Unigram tokenizer: `<s>` 0, `<pad>` 1, `</s>` 2, `<unk>` 3, then pieces.
    fn unigram() -> Value {
        let pieces = [
            "<s>",
            "<pad>",
            "</s>",
            "<unk>",
            "▁",
            "▁le",
            "▁film",
            "▁était",
            "▁super",
            "▁nul",
            "b",
            "e",
            "▁bon",
            "on",
        ];
        let vocab: Vec<Value> = pieces
            .iter()
            .enumerate()
            .map(|(i, p)| serde_json::json!([p, -(i as f64)]))
            .collect();
        let special = |t: &str, id: u32| serde_json::json!({"id": t, "ids": [id], "tokens": [t]});
        serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": [
                {"id": 0, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                {"id": 1, "content": "<pad>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                {"id": 2, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                {"id": 3, "content": "<unk>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
            ],
            "normalizer": null,
            "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true},
            "post_processor": {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
                "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 0}}],
                "special_tokens": {"<s>": special("<s>", 0), "</s>": special("</s>", 2)}},
            "decoder": null,
            "model": {"type": "Unigram", "unk_id": 3, "byte_fallback": false, "vocab": vocab}
        })
    }

    fn counted(texts: &[&str], min_count: usize) -> Corpus {
        Corpus {
            counted: texts.iter().map(|t| t.to_string()).collect(),
            min_count,
            words: Vec::new(),
        }
    }

    fn tokens(json: &Value, text: &str) -> Vec<String> {
        let tokenizer = Tokenizer::from_bytes(serde_json::to_vec(json).unwrap()).unwrap();
        tokenizer.encode(text, true).unwrap().get_tokens().to_vec()
    }

    #[test]
    fn a_unigram_vocabulary_keeps_the_corpus_pieces_specials_and_single_characters() {
        let json = unigram();
        let tokenizer = Tokenizer::from_bytes(serde_json::to_vec(&json).unwrap()).unwrap();
        let corpus = counted(&["le film<br />était super"], 1);
        let kept = kept_ids(&tokenizer, &json, &corpus).unwrap();
        // Specials 0-3, "▁" (one character), the four pieces of the review, "b" and "e".
        assert_eq!(kept, [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11]);
        let trimmed = trimmed_tokenizer(&json, &kept).unwrap();
        assert_eq!(trimmed["model"]["vocab"].as_array().unwrap().len(), 11);
        assert_eq!(trimmed["model"]["unk_id"], 3);
        // The corpus tokenises to the same pieces; ids past a dropped piece move down.
        let text = "le film était super";
        assert_eq!(tokens(&trimmed, text), tokens(&json, text));
        let retrimmed = Tokenizer::from_bytes(serde_json::to_vec(&trimmed).unwrap()).unwrap();
        assert_eq!(retrimmed.token_to_id("e"), Some(10));
        // A word the corpus never used still tokenises, into what is left.
        assert_eq!(tokens(&json, "bon")[1..3], ["▁bon", "</s>"]);
        let ids = retrimmed.encode("bon", true).unwrap().get_ids().to_vec();
        assert_eq!(ids, [0, 4, 9, 3, 2], "<s> ▁ b <unk> </s>: \"on\" is gone");
    }

    #[test]
    fn pieces_the_corpus_uses_less_often_than_the_minimum_are_dropped() {
        let json = unigram();
        let tokenizer = Tokenizer::from_bytes(serde_json::to_vec(&json).unwrap()).unwrap();
        let corpus = counted(&["le film était super", "le film"], 2);
        let kept = kept_ids(&tokenizer, &json, &corpus).unwrap();
        // "▁était" (7) and "▁super" (8) are used once; specials and single characters stay.
        assert_eq!(kept, [0, 1, 2, 3, 4, 5, 6, 10, 11]);
        let trimmed = trimmed_tokenizer(&json, &kept).unwrap();
        assert_eq!(tokens(&trimmed, "le film"), tokens(&json, "le film"));
        assert_ne!(
            tokens(&trimmed, "super"),
            tokens(&json, "super"),
            "a dropped piece is spelt with what is left"
        );
    }

    #[test]
    fn the_pieces_of_a_word_list_are_kept_whatever_the_minimum_count() {
        let json = unigram();
        let tokenizer = Tokenizer::from_bytes(serde_json::to_vec(&json).unwrap()).unwrap();
        let corpus = Corpus {
            words: vec!["super".into(), "bon".into()],
            ..counted(&["le film était super", "le film"], 2)
        };
        let kept = kept_ids(&tokenizer, &json, &corpus).unwrap();
        // "▁super" (8) and "▁bon" (12) from the list, used once each; "▁était" (7) still goes.
        assert_eq!(kept, [0, 1, 2, 3, 4, 5, 6, 8, 10, 11, 12]);
        let trimmed = trimmed_tokenizer(&json, &kept).unwrap();
        assert_eq!(tokens(&trimmed, "bon super"), tokens(&json, "bon super"));
        // A list alone (no counted corpus) trims too.
        let words_only = Corpus {
            words: vec!["bon".into()],
            ..counted(&[], 1)
        };
        let kept = kept_ids(&tokenizer, &json, &words_only).unwrap();
        assert_eq!(kept, [0, 1, 2, 3, 4, 10, 11, 12]);
    }

    #[test]
    fn a_bpe_vocabulary_is_refused_by_name() {
        let mut json = unigram();
        json["model"] = serde_json::json!({"type": "BPE", "vocab": {}, "merges": []});
        let err = pieces(&json).unwrap_err();
        assert!(err.contains("not BPE"), "{err}");
    }
}
