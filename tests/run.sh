#!/usr/bin/env bash
# The whole test suite, as README.md gives it: installs what the tests need on a fresh Debian
# machine (Chromium, ONNX Runtime for Python, wasmtime-cli, the peer venv with transformers), builds the browser form of the inference core,
# then runs every crate's tests and the end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null; then
  echo "installing Debian's chromium for the page test"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null
fi
# transformers.js (from npm, install scripts skipped: ONNX Runtime's Node binding ships its CPU
# library in the package) runs a `feelings export --layout hf` folder in the trainer's tests.
if [ ! -d tests/transformers-js/node_modules/@huggingface/transformers ]; then
  echo "installing transformers.js into tests/transformers-js for the Hugging Face layout test"
  (cd tests/transformers-js && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) \
    || { echo "transformers.js could not be installed: its check will be skipped" >&2
         if [ -n "${CI:-}" ]; then exit 1; fi; }
fi
# ONNX Runtime checks that exported models run the same in the reference runtime. Without it
# those checks say "skipped" on a developer's machine; in CI (CI set) they fail instead.
python3 -c 'import onnxruntime, numpy' 2>/dev/null \
  || python3 -m pip install --quiet --disable-pip-version-check onnxruntime numpy \
  || { echo "onnxruntime could not be installed: its parity checks will be skipped" >&2
       if [ -n "${CI:-}" ]; then exit 1; fi; }

# wasmtime-cli at the runtime's wasmtime version runs the wasi:http component in its test
# (`wasmtime serve`): installed once into a cache folder outside the clone, with only the
# commands the test uses, in the background while the WebAssembly builds run.
WASMTIME_VERSION=$(sed -n 's/^wasmtime = { version = "=\([^"]*\)".*/\1/p' runtime/Cargo.toml)
tools=${FEELINGS_TOOLS:-$HOME/.cache/feelings-tools}/wasmtime-cli-$WASMTIME_VERSION
export FEELINGS_WASMTIME=$tools/bin/wasmtime
install_log=$(mktemp)
trap 'rm -f "$install_log"' EXIT
install_pid=
if [ ! -x "$FEELINGS_WASMTIME" ]; then
  echo "installing wasmtime-cli $WASMTIME_VERSION into $tools (once; in the background)"
  # (without .ci/run's lint wrapper: it is for this workspace's crates, not a tool's)
  env -u RUSTC_WORKSPACE_WRAPPER -u CLIPPY_ARGS cargo install wasmtime-cli --version "$WASMTIME_VERSION" --locked --no-default-features \
    --features run,serve,component-model-async,cranelift,parallel-compilation,pooling-allocator --root "$tools" \
    >"$install_log" 2>&1 &
  install_pid=$!
fi

# The peer venv (torch, transformers) checks that transformers loads a checkpoint and gives
# its logits: made once with ../shared's setup script into the same cache folder, in the
# background too.
peers=${FEELINGS_TOOLS:-$HOME/.cache/feelings-tools}/peers
export FEELINGS_PEERS_PYTHON=$peers/venv/bin/python
peers_log=$(mktemp)
trap 'rm -f "$install_log" "$peers_log"' EXIT
peers_pid=
if ! "$FEELINGS_PEERS_PYTHON" -c 'import torch, transformers' 2>/dev/null; then
  echo "installing the peer venv (torch, transformers) into $peers (once; in the background)"
  PEERS_DIR=$peers bash ../shared/bench/peers/setup.sh >"$peers_log" 2>&1 &
  peers_pid=$!
fi

bash web/build.sh
if [ -n "$peers_pid" ] && ! wait "$peers_pid"; then
  cat "$peers_log" >&2
  echo "the peer venv could not be made: the transformers parity check will fail (CI) or skip" >&2
  if [ -n "${CI:-}" ]; then exit 1; fi
fi
if [ -n "$install_pid" ] && ! wait "$install_pid"; then
  cat "$install_log" >&2
  echo "wasmtime-cli could not be installed: the wasmtime serve test will fail (CI) or skip" >&2
  if [ -n "${CI:-}" ]; then exit 1; fi
fi
log=$(mktemp)
trap 'rm -f "$log" "$install_log" "$peers_log"' EXIT
status=0
cargo test --workspace 2>&1 | tee "$log" || status=$?
# One closing line for the whole suite, summed over every test binary.
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
