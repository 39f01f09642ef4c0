//! Tiny random-weight BERT models and small labelled datasets, written to temporary folders.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use serde_json::json;

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
pub fn write_csv(path: &Path, rows: &[(String, &str)]) {
    let mut w = csv::Writer::from_path(path).unwrap();
    w.write_record(["review", "sentiment"]).unwrap();
    for (text, label) in rows {
        w.write_record([text.as_str(), label]).unwrap();
    }
    w.flush().unwrap();
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
pub fn tiny_bert(dir: &Path, shape: &TinyShape) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
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
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::write(dir.join("tokenizer.json"), tokenizer_json().to_string()).unwrap();

    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut add = |name: String, dims: &[usize], kind: &str| {
        let n: usize = dims.iter().product();
        let values: Vec<f32> = match kind {
            "ones" => vec![1.0; n],
            "zeros" => vec![0.0; n],
            _ => (0..n).map(|_| rng.random_range(-0.5..0.5)).collect(),
        };
        let t = Tensor::from_vec(values, dims, &Device::Cpu).unwrap();
        tensors.insert(format!("{}{name}", shape.prefix), t);
    };
    let ln = |add: &mut dyn FnMut(String, &[usize], &str), base: &str| {
        add(format!("{base}.LayerNorm.weight"), &[h], "ones");
        add(format!("{base}.LayerNorm.bias"), &[h], "zeros");
    };
    add(
        "embeddings.word_embeddings.weight".into(),
        &[vocab, h],
        "rand",
    );
    add(
        "embeddings.position_embeddings.weight".into(),
        &[shape.max_positions, h],
        "rand",
    );
    add(
        "embeddings.token_type_embeddings.weight".into(),
        &[2, h],
        "rand",
    );
    ln(&mut add, "embeddings");
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
            add(format!("{p}.{name}.weight"), &[out, inp], "rand");
            add(format!("{p}.{name}.bias"), &[out], "rand");
        }
        ln(&mut add, &format!("{p}.attention.output"));
        ln(&mut add, &format!("{p}.output"));
    }
    // Unused extras real checkpoints carry; they must be ignored.
    add("pooler.dense.weight".into(), &[h, h], "rand");
    let position_ids = Tensor::arange(0i64, shape.max_positions as i64, &Device::Cpu).unwrap();
    tensors.insert("embeddings.position_ids".into(), position_ids);
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    dir.to_path_buf()
}

/// Logits from Python's onnxruntime for token sequences padded with `pad`, or None when it is
/// not installed. Graph optimisation stays at the basic level: at `ORT_ENABLE_ALL` ONNX Runtime
/// fuses `DequantizeLinear` + `MatMul` into integer arithmetic, which computes something else
/// than the file says (0.015 apart on int8 logits).
pub fn onnxruntime_logits(model: &Path, ids: &[Vec<u32>], pad: u32) -> Option<Vec<Vec<f32>>> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let probe = Command::new("python3")
        .args(["-c", "import onnxruntime, numpy"])
        .output()
        .ok()?;
    if !probe.status.success() {
        eprintln!(
            "skipped: Python onnxruntime is not installed (python3 -m pip install onnxruntime)"
        );
        return None;
    }
    let longest = ids.iter().map(Vec::len).max().unwrap_or(1);
    let padded: Vec<Vec<u32>> = ids
        .iter()
        .map(|r| {
            r.iter()
                .copied()
                .chain(std::iter::repeat(pad))
                .take(longest)
                .collect()
        })
        .collect();
    let mask: Vec<Vec<u32>> = ids
        .iter()
        .map(|r| (0..longest).map(|i| u32::from(i < r.len())).collect())
        .collect();
    let script = "import json, sys, numpy as np, onnxruntime as ort\n\
         o = ort.SessionOptions()\n\
         o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC\n\
         s = ort.InferenceSession(sys.argv[1], o, providers=['CPUExecutionProvider'])\n\
         ids, mask = json.load(sys.stdin)\n\
         feed = {'input_ids': np.array(ids, dtype=np.int64), 'attention_mask': np.array(mask, dtype=np.int64)}\n\
         print(json.dumps(s.run(['logits'], feed)[0].tolist()))";
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(model)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = serde_json::to_vec(&(padded, mask)).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "onnxruntime failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

/// The real MiniLM-L6 shipped beside the project.
pub fn minilm_l6() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/models/minilm-l6")
}

/// The IMDB reviews shipped beside the project.
pub fn imdb() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/imdb/imdb.csv.gz")
}
