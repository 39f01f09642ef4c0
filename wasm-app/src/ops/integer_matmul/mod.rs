//! ONNX's `MatMulInteger` on SIMD128's `i32x4.dot_i16x8_s`, with the weights packed once.
//!
//! tract-linalg 0.23.9's WebAssembly integer kernel (`kernel_i32_4x4`) widens every int8 to
//! i32 and multiplies one lane at a time, or, built with relaxed SIMD, runs two
//! `relaxed_dot_i8x16_i7x16` per product to keep the second operand in 7 bits; on x86 hosts
//! Cranelift lowers each of those to three instructions. Either way an int8-dynamic MiniLM-L6
//! at 256 tokens spent 71 % of its call in that kernel, at about 13 GMAC/s.
//!
//! Here the weights, less their zero point, are widened to i16 once, when the model is
//! loaded, and laid out in panels of [`NR`] columns, two depths at a time. A call widens the
//! activations (less theirs) to i16 and runs [`MR`] × [`NR`] tiles, each step one
//! `i32x4.dot_i16x8_s` per four outputs and two depths: 8 multiply-adds in one instruction
//! (`vpmaddwd` once wasmtime has compiled it for x86), exact, and plain SIMD128, so every
//! host runs the same build. Values less their zero points (of their own type) are within
//! ±255, so every sum over fewer than 33,026 depths is exact in i32 and the result equals
//! tract's bit for bit.
//!
//! Measured on MiniLM-L6 at 256 tokens in wasmtime (Intel Xeon, 1 thread): a call 611 ms
//! with tract's kernel, 186-194 ms with this one, which takes 57 % of it at about 25 GMAC/s.
//! Cranelift is what holds it there: it keeps some accumulators in memory across each turn
//! of the loop (see [`UNROLL`]), and more of them the more steps LLVM schedules together.
//! With two steps a turn, tiles of 2×8, 2×12, 3×8, 4×8, 5×8, 6×8 and 3×12 ran 186-238 ms;
//! 4×12 (12 accumulators, 3 weight vectors) 186-190 ms.
//!
//! Natively on x86-64 the same tiles run on SSE2's `pmaddwd` (`_mm_madd_epi16`, the same
//! operation), on CPUs where tract has no VNNI kernel (see [`super::register`]), with the
//! rows split over tract's thread pool. Measured on the shipped MiniLM-L6 at 256 tokens on a
//! 2-core AMD EPYC with AVX2 only: see the README's performance table. Other native targets
//! run the tests on a portable emulation of its four vector operations.

use std::sync::Arc;

use tract_onnx::tract_hir::internal::*;

#[cfg(target_arch = "x86_64")]
mod avx2;

/// Rows (tokens) per tile.
#[cfg(not(target_arch = "x86_64"))]
pub const MR: usize = 4;
/// Columns (output channels) per tile: three vectors of four.
#[cfg(not(target_arch = "x86_64"))]
pub const NR: usize = 12;
/// Rows per tile on x86-64: AVX2's 16 registers hold 6 × 2 accumulators, two weight vectors
/// and the broadcast activations.
#[cfg(target_arch = "x86_64")]
pub const MR: usize = 6;
/// Columns per tile on x86-64: two AVX2 vectors of eight.
#[cfg(target_arch = "x86_64")]
pub const NR: usize = 16;
const _: () = assert!(
    NR.is_multiple_of(4),
    "a tile's columns are whole vectors of four"
);
/// Pairs of depths per turn of the inner loop, which the weights and activations are padded
/// to. wasmtime checks its epoch deadline at every loop's back edge and, around the call that
/// check may make, stores and reloads the accumulators: more steps a turn pay that less often,
/// but LLVM then loads every step's weights first and Cranelift spills those. A 256-token
/// MiniLM-L6 call, 4×12 tiles: 186-190 ms with two steps, 191 with three; with 2×12 tiles one
/// step 246 ms, four 219, eight 221.
const UNROLL: usize = 2;

/// `MatMulInteger`'s builder for [`tract_onnx::Onnx::op_register`].
#[cfg(any(
    all(target_arch = "wasm32", target_feature = "simd128"),
    target_arch = "x86_64"
))]
pub fn matmul_integer(
    _ctx: &tract_onnx::model::ParsingContext,
    node: &tract_onnx::pb::NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let mut optional = tract_onnx::model::optional_inputs(node).skip(2);
    let op = MatMulInteger {
        a_zero_point: optional.next().flatten(),
        b_zero_point: optional.next().flatten(),
    };
    Ok((expand(op), vec![]))
}

