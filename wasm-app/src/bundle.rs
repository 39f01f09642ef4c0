//! A model bundle in memory: manifest, ONNX model and tokenizer, checked before use.

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest, Sha256};
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::Framework;

use crate::manifest::{
    Manifest, FORMAT_VERSION, MANIFEST_FILE, MODEL_FILE, ONNX_PRODUCER, TOKENIZER_FILE,
};

/// What is wrong with a bundle; every variant names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A file of the bundle is absent or unreadable.
    #[error("{file}: cannot read: {reason}")]
    Unreadable {
        /// The file.
        file: String,
        /// Why.
        reason: String,
    },
    /// A file is not what it should be (malformed JSON, not ONNX, not a tokenizer).
    #[error("{file}: {reason}")]
    Corrupt {
        /// The file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// A file's sha256 differs from the manifest's.
    #[error(
        "{file}: sha256 is {actual}, the manifest says {expected}: the file was changed or damaged"
    )]
    Checksum {
        /// The file.
        file: String,
        /// What feelings.json records.
        expected: String,
        /// What the file hashes to.
        actual: String,
    },
    /// The ONNX file was not written by this project, or has other inputs and outputs.
    #[error("{file}: not a feelings classifier: {reason}")]
    NotOurs {
        /// The file.
        file: String,
        /// What gave it away.
        reason: String,
    },
}

/// The three parts of a model bundle, verified against each other.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The parsed `feelings.json`.
    pub manifest: Manifest,
    /// The bytes of `model.onnx`.
    pub model: Vec<u8>,
    /// The bytes of `tokenizer.json`.
    pub tokenizer: Vec<u8>,
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn corrupt(file: &str, reason: impl ToString) -> BundleError {
    BundleError::Corrupt {
        file: file.into(),
        reason: reason.to_string(),
    }
}

impl Bundle {
    /// A bundle from its parts; the manifest's `sha256` map is filled in here.
    pub fn new(mut manifest: Manifest, model: Vec<u8>, tokenizer: Vec<u8>) -> Self {
        manifest.sha256 = BTreeMap::from([
            (MODEL_FILE.to_string(), sha256_hex(&model)),
            (TOKENIZER_FILE.to_string(), sha256_hex(&tokenizer)),
        ]);
        manifest.sizes = BTreeMap::from([
            (MODEL_FILE.to_string(), model.len() as u64),
            (TOKENIZER_FILE.to_string(), tokenizer.len() as u64),
        ]);
        Self {
            manifest,
            model,
            tokenizer,
        }
    }

    /// Parses and checks a bundle from the bytes of its three files: the manifest's format and
    /// checksums, and that the ONNX file is one of ours with the expected inputs and outputs.
    pub fn from_bytes(
        manifest: &[u8],
        model: Vec<u8>,
        tokenizer: Vec<u8>,
    ) -> Result<Self, BundleError> {
        let manifest: Manifest = serde_json::from_slice(manifest)
            .map_err(|e| corrupt(MANIFEST_FILE, format!("not a bundle manifest: {e}")))?;
        if manifest.format_version != FORMAT_VERSION {
            return Err(corrupt(
                MANIFEST_FILE,
                format!(
                    "format version {} (this build reads {FORMAT_VERSION})",
                    manifest.format_version
                ),
            ));
        }
        for (file, bytes) in [(MODEL_FILE, &model), (TOKENIZER_FILE, &tokenizer)] {
            let expected = manifest
                .sha256
                .get(file)
                .ok_or_else(|| corrupt(MANIFEST_FILE, format!("no sha256 for {file}")))?;
            let actual = sha256_hex(bytes);
            if &actual != expected {
                return Err(BundleError::Checksum {
                    file: file.into(),
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        Ok(Self {
            manifest,
            model,
            tokenizer,
        })
    }

    /// Whether the folder `dir` holds a bundle (has a manifest), rather than, say, a training
    /// run or a Hugging Face model folder.
    pub fn is_in(dir: &Path) -> bool {
        dir.join(MANIFEST_FILE).is_file()
    }

    /// Reads and checks the bundle in folder `dir`.
    pub fn read_dir(dir: &Path) -> Result<Self, BundleError> {
        let read = |file: &str| {
            std::fs::read(dir.join(file)).map_err(|e| BundleError::Unreadable {
                file: dir.join(file).display().to_string(),
                reason: e.to_string(),
            })
        };
        Self::from_bytes(
            &read(MANIFEST_FILE)?,
            read(MODEL_FILE)?,
            read(TOKENIZER_FILE)?,
        )
    }

    /// Writes the three files into `dir` (created if needed).
    pub fn write_dir(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let manifest = crate::manifest::to_json(&self.manifest);
        for (file, bytes) in [
            (MODEL_FILE, &self.model),
            (TOKENIZER_FILE, &self.tokenizer),
            (MANIFEST_FILE, &manifest),
        ] {
            let tmp = dir.join(format!("{file}.tmp"));
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, dir.join(file))?;
        }
        Ok(())
    }

    /// Decodes `model.onnx` and checks it is a classifier this project wrote.
    pub(crate) fn onnx_proto(&self) -> Result<ModelProto, BundleError> {
        let proto = tract_onnx::onnx()
            .proto_model_for_read(&mut &self.model[..])
            .map_err(|e| corrupt(MODEL_FILE, format!("not an ONNX model: {e}")))?;
        let not_ours = |reason: String| BundleError::NotOurs {
            file: MODEL_FILE.into(),
            reason,
        };
        if proto.producer_name != ONNX_PRODUCER {
            return Err(not_ours(format!(
                "its producer is '{}'",
                proto.producer_name
            )));
        }
        let graph = proto
            .graph
            .as_ref()
            .ok_or_else(|| not_ours("it has no graph".into()))?;
        let inputs: Vec<&str> = graph.input.iter().map(|i| i.name.as_str()).collect();
        let outputs: Vec<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
        if inputs != ["input_ids", "attention_mask"] || outputs != ["logits"] {
            return Err(not_ours(format!(
                "inputs {inputs:?} and outputs {outputs:?}"
            )));
        }
        Ok(proto)
    }
}
