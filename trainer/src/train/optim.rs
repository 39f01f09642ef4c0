//! AdamW with decoupled weight decay (Loshchilov & Hutter 2019), gradient clipping by global
//! norm, and a linear warm-up/decay schedule, with state that can be saved and restored.
//!
//! candle-nn's `AdamW` decays every variable alike and keeps its moments private; fine-tuning
//! needs biases and layer norms exempt from decay, and resuming needs the moments.

use std::collections::HashMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The optimiser's hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// Decoupled weight decay (not applied to biases and layer norms).
    pub weight_decay: f64,
    /// Decay of the first moment.
    pub beta1: f64,
    /// Decay of the second moment.
    pub beta2: f64,
    /// Added to the root of the second moment.
    pub eps: f64,
    /// Gradients are scaled down when their global L2 norm exceeds this.
    pub max_grad_norm: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 2e-5,
            weight_decay: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            max_grad_norm: 1.0,
        }
    }
}

/// Whether a variable is exempt from weight decay: biases and layer-norm parameters.
pub fn exempt_from_decay(name: &str) -> bool {
    name.ends_with("bias") || name.contains("LayerNorm")
}

struct Param {
    name: String,
    var: Var,
    m: Tensor,
    v: Tensor,
    decay: bool,
}

/// AdamW over every variable of a [`VarMap`].
pub struct AdamW {
    params: Vec<Param>,
    steps: usize,
    config: AdamWConfig,
}

