#!/usr/bin/env bash
# Builds both WebAssembly forms of the inference core (wasm-app), with SIMD128 on:
#   web/pkg/                 the browser build: wasm32-unknown-unknown + wasm-bindgen --target web
#   <target>/wasm32-wasip2/release/feelings_core.wasm
#                            the server build: a component exporting wasm-app/wit/feelings.wit
#   <target>/wasm32-wasip2/release/feelings_http_component.wasm
#                            the same classifier behind wasi:http/incoming-handler
# and installs the page's test driver (npm ci). Installs what it needs: the rustup targets and
# wasm-bindgen-cli at the exact version of the wasm-bindgen crate. Serve web/ with a bundle in
# web/model/ to use the page.
set -euo pipefail
cd "$(dirname "$0")/.."

WASM_BINDGEN_VERSION=$(sed -n 's/^wasm-bindgen = "=\(.*\)"$/\1/p' wasm-app/Cargo.toml)
target_dir=${CARGO_TARGET_DIR:-target}

rustup target add wasm32-unknown-unknown wasm32-wasip2 >/dev/null
if [ "$(wasm-bindgen --version 2>/dev/null | cut -d' ' -f2)" != "$WASM_BINDGEN_VERSION" ]; then
  echo "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (a few minutes, once)"
  # (without .ci/run's lint wrapper: it is for this workspace's crates, not a tool's)
  env -u RUSTC_WORKSPACE_WRAPPER -u CLIPPY_ARGS cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION"
fi

source web/wasm-env.sh
cargo build --release -p feelings-core --lib --target wasm32-unknown-unknown
# Function names only help stack traces of panics (which reach the page as messages anyway):
# dropping them takes 10 % off the download.
wasm-bindgen --target web --no-typescript --remove-name-section --remove-producers-section \
  --out-dir web/pkg \
  "$target_dir/wasm32-unknown-unknown/release/feelings_core.wasm"

# The server build, the wasi:http component built on it, and the misbehaving guest the
# gateway's fault tests run.
cargo build --release -p feelings-core -p feelings-http-component -p feelings-fault-guest --lib \
  --target wasm32-wasip2

(cd web && npm ci --no-audit --no-fund --silent)

size=$(stat -c %s web/pkg/feelings_core_bg.wasm)
gz=$(gzip -9 -c web/pkg/feelings_core_bg.wasm | wc -c)
echo "browser build: web/pkg/feelings_core_bg.wasm, $((size / 1024)) KiB ($((gz / 1024)) KiB gzip)"
server=$target_dir/wasm32-wasip2/release/feelings_core.wasm
echo "server build: $server, $(($(stat -c %s "$server") / 1024)) KiB"
