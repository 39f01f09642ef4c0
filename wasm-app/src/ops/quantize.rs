//! ONNX's `DynamicQuantizeLinear` as tract runs it for us: vectorised, and straight to the
//! int8 its integer matrix kernels take.
//!
//! tract-onnx 0.23.9 runs the operator one value at a time (a branchy min/max fold, then a
//! division and a `round_ties_even` that is a libm call on baseline x86-64) and writes u8,
//! which its `MatMulInteger` then shifts to i8 in one more pass: 47 % of an int8-dynamic
//! MiniLM-L6 call at 256 tokens on one thread (`feelings bench --profile`). This operator
//! computes the same scale and zero point as the ONNX definition (`(max(x, 0) - min(x, 0)) /
//! 255`, zero point `round(-min / scale)`, values `saturate(round(x / scale) + zero point)`,
//! rounding half to even) and returns the values and the zero point minus 128, as i8:
//! `MatMulInteger` subtracts the zero point from the values, so the product is the same, and
//! the ONNX file keeps the standard u8 form ONNX Runtime runs.

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

/// `DynamicQuantizeLinear`'s builder for [`tract_onnx::Onnx::op_register`].
pub fn dynamic_quantize_linear(
    _ctx: &ParsingContext,
    _node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok((expand(DynamicQuantizeToI8), vec![]))
}

/// The ONNX operator, with i8 outputs (see the module's documentation).
#[derive(Debug, Clone, Default, Hash, PartialEq, Eq)]
struct DynamicQuantizeToI8;

impl Expansion for DynamicQuantizeToI8 {
    fn name(&self) -> StaticName {
        "DynamicQuantizeToI8".into()
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(3)
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 3)?;
        s.equals(&inputs[0].datum_type, f32::datum_type())?;
        s.equals(&inputs[0].shape, &outputs[0].shape)?;
        s.equals(&outputs[0].datum_type, i8::datum_type())?;
        s.equals(&outputs[1].datum_type, f32::datum_type())?;
        s.equals(&outputs[1].rank, 0)?;
        s.equals(&outputs[2].datum_type, i8::datum_type())?;
        s.equals(&outputs[2].rank, 0)?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        target: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        target.wire_node(prefix, QuantizeToI8, &[inputs[0]])
    }
}

/// The typed operator [`DynamicQuantizeToI8`] wires.
#[derive(Debug, Clone, Default, Hash, PartialEq, Eq)]
struct QuantizeToI8;

impl Op for QuantizeToI8 {
    fn name(&self) -> StaticName {
        "QuantizeToI8".into()
    }

    op_as_typed_op!();
}

impl EvalOp for QuantizeToI8 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = &inputs[0];
        let xs = input.try_as_plain_ram()?.as_slice::<f32>()?;
        let (scale, zero_point) = scale_and_zero_point(xs);
        let mut out = unsafe { Tensor::uninitialized::<i8>(input.shape())? };
        quantize(
            xs,
            scale,
            zero_point,
            out.try_as_plain_ram_mut()?.as_slice_mut::<i8>()?,
        );
        Ok(tvec!(
            out.into_tvalue(),
            tensor0(scale).into_tvalue(),
            tensor0((zero_point - 128.0) as i8).into_tvalue()
        ))
    }
}

impl TypedOp for QuantizeToI8 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(
            i8::fact(inputs[0].shape.clone()),
            f32::scalar_fact(),
            i8::scalar_fact()
        ))
    }

    as_op!();
}

/// 1.5 × 2^23: a float of magnitude under 2^22 added to it is rounded half to even to an
/// integer, which then sits in the low bits of the sum's representation.
const MAGIC: f32 = 12_582_912.0;

/// ONNX's scale and (u8, as an integral f32) zero point for `xs`: the range of `xs` widened to
/// hold 0, split into 255 steps. All zeros give scale 0 and zero point 0.
fn scale_and_zero_point(xs: &[f32]) -> (f32, f32) {
    let (low, high) = simd::range(xs);
    let scale = (high - low) / 255.0;
    if scale == 0.0 || !scale.is_finite() {
        return (scale, 0.0);
    }
    (scale, round_half_even(-low / scale).clamp(0.0, 255.0))
}

/// `saturate(round(x / scale) + zero_point) - 128` for each value.
fn quantize(xs: &[f32], scale: f32, zero_point: f32, out: &mut [i8]) {
    if scale == 0.0 || !scale.is_finite() {
        out.fill((zero_point as i32 - 128) as i8);
        return;
    }
    let done = simd::quantize(xs, scale, zero_point, out);
    for (o, &x) in out[done..].iter_mut().zip(&xs[done..]) {
        *o = quantize_one(x, scale, zero_point);
    }
}

