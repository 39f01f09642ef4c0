//! The review classifier: Hugging Face's `BertForSequenceClassification` with `num_labels = 2`:
//! a BERT encoder, the pooler (dense + tanh) on the `[CLS]` state, drop-out and one dense
//! layer. Checkpoints written before the pooler was part of the head (their `config.json`
//! does not name `BertForSequenceClassification`) have drop-out + dense on the raw `[CLS]`
//! state, and still load as such.
//!
//! The head gives two logits, `[negative, positive]`, turned into probabilities by softmax and
//! trained with cross-entropy, so the positive probability is `softmax(logits)[1]`.

pub mod bert;
pub mod dropout;
pub mod fused;
pub mod weights;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{Device, Module, Result as CandleResult, Tensor};
use candle_nn::{Linear, VarMap};
use rand::SeedableRng;

use feelings_core::Bundle;

use crate::error::{Error, Result};
use crate::export::from_bundle::write_model_folder;
use crate::model::bert::{Bert, BertConfig};
use crate::model::dropout::{Dropout, TrainRng};
use crate::model::weights::{VarLoader, WeightFile};

/// Number of classes the head predicts.
pub const NUM_CLASSES: usize = 2;

/// The three files of a Hugging Face BERT folder that a model needs.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// The folder.
    pub dir: PathBuf,
    /// `config.json`.
    pub config: PathBuf,
    /// `model.safetensors`.
    pub weights: PathBuf,
    /// `tokenizer.json`.
    pub tokenizer: PathBuf,
    /// For a bundle, the temporary folder its weights were written to as a model folder (the
    /// three files above), removed once the last copy of these files is dropped.
    _unpacked: Option<Arc<tempfile::TempDir>>,
}

impl ModelFiles {
    /// Finds the files in `dir`, naming every one that is missing. A bundle (`feelings
    /// export`'s folder) is a model folder too: its stored weights are written out as one, in
    /// f32, to a temporary folder (see [`crate::export::from_bundle`]).
    pub fn locate(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::model(dir, "model folder not found"));
        }
        if Bundle::is_in(dir) {
            let bundle = Bundle::read_dir(dir).map_err(|e| Error::model(dir, e.to_string()))?;
            return Self::unpack(dir, &bundle);
        }
        let files = Self {
            dir: dir.to_path_buf(),
            config: dir.join("config.json"),
            weights: dir.join("model.safetensors"),
            tokenizer: dir.join("tokenizer.json"),
            _unpacked: None,
        };
        let missing: Vec<&str> = [
            (&files.config, "config.json"),
            (&files.weights, "model.safetensors"),
            (&files.tokenizer, "tokenizer.json"),
        ]
        .iter()
        .filter(|(path, _)| !path.is_file())
        .map(|(_, name)| *name)
        .collect();
        if !missing.is_empty() {
            let hint = if dir.join("pytorch_model.bin").is_file()
                && missing.contains(&"model.safetensors")
            {
                " (only pytorch_model.bin is there: convert it to safetensors first)"
            } else {
                ""
            };
            return Err(Error::model(
                dir,
                format!(
                    "not a Hugging Face BERT folder: missing {}{hint}",
                    missing.join(", ")
                ),
            ));
        }
        Ok(files)
    }

    /// The model of `bundle` written out as a model folder (to a temporary folder, removed with
    /// the last copy of the files); `dir`, the folder `bundle` came from, is kept as
    /// [`Self::dir`] and named in errors.
    pub fn unpack(dir: &Path, bundle: &Bundle) -> Result<Self> {
        let unpacked = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
        write_model_folder(bundle, unpacked.path())
            .map_err(|e| Error::model(dir, e.to_string()))?;
        let files = Self::locate(unpacked.path())?;
        Ok(Self {
            dir: dir.to_path_buf(),
            _unpacked: Some(Arc::new(unpacked)),
            ..files
        })
    }

    /// Reads and checks `config.json`.
    pub fn read_config(&self) -> Result<BertConfig> {
        let text = std::fs::read_to_string(&self.config).map_err(|e| Error::io(&self.config, e))?;
        let config: BertConfig = serde_json::from_str(&text)
            .map_err(|e| Error::model(&self.config, format!("not a BERT configuration: {e}")))?;
        config
            .validate()
            .map_err(|message| Error::model(&self.config, message))?;
        Ok(config)
    }
}

