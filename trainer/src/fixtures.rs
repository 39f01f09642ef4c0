//! Tiny random-weight BERT checkpoints and small labelled review sets, for tests, examples and
//! end-to-end checks that must not wait for a real model. They are real Hugging Face folders
//! (config.json, model.safetensors, tokenizer.json) that every command accepts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::error::Error;
use crate::export::{export_bundle, ExportOptions, Exported};
use crate::train::settings::TrainSettings;
use crate::train::{train, TrainOptions};

/// Words the tiny tokenizer knows, after the four special tokens.
pub const WORDS: [&str; 16] = [
    "the",
    "movie",
    "plot",
    "acting",
    "was",
    "is",
    "great",
    "wonderful",
    "loved",
    "fine",
    "bad",
    "awful",
    "boring",
    "hated",
    "and",
    "very",
];

/// Reviews the tiny model can learn to tell apart: (text, label).
pub fn reviews(n: usize, seed: u64) -> Vec<(String, &'static str)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let good = ["great", "wonderful", "loved", "fine"];
    let bad = ["bad", "awful", "boring", "hated"];
    let subjects = ["the movie", "the plot", "the acting"];
    (0..n)
        .map(|i| {
            let positive = i % 2 == 0;
            let words = if positive { &good } else { &bad };
            let mut text = format!("{} was", subjects[rng.random_range(0..3)]);
            for _ in 0..rng.random_range(1..6) {
                text.push_str(if rng.random_bool(0.3) {
                    " very "
                } else {
                    " and "
                });
                text.push_str(words[rng.random_range(0..4)]);
            }
            (text, if positive { "positive" } else { "negative" })
        })
        .collect()
}

/// Writes `rows` as a CSV with columns review, sentiment.
pub fn write_csv(path: &Path, rows: &[(String, &str)]) -> std::io::Result<()> {
    let mut w = csv::Writer::from_path(path)?;
    w.write_record(["review", "sentiment"])?;
    for (text, label) in rows {
        w.write_record([text.as_str(), label])?;
    }
    w.flush()
}

fn tokenizer_json() -> serde_json::Value {
    let mut vocab = serde_json::Map::new();
    for (i, w) in ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
        .iter()
        .chain(WORDS.iter())
        .enumerate()
    {
        vocab.insert(w.to_string(), json!(i));
    }
    json!({
        "version": "1.0",
        "truncation": {"direction": "Right", "max_length": 128, "strategy": "LongestFirst", "stride": 0},
        "padding": {"strategy": {"Fixed": 128}, "direction": "Right", "pad_to_multiple_of": null,
                    "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"},
        "added_tokens": [],
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                       "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                               "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
        "decoder": null,
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab}
    })
}

/// Shape of the tiny model.
pub struct TinyShape {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub max_positions: usize,
    /// Prefix of the encoder tensor names (`""` or `"bert."`).
    pub prefix: &'static str,
}

impl Default for TinyShape {
    fn default() -> Self {
        Self {
            hidden: 16,
            layers: 2,
            heads: 2,
            intermediate: 32,
            max_positions: 64,
            prefix: "",
        }
    }
}

