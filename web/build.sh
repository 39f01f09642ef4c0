#!/usr/bin/env bash
# Builds the browser form of the inference core into web/pkg/ (wasm32-unknown-unknown with
# SIMD128, then wasm-bindgen --target web) and installs the page's test driver (npm ci).
# Installs what it needs: the rustup target and wasm-bindgen-cli at the exact version of the
# wasm-bindgen crate. Serve web/ with a bundle in web/model/ (or run the gateway) to use it.
set -euo pipefail
cd "$(dirname "$0")/.."

WASM_BINDGEN_VERSION=$(sed -n 's/^wasm-bindgen = "=\(.*\)"$/\1/p' wasm-app/Cargo.toml)
target_dir=${CARGO_TARGET_DIR:-target}

rustup target add wasm32-unknown-unknown >/dev/null
if [ "$(wasm-bindgen --version 2>/dev/null | cut -d' ' -f2)" != "$WASM_BINDGEN_VERSION" ]; then
  echo "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (a few minutes, once)"
  cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION"
fi

# SIMD128 selects tract's wasm kernels (3.6x faster); the getrandom backend is the browser's.
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS='-C target-feature=+simd128 --cfg getrandom_backend="wasm_js"' \
  cargo build --release -p feelings-wasm-app --lib --target wasm32-unknown-unknown
wasm-bindgen --target web --no-typescript --out-dir web/pkg \
  "$target_dir/wasm32-unknown-unknown/release/feelings_core.wasm"

(cd web && npm ci --no-audit --no-fund --silent)

size=$(stat -c %s web/pkg/feelings_core_bg.wasm)
gz=$(gzip -9 -c web/pkg/feelings_core_bg.wasm | wc -c)
echo "browser build: web/pkg/feelings_core_bg.wasm, $((size / 1024)) KiB ($((gz / 1024)) KiB gzip)"
