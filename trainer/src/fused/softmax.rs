//! Softmax over the last dimension: one pass forwards, one backwards.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{contiguous_f32, rows_per_task};

/// The softmax as a differentiable candle operation (CPU, f32, contiguous input).
pub(super) struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "fused-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let xs = contiguous_f32(storage, layout, self.name())?;
        let row = layout.dims().last().copied().unwrap_or(1).max(1);
        let mut out = vec![0f32; xs.len()];
        let chunk = row * rows_per_task(row);
        out.par_chunks_mut(chunk)
            .zip(xs.par_chunks(chunk))
            .for_each(|(out, xs)| {
                for (out, xs) in out.chunks_mut(row).zip(xs.chunks(row)) {
                    let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mut sum = 0f32;
                    for (o, &x) in out.iter_mut().zip(xs) {
                        *o = (x - max).exp();
                        sum += *o;
                    }
                    let inv = 1.0 / sum;
                    out.iter_mut().for_each(|o| *o *= inv);
                }
            });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, _xs: &Tensor, probs: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            probs.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxBackward)?,
        ))
    }
}

/// `dx = y (dy - Σ dy y)` row by row, from the softmax's output `y` and its gradient `dy`.
struct SoftmaxBackward;

impl CustomOp2 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "fused-softmax-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let probs = contiguous_f32(s1, l1, self.name())?;
        let grads = contiguous_f32(s2, l2, self.name())?;
        let row = l1.dims().last().copied().unwrap_or(1).max(1);
        let mut out = vec![0f32; probs.len()];
        let chunk = row * rows_per_task(row);
        out.par_chunks_mut(chunk)
            .zip(probs.par_chunks(chunk).zip(grads.par_chunks(chunk)))
            .for_each(|(out, (probs, grads))| {
                let rows = out
                    .chunks_mut(row)
                    .zip(probs.chunks(row).zip(grads.chunks(row)));
                for (out, (probs, grads)) in rows {
                    let dot: f32 = probs.iter().zip(grads).map(|(p, g)| p * g).sum();
                    for ((o, p), g) in out.iter_mut().zip(probs).zip(grads) {
                        *o = p * (g - dot);
                    }
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::softmax_last_dim;
    use super::super::tests::{max_difference, sample, value_and_grad};
    use candle_core::{Device, Tensor, D};

    #[test]
    fn softmax_matches_candle_forwards_and_backwards() {
        let x = sample(&[2, 3, 5, 37]);
        let w = sample(&[2, 3, 5, 37]);
        let (ours, our_grad) = value_and_grad(&x, &w, softmax_last_dim);
        let (theirs, their_grad) =
            value_and_grad(&x, &w, |t| candle_nn::ops::softmax(t, D::Minus1));
        assert!(max_difference(&ours, &theirs) < 1e-6);
        assert!(max_difference(&our_grad, &their_grad) < 1e-5);
        // Rows sum to one, masked entries (-10000) get nothing.
        let masked = Tensor::new(&[[1f32, -10_000.0, 2.0], [0.0, 0.0, 0.0]], &Device::Cpu).unwrap();
        let probs = softmax_last_dim(&masked).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(probs[0][1], 0.0);
        assert!((probs[0].iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(probs[1].iter().all(|&p| (p - 1.0 / 3.0).abs() < 1e-7));
    }
}
