#!/usr/bin/env bash
# The whole test suite, as README.md gives it: installs what the tests need on a fresh Debian
# machine (Chromium, ONNX Runtime for Python), builds the browser form of the inference core,
# then runs every crate's tests and the end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null; then
  echo "installing Debian's chromium for the page test"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null
fi
# ONNX Runtime checks that exported models run the same in the reference runtime. Without it
# those checks say "skipped" on a developer's machine; in CI (CI set) they fail instead.
python3 -c 'import onnxruntime, numpy' 2>/dev/null \
  || python3 -m pip install --quiet --disable-pip-version-check onnxruntime numpy \
  || { echo "onnxruntime could not be installed: its parity checks will be skipped" >&2
       if [ -n "${CI:-}" ]; then exit 1; fi; }

bash web/build.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace 2>&1 | tee "$log" || status=$?
# One closing line for the whole suite, summed over every test binary.
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
