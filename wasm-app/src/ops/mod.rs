//! The ONNX operators we run with our own code rather than tract-onnx's: where tract's is
//! measurably slow for the integer bundles (`feelings export --quantize int8-dynamic`).
//!
//! - [`quantize`]: `DynamicQuantizeLinear`, vectorised and straight to i8, everywhere.
//! - [`integer_matmul`]: `MatMulInteger` in WebAssembly, on SIMD128's `i32x4.dot_i16x8_s`
//!   with weights packed once at load. Natively tract's own products stay: they reach its
//!   AVX-512 VNNI and AMX kernels, which this one cannot beat.

#[cfg(any(all(target_arch = "wasm32", target_feature = "simd128"), test))]
mod integer_matmul;
mod quantize;

/// Puts our operators in place of tract-onnx's in `onnx`, before a model is read with it.
pub fn register(onnx: &mut tract_onnx::Onnx) {
    onnx.op_register
        .insert("DynamicQuantizeLinear", quantize::dynamic_quantize_linear);
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    onnx.op_register
        .insert("MatMulInteger", integer_matmul::matmul_integer);
}