/// Where the classification head's weights come from.
#[derive(Debug, Clone, Copy)]
pub enum Head {
    /// A new head: the pooler from the base model's (`pooler.dense`; drawn like the classifier
    /// when it has none), the classifier drawn from N(0, initializer_range²) with this seed.
    Fresh {
        /// Seed of the initialiser.
        seed: u64,
    },
    /// The head in the weights file (a checkpoint): with the pooler when `config.json` names
    /// `BertForSequenceClassification`, on the raw `[CLS]` state otherwise.
    FromFile,
}

/// The word embeddings' variable, which `feelings train --freeze-embeddings` keeps as loaded.
pub const WORD_EMBEDDINGS: &str = "embeddings.word_embeddings.weight";

/// The architecture `config.json` names for a model with this head.
pub const SEQUENCE_CLASSIFICATION: &str = "BertForSequenceClassification";

/// BERT encoder + pooler + drop-out + dense layer (or, for an old checkpoint, drop-out + dense
/// on the raw `[CLS]` state).
pub struct CandleClassifier {
    config: BertConfig,
    bert: Bert,
    pooler: Option<Linear>,
    dropout: Dropout,
    head: Linear,
    varmap: VarMap,
}

impl CandleClassifier {
    /// Loads the encoder from `files` and the head as `head` says, as trainable variables on
    /// `device`.
    pub fn load(files: &ModelFiles, device: &Device, head: Head) -> Result<Self> {
        let config = files.read_config()?;
        let weights = WeightFile::open(&files.weights)?;
        let varmap = VarMap::new();
        let vb = VarLoader::new(&weights, &varmap, device);
        // The encoder first: only then is the (absent from a base model) head created.
        let bert = Bert::load(&vb, &config)?;
        let (pooler, head) = match head {
            Head::Fresh { seed } => {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
                let base_pooler = ["pooler.dense.weight", "pooler.dense.bias"];
                let pooler = if base_pooler.iter().all(|name| weights.contains(name)) {
                    dense_from_file(
                        &vb.pp("pooler.dense"),
                        config.hidden_size,
                        config.hidden_size,
                    )?
                } else {
                    fresh_dense(
                        &vb.pp("pooler.dense"),
                        &config,
                        config.hidden_size,
                        &mut rng,
                    )?
                };
                (
                    Some(pooler),
                    fresh_dense(&vb.pp("classifier"), &config, NUM_CLASSES, &mut rng)?,
                )
            }
            Head::FromFile => {
                if !weights.contains("classifier.weight") {
                    return Err(Error::model(
                        &files.weights,
                        "no classifier.weight: this is a base model, not a fine-tuned checkpoint",
                    ));
                }
                let h = config.hidden_size;
                let pooler = config
                    .names_architecture(SEQUENCE_CLASSIFICATION)
                    .then(|| dense_from_file(&vb.pp("pooler.dense"), h, h))
                    .transpose()?;
                (
                    pooler,
                    dense_from_file(&vb.pp("classifier"), NUM_CLASSES, h)?,
                )
            }
        };
        let dropout = Dropout::new(
            config
                .classifier_dropout
                .unwrap_or(config.hidden_dropout_prob),
        );
        Ok(Self {
            config,
            bert,
            pooler,
            dropout,
            head,
            varmap,
        })
    }

