# The compiler flags of both WebAssembly builds, sourced by web/build.sh (which builds them)
# and .ci/run (which lints them), so the linted code is the built code.
# SIMD128 selects tract's wasm kernels (3.6x faster); the browser's getrandom backend is JS.
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS='-C target-feature=+simd128 --cfg getrandom_backend="wasm_js"'
export CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS='-C target-feature=+simd128'