/// The ONNX operator: which inputs hold the optional zero points.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct MatMulInteger {
    a_zero_point: Option<usize>,
    b_zero_point: Option<usize>,
}

impl Expansion for MatMulInteger {
    fn name(&self) -> StaticName {
        "MatMulInteger".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        let optional = self.a_zero_point.is_some() as usize + self.b_zero_point.is_some() as usize;
        check_input_arity(inputs, 2 + optional)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, i32::datum_type())?;
        s.equals(&inputs[1].rank, 2)?;
        if let Some(zero) = self.a_zero_point {
            s.equals(&inputs[zero].datum_type, &inputs[0].datum_type)?;
        }
        if let Some(zero) = self.b_zero_point {
            s.equals(&inputs[zero].datum_type, &inputs[1].datum_type)?;
        }
        s.given_2(&inputs[0].shape, &inputs[1].shape, move |s, a, b| {
            let (_, _, _, c) =
                tract_onnx::tract_hir::ops::matmul::compute_shapes(a, b, false, false, false)?;
            s.equals(&outputs[0].shape, c)
        })
    }

    fn wire(
        &self,
        prefix: &str,
        target: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let mut zero_point = |input: Option<usize>, of: OutletId, name: &str| match input {
            Some(i) => Ok(inputs[i]),
            None => {
                let dt = target.outlet_fact(of)?.datum_type;
                target.add_const(format!("{prefix}.{name}"), Tensor::zero_dt(dt, &[])?)
            }
        };
        let a_zero = zero_point(self.a_zero_point, inputs[0], "a_zero_point")?;
        let b_zero = zero_point(self.b_zero_point, inputs[1], "b_zero_point")?;
        let a_zero_fact = target.outlet_fact(a_zero)?;
        ensure!(
            a_zero_fact.shape.volume() == 1.to_dim(),
            "{prefix}: MatMulInteger with one input zero point per row is not supported"
        );
        let b = target.outlet_fact(inputs[1])?.konst.clone();
        let b_zero_value = target.outlet_fact(b_zero)?.konst.clone();
        let op = match (b, b_zero_value) {
            (Some(b), Some(zero)) => {
                let weights = PackedWeights::new(&b, &zero).with_context(|| prefix.to_string())?;
                return target.wire_node(
                    prefix,
                    IntegerMatMul::packed(weights),
                    &[inputs[0], a_zero],
                );
            }
            _ => IntegerMatMul { weights: None },
        };
        target.wire_node(prefix, op, &[inputs[0], a_zero, inputs[1], b_zero])
    }
}

/// The weights `b[k][n]` less their zero points, as i16, in panels of [`NR`] columns: for
/// each pair of depths, the panel's columns in order, the two depths side by side. Columns and
/// depths past the end are zeros.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedWeights {
    k: usize,
    n: usize,
    data: Vec<i16>,
}

impl PackedWeights {
    /// Packs a `[k, n]` i8 or u8 matrix with its zero point (one, or one per column).
    pub fn new(b: &Tensor, zero_point: &Tensor) -> TractResult<Self> {
        ensure!(
            b.rank() == 2,
            "MatMulInteger's weights have shape {:?}: only 2-D weights are supported",
            b.shape()
        );
        let (k, n) = (b.shape()[0], b.shape()[1]);
        let values = integers(b)?;
        let zeros = integers(zero_point)?;
        ensure!(
            zeros.len() == 1 || zeros.len() == n,
            "MatMulInteger's weight zero point has {} values for {n} columns",
            zeros.len()
        );
        let pairs = padded_pairs(k);
        let mut data = vec![0i16; n.div_ceil(NR) * pairs * 2 * NR];
        for depth in 0..k {
            for col in 0..n {
                let zero = zeros[if zeros.len() == 1 { 0 } else { col }];
                let (panel, c) = (col / NR, col % NR);
                let at = (panel * pairs + depth / 2) * 2 * NR + c * 2 + depth % 2;
                data[at] = (values[depth * n + col] - zero) as i16;
            }
        }
        Ok(Self { k, n, data })
    }