impl AdamW {
    /// An optimiser with zero moments for every variable of `varmap` but the `frozen` ones,
    /// which it never changes.
    pub fn new(varmap: &VarMap, config: AdamWConfig, frozen: &[&str]) -> Result<Self> {
        let data = varmap
            .data()
            .lock()
            .expect("the variable map lock is never poisoned: no code panics while holding it");
        let mut params = data
            .iter()
            .filter(|(name, _)| !frozen.contains(&name.as_str()))
            .map(|(name, var)| {
                Ok(Param {
                    name: name.clone(),
                    m: var.zeros_like()?,
                    v: var.zeros_like()?,
                    decay: !exempt_from_decay(name),
                    var: var.clone(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        params.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Self {
            params,
            steps: 0,
            config,
        })
    }

    /// How many updates have been made.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// One update at learning rate `lr`; returns the gradients' global norm before clipping.
    /// Variables without a gradient are left alone.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<f32> {
        let c = self.config;
        let squares = self
            .params
            .iter()
            .filter_map(|p| grads.get(&p.var))
            .map(|g| g.sqr()?.sum_all())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let norm = if squares.is_empty() {
            0.0
        } else {
            Tensor::stack(&squares, 0)?
                .sum_all()?
                .to_scalar::<f32>()?
                .sqrt()
        };
        if !norm.is_finite() {
            return Err(Error::Setting(format!(
                "the gradient norm is {norm}: training diverged (lower --lr)"
            )));
        }
        let clip = if f64::from(norm) > c.max_grad_norm {
            c.max_grad_norm / (f64::from(norm) + 1e-6)
        } else {
            1.0
        };
        self.steps += 1;
        let t = self.steps as i32;
        let m_scale = 1.0 / (1.0 - c.beta1.powi(t));
        let v_scale = 1.0 / (1.0 - c.beta2.powi(t));
        for p in &mut self.params {
            let Some(g) = grads.get(&p.var) else { continue };
            let g = (g * clip)?;
            p.m = ((&p.m * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            p.v = ((&p.v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let update = ((&p.m * m_scale)? / ((&p.v * v_scale)?.sqrt()? + c.eps)?)?;
            let decay = if p.decay {
                1.0 - lr * c.weight_decay
            } else {
                1.0
            };
            let next = ((p.var.as_tensor() * decay)? - (update * lr)?)?;
            p.var.set(&next)?;
        }
        Ok(norm)
    }

    /// Writes both moments of every variable (`m.<name>`, `v.<name>`) to a safetensors file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors = HashMap::new();
        for p in &self.params {
            tensors.insert(format!("m.{}", p.name), p.m.clone());
            tensors.insert(format!("v.{}", p.name), p.v.clone());
        }
        candle_core::safetensors::save(&tensors, path)
            .map_err(|e| Error::run(path, format!("cannot write optimiser state: {e}")))
    }

    /// Restores the moments written by [`AdamW::save`] and the number of steps taken.
    pub fn load(&mut self, path: &Path, steps: usize) -> Result<()> {
        let device = self
            .params
            .first()
            .map(|p| p.var.device().clone())
            .unwrap_or(candle_core::Device::Cpu);
        let tensors = candle_core::safetensors::load(path, &device)
            .map_err(|e| Error::run(path, format!("cannot read optimiser state: {e}")))?;
        for p in &mut self.params {
            for (moment, key) in [(&mut p.m, "m"), (&mut p.v, "v")] {
                let name = format!("{key}.{}", p.name);
                let value = tensors.get(&name).ok_or_else(|| {
                    Error::run(path, format!("missing optimiser tensor '{name}'"))
                })?;
                if value.dims() != p.var.dims() {
                    return Err(Error::run(
                        path,
                        format!("optimiser tensor '{name}' has the wrong shape"),
                    ));
                }
                *moment = value.clone();
            }
        }
        self.steps = steps;
        Ok(())
    }
}

/// Linear warm-up from 0 to the peak over the first `warmup` steps, then linear decay to 0 at
/// `total` steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Peak learning rate.
    pub peak: f64,
    /// Steps of warm-up.
    pub warmup: usize,
    /// Steps in all.
    pub total: usize,
}

impl Schedule {
    /// A schedule warming up over `warmup_fraction` of `total` steps.
    pub fn new(peak: f64, total: usize, warmup_fraction: f64) -> Self {
        Self {
            peak,
            warmup: (total as f64 * warmup_fraction).round() as usize,
            total: total.max(1),
        }
    }

    /// The learning rate of the update number `step` (0-based).
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup {
            self.peak * (step + 1) as f64 / self.warmup as f64
        } else {
            let left = self.total.saturating_sub(step) as f64;
            let span = (self.total - self.warmup).max(1) as f64;
            self.peak * (left / span).clamp(0.0, 1.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        let s = Schedule::new(1.0, 100, 0.1);
        assert_eq!(s.warmup, 10);
        assert!((s.lr(0) - 0.1).abs() < 1e-12);
        assert!((s.lr(9) - 1.0).abs() < 1e-12);
        assert!((s.lr(10) - 1.0).abs() < 1e-12);
        assert!((s.lr(55) - 0.5).abs() < 1e-12);
        assert_eq!(s.lr(100), 0.0);
        assert!(s.lr(30) > s.lr(31));
    }

    #[test]
    fn decay_spares_biases_and_layer_norms() {
        assert!(exempt_from_decay("encoder.layer.0.output.dense.bias"));
        assert!(exempt_from_decay("embeddings.LayerNorm.weight"));
        assert!(!exempt_from_decay("encoder.layer.0.output.dense.weight"));
        assert!(!exempt_from_decay("classifier.weight"));
    }

    /// One step by hand: m = 0.1 g, v = 0.001 g², bias-corrected update = sign(g) (eps aside).
    #[test]
    fn first_step_matches_the_formula_with_and_without_decay() {
        let varmap = VarMap::new();
        let w = Var::from_tensor(&Tensor::new(&[1.0f32, -2.0], &Device::Cpu).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::new(&[0.5f32], &Device::Cpu).unwrap()).unwrap();
        varmap
            .data()
            .lock()
            .unwrap()
            .insert("dense.weight".into(), w.clone());
        varmap
            .data()
            .lock()
            .unwrap()
            .insert("dense.bias".into(), b.clone());
        let config = AdamWConfig {
            weight_decay: 0.1,
            max_grad_norm: 100.0,
            ..AdamWConfig::default()
        };
        let mut opt = AdamW::new(&varmap, config, &[]).unwrap();
        // loss = 3 w0 + w1 - 2 b  → g = [3, 1], [-2]
        let loss = ((w.as_tensor().to_dtype(DType::F32).unwrap()
            * &Tensor::new(&[3f32, 1.0], &Device::Cpu).unwrap())
            .unwrap()
            .sum_all()
            .unwrap()
            - (b.as_tensor() * 2.0).unwrap().sum_all().unwrap())
        .unwrap();
        let grads = loss.backward().unwrap();
        let norm = opt.step(&grads, 0.01).unwrap();
        assert!((norm - (14f32).sqrt()).abs() < 1e-5);
        let w_now = w.as_tensor().to_vec1::<f32>().unwrap();
        assert!(
            (w_now[0] - (1.0 * (1.0 - 0.001) - 0.01)).abs() < 1e-6,
            "{w_now:?}"
        );
        assert!(
            (w_now[1] - (-2.0 * (1.0 - 0.001) - 0.01)).abs() < 1e-6,
            "{w_now:?}"
        );
        let b_now = b.as_tensor().to_vec1::<f32>().unwrap();
        assert!((b_now[0] - (0.5 + 0.01)).abs() < 1e-6, "{b_now:?}");
        assert_eq!(opt.steps(), 1);
    }

    #[test]
    fn clipping_scales_the_gradient_to_the_maximum_norm_and_state_round_trips() {
        let varmap = VarMap::new();
        let w = Var::from_tensor(&Tensor::new(&[0f32, 0.0], &Device::Cpu).unwrap()).unwrap();
        varmap.data().lock().unwrap().insert("w".into(), w.clone());
        let mut opt = AdamW::new(&varmap, AdamWConfig::default(), &[]).unwrap();
        let target = Tensor::new(&[30f32, 40.0], &Device::Cpu).unwrap();
        let grads = (w.as_tensor() * &target)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let norm = opt.step(&grads, 1.0).unwrap();
        assert!((norm - 50.0).abs() < 1e-4);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("optimizer.safetensors");
        opt.save(&path).unwrap();
        let saved = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
        // m = (1 - beta1) * g * (1 / 50): the clipped gradient is [0.6, 0.8].
        let m = saved["m.w"].to_vec1::<f32>().unwrap();
        assert!(
            (m[0] - 0.06).abs() < 1e-6 && (m[1] - 0.08).abs() < 1e-6,
            "{m:?}"
        );
        let mut restored = AdamW::new(&varmap, AdamWConfig::default(), &[]).unwrap();
        restored.load(&path, 1).unwrap();
        assert_eq!(restored.steps(), 1);
        restored
            .save(&dir.path().join("again.safetensors"))
            .unwrap();
        let again =
            candle_core::safetensors::load(dir.path().join("again.safetensors"), &Device::Cpu)
                .unwrap();
        assert_eq!(
            again["v.w"].to_vec1::<f32>().unwrap(),
            saved["v.w"].to_vec1::<f32>().unwrap()
        );
    }
}