    /// Logits `[batch, 2]` for `input_ids` and `attention_mask` (`[batch, seq]`); drop-out is
    /// on when `rng` is given.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        mut rng: TrainRng,
    ) -> CandleResult<Tensor> {
        let hidden = self
            .bert
            .forward(input_ids, attention_mask, rng.as_deref_mut())?;
        let cls = hidden.narrow(1, 0, 1)?.squeeze(1)?;
        let pooled = match &self.pooler {
            Some(pooler) => pooler.forward(&cls)?.tanh()?,
            None => cls,
        };
        self.head.forward(&self.dropout.forward(&pooled, rng)?)
    }

    /// Whether the head has the pooler (`BertForSequenceClassification`), not the raw `[CLS]`
    /// head of old checkpoints.
    pub fn has_pooler(&self) -> bool {
        self.pooler.is_some()
    }

    /// The model's configuration.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Keeps the word embeddings as loaded when `freeze`: no gradient reaches them. Returns
    /// the variables the optimiser must leave out (none unless `freeze`).
    pub fn freeze_word_embeddings(&mut self, freeze: bool) -> &'static [&'static str] {
        if !freeze {
            return &[];
        }
        self.bert.freeze_word_embeddings();
        &[WORD_EMBEDDINGS]
    }

    /// Every trainable variable by name (encoder names as in the base model, head under
    /// `classifier.`).
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// Writes every variable to a safetensors file, under the names Hugging Face gives them
    /// (`bert.` before the encoder's and the pooler's, `classifier.` for the head), which
    /// [`CandleClassifier::load`] and [`CandleClassifier::reload`] read back.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tensors: std::collections::HashMap<String, Tensor> = self
            .varmap
            .data()
            .lock()
            .expect("the variable map lock is never poisoned: no code panics while holding it")
            .iter()
            .map(|(name, var)| (hf_name(name), var.as_tensor().clone()))
            .collect();
        candle_core::safetensors::save(&tensors, path)
            .map_err(|e| Error::model(path, format!("cannot write weights: {e}")))
    }

    /// Sets every variable to its value in the weights file `path` (one [`CandleClassifier::save`]
    /// wrote for this model, or an older one without the `bert.` prefix).
    pub fn reload(&self, path: &Path) -> Result<()> {
        let weights = WeightFile::open(path)?;
        let data = self
            .varmap
            .data()
            .lock()
            .expect("the variable map lock is never poisoned: no code panics while holding it");
        for (name, var) in data.iter() {
            let value = weights
                .get(name)
                .ok_or_else(|| Error::model(path, format!("missing tensor '{name}'")))?;
            var.set(
                &value
                    .to_dtype(candle_core::DType::F32)?
                    .to_device(var.device())?,
            )
            .map_err(|e| Error::model(path, format!("tensor '{name}': {e}")))?;
        }
        Ok(())
    }
}

/// The `config.json` of a checkpoint of this model: the base model's `config_json` (every
/// field kept), naming `BertForSequenceClassification` when the head has the pooler, with the
/// classes' names (`id2label`, `label2id`) and `problem_type`, as transformers reads them, and
/// `model_type` `bert` where the base config has none (a config read back from a bundle).
pub fn checkpoint_config(
    config_json: &[u8],
    labels: &feelings_core::Labels,
    with_pooler: bool,
) -> std::result::Result<Vec<u8>, String> {
    let mut config: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(config_json).map_err(|e| format!("not a JSON object: {e}"))?;
    let architecture = if with_pooler {
        SEQUENCE_CLASSIFICATION
    } else {
        "BertModel"
    };
    config.insert("architectures".into(), serde_json::json!([architecture]));
    config.insert(
        "id2label".into(),
        serde_json::json!({ "0": labels.negative, "1": labels.positive }),
    );
    config.insert(
        "label2id".into(),
        serde_json::json!({ labels.negative.as_str(): 0, labels.positive.as_str(): 1 }),
    );
    config.insert("problem_type".into(), "single_label_classification".into());
    config.entry("model_type").or_insert_with(|| "bert".into());
    Ok(serde_json::to_vec_pretty(&config).expect("a JSON map serialises"))
}

/// A variable's name in a Hugging Face `BertForSequenceClassification` checkpoint.
pub(crate) fn hf_name(name: &str) -> String {
    if name.starts_with("classifier.") {
        name.to_string()
    } else {
        format!("bert.{name}")
    }
}

/// A dense layer (`[outputs, inputs]` weight and its bias) read from the weights file.
fn dense_from_file(vb: &VarLoader, outputs: usize, inputs: usize) -> Result<Linear> {
    Ok(Linear::new(
        vb.load("weight", &[outputs, inputs])?,
        Some(vb.load("bias", &[outputs])?),
    ))
}

/// A new dense layer from the hidden state to `outputs`, initialised as Hugging Face does
/// (weight from N(0, initializer_range²), bias zero).
fn fresh_dense(
    vb: &VarLoader,
    config: &BertConfig,
    outputs: usize,
    rng: &mut impl rand::Rng,
) -> Result<Linear> {
    let h = config.hidden_size;
    Ok(Linear::new(
        vb.normal("weight", &[outputs, h], config.initializer_range, rng)?,
        Some(vb.zeros("bias", &[outputs])?),
    ))
}