    /// One panel's values.
    fn panel(&self, panel: usize) -> &[i16] {
        let len = padded_pairs(self.k) * 2 * NR;
        &self.data[panel * len..][..len]
    }
}

/// The typed operator: inputs `a` and its zero point, then, when the weights were not known
/// when the model was loaded, the weights and theirs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegerMatMul {
    weights: Option<Arc<PackedWeights>>,
}

impl IntegerMatMul {
    /// The operator for weights known in advance.
    pub fn packed(weights: PackedWeights) -> Self {
        Self {
            weights: Some(Arc::new(weights)),
        }
    }
}

impl Op for IntegerMatMul {
    fn name(&self) -> StaticName {
        "IntegerMatMul".into()
    }

    op_as_typed_op!();
}

impl EvalOp for IntegerMatMul {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let weights = match &self.weights {
            Some(w) => w.clone(),
            None => Arc::new(PackedWeights::new(&inputs[2], &inputs[3])?),
        };
        let a = &inputs[0];
        let k = a.shape().last().copied().unwrap_or(1);
        ensure!(
            k == weights.k,
            "MatMulInteger: the input's last axis ({k}) is not the weights' depth ({})",
            weights.k
        );
        let a_zero = integers(&inputs[1])?;
        ensure!(
            a_zero.len() == 1,
            "MatMulInteger: only one input zero point is supported, not {}",
            a_zero.len()
        );
        let rows = a.len().checked_div(k).unwrap_or(0);
        let a16 = widen_rows(a, a_zero[0], rows, k)?;
        let mut shape: TVec<usize> = a.shape().into();
        shape.pop();
        shape.push(weights.n);
        let mut out = Tensor::zero::<i32>(&shape)?;
        multiply(
            &a16,
            rows,
            &weights,
            out.try_as_plain_ram_mut()?.as_slice_mut::<i32>()?,
        );
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for IntegerMatMul {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let n = match &self.weights {
            Some(w) => w.n.to_dim(),
            None => inputs[2].shape[1].clone(),
        };
        let a = &inputs[0].shape;
        let mut shape: TVec<TDim> = a.iter().take(a.len().saturating_sub(1)).cloned().collect();
        shape.push(n);
        Ok(tvec!(i32::fact(shape)))
    }

    as_op!();
}

/// An i8 or u8 tensor's values as i32.
fn integers(t: &Tensor) -> TractResult<Vec<i32>> {
    let plain = t.try_as_plain_ram()?;
    Ok(match t.datum_type() {
        DatumType::I8 => plain.as_slice::<i8>()?.iter().map(|&v| v.into()).collect(),
        DatumType::U8 => plain.as_slice::<u8>()?.iter().map(|&v| v.into()).collect(),
        other => bail!("MatMulInteger takes i8 or u8 values, not {other:?}"),
    })
}

/// Pairs of depths, padded with zeros to whole turns of [`tile`]'s loop.
fn padded_pairs(k: usize) -> usize {
    k.div_ceil(2).next_multiple_of(UNROLL)
}

/// `rows` rows of `k` i8 or u8 values less `zero`, as i16, each padded with zeros to
/// [`padded_pairs`], and the rows padded with zeros to a multiple of [`MR`].
fn widen_rows(a: &Tensor, zero: i32, rows: usize, k: usize) -> TractResult<Vec<i16>> {
    fn fill<T: Copy + Into<i32>>(
        values: &[T],
        zero: i32,
        k: usize,
        stride: usize,
        out: &mut [i16],
    ) {
        for (row, values) in values.chunks_exact(k.max(1)).enumerate() {
            for (o, &v) in out[row * stride..].iter_mut().zip(values) {
                *o = (v.into() - zero) as i16;
            }
        }
    }
    let stride = padded_pairs(k) * 2;
    let mut out = vec![0i16; rows.div_ceil(MR) * MR * stride];
    let plain = a.try_as_plain_ram()?;
    match a.datum_type() {
        DatumType::I8 => fill(plain.as_slice::<i8>()?, zero, k, stride, &mut out),
        DatumType::U8 => fill(plain.as_slice::<u8>()?, zero, k, stride, &mut out),
        other => bail!("MatMulInteger takes i8 or u8 values, not {other:?}"),
    }
    Ok(out)
}