/// Writes a tiny random BERT (config.json, model.safetensors, tokenizer.json) into `dir`.
pub fn tiny_bert(dir: &Path, shape: &TinyShape) -> crate::Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let vocab = 4 + WORDS.len();
    let h = shape.hidden;
    let config = json!({
        "architectures": ["BertModel"], "model_type": "bert",
        "vocab_size": vocab, "hidden_size": h, "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads, "intermediate_size": shape.intermediate,
        "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": shape.max_positions, "type_vocab_size": 2,
        "initializer_range": 0.02, "layer_norm_eps": 1e-12, "pad_token_id": 0
    });
    for (name, value) in [
        ("config.json", config),
        ("tokenizer.json", tokenizer_json()),
    ] {
        std::fs::write(dir.join(name), value.to_string())
            .map_err(|e| Error::io(dir.join(name), e))?;
    }

    let mut w = Weights {
        tensors: HashMap::new(),
        rng: rand::rngs::StdRng::seed_from_u64(7),
        prefix: shape.prefix,
    };
    w.random("embeddings.word_embeddings.weight", &[vocab, h])?;
    w.random(
        "embeddings.position_embeddings.weight",
        &[shape.max_positions, h],
    )?;
    w.random("embeddings.token_type_embeddings.weight", &[2, h])?;
    w.layer_norm("embeddings", h)?;
    for l in 0..shape.layers {
        let p = format!("encoder.layer.{l}");
        for (name, out, inp) in [
            ("attention.self.query", h, h),
            ("attention.self.key", h, h),
            ("attention.self.value", h, h),
            ("attention.output.dense", h, h),
            ("intermediate.dense", shape.intermediate, h),
            ("output.dense", h, shape.intermediate),
        ] {
            w.random(&format!("{p}.{name}.weight"), &[out, inp])?;
            w.random(&format!("{p}.{name}.bias"), &[out])?;
        }
        w.layer_norm(&format!("{p}.attention.output"), h)?;
        w.layer_norm(&format!("{p}.output"), h)?;
    }
    // The pooler, which the head starts from, and an unused extra real checkpoints carry.
    w.random("pooler.dense.weight", &[h, h])?;
    w.random("pooler.dense.bias", &[h])?;
    let position_ids = Tensor::arange(0i64, shape.max_positions as i64, &Device::Cpu)?;
    w.tensors
        .insert("embeddings.position_ids".into(), position_ids);
    candle_core::safetensors::save(&w.tensors, dir.join("model.safetensors"))?;
    Ok(dir.to_path_buf())
}

/// The tensors of a tiny checkpoint being written.
struct Weights {
    tensors: HashMap<String, Tensor>,
    rng: rand::rngs::StdRng,
    prefix: &'static str,
}

impl Weights {
    fn insert(&mut self, name: &str, values: Vec<f32>, dims: &[usize]) -> candle_core::Result<()> {
        let tensor = Tensor::from_vec(values, dims, &Device::Cpu)?;
        self.tensors
            .insert(format!("{}{name}", self.prefix), tensor);
        Ok(())
    }

    /// Uniform values in [-0.5, 0.5).
    fn random(&mut self, name: &str, dims: &[usize]) -> candle_core::Result<()> {
        let n = dims.iter().product();
        let values = (0..n).map(|_| self.rng.random_range(-0.5..0.5)).collect();
        self.insert(name, values, dims)
    }

    /// A layer norm that starts as the identity.
    fn layer_norm(&mut self, base: &str, size: usize) -> candle_core::Result<()> {
        self.insert(
            &format!("{base}.LayerNorm.weight"),
            vec![1.0; size],
            &[size],
        )?;
        self.insert(&format!("{base}.LayerNorm.bias"), vec![0.0; size], &[size])
    }
}

/// Trains a tiny random BERT (under `dir/model`) on `count` fixture reviews drawn with `seed`
/// (`dir/data.csv`), with `tune` adjusting the settings, and exports the best checkpoint as a
/// float32 bundle in `dir/bundle`, which it returns.
pub fn tiny_bundle(
    dir: &Path,
    count: usize,
    seed: u64,
    tune: impl FnOnce(&mut TrainSettings),
) -> crate::Result<PathBuf> {
    let model = tiny_bert(&dir.join("model"), &TinyShape::default())?;
    let data = dir.join("data.csv");
    write_csv(&data, &reviews(count, seed)).map_err(|e| Error::io(&data, e))?;
    let mut settings = TrainSettings::new(data, model);
    tune(&mut settings);
    let options = TrainOptions {
        threads: 1,
        ..quiet_cpu()
    };
    train_and_export(settings, dir, &options, &ExportOptions::default())?;
    Ok(dir.join("bundle"))
}

/// Training options for tests: the CPU, 2 threads (as recorded in run.json), no progress bars,
/// nothing stopped or saved early.
pub fn quiet_cpu() -> TrainOptions {
    TrainOptions {
        device: Device::Cpu,
        threads: 2,
        progress: false,
        stop_after: None,
        stop_after_steps: None,
        save_every: None,
        stop: Default::default(),
    }
}

/// Trains a new run in `dir/run` and exports its best checkpoint to `dir/bundle`.
pub fn train_and_export(
    settings: TrainSettings,
    dir: &Path,
    options: &TrainOptions,
    export: &ExportOptions,
) -> crate::Result<Exported> {
    train(settings, &dir.join("run"), false, options)?;
    export_bundle(&dir.join("run"), &dir.join("bundle"), false, export)
}
