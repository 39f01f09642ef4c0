//! The model bundle's manifest, `feelings.json`: what a deployed model is and how to feed it.
//!
//! A bundle is one folder (or three blobs) that every runtime loads the same way:
//!
//! | file | what |
//! | --- | --- |
//! | `feelings.json` | this manifest |
//! | `model.onnx` | the classifier: `input_ids`, `attention_mask` (int64 `[batch, sequence]`) → `logits` (f32 `[batch, 2]`) |
//! | `tokenizer.json` | the Hugging Face tokenizer the model was trained with |

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Labels, Truncation};

/// The manifest file's name in a bundle.
pub const MANIFEST_FILE: &str = "feelings.json";
/// The ONNX model's file name in a bundle.
pub const MODEL_FILE: &str = "model.onnx";
/// The tokenizer's file name in a bundle.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// The manifest format this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// `producer_name` of the ONNX files this project writes; others are refused.
pub const ONNX_PRODUCER: &str = "feelings";

/// How the weights in `model.onnx` are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightFormat {
    /// 32-bit floats, as trained.
    #[default]
    F32,
    /// 8-bit integers with one f32 scale per output channel (per row for the embeddings),
    /// expanded to f32 at load time: a quarter of the download, the same compute.
    Int8,
    /// The same int8 weights multiplied in integers: every encoder product quantises its
    /// input to u8 at run time (`DynamicQuantizeLinear`) and runs `MatMulInteger` (the form of
    /// ONNX Runtime's `quantize_dynamic`); the embeddings and the head stay as at `Int8`.
    Int8Dynamic,
}

/// How the word-embedding table in `model.onnx` is stored, where it differs from the other
/// weights. Every runtime reads each form the same way: the graph says how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmbeddingFormat {
    /// As [`WeightFormat`] says: f32, or int8 with one scale per row.
    #[default]
    AsWeights,
    /// 4-bit integers in blocks of [`INT4_BLOCK`] values of a row, each block with an f16
    /// scale (the layout of llama.cpp's Q4_0): 0.56 bytes a value against int8's 1 (plus its
    /// row scale). The rows a review uses are turned back into f32 at run time.
    Int4,
}

impl EmbeddingFormat {
    /// Whether this is the default, which older manifests lack (and is not written).
    pub fn is_as_weights(&self) -> bool {
        *self == Self::AsWeights
    }
}

/// Values of an embedding row that share one scale at [`EmbeddingFormat::Int4`].
pub const INT4_BLOCK: usize = 32;

/// Figures measured on held-out reviews.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestMetrics {
    /// Reviews evaluated.
    pub count: usize,
    /// Share classified correctly at the threshold.
    pub accuracy: f64,
    /// Of the reviews called positive, the share that are.
    pub precision: f64,
    /// Of the positive reviews, the share called positive.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// Area under the ROC curve.
    pub roc_auc: Option<f64>,
}

/// How the model was trained, in brief (the run's `run.json` has everything).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TrainingSummary {
    /// The base model's folder name, e.g. `minilm-l6`.
    pub base_model: String,
    /// Reviews trained on.
    pub train_reviews: usize,
    /// Epochs run.
    pub epochs: usize,
    /// The epoch whose checkpoint this is.
    pub epoch: usize,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Reviews per step.
    pub batch_size: usize,
    /// The run's seed.
    pub seed: u64,
    /// sha256 of the training data's texts and labels.
    pub data_sha256: String,
}

/// The contents of `feelings.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format; this code reads [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The model's name, e.g. `imdb-minilm`.
    pub name: String,
    /// The two classes.
    pub labels: Labels,
    /// Tokens per review the model reads, special tokens included.
    pub max_seq_len: usize,
    /// Which tokens of a longer review are kept.
    pub truncation: Truncation,
    /// A review is positive when the probability of positive is at least this.
    pub threshold: f32,
    /// Rows of the word-embedding matrix: the tokenizer may not have more tokens.
    pub vocab_size: usize,
    /// How the weights are stored.
    pub weights: WeightFormat,
    /// How the word embeddings are stored, where not as `weights` says.
    #[serde(default, skip_serializing_if = "EmbeddingFormat::is_as_weights")]
    pub word_embeddings: EmbeddingFormat,
    /// How the model was trained.
    pub training: TrainingSummary,
    /// Metrics on the test subset, if measured.
    pub test_metrics: Option<TestMetrics>,
    /// sha256 (hex) of every other file of the bundle, by file name.
    pub sha256: BTreeMap<String, String>,
    /// Size in bytes of every other file of the bundle, by file name (for download progress).
    #[serde(default)]
    pub sizes: BTreeMap<String, u64>,
}

/// The manifest as the bytes of `feelings.json` (pretty JSON).
pub fn to_json(manifest: &Manifest) -> Vec<u8> {
    serde_json::to_vec_pretty(manifest)
        .expect("a manifest always serialises: it has only plain fields")
}

/// The classifier's answer for one review.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// The label decided at the threshold.
    pub label: String,
    /// The probability of the positive class.
    pub score: f32,
    /// The threshold the label was decided at.
    pub threshold: f32,
    /// Whether the review was longer than the model reads and was cut.
    pub truncated: bool,
}

/// A `$record` with the fields of a [`Prediction`], moved from `$prediction` (any value with
/// those fields): the one field mapping between `Prediction` and the record that
/// `wit/feelings.wit` generates on each side of the component boundary, used by the guest
/// (`Prediction` to the WIT record) and by the host (back). A field added to either struct
/// makes the conversion into it fail to compile until it is mapped here.
#[macro_export]
macro_rules! prediction_as {
    ($record:path, $prediction:expr) => {{
        let p = $prediction;
        $record {
            label: p.label,
            score: p.score,
            threshold: p.threshold,
            truncated: p.truncated,
        }
    }};
}
