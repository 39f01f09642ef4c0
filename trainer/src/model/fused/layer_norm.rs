//! Layer normalisation over the last dimension with a weight and a bias: one pass forwards, one
//! backwards giving the gradients of the input, the weight and the bias together.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use super::{contiguous_f32, rows_per_task};

/// Layer normalisation from candle's differentiable operations: what other devices run, and
/// the reference the fused kernels are tested against.
pub(super) fn reference(xs: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = xs.mean_keepdim(D::Minus1)?;
    let centred = xs.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centred.broadcast_div(&(var + eps)?.sqrt()?)?;
    normed.broadcast_mul(weight)?.broadcast_add(bias)
}

/// Mean and `1 / √(variance + eps)` of one row (two passes, as the reference).
fn moments(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = row.iter().sum::<f32>() / n;
    let var = row.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// The layer norm as a differentiable candle operation on (input, weight, bias): CPU, f32,
/// contiguous arguments.
pub(super) struct LayerNorm {
    pub(super) eps: f32,
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "fused-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let xs = contiguous_f32(s1, l1, self.name())?;
        let weight = contiguous_f32(s2, l2, self.name())?;
        let bias = contiguous_f32(s3, l3, self.name())?;
        let row = weight.len().max(1);
        if bias.len() != row || xs.len() % row != 0 {
            candle_core::bail!("{}: weight, bias and rows differ in size", self.name());
        }
        let mut out = vec![0f32; xs.len()];
        let chunk = row * rows_per_task(row);
        out.par_chunks_mut(chunk)
            .zip(xs.par_chunks(chunk))
            .for_each(|(out, xs)| {
                for (out, xs) in out.chunks_mut(row).zip(xs.chunks(row)) {
                    let (mean, rstd) = moments(xs, self.eps);
                    for (((o, x), w), b) in out.iter_mut().zip(xs).zip(weight).zip(bias) {
                        *o = (x - mean) * rstd * w + b;
                    }
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        xs: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let hidden = weight.elem_count();
        let rows = xs.elem_count() / hidden;
        // One tensor of `rows + 2` rows: the input's gradient, then the weight's and the bias's.
        let all = xs.apply_op3_no_bwd(weight, &grad.contiguous()?, &LayerNormBackward(self.eps))?;
        let grad_xs = all.narrow(0, 0, rows)?.reshape(xs.shape())?;
        let grad_weight = all.narrow(0, rows, 1)?.reshape(weight.shape())?;
        let grad_bias = all.narrow(0, rows + 1, 1)?.reshape(weight.shape())?;
        Ok((Some(grad_xs), Some(grad_weight), Some(grad_bias)))
    }
}

/// From (input, weight, output gradient): with `x̂ = (x - mean) rstd` and `g = dy w`,
/// `dx = rstd (g - mean(g) - x̂ mean(g x̂))`, `dw = Σ dy x̂`, `db = Σ dy` over the rows.
struct LayerNormBackward(f32);

impl CustomOp3 for LayerNormBackward {
    fn name(&self) -> &'static str {
        "fused-layer-norm-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let xs = contiguous_f32(s1, l1, self.name())?;
        let weight = contiguous_f32(s2, l2, self.name())?;
        let grads = contiguous_f32(s3, l3, self.name())?;
        let row = weight.len().max(1);
        let rows = xs.len() / row;
        let mut out = vec![0f32; xs.len() + 2 * row];
        let (grad_xs, sums) = out.split_at_mut(xs.len());
        let chunk = row * rows_per_task(row);
        let zeros = || (vec![0f32; row], vec![0f32; row]);
        let (grad_weight, grad_bias) = grad_xs
            .par_chunks_mut(chunk)
            .zip(xs.par_chunks(chunk).zip(grads.par_chunks(chunk)))
            .fold(zeros, |(mut dw, mut db), (out, (xs, grads))| {
                let rows = out
                    .chunks_mut(row)
                    .zip(xs.chunks(row).zip(grads.chunks(row)));
                for (out, (xs, dy)) in rows {
                    let (mean, rstd) = moments(xs, self.0);
                    let n = row as f32;
                    let (mut mean_g, mut mean_gx) = (0f32, 0f32);
                    for ((x, dy), w) in xs.iter().zip(dy).zip(weight) {
                        let g = dy * w;
                        mean_g += g;
                        mean_gx += g * (x - mean) * rstd;
                    }
                    mean_g /= n;
                    mean_gx /= n;
                    for (i, ((o, x), dy)) in out.iter_mut().zip(xs).zip(dy).enumerate() {
                        let normed = (x - mean) * rstd;
                        *o = rstd * (dy * weight[i] - mean_g - normed * mean_gx);
                        dw[i] += dy * normed;
                        db[i] += dy;
                    }
                }
                (dw, db)
            })
            .reduce(zeros, |(mut dw, mut db), (dw2, db2)| {
                dw.iter_mut().zip(dw2).for_each(|(a, b)| *a += b);
                db.iter_mut().zip(db2).for_each(|(a, b)| *a += b);
                (dw, db)
            });
        sums[..row].copy_from_slice(&grad_weight);
        sums[row..].copy_from_slice(&grad_bias);
        Ok((CpuStorage::F32(out), Shape::from((rows + 2, row))))
    }
}

#[cfg(test)]
mod tests {
    use super::super::layer_norm;
    use super::super::tests::{max_difference, sample, value_and_grads};
    use super::*;
    use candle_core::Device;

    #[test]
    fn layer_norm_matches_candle_forwards_and_in_all_three_gradients() {
        let xs = sample(&[3, 11, 48]);
        let weight = sample(&[48]);
        let bias = sample(&[48]);
        let upstream = sample(&[3, 11, 48]);
        let inputs = [&xs, &weight, &bias];
        let (ours, our_grads) =
            value_and_grads(&inputs, &upstream, |t| layer_norm(t[0], t[1], t[2], 1e-12));
        let (theirs, their_grads) =
            value_and_grads(&inputs, &upstream, |t| reference(t[0], t[1], t[2], 1e-12));
        assert!(max_difference(&ours, &theirs) < 1e-5);
        for (name, (a, b)) in ["input", "weight", "bias"]
            .iter()
            .zip(our_grads.iter().zip(&their_grads))
        {
            assert_eq!(a.dims(), b.dims(), "{name}");
            let scale: f32 = b
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar()
                .unwrap();
            let diff = max_difference(a, b) / scale;
            assert!(diff < 1e-5, "{name}: {diff} relative");
        }
    }

    #[test]
    fn a_constant_row_normalises_to_the_bias() {
        let xs = Tensor::full(3f32, (2, 4), &Device::Cpu).unwrap();
        let weight = Tensor::new(&[1f32, 2.0, 3.0, 4.0], &Device::Cpu).unwrap();
        let bias = Tensor::new(&[0.5f32, -0.5, 0.0, 1.0], &Device::Cpu).unwrap();
        let out = layer_norm(&xs, &weight, &bias, 1e-5).unwrap();
        assert_eq!(out.to_vec2::<f32>().unwrap()[1], vec![0.5, -0.5, 0.0, 1.0]);
    }
}