/// `out[rows][n] = a16 · weights`: natively the rows are split over tract's thread pool when
/// it has one.
fn multiply(a16: &[i16], rows: usize, weights: &PackedWeights, out: &mut [i32]) {
    #[cfg(not(target_family = "wasm"))]
    if let tract_linalg::multithread::Executor::MultiThread(pool) =
        tract_linalg::multithread::current_tract_executor()
    {
        use rayon::prelude::*;
        let (n, stride) = (weights.n, padded_pairs(weights.k) * 2);
        let blocks = rows.div_ceil(MR);
        let per_thread = blocks.div_ceil(pool.current_num_threads()).max(1) * MR;
        if n > 0 && blocks > 1 {
            pool.install(|| {
                out.par_chunks_mut(per_thread * n)
                    .zip(a16.par_chunks(per_thread * stride))
                    .for_each(|(out, a16)| multiply_rows(a16, out.len() / n, weights, out));
            });
            return;
        }
    }
    multiply_rows(a16, rows, weights, out)
}

/// `out[rows][n] = a16 · weights`, tile by tile, on this thread.
fn multiply_rows(a16: &[i16], rows: usize, weights: &PackedWeights, out: &mut [i32]) {
    let (n, pairs) = (weights.n, padded_pairs(weights.k));
    let stride = pairs * 2;
    for panel in 0..n.div_ceil(NR) {
        let b = weights.panel(panel);
        let cols = (n - panel * NR).min(NR);
        for block in 0..rows.div_ceil(MR) {
            let a = &a16[block * MR * stride..][..MR * stride];
            let tile = fastest_tile(a, b, pairs);
            for (r, values) in tile.iter().enumerate().take(rows - block * MR) {
                let row = block * MR + r;
                out[row * n + panel * NR..][..cols].copy_from_slice(&values[..cols]);
            }
        }
    }
}

/// [`tile`] on the widest vectors this CPU has.
#[inline(always)]
fn fastest_tile(a: &[i16], b: &[i16], pairs: usize) -> [[i32; NR]; MR] {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        return unsafe { avx2::tile(a, b, pairs) };
    }
    tile::<Lanes>(a, b, pairs)
}

/// One [`MR`] × [`NR`] tile over all depths: `a` holds [`MR`] rows of `2 * pairs` values, `b`
/// one panel; `pairs` is a multiple of [`UNROLL`].
#[inline(always)]
fn tile<L: Vector>(a: &[i16], b: &[i16], pairs: usize) -> [[i32; NR]; MR] {
    const VECTORS: usize = NR / 4;
    assert!(a.len() >= MR * 2 * pairs && b.len() >= pairs * 2 * NR);
    let stride = 2 * pairs;
    let mut acc = [[L::zero(); VECTORS]; MR];
    let mut step = |p: usize| {
        // SAFETY: the assertion above keeps every read (8 values of `b` at `2 NR p + 8 v`, 2
        // values of `a` at `r * stride + 2p`) within the slices, for `p < pairs`.
        unsafe {
            let b: [L::V; VECTORS] =
                std::array::from_fn(|v| L::load(b.as_ptr().add(2 * NR * p + 8 * v)));
            for (r, acc) in acc.iter_mut().enumerate() {
                let a = L::splat_pair(a.as_ptr().add(r * stride + 2 * p));
                for (acc, &b) in acc.iter_mut().zip(&b) {
                    *acc = L::dot_add(*acc, a, b);
                }
            }
        }
    };
    for turn in 0..pairs / UNROLL {
        // Written out: LLVM keeps a loop of two as a loop.
        let p = turn * UNROLL;
        step(p);
        step(p + 1);
    }
    acc.map(|vectors| {
        let lanes = vectors.map(L::lanes);
        std::array::from_fn(|c| lanes[c / 4][c % 4])
    })
}

