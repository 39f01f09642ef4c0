//! Drop-out driven by a seeded generator, so that a training run is reproducible.
//!
//! Each call draws one seed from the run's generator; the mask comes in pieces of a fixed number
//! of elements, each drawn from its own generator seeded with that seed and the piece's number.
//! So the pieces are computed in parallel, the same on any number of threads, and again for the
//! backward pass instead of keeping the mask in memory.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use rayon::prelude::*;

/// The random source of a training forward pass; `None` means evaluation (no drop-out).
pub type TrainRng<'a> = Option<&'a mut SmallRng>;

/// Elements per piece of a mask (and per parallel task).
const PIECE: usize = 1 << 14;

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
        let mask = Mask {
            seed: rng.random(),
            p: self.p,
        };
        if xs.device().is_cpu() && xs.dtype() == candle_core::DType::F32 {
            xs.contiguous()?.apply_op1(mask)
        } else {
            let factors = Tensor::from_vec(mask.factors(xs.elem_count()), xs.shape(), xs.device())?;
            xs.mul(&factors.to_dtype(xs.dtype())?)
        }
    }
}

/// One drop-out mask: element `i` is kept, times `1 / (1 - p)`, when its 32-bit draw, as a
/// fraction of 2³², is at least `p`. Piece `k` (elements `k PIECE..`) draws from a generator
/// seeded with `seed + k`.
#[derive(Debug, Clone, Copy)]
struct Mask {
    seed: u64,
    p: f32,
}

impl Mask {
    /// The factors (0 or `1 / (1 - p)`) of a tensor of `len` elements, one piece after another.
    fn factors(&self, len: usize) -> Vec<f32> {
        let mut out = vec![1f32; len];
        for (piece, values) in out.chunks_mut(PIECE).enumerate() {
            self.apply(piece, values);
        }
        out
    }

    /// Multiplies `values`, piece number `piece` of the tensor, by their factors.
    fn apply(&self, piece: usize, values: &mut [f32]) {
        let mut draws = SmallRng::seed_from_u64(self.seed.wrapping_add(piece as u64));
        let keep = 1.0 / (1.0 - self.p);
        // p as a 32-bit fraction: compare integers, not floats.
        let cut = (f64::from(self.p) * 4_294_967_296.0) as u64;
        for v in values {
            *v *= if u64::from(draws.next_u32()) < cut {
                0.0
            } else {
                keep
            };
        }
    }

    /// `xs` times the mask, the pieces in parallel.
    fn apply_all(&self, xs: &[f32]) -> Vec<f32> {
        let mut out = xs.to_vec();
        out.par_chunks_mut(PIECE)
            .enumerate()
            .for_each(|(piece, values)| self.apply(piece, values));
        out
    }
}

impl CustomOp1 for Mask {
    fn name(&self) -> &'static str {
        "seeded-dropout"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(all), Some((start, end))) = (storage, layout.contiguous_offsets())
        else {
            candle_core::bail!("{}: a contiguous f32 tensor only", self.name());
        };
        let out = self.apply_all(&all[start..end]);
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    /// The same mask on the gradient.
    fn bwd(&self, _xs: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(self)?))
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

    #[test]
    fn the_mask_is_the_same_in_parallel_or_not_and_masks_the_gradient_too() {
        let n = 3 * PIECE + 123;
        let mask = Mask { seed: 7, p: 0.25 };
        let whole = mask.factors(n);
        assert_eq!(mask.apply_all(&vec![1.0; n]), whole);
        assert_ne!(whole[..PIECE], whole[PIECE..2 * PIECE], "pieces differ");
        let kept = whole.iter().filter(|f| **f > 0.0).count() as f64 / n as f64;
        assert!((kept - 0.75).abs() < 0.01, "{kept}");

        let xs = candle_core::Var::ones(n, candle_core::DType::F32, &Device::Cpu).unwrap();
        let weights = Tensor::arange(0f32, n as f32, &Device::Cpu).unwrap();
        let out = xs.as_tensor().apply_op1(mask).unwrap();
        let grads = (&out * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let grad = grads.get(xs.as_tensor()).unwrap();
        let expected = (&out * &weights).unwrap();
        assert_eq!(
            grad.to_vec1::<f32>().unwrap(),
            expected.to_vec1::<f32>().unwrap()
        );
    }
}
