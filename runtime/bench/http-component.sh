#!/usr/bin/env bash
# The wasi:http component beside the gateway, in the same run: writes the shipped model's
# component with `feelings-serve --write-http-component`, serves it with `wasmtime serve` (a
# fresh instance per request, its default) and the same bundle with `feelings-serve` (a fresh
# sandbox per call, its default), and times the same 2,818-character review on each, in turns
# (3 rounds of 40 sequential requests each), then prints the p50 ratio. Run from the repository
# root with nothing else running, after `bash web/build.sh` and `cargo build --workspace`
# (not -p: features resolved for one package alone build tract and wasmtime again),
# with wasmtime-cli at the runtime's version (FEELINGS_WASMTIME, or `wasmtime` on the PATH):
#   bash runtime/bench/http-component.sh [WORK_DIR]
set -euo pipefail
T=$(realpath "${CARGO_TARGET_DIR:-target}")
WASMTIME=${FEELINGS_WASMTIME:-$(command -v wasmtime)}
M=$PWD/models/imdb-minilm
LATENCY=$PWD/runtime/bench/latency.py
DATA=$PWD/../shared/data/imdb/imdb.csv.gz
D=${1:-$(mktemp -d)}
mkdir -p "$D/cache"
echo "work folder $D; $("$WASMTIME" --version)"

start=$(date +%s.%N)
"$T/debug/feelings-serve" --model "$M" --http-component "$T/wasm32-wasip2/release/feelings_http_component.wasm" \
  --write-http-component "$D/imdb-minilm-http.wasm"
echo "written in $(echo "$(date +%s.%N) - $start" | bc) s: $(du -h "$D/imdb-minilm-http.wasm" | cut -f1)"

start=$(date +%s.%N)
"$WASMTIME" serve --addr 127.0.0.1:8393 -S cli "$D/imdb-minilm-http.wasm" 2> "$D/wasmtime.log" &
WPID=$!
for _ in $(seq 1 1200); do curl -sf http://127.0.0.1:8393/healthz >/dev/null && break; sleep 0.1; done
echo "wasmtime serve answering after $(echo "$(date +%s.%N) - $start" | bc) s (its compile)"
"$T/debug/feelings-serve" --model "$M" --component "$T/wasm32-wasip2/release/feelings_core.wasm" \
  --cache "$D/cache" --registry "$D/reg" --addr 127.0.0.1:8394 --no-web > "$D/serve.log" 2>&1 &
SPID=$!
trap 'kill $WPID $SPID 2>/dev/null' EXIT
for _ in $(seq 1 1200); do curl -sf http://127.0.0.1:8394/readyz >/dev/null && break; sleep 0.1; done

c() { python3 "$LATENCY" 127.0.0.1 "$1" /v1/classify "$2" --data "$DATA"; }
c 8393 5 >/dev/null; c 8394 5 >/dev/null
for round in 1 2 3; do
  echo "round $round wasmtime-serve $(c 8393 40)"
  echo "round $round feelings-serve $(c 8394 40)"
done | tee "$D/rounds.txt"
python3 - "$D/rounds.txt" <<'PY'
import json, statistics, sys
p50 = {}
for line in open(sys.argv[1]):
    _, _, host, figures = line.split(" ", 3)
    p50.setdefault(host, []).append(json.loads(figures)["p50_ms"])
w, s = statistics.median(p50["wasmtime-serve"]), statistics.median(p50["feelings-serve"])
print(f"p50 (median of rounds): wasmtime serve {w} ms, feelings-serve {s} ms: x{w / s:.2f}")
PY
