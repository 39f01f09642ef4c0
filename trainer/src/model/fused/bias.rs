//! Adding a bias to every row: one pass forwards; backwards the input's gradient is the output's
//! and the bias's is one parallel sum over the rows (candle reduces the broadcast dimensions
//! with a strided walk, several times slower).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{contiguous_f32, row_len, rows_per_task};

/// `xs + bias` row by row as a differentiable candle operation on (input, bias): CPU, f32,
/// contiguous arguments, the bias as long as the input's last dimension.
pub(super) struct BiasAdd;

impl CustomOp2 for BiasAdd {
    fn name(&self) -> &'static str {
        "fused-bias-add"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let xs = contiguous_f32(s1, l1, self.name())?;
        let bias = contiguous_f32(s2, l2, self.name())?;
        let row = bias.len().max(1);
        if l1.dims().last() != Some(&bias.len()) {
            candle_core::bail!(
                "{}: a bias of {:?} does not fit rows of {:?}",
                self.name(),
                l2.dims(),
                l1.dims()
            );
        }
        let mut out = vec![0f32; xs.len()];
        let chunk = row * rows_per_task(row);
        out.par_chunks_mut(chunk)
            .zip(xs.par_chunks(chunk))
            .for_each(|(out, xs)| {
                for (out, xs) in out.chunks_mut(row).zip(xs.chunks(row)) {
                    for ((o, x), b) in out.iter_mut().zip(xs).zip(bias) {
                        *o = x + b;
                    }
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _xs: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad_bias = grad.contiguous()?.apply_op1_no_bwd(&RowSum)?;
        Ok((Some(grad.clone()), Some(grad_bias.reshape(bias.shape())?)))
    }
}

/// The sum of all rows (over every dimension but the last).
struct RowSum;

impl CustomOp1 for RowSum {
    fn name(&self) -> &'static str {
        "fused-row-sum"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let xs = contiguous_f32(storage, layout, self.name())?;
        let row = row_len(layout);
        let chunk = row * rows_per_task(row);
        let sum = xs
            .par_chunks(chunk)
            .fold(
                || vec![0f32; row],
                |mut sum, xs| {
                    for xs in xs.chunks(row) {
                        sum.iter_mut().zip(xs).for_each(|(s, x)| *s += x);
                    }
                    sum
                },
            )
            .reduce(
                || vec![0f32; row],
                |mut a, b| {
                    a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
                    a
                },
            );
        Ok((CpuStorage::F32(sum), Shape::from(row)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::bias_add;
    use super::super::tests::{max_difference, sample, value_and_grads};
    use candle_core::{Device, Tensor};

    #[test]
    fn bias_add_matches_candle_forwards_and_in_both_gradients() {
        let xs = sample(&[3, 70, 24]);
        let bias = sample(&[24]);
        let upstream = sample(&[3, 70, 24]);
        let inputs = [&xs, &bias];
        let (ours, our_grads) = value_and_grads(&inputs, &upstream, |t| bias_add(t[0], t[1]));
        let (theirs, their_grads) =
            value_and_grads(&inputs, &upstream, |t| t[0].broadcast_add(t[1]));
        let [our_x, our_b] = [&our_grads[0], &our_grads[1]];
        let [their_x, their_b] = [&their_grads[0], &their_grads[1]];
        assert!(max_difference(&ours, &theirs) < 1e-6);
        assert!(max_difference(our_x, their_x) < 1e-6);
        assert_eq!(our_b.dims(), &[24]);
        // A sum of 210 terms of up to ~100: the order of addition differs.
        assert!(max_difference(our_b, their_b) < 1e-3);
    }

    #[test]
    fn a_bias_of_another_size_is_refused() {
        let xs = sample(&[2, 5]);
        let bias = Tensor::zeros(4, candle_core::DType::F32, &Device::Cpu).unwrap();
        let err = bias_add(&xs, &bias).unwrap_err().to_string();
        assert!(err.contains("does not fit"), "{err}");
    }
}
