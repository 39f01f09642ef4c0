//! Drop-out driven by a seeded generator, so that a training run is reproducible.

use candle_core::{Result, Tensor};
use rand::rngs::SmallRng;
use rand::Rng;

/// The random source of a training forward pass; `None` means evaluation (no drop-out).
pub type TrainRng<'a> = Option<&'a mut SmallRng>;

/// Zeroes each element with probability `p` and scales the rest by `1 / (1 - p)` while
/// training; the identity in evaluation.
///
/// candle-nn's drop-out draws from an unseedable CPU generator (and candle-transformers' BERT
/// has none at all), hence this one.
#[derive(Debug, Clone, Copy)]
pub struct Dropout {
    p: f32,
}

impl Dropout {
    /// Drop-out with probability `p` (in `[0, 1)`).
    pub fn new(p: f64) -> Self {
        Self {
            p: p.clamp(0.0, 0.99) as f32,
        }
    }

    /// Applies drop-out when `rng` is given.
    pub fn forward(&self, xs: &Tensor, rng: TrainRng) -> Result<Tensor> {
        let Some(rng) = rng else {
            return Ok(xs.clone());
        };
        if self.p == 0.0 {
            return Ok(xs.clone());
        }
        let keep = 1.0 / (1.0 - self.p);
        let mask: Vec<f32> = (0..xs.elem_count())
            .map(|_| {
                if rng.random::<f32>() < self.p {
                    0.0
                } else {
                    keep
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, xs.shape(), xs.device())?;
        xs.mul(&mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use rand::SeedableRng;

    #[test]
    fn drops_about_p_and_keeps_the_expectation() {
        let xs = Tensor::ones(10_000, candle_core::DType::F32, &Device::Cpu).unwrap();
        let mut rng = SmallRng::seed_from_u64(1);
        let out = Dropout::new(0.1).forward(&xs, Some(&mut rng)).unwrap();
        let values = out.to_vec1::<f32>().unwrap();
        let dropped = values.iter().filter(|v| **v == 0.0).count();
        assert!((800..1200).contains(&dropped), "{dropped}");
        let mean = values.iter().sum::<f32>() / values.len() as f32;
        assert!((mean - 1.0).abs() < 0.03, "{mean}");
        let eval = Dropout::new(0.1).forward(&xs, None).unwrap();
        assert_eq!(eval.to_vec1::<f32>().unwrap(), vec![1.0; 10_000]);
    }
}
