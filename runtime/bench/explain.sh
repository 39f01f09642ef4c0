#!/usr/bin/env bash
# What an explanation costs and how faithful it is, for one bundle (the shipped model unless
# given), one runtime after another on this machine:
#   - faithfulness: ERASER's comprehensiveness and sufficiency of `feelings explain` on 200
#     official test reviews against as many random units (2 threads, the weight-only int8
#     export of the bundle);
#   - time per explanation of the same 2,818-character review (a full 256-token input, explained
#     sentence by sentence): native (`feelings explain`, 1 and 2 threads), a wasmtime sandbox
#     (`POST /v1/explain` of `feelings-serve`), Chromium (the page's "Why?").
# Prints each runtime's JSON line; needs `bash web/build.sh` first.
#   bash runtime/bench/explain.sh [BUNDLE] [PORT]
set -euo pipefail
cd "$(dirname "$0")/../.."
bundle=${1:-models/imdb-minilm}
port=${2:-8097}
data=../shared/data/imdb/imdb.csv.gz
work=$(mktemp -d)
trap 'kill "${server_pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT

cargo build -q -p feelings-trainer --bin feelings -p feelings-runtime --bin feelings-serve
bin=${CARGO_TARGET_DIR:-target}/debug
# The review latency.py times: written as-is for Chromium, and three times into a CSV for
# `feelings explain` (which averages over its rows).
python3 - "$data" "$work" <<'PY'
import csv, sys
sys.path.insert(0, "runtime/bench")
import latency
review = latency.long_review(sys.argv[1])
open(f"{sys.argv[2]}/review.txt", "w").write(review)
with open(f"{sys.argv[2]}/review.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["review", "sentiment"])
    for label in ["positive", "negative", "positive"]:
        w.writerow([review, label])
PY

# Natively, the bundle's weight-only int8 export (the same weights, products in f32), as the
# README's figures were measured: then tract's integer products took about 5 s per review on
# x86-64 CPUs without VNNI (ours run there now: about 0.13 s).
"$bin/feelings" export "$bundle" --out "$work/int8" --quantize int8 >/dev/null
echo "== faithfulness, 200 test reviews"
"$bin/feelings" explain "$work/int8" --data "$data" --split-column split --reviews 200 --threads 2 | tail -1
for threads in 1 2; do
  echo "== native, $threads thread(s)"
  "$bin/feelings" explain "$work/int8" --data "$work/review.csv" --reviews 3 --threads "$threads" | tail -1
done

echo "== wasmtime sandbox (feelings-serve, POST /v1/explain)"
"$bin/feelings-serve" --model "$bundle" --addr "127.0.0.1:$port" --registry "$work/registry" --no-web >"$work/serve.log" 2>&1 &
server_pid=$!
for _ in $(seq 600); do
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
  sleep 0.5
done
python3 runtime/bench/latency.py 127.0.0.1 "$port" /v1/explain 4 --data "$data"
kill "$server_pid"

echo "== Chromium (time to first result, cold and warm; the page's Why?)"
node web/bench/page.mjs "$bundle" "$work/review.txt" --runs 3
