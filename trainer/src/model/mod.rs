//! The review classifier: a BERT encoder with drop-out and one dense layer on `[CLS]`.
//!
//! The head gives two logits, `[negative, positive]`, turned into probabilities by softmax and
//! trained with cross-entropy: the layout of Hugging Face's `BertForSequenceClassification`
//! with `num_labels = 2`, so the positive probability is `softmax(logits)[1]`.

pub mod bert;
pub mod dropout;
pub mod fused;
pub mod weights;

use std::path::{Path, PathBuf};

use candle_core::{Device, Module, Result as CandleResult, Tensor};
use candle_nn::{Linear, VarMap};
use rand::SeedableRng;

use crate::error::{Error, Result};
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
}

impl ModelFiles {
    /// Finds the files in `dir`, naming every one that is missing.
    pub fn locate(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::model(dir, "model folder not found"));
        }
        let files = Self {
            dir: dir.to_path_buf(),
            config: dir.join("config.json"),
            weights: dir.join("model.safetensors"),
            tokenizer: dir.join("tokenizer.json"),
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
    /// A new head, drawn from N(0, initializer_range²) with this seed; for a base model.
    Fresh {
        /// Seed of the initialiser.
        seed: u64,
    },
    /// `classifier.weight` and `classifier.bias` from the weights file; for a checkpoint.
    FromFile,
}

/// BERT encoder + drop-out + dense layer over the `[CLS]` hidden state.
pub struct CandleClassifier {
    config: BertConfig,
    bert: Bert,
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
        let vb = vb.pp("classifier");
        let h = config.hidden_size;
        let head = match head {
            Head::Fresh { seed } => {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
                Linear::new(
                    vb.normal(
                        "weight",
                        &[NUM_CLASSES, h],
                        config.initializer_range,
                        &mut rng,
                    )?,
                    Some(vb.zeros("bias", &[NUM_CLASSES])?),
                )
            }
            Head::FromFile => {
                if !weights.contains("classifier.weight") {
                    return Err(Error::model(
                        &files.weights,
                        "no classifier.weight: this is a base model, not a fine-tuned checkpoint",
                    ));
                }
                Linear::new(
                    vb.load("weight", &[NUM_CLASSES, h])?,
                    Some(vb.load("bias", &[NUM_CLASSES])?),
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
        self.head.forward(&self.dropout.forward(&cls, rng)?)
    }

    /// The model's configuration.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Every trainable variable by name (encoder names as in the base model, head under
    /// `classifier.`).
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// Writes every variable to a safetensors file.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.varmap
            .save(path)
            .map_err(|e| Error::model(path, format!("cannot write weights: {e}")))
    }
}