/// One value, as the vector paths compute it: the rounding by [`MAGIC`], the zero point added
/// to the integer, the sum saturated to u8, then shifted to i8.
fn quantize_one(x: f32, scale: f32, zero_point: f32) -> i8 {
    let rounded = (x / scale + MAGIC).to_bits() as i32 - MAGIC.to_bits() as i32;
    ((rounded + zero_point as i32).clamp(0, 255) - 128) as i8
}

/// The two loops in SIMD: SSE2 on x86-64 (every x86-64 has it), SIMD128 in WebAssembly, none
/// elsewhere. `range` covers every value; `quantize` returns how many it wrote (a multiple of
/// 16), the rest being left to [`quantize_one`].
mod simd {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    use std::arch::wasm32::*;
    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::*;

    /// min(xs, 0) and max(xs, 0).
    pub fn range(xs: &[f32]) -> (f32, f32) {
        let chunks = xs.chunks_exact(4);
        let rest = chunks.remainder();
        let (mut low, mut high) = ([0f32; 4], [0f32; 4]);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: SSE2 is part of x86-64; loads and stores are unaligned, within the chunks.
        unsafe {
            let (mut l, mut h) = (_mm_setzero_ps(), _mm_setzero_ps());
            for c in chunks {
                let v = _mm_loadu_ps(c.as_ptr());
                l = _mm_min_ps(l, v);
                h = _mm_max_ps(h, v);
            }
            _mm_storeu_ps(low.as_mut_ptr(), l);
            _mm_storeu_ps(high.as_mut_ptr(), h);
        }
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        // SAFETY: unaligned loads within the chunks.
        unsafe {
            let (mut l, mut h) = (f32x4_splat(0.0), f32x4_splat(0.0));
            for c in chunks {
                let v = v128_load(c.as_ptr().cast());
                l = f32x4_pmin(l, v);
                h = f32x4_pmax(h, v);
            }
            v128_store(low.as_mut_ptr().cast(), l);
            v128_store(high.as_mut_ptr().cast(), h);
        }
        #[cfg(not(any(
            target_arch = "x86_64",
            all(target_arch = "wasm32", target_feature = "simd128")
        )))]
        for c in chunks {
            for i in 0..4 {
                low[i] = low[i].min(c[i]);
                high[i] = high[i].max(c[i]);
            }
        }
        let low = rest.iter().chain(&low).fold(0f32, |a, &b| a.min(b));
        let high = rest.iter().chain(&high).fold(0f32, |a, &b| a.max(b));
        (low, high)
    }

    /// Quantises whole groups of 16 values; returns how many were written.
    #[cfg(target_arch = "x86_64")]
    pub fn quantize(xs: &[f32], scale: f32, zero_point: f32, out: &mut [i8]) -> usize {
        let groups = xs.len().min(out.len()) / 16;
        // SAFETY: SSE2 is part of x86-64; every load reads 4 floats and every store writes 16
        // bytes within the first `groups * 16` values of `xs` and `out`.
        unsafe {
            let s = _mm_set1_ps(scale);
            let magic = _mm_set1_ps(super::MAGIC);
            let zero = _mm_set1_epi32(zero_point as i32 - super::MAGIC.to_bits() as i32);
            let flip = _mm_set1_epi8(-128);
            let ints = |at: *const f32| {
                let v = _mm_add_ps(_mm_div_ps(_mm_loadu_ps(at), s), magic);
                _mm_add_epi32(_mm_castps_si128(v), zero)
            };
            for g in 0..groups {
                let at = xs.as_ptr().add(16 * g);
                // i32 → i16 (signed saturation) → u8 (unsigned saturation): the clamp to
                // [0, 255]; then - 128 by flipping the top bit.
                let a = _mm_packs_epi32(ints(at), ints(at.add(4)));
                let b = _mm_packs_epi32(ints(at.add(8)), ints(at.add(12)));
                let q = _mm_xor_si128(_mm_packus_epi16(a, b), flip);
                _mm_storeu_si128(out.as_mut_ptr().add(16 * g).cast(), q);
            }
        }
        groups * 16
    }

    /// Quantises whole groups of 16 values; returns how many were written.
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    pub fn quantize(xs: &[f32], scale: f32, zero_point: f32, out: &mut [i8]) -> usize {
        let groups = xs.len().min(out.len()) / 16;
        // SAFETY: every load reads 4 floats and every store writes 16 bytes within the first
        // `groups * 16` values of `xs` and `out`.
        unsafe {
            let s = f32x4_splat(scale);
            let magic = f32x4_splat(super::MAGIC);
            let zero = i32x4_splat(zero_point as i32 - super::MAGIC.to_bits() as i32);
            let flip = i8x16_splat(-128);
            let ints = |at: *const f32| {
                let v = f32x4_add(f32x4_div(v128_load(at.cast()), s), magic);
                i32x4_add(v, zero)
            };
            for g in 0..groups {
                let at = xs.as_ptr().add(16 * g);
                let a = i16x8_narrow_i32x4(ints(at), ints(at.add(4)));
                let b = i16x8_narrow_i32x4(ints(at.add(8)), ints(at.add(12)));
                let q = v128_xor(u8x16_narrow_i16x8(a, b), flip);
                v128_store(out.as_mut_ptr().add(16 * g).cast(), q);
            }
        }
        groups * 16
    }

    /// No vector path here: every value is left to the scalar one.
    #[cfg(not(any(
        target_arch = "x86_64",
        all(target_arch = "wasm32", target_feature = "simd128")
    )))]
    pub fn quantize(_xs: &[f32], _scale: f32, _zero_point: f32, _out: &mut [i8]) -> usize {
        0
    }
}

