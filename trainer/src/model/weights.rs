//! Reading checkpoint tensors into trainable candle variables, with errors that name the tensor.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use rand::Rng;
use rand_distr::{Distribution, Normal};

use crate::error::{Error, Result};

/// The tensors of one safetensors file, with the prefix its encoder tensors carry (`bert.` in
/// `BertForSequenceClassification` checkpoints, none in `BertModel` ones) already detected.
pub struct WeightFile {
    tensors: HashMap<String, Tensor>,
    path: PathBuf,
    prefix: String,
}

impl WeightFile {
    /// Reads every tensor of `path` onto the CPU.
    pub fn open(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::model(path, "file not found"));
        }
        let tensors = candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| Error::model(path, format!("not a readable safetensors file: {e}")))?;
        let prefix = if tensors.contains_key("bert.embeddings.word_embeddings.weight") {
            "bert.".to_string()
        } else {
            String::new()
        };
        Ok(Self {
            tensors,
            path: path.to_path_buf(),
            prefix,
        })
    }

    /// Whether the file holds a tensor of that (unprefixed) name.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The tensor of that (unprefixed) name: under the file's encoder prefix, or without one
    /// (the head's, `classifier.`).
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors
            .get(&format!("{}{name}", self.prefix))
            .or_else(|| self.tensors.get(name))
    }
}

/// Creates named variables in a [`VarMap`], either from a [`WeightFile`] or freshly initialised;
/// names are hierarchical as in candle's `VarBuilder` (`encoder.layer.0.attention...`).
#[derive(Clone)]
pub struct VarLoader<'a> {
    file: &'a WeightFile,
    varmap: &'a VarMap,
    device: &'a Device,
    path: String,
}

impl<'a> VarLoader<'a> {
    /// A loader at the root of the names.
    pub fn new(file: &'a WeightFile, varmap: &'a VarMap, device: &'a Device) -> Self {
        Self {
            file,
            varmap,
            device,
            path: String::new(),
        }
    }

    /// The loader for the names under `name`.
    pub fn pp(&self, name: impl std::fmt::Display) -> Self {
        let mut sub = self.clone();
        sub.path = self.name(&name.to_string());
        sub
    }

    fn name(&self, leaf: &str) -> String {
        if self.path.is_empty() {
            leaf.to_string()
        } else {
            format!("{}.{leaf}", self.path)
        }
    }

    /// Loads tensor `leaf` (under the encoder prefix the file uses) as a trainable f32 variable.
    pub fn load(&self, leaf: &str, shape: &[usize]) -> Result<Tensor> {
        let name = self.name(leaf);
        let stored = self
            .file
            .get(&name)
            .ok_or_else(|| Error::model(&self.file.path, format!("missing tensor '{name}'")))?;
        if stored.dims() != shape {
            return Err(Error::model(
                &self.file.path,
                format!(
                    "tensor '{name}' has shape {:?}, the configuration needs {shape:?}",
                    stored.dims()
                ),
            ));
        }
        let value = stored.to_dtype(DType::F32)?.to_device(self.device)?;
        self.insert(name, value)
    }

    /// Creates variable `leaf` from N(0, std²) drawn from `rng` (reproducible, unlike candle's
    /// unseeded CPU generator).
    pub fn normal(
        &self,
        leaf: &str,
        shape: &[usize],
        std: f64,
        rng: &mut impl Rng,
    ) -> Result<Tensor> {
        let normal = Normal::new(0f32, std as f32)
            .map_err(|e| Error::Setting(format!("initialiser: {e}")))?;
        let count = shape.iter().product();
        let values: Vec<f32> = (0..count).map(|_| normal.sample(rng)).collect();
        let value = Tensor::from_vec(values, shape, self.device)?;
        self.insert(self.name(leaf), value)
    }

    /// Creates variable `leaf` filled with zeros.
    pub fn zeros(&self, leaf: &str, shape: &[usize]) -> Result<Tensor> {
        let value = Tensor::zeros(shape, DType::F32, self.device)?;
        self.insert(self.name(leaf), value)
    }

    fn insert(&self, name: String, value: Tensor) -> Result<Tensor> {
        let var = Var::from_tensor(&value)?;
        let tensor = var.as_tensor().clone();
        self.varmap
            .data()
            .lock()
            .expect("the variable map lock is never poisoned: no code panics while holding it")
            .insert(name, var);
        Ok(tensor)
    }
}