/// The four vector operations [`tile`] needs.
trait Vector {
    /// 128 bits: eight i16 or four i32.
    type V: Copy;
    /// Four zeros.
    fn zero() -> Self::V;
    /// Eight i16 from `at`.
    ///
    /// # Safety
    /// `at` must be valid for reading 8 values.
    unsafe fn load(at: *const i16) -> Self::V;
    /// The two i16 at `at`, four times.
    ///
    /// # Safety
    /// `at` must be valid for reading 2 values.
    unsafe fn splat_pair(at: *const i16) -> Self::V;
    /// `acc + (a[2i] b[2i] + a[2i+1] b[2i+1])` in each i32 lane `i`.
    fn dot_add(acc: Self::V, a: Self::V, b: Self::V) -> Self::V;
    /// The four i32 lanes.
    fn lanes(v: Self::V) -> [i32; 4];
}

/// SIMD128.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
type Lanes = Simd128;
/// SSE2, part of every x86-64.
#[cfg(target_arch = "x86_64")]
type Lanes = Sse2;
/// The portable emulation.
#[cfg(not(any(
    all(target_arch = "wasm32", target_feature = "simd128"),
    target_arch = "x86_64"
)))]
type Lanes = Portable;

/// SIMD128's `v128`.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
struct Simd128;

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
impl Vector for Simd128 {
    type V = std::arch::wasm32::v128;

    #[inline(always)]
    fn zero() -> Self::V {
        std::arch::wasm32::i32x4_splat(0)
    }

    #[inline(always)]
    unsafe fn load(at: *const i16) -> Self::V {
        // SAFETY: the caller's; v128 loads may be unaligned.
        unsafe { std::arch::wasm32::v128_load(at.cast()) }
    }

    #[inline(always)]
    unsafe fn splat_pair(at: *const i16) -> Self::V {
        // SAFETY: the caller's; the 32-bit load may be unaligned.
        unsafe { std::arch::wasm32::v128_load32_splat(at.cast()) }
    }

    #[inline(always)]
    fn dot_add(acc: Self::V, a: Self::V, b: Self::V) -> Self::V {
        use std::arch::wasm32::{i32x4_add, i32x4_dot_i16x8};
        i32x4_add(acc, i32x4_dot_i16x8(a, b))
    }

    #[inline(always)]
    fn lanes(v: Self::V) -> [i32; 4] {
        use std::arch::wasm32::i32x4_extract_lane;
        [
            i32x4_extract_lane::<0>(v),
            i32x4_extract_lane::<1>(v),
            i32x4_extract_lane::<2>(v),
            i32x4_extract_lane::<3>(v),
        ]
    }
}

/// SSE2's `__m128i`: `pmaddwd` is SIMD128's `i32x4.dot_i16x8_s`.
#[cfg(target_arch = "x86_64")]
struct Sse2;

#[cfg(target_arch = "x86_64")]
impl Vector for Sse2 {
    type V = std::arch::x86_64::__m128i;

    #[inline(always)]
    fn zero() -> Self::V {
        // SAFETY: SSE2 is part of every x86-64.
        unsafe { std::arch::x86_64::_mm_setzero_si128() }
    }

    #[inline(always)]
    unsafe fn load(at: *const i16) -> Self::V {
        // SAFETY: the caller's; the load may be unaligned.
        unsafe { std::arch::x86_64::_mm_loadu_si128(at.cast()) }
    }

    #[inline(always)]
    unsafe fn splat_pair(at: *const i16) -> Self::V {
        // SAFETY: the caller's; the 32-bit read may be unaligned.
        unsafe { std::arch::x86_64::_mm_set1_epi32(at.cast::<i32>().read_unaligned()) }
    }

    #[inline(always)]
    fn dot_add(acc: Self::V, a: Self::V, b: Self::V) -> Self::V {
        use std::arch::x86_64::{_mm_add_epi32, _mm_madd_epi16};
        // SAFETY: SSE2 is part of every x86-64.
        unsafe { _mm_add_epi32(acc, _mm_madd_epi16(a, b)) }
    }

    #[inline(always)]
    fn lanes(v: Self::V) -> [i32; 4] {
        // SAFETY: 128 bits either way.
        unsafe { std::mem::transmute::<Self::V, [i32; 4]>(v) }
    }
}

/// The same operations on plain arrays.
#[cfg(not(any(
    all(target_arch = "wasm32", target_feature = "simd128"),
    target_arch = "x86_64"
)))]
struct Portable;

#[cfg(not(any(
    all(target_arch = "wasm32", target_feature = "simd128"),
    target_arch = "x86_64"
)))]
impl Vector for Portable {
    type V = [i32; 4];

