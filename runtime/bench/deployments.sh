#!/usr/bin/env bash
# The deployments' figures of README.md, against the shipped model: a fresh sandbox per call
# against reused ones, a new bundle's upload to first answer, RSS with 1, 10 and 100
# deployments, warm and cold latency. Run from the repository root, with nothing else running,
# after `bash web/build.sh` and `cargo build --workspace`
# (not -p: features resolved for one package alone build tract and wasmtime again):
#   bash runtime/bench/deployments.sh [WORK_DIR]
set -u
T=$(realpath "${CARGO_TARGET_DIR:-target}")
BIN=$T/debug/feelings-serve
COMP=$T/wasm32-wasip2/release/feelings_core.wasm
M=$PWD/models/imdb-minilm
LATENCY=$PWD/runtime/bench/latency.py
DATA=$PWD/../shared/data/imdb/imdb.csv.gz
D=${1:-$(mktemp -d)}
echo "work folder $D"
mkdir -p "$D"; cd "$D"; rm -rf reg cache copy serve.log; mkdir -p cache
# A second bundle: the shipped files under another model name, so another sha256.
cp -r "$M" copy
python3 -c 'import json,sys; p=sys.argv[1]; m=json.load(open(p)); m["name"]+="-copy"; json.dump(m, open(p,"w"), indent=2)' copy/feelings.json
PORT=8391
serve() { # extra flags
  RUST_LOG=info $BIN --model $M --component $COMP --cache $D/cache --registry $D/reg --addr 127.0.0.1:$PORT --admin-key an-admin-key-of-24-chars "$@" >> $D/serve.log 2>&1 &
  PID=$!
  for i in $(seq 1 600); do curl -sf http://127.0.0.1:$PORT/readyz >/dev/null && break; sleep 0.1; done
  echo "ready after $i polls (x0.1 s)"
}
stop() { kill $PID; wait $PID 2>/dev/null; }
rss() { grep -E 'VmRSS|RssAnon|RssFile' /proc/$1/status | tr -s ' \t' ' ' | tr '\n' ' '; echo; }
up() { sha=$(sha256sum "$3/feelings.json" | cut -d' ' -f1)
  curl -s -o /dev/null -w '%{http_code} %{time_total}\n' -X POST "http://127.0.0.1:$PORT/v1/deployments" -H 'authorization: Bearer an-admin-key-of-24-chars' \
  -F name="$2" -F sha256="$sha" -F "feelings.json=@$3/feelings.json" -F "model.onnx=@$3/model.onnx" -F "tokenizer.json=@$3/tokenizer.json"; }
c() { python3 "$LATENCY" 127.0.0.1 $PORT "$1" "$2" --data "$DATA"; }

echo "== single deployment, reused sandboxes vs fresh (sequential client, 2818-char review)"
serve --reuse-sandboxes; c /v1/classify 5 >/dev/null; c /v1/classify 60; echo -n "rss "; rss $PID; stop
serve; c /v1/classify 5 >/dev/null; c /v1/classify 60; echo -n "rss "; rss $PID
echo "== new bundle upload -> first answer (function cache warm from the shipped model's compile)"

t0=$(date +%s.%N); up $PORT copy-0 $D/copy; c /v1/deployments/copy-0/classify 1; t1=$(date +%s.%N)
echo "upload+first answer: $(echo "$t1 - $t0" | bc) s"
# Meanwhile its snapshot is made in the background; its sandboxes load the bundle until then.
c /v1/deployments/copy-0/classify 5
until curl -s http://127.0.0.1:$PORT/v1/deployments/copy-0 | grep -q '"loading":false'; do sleep 0.2; done
t2=$(date +%s.%N); echo "upload -> serving from its snapshot: $(echo "$t2 - $t0" | bc) s"
grep -E "snapshotted|compiled in|snapshot mapped|load the bundle|from its snapshot" $D/serve.log | tail -6
c /v1/deployments/copy-0/classify 20
echo "== 10 deployments"
for i in $(seq 1 4); do up $PORT ship-$i $M >/dev/null; up $PORT copy-$i $D/copy >/dev/null; done
echo -n "deployments: "; curl -s http://127.0.0.1:$PORT/v1/deployments | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["deployments"]))'
echo -n "rss 10 warm: "; rss $PID
echo "== 100 deployments"
for i in $(seq 5 49); do up $PORT ship-$i $M >/dev/null; up $PORT copy-$i $D/copy >/dev/null; done
up $PORT ship-50 $M >/dev/null
echo -n "deployments: "; curl -s http://127.0.0.1:$PORT/v1/deployments | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["deployments"]))'
echo -n "rss 100 after uploads: "; rss $PID
c /v1/deployments/ship-7/classify 5 >/dev/null; c /v1/deployments/ship-7/classify 60
c /v1/classify 60
stop
echo "== restart with 100 registered, all cold; --unload-after 15"
serve --unload-after 15; echo -n "rss 100 cold at start: "; rss $PID
c /v1/classify 5 >/dev/null; c /v1/classify 60
echo "cold deployment first answers (first_ms), then warm:"
c /v1/deployments/copy-30/classify 20
c /v1/deployments/ship-30/classify 20
grep "snapshot mapped" $D/serve.log | tail -3
sleep 25; echo -n "rss 100 idle (all unmapped): "; rss $PID
grep -c "snapshot unmapped" $D/serve.log
c /v1/deployments/ship-12/classify 20
grep "snapshot mapped" $D/serve.log | tail -1
stop
