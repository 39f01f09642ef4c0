//! The exact GELU, `x Φ(x)`: one pass forwards, one backwards, Φ and its density sharing one
//! exponential.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{contiguous_f32, MIN_TASK};

/// `1 / √2`.
const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// `1 / √(2π)`.
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// Φ(x), the standard normal distribution function, and its density φ(x), sharing one
/// exponential: Φ from erf by Abramowitz and Stegun 7.1.26 (absolute error under 1.5e-7).
fn normal_cdf_pdf(x: f32) -> (f32, f32) {
    let gauss = (-0.5 * x * x).exp();
    let z = (x * FRAC_1_SQRT_2).abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    // Φ(-|x|) = (1 - erf(|x| / √2)) / 2 = poly e^{-x²/2} / 2, without cancellation.
    let tail = 0.5 * poly * gauss;
    let cdf = if x < 0.0 { tail } else { 1.0 - tail };
    (cdf, FRAC_1_SQRT_2PI * gauss)
}

/// Applies `f` to every element of `xs` in parallel.
fn map_f32(xs: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    let mut out = vec![0f32; xs.len()];
    out.par_chunks_mut(MIN_TASK)
        .zip(xs.par_chunks(MIN_TASK))
        .for_each(|(out, xs)| out.iter_mut().zip(xs).for_each(|(o, &x)| *o = f(x)));
    out
}

/// The GELU as a differentiable candle operation (CPU, f32, contiguous input).
pub(super) struct Gelu;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "fused-gelu-erf"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let xs = contiguous_f32(storage, layout, self.name())?;
        let out = map_f32(xs, |x| x * normal_cdf_pdf(x).0);
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, xs: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            xs.apply_op2_no_bwd(&grad.contiguous()?, &GeluBackward)?,
        ))
    }
}

/// `dx = dy (Φ(x) + x φ(x))`.
struct GeluBackward;

impl CustomOp2 for GeluBackward {
    fn name(&self) -> &'static str {
        "fused-gelu-erf-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let xs = contiguous_f32(s1, l1, self.name())?;
        let grads = contiguous_f32(s2, l2, self.name())?;
        let mut out = vec![0f32; xs.len()];
        out.par_chunks_mut(MIN_TASK)
            .zip(xs.par_chunks(MIN_TASK).zip(grads.par_chunks(MIN_TASK)))
            .for_each(|(out, (xs, grads))| {
                for ((o, &x), &g) in out.iter_mut().zip(xs).zip(grads) {
                    let (cdf, pdf) = normal_cdf_pdf(x);
                    *o = g * (cdf + x * pdf);
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::gelu_erf;
    use super::super::tests::{max_difference, sample, value_and_grad};
    use super::*;

    #[test]
    fn gelu_matches_candle_forwards_and_backwards() {
        let x = sample(&[4, 7, 129]);
        let w = sample(&[4, 7, 129]);
        let (ours, our_grad) = value_and_grad(&x, &w, gelu_erf);
        let (theirs, their_grad) = value_and_grad(&x, &w, |t| t.gelu_erf());
        let forward = max_difference(&ours, &theirs);
        // Within 5e-7 of the largest gradient.
        let scale = their_grad
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap();
        let backward = max_difference(&our_grad, &their_grad) / scale.to_scalar::<f32>().unwrap();
        assert!(
            forward < 1e-6 && backward < 5e-7,
            "forward {forward}, relative backward {backward}"
        );
    }

    #[test]
    fn the_normal_cdf_is_exact_to_single_precision_where_it_matters() {
        for (x, cdf) in [
            (0.0, 0.5),
            (1.0, 0.841_344_7),
            (-1.0, 0.158_655_25),
            (-3.0, 0.001_349_898),
        ] {
            let (ours, _) = normal_cdf_pdf(x);
            assert!((ours - cdf).abs() < 2e-7, "Φ({x}) = {ours}, not {cdf}");
        }
        assert_eq!(normal_cdf_pdf(-20.0).0, 0.0);
        assert_eq!(normal_cdf_pdf(20.0).0, 1.0);
        assert!((normal_cdf_pdf(0.0).1 - FRAC_1_SQRT_2PI).abs() < 1e-7);
    }
}