    fn zero() -> Self::V {
        [0; 4]
    }

    unsafe fn load(at: *const i16) -> Self::V {
        // SAFETY: the caller's.
        let v = unsafe { std::slice::from_raw_parts(at, 8) };
        std::array::from_fn(|i| pair(v[2 * i], v[2 * i + 1]))
    }

    unsafe fn splat_pair(at: *const i16) -> Self::V {
        // SAFETY: the caller's.
        let v = unsafe { std::slice::from_raw_parts(at, 2) };
        [pair(v[0], v[1]); 4]
    }

    fn dot_add(acc: Self::V, a: Self::V, b: Self::V) -> Self::V {
        let halves = |v: i32| [v as i16 as i32, v >> 16];
        std::array::from_fn(|i| {
            let ([a0, a1], [b0, b1]) = (halves(a[i]), halves(b[i]));
            acc[i].wrapping_add(a0 * b0 + a1 * b1)
        })
    }

    fn lanes(v: Self::V) -> [i32; 4] {
        v
    }
}

/// Two i16 in one i32 lane, the first in the low half (as in memory).
#[cfg(not(any(
    all(target_arch = "wasm32", target_feature = "simd128"),
    target_arch = "x86_64"
)))]
fn pair(low: i16, high: i16) -> i32 {
    (low as u16 as u32 | (high as u16 as u32) << 16) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A product computed the plain way.
    fn reference(
        a: &[i32],
        za: i32,
        b: &[i32],
        zb: &[i32],
        m: usize,
        k: usize,
        n: usize,
    ) -> Vec<i32> {
        let mut c = vec![0; m * n];
        for i in 0..m {
            for j in 0..n {
                let z = zb[if zb.len() == 1 { 0 } else { j }];
                c[i * n + j] = (0..k)
                    .map(|d| (a[i * k + d] - za) * (b[d * n + j] - z))
                    .sum();
            }
        }
        c
    }

    /// Deterministic values spread over the type's whole range.
    fn values(len: usize, seed: usize, low: i32, high: i32) -> Vec<i32> {
        (0..len)
            .map(|i| low + ((i * 7919 + seed * 104_729) % (high - low + 1) as usize) as i32)
            .collect()
    }

    /// Runs the operator in a tract model, with packed or run-time weights.
    fn run(op: IntegerMatMul, a: Tensor, za: Tensor, more: Vec<Tensor>) -> TractResult<Tensor> {
        let mut model = TypedModel::default();
        let mut inputs = vec![model.add_source("a", TypedFact::shape_and_dt_of(&a))?];
        inputs.push(model.add_const("za", za)?);
        for (i, t) in more.into_iter().enumerate() {
            inputs.push(model.add_const(format!("b{i}"), t)?);
        }
        let out = model.wire_node("product", op, &inputs)?;
        model.select_output_outlets(&out)?;
        let mut result = model.into_runnable()?.run(tvec!(a.into_tvalue()))?;
        Ok(result.remove(0).into_tensor())
    }

    #[test]
    fn matches_the_plain_product_on_every_edge_of_the_tiles() -> TractResult<()> {
        for (m, k, n) in [
            (1, 1, 1),
            (3, 5, 7),
            (4, 2, 8),
            (5, 17, 9),
            (9, 384, 20),
            (13, 33, 17),
        ] {
            let a = values(m * k, 1, -128, 127);
            let b = values(k * n, 2, -127, 127);
            let zb = values(n, 3, -5, 5);
            let za = -3;
            let a_t =
                tensor1(&a.iter().map(|&v| v as i8).collect::<Vec<_>>()).into_shape(&[m, k])?;
            let b_t =
                tensor1(&b.iter().map(|&v| v as i8).collect::<Vec<_>>()).into_shape(&[k, n])?;
            let zb_t = tensor1(&zb.iter().map(|&v| v as i8).collect::<Vec<_>>());
            let expected = reference(&a, za, &b, &zb, m, k, n);
            let packed = IntegerMatMul::packed(PackedWeights::new(&b_t, &zb_t)?);
            let got = run(packed, a_t.clone(), tensor0(za as i8), vec![])?;
            assert_eq!(got.shape(), &[m, n]);
            assert_eq!(
                got.try_as_plain_ram()?.as_slice::<i32>()?,
                &expected[..],
                "{m}×{k}×{n}"
            );
            let late = IntegerMatMul { weights: None };
            let got = run(late, a_t, tensor0(za as i8), vec![b_t, zb_t])?;
            assert_eq!(
                got.try_as_plain_ram()?.as_slice::<i32>()?,
                &expected[..],
                "{m}×{k}×{n}"
            );
        }
        Ok(())
    }

    #[test]
    fn every_tile_this_cpu_can_run_gives_the_plain_product() -> TractResult<()> {
        let (k, n) = (37, NR);
        let a = values(MR * k, 9, -128, 127);
        let b = values(k * n, 10, -128, 127);
        let b_t = tensor1(&b.iter().map(|&v| v as i8).collect::<Vec<_>>()).into_shape(&[k, n])?;
        let weights = PackedWeights::new(&b_t, &tensor0(0i8))?;
        let a_t = tensor1(&a.iter().map(|&v| v as i8).collect::<Vec<_>>()).into_shape(&[MR, k])?;
        let a16 = widen_rows(&a_t, 0, MR, k)?;
        let pairs = padded_pairs(k);
        let expected = reference(&a, 0, &b, &[0], MR, k, n);
        let flat = |tile: [[i32; NR]; MR]| tile.concat();
        assert_eq!(flat(tile::<Lanes>(&a16, weights.panel(0), pairs)), expected);
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            let avx2 = unsafe { avx2::tile(&a16, weights.panel(0), pairs) };
            assert_eq!(flat(avx2), expected);
        } else if std::env::var_os("CI").is_some() {
            panic!("CI runs on x86-64 CPUs with AVX2: this one has none, its tile is untested");
        }
        Ok(())
    }

    #[test]
    fn packs_constant_weights_when_the_model_is_wired() -> TractResult<()> {
        let (m, k, n) = (5, 6, 9);
        let a = values(m * k, 6, -128, 127);
        let b = values(k * n, 7, -127, 127);
        let a_t = tensor1(&a.iter().map(|&v| v as i8).collect::<Vec<_>>()).into_shape(&[m, k])?;
        let b_t = tensor1(&b.iter().map(|&v| v as i8).collect::<Vec<_>>()).into_shape(&[k, n])?;
        for weights_known in [true, false] {
            let mut model = TypedModel::default();
            let a_in = model.add_source("a", TypedFact::shape_and_dt_of(&a_t))?;
            let b_in = if weights_known {
                model.add_const("b", b_t.clone())?
            } else {
                model.add_source("b", TypedFact::shape_and_dt_of(&b_t))?
            };
            let za = model.add_const("za", tensor0(7i8))?;
            let onnx = MatMulInteger {
                a_zero_point: Some(2),
                b_zero_point: None,
            };
            let out = onnx.wire("product", &mut model, &[a_in, b_in, za])?;
            model.select_output_outlets(&out)?;
            let node = model
                .node(out[0].node)
                .op_as::<IntegerMatMul>()
                .expect("our operator");
            assert_eq!(node.weights.is_some(), weights_known);
            let mut inputs = tvec!(a_t.clone().into_tvalue());
            if !weights_known {
                inputs.push(b_t.clone().into_tvalue());
            }
            let got = model.into_runnable()?.run(inputs)?.remove(0).into_tensor();
            let expected = reference(&a, 7, &b, &[0], m, k, n);
            assert_eq!(got.try_as_plain_ram()?.as_slice::<i32>()?, &expected[..]);
        }
        Ok(())
    }

    #[test]
    fn refuses_one_input_zero_point_per_row_when_wired() -> TractResult<()> {
        let mut model = TypedModel::default();
        let a = model.add_source("a", i8::fact([3, 4]))?;
        let b = model.add_const("b", Tensor::zero::<i8>(&[4, 2])?)?;
        let za = model.add_const("za", tensor1(&[0i8, 1, 2]))?;
        let onnx = MatMulInteger {
            a_zero_point: Some(2),
            b_zero_point: None,
        };
        let err = onnx.wire("product", &mut model, &[a, b, za]).unwrap_err();
        assert!(
            format!("{err}").contains("one input zero point per row"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn takes_unsigned_activations_with_leading_axes() -> TractResult<()> {
        let (m, k, n) = (6, 10, 11);
        let a = values(2 * m * k, 4, 0, 255);
        let b = values(k * n, 5, -128, 127);
        let a_t =
            tensor1(&a.iter().map(|&v| v as u8).collect::<Vec<_>>()).into_shape(&[2, m, k])?;
        let b_t = tensor1(&b.iter().map(|&v| v as i8).collect::<Vec<_>>()).into_shape(&[k, n])?;
        let got = run(
            IntegerMatMul::packed(PackedWeights::new(&b_t, &tensor0(0i8))?),
            a_t,
            tensor0(200u8),
            vec![],
        )?;
        assert_eq!(got.shape(), &[2, m, n]);
        let expected = reference(&a, 200, &b, &[0], 2 * m, k, n);
        assert_eq!(got.try_as_plain_ram()?.as_slice::<i32>()?, &expected[..]);
        Ok(())
    }

    #[test]
    fn reaches_the_ends_of_both_ranges_with_unsigned_weights() -> TractResult<()> {
        // (0 - 255) × (255 - 0) in every product, and (255 - 255) × (0 - 0): the extremes.
        let (m, k, n) = (3, 1538, 5);
        let a: Vec<i32> = (0..m * k)
            .map(|i| if i % 3 == 0 { 255 } else { 0 })
            .collect();
        let b: Vec<i32> = (0..k * n)
            .map(|i| if i % 2 == 0 { 255 } else { 0 })
            .collect();
        let a_t = tensor1(&a.iter().map(|&v| v as u8).collect::<Vec<_>>()).into_shape(&[m, k])?;
        let b_t = tensor1(&b.iter().map(|&v| v as u8).collect::<Vec<_>>()).into_shape(&[k, n])?;
        for zb in [0, 7] {
            let packed = PackedWeights::new(&b_t, &tensor0(zb as u8))?;
            let got = run(
                IntegerMatMul::packed(packed),
                a_t.clone(),
                tensor0(255u8),
                vec![],
            )?;
            let expected = reference(&a, 255, &b, &[zb], m, k, n);
            assert_eq!(got.try_as_plain_ram()?.as_slice::<i32>()?, &expected[..]);
        }
        Ok(())
    }

    #[test]
    fn takes_one_row_and_no_depth() -> TractResult<()> {
        let b = values(4 * 3, 8, -127, 127);
        let b_t = tensor1(&b.iter().map(|&v| v as i8).collect::<Vec<_>>()).into_shape(&[4, 3])?;
        let a = [1i8, -2, 3, -4];
        let got = run(
            IntegerMatMul::packed(PackedWeights::new(&b_t, &tensor0(0i8))?),
            tensor1(&a),
            tensor0(0i8),
            vec![],
        )?;
        assert_eq!(got.shape(), &[3]);
        let a32: Vec<i32> = a.iter().map(|&v| v.into()).collect();
        assert_eq!(
            got.try_as_plain_ram()?.as_slice::<i32>()?,
            &reference(&a32, 0, &b, &[0], 1, 4, 3)[..]
        );
        let empty = Tensor::zero::<i8>(&[0, 3])?;
        let got = run(
            IntegerMatMul::packed(PackedWeights::new(&empty, &tensor0(0i8))?),
            Tensor::zero::<i8>(&[2, 0])?,
            tensor0(0i8),
            vec![],
        )?;
        assert_eq!(got.shape(), &[2, 3]);
        assert!(got
            .try_as_plain_ram()?
            .as_slice::<i32>()?
            .iter()
            .all(|&v| v == 0));
        Ok(())
    }

    #[test]
    fn refuses_weights_it_cannot_pack_and_says_why() {
        let batched = Tensor::zero::<i8>(&[2, 3, 4]).unwrap();
        let err = PackedWeights::new(&batched, &tensor0(0i8)).unwrap_err();
        assert!(format!("{err}").contains("only 2-D weights"), "{err}");
        let matrix = Tensor::zero::<i8>(&[3, 4]).unwrap();
        let err = PackedWeights::new(&matrix, &tensor1(&[0i8, 0])).unwrap_err();
        assert!(format!("{err}").contains("2 values for 4 columns"), "{err}");
        let floats = Tensor::zero::<f32>(&[3, 4]).unwrap();
        assert!(PackedWeights::new(&floats, &tensor0(0i8)).is_err());
    }
}
