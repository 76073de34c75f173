#!/usr/bin/env bash
# Issue 10 item 15: which kernel send-queue bound keeps M4b's readers fast?
#
#   benches/send_queue.sh [--repeat N] [--no-build]
#
# Runs the peer benchmark's M4b scenario (10,000 streams, 20% never reading, 20 events/s of
# 1 KiB for 30 s; benches/peers/run.sh) against sse-edge only, once per variant below, in
# rounds (A B C D, A B C D, ...) so that the machine's other load spreads over all of them.
# Variants are set through the server's environment:
#   sndbuf-64k     --send-buffer-bytes 65536 (the default before this measurement)
#   autotune       --send-buffer-bytes 0, no TCP_NOTSENT_LOWAT (the kernel's autotuning)
#   lowat-16k      --send-buffer-bytes 0 --notsent-lowat-bytes 16384
#   lowat-128k     --send-buffer-bytes 0 --notsent-lowat-bytes 131072
# Prints one table (medians over the rounds): readers' delivered share, p50/p99 latency,
# server RSS growth, host kernel TCP memory growth and server CPU. Output under
# benches/out/send-queue/ (gitignored).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPEAT=3
BUILD=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --repeat) REPEAT="$2"; shift ;;
    --no-build) BUILD=(--no-build) ;;
    *) sed -n '2,18p' "${BASH_SOURCE[0]}"; exit 2 ;;
  esac
  shift
done
OUT="$ROOT/benches/out/send-queue"
rm -rf "$OUT" "$OUT".*.log
mkdir -p "$OUT"
declare -A ENVS=(
  [sndbuf-64k]="SSE_EDGE_SEND_BUFFER_BYTES=65536 SSE_EDGE_NOTSENT_LOWAT_BYTES=0"
  [autotune]="SSE_EDGE_SEND_BUFFER_BYTES=0 SSE_EDGE_NOTSENT_LOWAT_BYTES=0"
  [lowat-16k]="SSE_EDGE_SEND_BUFFER_BYTES=0 SSE_EDGE_NOTSENT_LOWAT_BYTES=16384"
  [lowat-128k]="SSE_EDGE_SEND_BUFFER_BYTES=0 SSE_EDGE_NOTSENT_LOWAT_BYTES=131072"
)
ORDER=(sndbuf-64k autotune lowat-16k lowat-128k)
for round in $(seq 1 "$REPEAT"); do
  for v in "${ORDER[@]}"; do
    echo "== round $round: $v (${ENVS[$v]}) at $(date -u +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg)"
    env ${ENVS[$v]} "$ROOT/benches/peers/run.sh" --peers sse-edge --scenarios M4b --repeat 1 \
      --no-report "${BUILD[@]}" --out "$OUT/$v/r$round" >"$OUT.$v.r$round.log" 2>&1 \
      || { echo "run failed: see $OUT.$v.r$round.log"; exit 1; }
    BUILD=(--no-build)
  done
done
python3 - "$OUT" "${ORDER[@]}" <<'PY'
import glob, json, statistics, sys
out, order = sys.argv[1], sys.argv[2:]
print(f"\n| variant | runs | readers delivered | readers p50 / p99 (ms) | server RSS growth | kernel TCP mem growth | server CPU-s |")
print("|---|---|---|---|---|---|---|")
for v in order:
    runs = [json.load(open(f)) for f in sorted(glob.glob(f"{out}/{v}/*/*/sse-edge/M4b*.json"))]
    if not runs:
        print(f"| {v} | 0 | | | | | |"); continue
    def med(f):
        xs = [x for x in (f(r) for r in runs) if x is not None]
        return statistics.median(xs) if xs else float("nan")
    sub = lambda r: r.get("subscribers") or {}
    raw = lambda r: sub(r).get("raw") or {}
    delivered = med(lambda r: 1 - raw(r).get("missing_total", 0) / max(sub(r).get("expected_deliveries") or 1, 1))
    p50 = med(lambda r: (sub(r).get("latency_ms") or {}).get("p50"))
    p99 = med(lambda r: (sub(r).get("latency_ms") or {}).get("p99"))
    rss = med(lambda r: (r.get("server") or {}).get("rss_growth_during_run_bytes"))
    tcp = med(lambda r: (r.get("server") or {}).get("kernel_tcp_mem_growth_bytes"))
    cpu = med(lambda r: (r.get("server") or {}).get("cpu_seconds_during_run"))
    print(f"| {v} | {len(runs)} | {delivered:.2%} | {p50:.0f} / {p99:.0f} | {rss/2**20:.1f} MiB | {tcp/2**20:.0f} MiB | {cpu:.2f} |")
PY
