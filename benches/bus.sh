#!/usr/bin/env bash
# The bus's two first numbers (issue 11), on this machine, in one run:
#   1. events/s one node pushes into Redis with NDJSON batch publishes (1,000 events of
#      ~100 B a request, 4 keep-alive connections in parallel, 50 requests each);
#   2. publish→receive latency p50/p99 of one node with and without --bus, same load
#      (sse-load fanout: 200 streams, 200 events/s, 20 s).
# Needs redis-server and curl; builds the release binaries. Loopback only; stops what it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins >/dev/null
BIN=target/release
OUT=${OUT:-target/bench-bus}
mkdir -p "$OUT"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

RPORT=$(free_port)
redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$OUT" >"$OUT/redis.log" 2>&1 &
pids+=($!); RPID=$!
wait_port "$RPORT"

# 1. Throughput into the bus.
PORT=$(free_port)
RUST_LOG=warn "$BIN/sse-edge" --listen "127.0.0.1:$PORT" --threads 1 --bus "redis://127.0.0.1:$RPORT" \
  --bus-maxlen 2000000 >"$OUT/node-throughput.log" 2>&1 &
pids+=($!); NODE=$!
wait_port "$PORT"
python3 - >"$OUT/batch.ndjson" <<'PY'
import json
for i in range(1000):
    print(json.dumps({"topic": "bench", "data": "x" * 100}))
PY
urls=$(for _ in $(seq 50); do printf -- '-o /dev/null http://127.0.0.1:%s/publish ' "$PORT"; done)
rm -f "$OUT"/codes-*.txt
curls=()
start=$(date +%s.%N)
for c in 1 2 3 4; do
  # shellcheck disable=SC2086
  curl -s -w '%{http_code}\n' -H 'Content-Type: application/x-ndjson' \
    --data-binary @"$OUT/batch.ndjson" $urls >"$OUT/codes-$c.txt" &
  curls+=($!)
done
wait "${curls[@]}"
end=$(date +%s.%N)
ok=$(cat "$OUT"/codes-*.txt | grep -c '^202$' || true)
xlen=$(redis-cli -p "$RPORT" XLEN '{sse-edge}:events')
cpu_redis=$(awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14+$15)/hz}' "/proc/$RPID/stat")
echo "throughput: $ok requests of 1000 answered 202, XLEN $xlen, $(python3 -c "print(round($xlen/($end-$start)))") events/s into the bus ($(python3 -c "print(round($end-$start,2))") s); redis cpu ${cpu_redis}s"
kill "$NODE"; wait "$NODE" 2>/dev/null || true

# 2. Latency with and without the bus, same load.
for mode in local bus; do
  PORT=$(free_port)
  args=(--listen "127.0.0.1:$PORT" --threads 1)
  [ "$mode" = bus ] && args+=(--bus "redis://127.0.0.1:$RPORT")
  RUST_LOG=warn "$BIN/sse-edge" "${args[@]}" >"$OUT/node-$mode.log" 2>&1 &
  pids+=($!); NODE=$!
  wait_port "$PORT"
  "$BIN/sse-load" fanout --addr "127.0.0.1:$PORT" --streams 200 --rate 200 --duration 20 \
    --server-pid "$NODE" --md-out "$OUT/latency-$mode.md" >"$OUT/load-$mode.log" 2>&1 || true
  echo "latency ($mode): $(grep -E 'latency p50' "$OUT/latency-$mode.md" | head -1)"
  echo "            $(grep -Ei 'gaps|missing|delivered' "$OUT/latency-$mode.md" | head -3 | tr '\n' ' ')"
  kill "$NODE"; wait "$NODE" 2>/dev/null || true
done
