//! The ONNX operators we run with our own code rather than tract-onnx's: where tract's is
//! measurably slow for the integer bundles (`feelings export --quantize int8-dynamic`).
//!
//! - [`quantize`]: `DynamicQuantizeLinear`, vectorised and straight to i8, everywhere.
//! - [`integer_matmul`]: `MatMulInteger` on a 16-bit multiply-add (SIMD128's
//!   `i32x4.dot_i16x8_s`, SSE2's `pmaddwd`) with weights packed once at load: in WebAssembly,
//!   and natively on x86-64 CPUs without VNNI. Where the CPU has VNNI (or AMX) tract's own
//!   kernels stay: this one cannot beat them. Without it tract's is `avx2_mmm_i32_8x8`, which
//!   took about 5 s for one 256-token review of the shipped MiniLM-L6 on a 2-core AMD EPYC
//!   (AVX2 only).

#[cfg(any(
    all(target_arch = "wasm32", target_feature = "simd128"),
    target_arch = "x86_64",
    test
))]
mod integer_matmul;
mod quantize;

/// Puts our operators in place of tract-onnx's in `onnx`, before a model is read with it.
pub fn register(onnx: &mut tract_onnx::Onnx) {
    onnx.op_register
        .insert("DynamicQuantizeLinear", quantize::dynamic_quantize_linear);
    #[cfg(any(
        all(target_arch = "wasm32", target_feature = "simd128"),
        target_arch = "x86_64"
    ))]
    if integer_products_are_ours() {
        onnx.op_register
            .insert("MatMulInteger", integer_matmul::matmul_integer);
    }
}

/// Whether `MatMulInteger` runs on [`integer_matmul`]: always in WebAssembly; natively on
/// x86-64 unless the CPU has a VNNI dot product (AVX-512 VNNI or AVX-VNNI), which tract uses.
pub fn integer_products_are_ours() -> bool {
    #[cfg(target_arch = "x86_64")]
    return !(std::is_x86_feature_detected!("avx512vnni")
        || std::is_x86_feature_detected!("avxvnni"));
    #[cfg(not(target_arch = "x86_64"))]
    return cfg!(all(target_arch = "wasm32", target_feature = "simd128"));
}
