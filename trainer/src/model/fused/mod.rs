//! Fused CPU kernels, with their backward passes, for the element-wise steps of a BERT layer
//! that dominate a training step after the matrix products: the attention softmax, the exact
//! (erf) GELU, layer normalisation and the dense layers' biases.
//!
//! Built from candle's generic operations each of them is a chain of passes over large tensors
//! (the softmax over `[batch, heads, seq, seq]` scores: max, subtract, exp, sum, divide, and
//! about twice as many passes backwards, each allocating a tensor). Here each is one pass
//! forwards and one backwards. Other devices and types keep candle's operations.

mod bias;
mod gelu;
mod layer_norm;
mod softmax;

use candle_core::{CpuStorage, Layout, Result, Tensor, D};

/// `softmax(scores + mask)` over the last dimension, the attention probabilities, with the
/// mask (0 or a large negative number per key, `[batch, 1, 1, keys]`) broadcast over heads and
/// queries; differentiable in the scores.
pub fn masked_softmax(scores: &Tensor, mask: &Tensor) -> Result<Tensor> {
    if fusable(&[scores, mask]) {
        scores
            .contiguous()?
            .apply_op2(&mask.contiguous()?, softmax::MaskedSoftmax)
    } else {
        candle_nn::ops::softmax(&scores.broadcast_add(mask)?, D::Minus1)
    }
}

/// The exact GELU, `x Φ(x)`, with Φ from the error function; differentiable.
pub fn gelu_erf(xs: &Tensor) -> Result<Tensor> {
    if fusable(&[xs]) {
        xs.contiguous()?.apply_op1(gelu::Gelu)
    } else {
        xs.gelu_erf()
    }
}

/// Layer normalisation over the last dimension, `(x - mean) / √(variance + eps) · weight +
/// bias`; differentiable.
pub fn layer_norm(xs: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    if fusable(&[xs, weight, bias]) {
        xs.contiguous()?.apply_op3(
            &weight.contiguous()?,
            &bias.contiguous()?,
            layer_norm::LayerNorm { eps: eps as f32 },
        )
    } else {
        layer_norm::reference(xs, weight, bias, eps)
    }
}

/// `xs + bias`, the bias added to every row (the last dimension); differentiable in both.
pub fn bias_add(xs: &Tensor, bias: &Tensor) -> Result<Tensor> {
    if fusable(&[xs, bias]) {
        xs.contiguous()?
            .apply_op2(&bias.contiguous()?, bias::BiasAdd)
    } else {
        xs.broadcast_add(bias)
    }
}

/// Whether the fused kernels take these tensors: f32 on the CPU (candle's operations do the rest).
fn fusable(tensors: &[&Tensor]) -> bool {
    tensors
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == candle_core::DType::F32)
}

/// The length of a row, the last dimension (1 for a scalar).
fn row_len(layout: &Layout) -> usize {
    layout.dims().last().copied().unwrap_or(1).max(1)
}

/// The f32 elements of a contiguous CPU tensor.
fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(all) = storage else {
        candle_core::bail!("{op}: f32 only");
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&all[start..end]),
        None => candle_core::bail!("{op}: the input must be contiguous"),
    }
}

/// Rows of the last dimension, processed in parallel: at least this many elements per task.
const MIN_TASK: usize = 1 << 14;

fn rows_per_task(row: usize) -> usize {
    MIN_TASK.div_ceil(row.max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Random values with a wide range, some rows with large entries.
    pub(super) fn sample(shape: &[usize]) -> Tensor {
        (Tensor::randn(0f32, 3.0, shape, &Device::Cpu).unwrap() + 0.5).unwrap()
    }

    pub(super) fn max_difference(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    /// Value and gradient of `sum(f(x) * w)` for fixed random weights `w`.
    pub(super) fn value_and_grad(
        x: &Tensor,
        w: &Tensor,
        f: impl Fn(&Tensor) -> Result<Tensor>,
    ) -> (Tensor, Tensor) {
        let (y, mut grads) = value_and_grads(&[x], w, |xs| f(xs[0]));
        (y, grads.remove(0))
    }

    /// Value of `f(inputs)` and the gradients of `sum(f(inputs) * w)` with respect to every
    /// input, for fixed random weights `w`.
    pub(super) fn value_and_grads(
        inputs: &[&Tensor],
        w: &Tensor,
        f: impl Fn(&[&Tensor]) -> Result<Tensor>,
    ) -> (Tensor, Vec<Tensor>) {
        let vars: Vec<Var> = inputs
            .iter()
            .map(|t| Var::from_tensor(t).unwrap())
            .collect();
        let tensors: Vec<&Tensor> = vars.iter().map(|v| v.as_tensor()).collect();
        let y = f(&tensors).unwrap();
        let grads = (&y * w).unwrap().sum_all().unwrap().backward().unwrap();
        let grads = tensors
            .iter()
            .map(|t| grads.get(t).unwrap().clone())
            .collect();
        (y, grads)
    }

    #[test]
    fn strided_inputs_are_made_contiguous_first() {
        let x = sample(&[6, 9]);
        let t = x.t().unwrap();
        let no_mask = Tensor::zeros((1, 6), candle_core::DType::F32, &Device::Cpu).unwrap();
        let ours = masked_softmax(&t, &no_mask).unwrap();
        let theirs = candle_nn::ops::softmax(&t, D::Minus1).unwrap();
        assert!(max_difference(&ours, &theirs) < 1e-6);
        assert!(max_difference(&gelu_erf(&t).unwrap(), &t.gelu_erf().unwrap()) < 2e-6);
    }
}