/// Rounds half to even with two additions, exact for |v| < 2^22 (the quantised values are
/// within ±255 steps of zero): `f32::round_ties_even` is a libm call without SSE4.1.
fn round_half_even(v: f32) -> f32 {
    if v.abs() >= 4_194_304.0 {
        return v.round_ties_even();
    }
    (v + MAGIC) - MAGIC
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference: ONNX's definition, one value at a time, in u8.
    fn reference(xs: &[f32]) -> (f32, u8, Vec<u8>) {
        let low = xs.iter().fold(0f32, |a, &b| a.min(b));
        let high = xs.iter().fold(0f32, |a, &b| a.max(b));
        let scale = (high - low) / 255.0;
        let zero = (-low / scale).round_ties_even().clamp(0.0, 255.0) as u8;
        let values = xs
            .iter()
            .map(|&x| ((x / scale).round_ties_even() + f32::from(zero)).clamp(0.0, 255.0) as u8)
            .collect();
        (scale, zero, values)
    }

    #[test]
    fn matches_onnx_definition_shifted_to_i8() {
        // ONNX's own examples, then lengths around the lane count and values on rounding ties.
        let mut cases: Vec<Vec<f32>> = vec![
            vec![0., 2., -3., -2.5, 1.34, 0.5],
            vec![-1., -2.1, -1.3, -2.5, -3.34, -4.],
            vec![1., 2.1, 1.3, 2.5, 3.34, 4., 1.5, 2.6, 3.9, 4., 3., 2.345],
            vec![-127., 128., 0.5, 1.5, 2.5, -0.5, -1.5],
        ];
        for n in [1, 15, 16, 17, 33, 1000] {
            cases.push(
                (0..n)
                    .map(|i| ((i * 37 % 101) as f32 - 40.0) * 0.173)
                    .collect(),
            );
        }
        for xs in cases {
            let (scale, zero, expected) = reference(&xs);
            let (s, z) = scale_and_zero_point(&xs);
            assert_eq!((s, z as u8), (scale, zero), "{xs:?}");
            let mut out = vec![0i8; xs.len()];
            quantize(&xs, s, z, &mut out);
            let shifted: Vec<i8> = expected
                .iter()
                .map(|&u| (i32::from(u) - 128) as i8)
                .collect();
            assert_eq!(out, shifted, "{xs:?}");
        }
    }

    #[test]
    fn all_zeros_quantise_to_the_zero_point() {
        let xs = [0f32; 20];
        let (scale, zero) = scale_and_zero_point(&xs);
        assert_eq!((scale, zero), (0.0, 0.0));
        let mut out = [1i8; 20];
        quantize(&xs, scale, zero, &mut out);
        assert!(out.iter().all(|&q| q == -128));
    }

    #[test]
    fn rounds_half_to_even() {
        for (v, r) in [
            (0.5, 0.0),
            (1.5, 2.0),
            (2.5, 2.0),
            (-0.5, 0.0),
            (-1.5, -2.0),
            (254.5, 254.0),
        ] {
            assert_eq!(round_half_even(v), r, "{v}");
        }
    }
}
