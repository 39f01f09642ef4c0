//! The settings of a training run and the record of it kept in `run.json`.

use std::path::PathBuf;

use feelings_core::{Labels, Truncation};
use serde::{Deserialize, Serialize};

use crate::data::split::SplitOptions;
use crate::data::DataOptions;
use crate::evaluate::metrics::Metrics;
use crate::model::bert::BertConfig;
use crate::train::optim::AdamWConfig;
use crate::train::run_dir::Monitor;

/// Every setting of a training run; `--resume` reloads them from `run.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSettings {
    /// The labelled data (CSV, CSV.gz, JSONL or an `aclImdb/` folder).
    pub data: PathBuf,
    /// The base model folder (config.json, model.safetensors, tokenizer.json).
    pub model: PathBuf,
    /// Columns and label values of the data.
    pub columns: DataOptions,
    /// How the data is divided.
    pub split: SplitOptions,
    /// Longest token sequence fed to the model, special tokens included.
    pub seq_len: usize,
    /// Which tokens of a long review are kept.
    pub truncation: Truncation,
    /// Reviews per training step.
    pub batch_size: usize,
    /// Reviews per evaluation batch.
    pub eval_batch_size: usize,
    /// Epochs to train (fewer if stopped early).
    pub epochs: usize,
    /// Optimiser settings.
    pub optimizer: AdamWConfig,
    /// Share of all steps spent warming the learning rate up.
    pub warmup_fraction: f64,
    /// Stop when the monitored metric has not improved for this many epochs; `None` never stops
    /// early.
    pub patience: Option<usize>,
    /// The validation metric that picks the best checkpoint and drives early stopping.
    pub monitor: Monitor,
    /// Seed of the split, the shuffles, the head's initialisation and drop-out.
    pub seed: u64,
    /// Keep the word embeddings as loaded: no gradient, no optimiser state (for large
    /// vocabularies, where the embedding's dense update dominates a step).
    #[serde(default)]
    pub freeze_embeddings: bool,
    /// Share of the training reviews (0 to 1) shown in each epoch as a window of 1 to 5
    /// consecutive sentences with the review's label, drawn anew every epoch; 0 shows every
    /// review whole.
    #[serde(default)]
    pub sentence_windows: f64,
    /// The run and checkpoint (or the bundle) this run continues from (`feelings train
    /// --from`): `model` is then that checkpoint's folder (or the bundle's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Parent>,
}

/// Where a run continued from started: a checkpoint of another run, or a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parent {
    /// The parent run's folder, or the bundle's.
    pub run: PathBuf,
    /// The epoch of its checkpoint the weights come from (a bundle's: of the run that made it,
    /// as its manifest says).
    pub epoch: usize,
    /// Whether only the encoder (and pooler) was kept, with a new classifier.
    pub new_head: bool,
    /// Whether the parent is a bundle rather than a run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bundle: bool,
    /// A bundle's record of its training data (sha256 of the texts and labels): a run on other
    /// data is warned that the bundle's test reviews may be among its training reviews.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_sha256: Option<String>,
}

impl TrainSettings {
    /// Settings with the tutorial's defaults for `data` and `model`: 80/10/10 split, sequence
    /// length 256, batch 16, 2 epochs, AdamW at 2e-5 with 10 % warm-up, early stopping with
    /// patience 1 on the validation loss, seed 42.
    pub fn new(data: PathBuf, model: PathBuf) -> Self {
        Self {
            data,
            model,
            columns: DataOptions::default(),
            split: SplitOptions::default(),
            seq_len: 256,
            truncation: Truncation::Tail,
            batch_size: 16,
            eval_batch_size: 32,
            epochs: 2,
            optimizer: AdamWConfig::default(),
            warmup_fraction: 0.1,
            patience: Some(1),
            monitor: Monitor::Loss,
            seed: 42,
            freeze_embeddings: false,
            sentence_windows: 0.0,
            from: None,
        }
    }
}

/// How a run ended (so far).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Training is under way, or was interrupted and can be resumed.
    Running,
    /// Every epoch ran.
    Finished,
    /// Early stopping ended it.
    EarlyStopped,
}

/// Sizes of the three subsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubsetSizes {
    /// Training reviews.
    pub train: usize,
    /// Validation reviews.
    pub validation: usize,
    /// Test reviews.
    pub test: usize,
}

/// The contents of `run.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// Version of the `feelings` trainer that wrote it.
    pub feelings_version: String,
    /// Version of candle that trained the model.
    pub candle_version: String,
    /// The settings.
    pub settings: TrainSettings,
    /// sha256 over the texts and labels read, in order.
    pub data_sha256: String,
    /// Rows skipped for an empty text.
    pub skipped_empty: usize,
    /// The class names.
    pub labels: Labels,
    /// Subset sizes.
    pub subsets: SubsetSizes,
    /// sha256 of the base model's model.safetensors.
    pub base_model_sha256: String,
    /// The base model's configuration.
    pub base_model_config: BertConfig,
    /// Where it trained (`cpu`, `cuda:0`).
    pub device: String,
    /// CPU threads used.
    pub threads: usize,
    /// Where it stands.
    pub status: RunStatus,
    /// Complete epochs.
    pub epochs_completed: usize,
    /// The best epoch so far.
    pub best_epoch: Option<usize>,
    /// Metrics of the best checkpoint on the test subset, once training has ended.
    pub test: Option<Metrics>,
    /// Seconds spent training, across resumptions.
    pub wall_seconds: f64,
    /// When the run was first started (seconds since the Unix epoch).
    pub started_unix: u64,
}
