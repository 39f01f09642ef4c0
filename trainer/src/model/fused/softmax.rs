//! The attention softmax, `softmax(scores + mask)` over the last dimension: one pass
//! forwards, one backwards.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{contiguous_f32, row_len, rows_per_task};

/// `softmax(scores + mask)` over the last dimension as a differentiable candle operation on
/// (scores, mask): CPU, f32, contiguous arguments. The mask holds one row per group of
/// consecutive score rows (`[batch, 1, 1, keys]` against `[batch, heads, queries, keys]`
/// scores) and gets no gradient.
pub(super) struct MaskedSoftmax;

impl CustomOp2 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "fused-masked-softmax"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let xs = contiguous_f32(s1, l1, self.name())?;
        let mask = contiguous_f32(s2, l2, self.name())?;
        let row = row_len(l1);
        let (rows, mask_rows) = (xs.len() / row, mask.len() / row);
        if mask.len() % row != 0 || mask_rows == 0 || rows % mask_rows != 0 {
            candle_core::bail!(
                "{}: a mask of {:?} does not fit scores of {:?}",
                self.name(),
                l2.dims(),
                l1.dims()
            );
        }
        let rows_per_mask = rows / mask_rows;
        let mut out = vec![0f32; xs.len()];
        let task = rows_per_task(row);
        out.par_chunks_mut(row * task)
            .zip(xs.par_chunks(row * task))
            .enumerate()
            .for_each(|(t, (out, xs))| {
                let rows = out.chunks_mut(row).zip(xs.chunks(row));
                for (i, (out, xs)) in rows.enumerate() {
                    let m = (t * task + i) / rows_per_mask;
                    let mask = &mask[m * row..(m + 1) * row];
                    let mut max = f32::NEG_INFINITY;
                    for ((o, x), b) in out.iter_mut().zip(xs).zip(mask) {
                        *o = x + b;
                        max = max.max(*o);
                    }
                    let mut sum = 0f32;
                    for o in out.iter_mut() {
                        *o = (*o - max).exp();
                        sum += *o;
                    }
                    let inv = 1.0 / sum;
                    out.iter_mut().for_each(|o| *o *= inv);
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _xs: &Tensor,
        _mask: &Tensor,
        probs: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad_xs = probs.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxBackward)?;
        Ok((Some(grad_xs), None))
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
        let row = row_len(l1);
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
    use super::super::masked_softmax;
    use super::super::tests::{max_difference, sample, value_and_grad};
    use candle_core::{Device, Tensor, D};

    #[test]
    fn masked_softmax_matches_candle_forwards_and_backwards() {
        let x = sample(&[2, 3, 5, 37]);
        let w = sample(&[2, 3, 5, 37]);
        // Batch 0 masks its last 7 keys, batch 1 none.
        let mut bias = vec![0f32; 2 * 37];
        bias[30..37].iter_mut().for_each(|b| *b = -10_000.0);
        let mask = Tensor::from_vec(bias, (2, 1, 1, 37), &Device::Cpu).unwrap();
        let (ours, our_grad) = value_and_grad(&x, &w, |t| masked_softmax(t, &mask));
        let (theirs, their_grad) = value_and_grad(&x, &w, |t| {
            candle_nn::ops::softmax(&t.broadcast_add(&mask)?, D::Minus1)
        });
        assert!(max_difference(&ours, &theirs) < 1e-6);
        assert!(max_difference(&our_grad, &their_grad) < 1e-5);
        let first = ours.get(0).unwrap().get(2).unwrap().get(4).unwrap();
        let first = first.to_vec1::<f32>().unwrap();
        assert!(
            first[30..].iter().all(|&p| p == 0.0),
            "masked keys get nothing"
        );
        assert!((first.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn a_mask_that_does_not_fit_is_refused() {
        let x = sample(&[2, 3, 4, 5]);
        let mask = Tensor::zeros((5, 1, 1, 5), candle_core::DType::F32, &Device::Cpu).unwrap();
        let err = masked_softmax(&x, &mask).unwrap_err().to_string();
        assert!(err.contains("does not fit"), "{err}");
    }
}
