#!/usr/bin/env bash
# Capacity run (issue 6 item 5): how many idle SSE streams one sse-edge process, and one host,
# holds while every stream still receives every broadcast. Recorded in benches/CAPACITY.md.
#
#   benches/capacity.sh            # runs A, B5 and B6 (about 3-4 minutes), prints the summary
#   RUNS="A" benches/capacity.sh   # only run A (RUNS: any of A B5 B6 BUS6); OUT=dir, PORT_BASE=port
#
#   A   one process, 2 loops, 19,600 streams (capacity on a 20,000-fd host: 20,000 - 64
#       --fd-reserve - 41 for loops and admin = 19,895, as its startup log says)
#   B5  5 processes on one SO_REUSEPORT port, 100,000 streams: 5 x 19,895 = 99,475 < 100,000,
#       so the last 525 are refused with 503, by design
#   B6  6 processes on one SO_REUSEPORT port, 100,000 streams
#   BUS6  as B6, but the 6 processes share one Redis bus (--bus) and each event is published
#       ONCE, to the first process: the bus brings it to the other five (issue 11). Also
#       reports Redis's CPU. Needs redis-server.
#
# Loopback only. Bounded: every wait loop has an iteration cap, sse-load has its own deadline
# and runs under `timeout`, and the EXIT trap stops exactly the pids this script started (the
# servers: SIGTERM, then SIGKILL by pid after 15 s; sse-load, whose workers exit with it). No
# sysctl is changed; the ones that matter are printed. Output: target/capacity/<time>/.
# Needs: cargo, curl, jq, ss.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-"A B5 B6"}
PORT_BASE=${PORT_BASE:-27100}          # public port A = PORT_BASE, B = PORT_BASE+100
OUT=${OUT:-target/capacity/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"

SERVERS=()                             # pids of the servers this script started and has not stopped
SERVER_ARGS=()                         # extra arguments for every server (the bus run's --bus)
REDIS=""                               # pid of the redis-server this script started
ADMINS=()                              # their admin ports
LOADGEN=""                             # pid of the running `timeout sse-load` (its workers exit with it)

stop_pids() {                          # stop_pids PID... : TERM, wait up to 15 s, then KILL
  local p i
  (($#)) || return 0
  for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
  for ((i = 0; i < 150; i++)); do
    local alive=0
    for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for p in "$@"; do kill -KILL "$p" 2>/dev/null || true; done
  for p in "$@"; do wait "$p" 2>/dev/null || true; done
}
cleanup() {
  if [ -n "$LOADGEN" ]; then kill -TERM "$LOADGEN" 2>/dev/null || true; wait "$LOADGEN" 2>/dev/null || true; fi
  stop_pids "${SERVERS[@]}"
  [ -z "$REDIS" ] || stop_pids "$REDIS"
}
trap cleanup EXIT

for tool in cargo curl jq ss; do
  command -v "$tool" >/dev/null || { echo "capacity.sh: needs $tool" >&2; exit 1; }
done

echo "== machine"
{
  echo "date_utc: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "nproc: $(nproc)"
  echo "memory: $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "kernel: $(uname -r)"
  echo "nofile soft/hard: $(ulimit -Sn)/$(ulimit -Hn)"
  for k in net.core.somaxconn net.ipv4.ip_local_port_range net.ipv4.tcp_max_syn_backlog \
           net.ipv4.tcp_tw_reuse fs.file-max fs.nr_open net.ipv4.tcp_mem; do
    echo "$k: $(sysctl -n "$k" 2>/dev/null | tr '\t' ' ')"
  done
} | tee "$OUT/machine.txt"

echo "== build"
cargo build --release --bins
# Run copies, so a rebuild in this tree during the run cannot swap the binaries under it.
mkdir -p "$OUT/bin"
cp target/release/sse-edge target/release/sse-load "$OUT/bin/"
BIN=$OUT/bin

stop_servers() { stop_pids "${SERVERS[@]}"; SERVERS=(); ADMINS=(); }

port_free() { ! ss -Htln "sport = :$1" | grep -q .; }

# start_servers N THREADS PUBLIC_PORT: N sse-edge on one public port, admin ports PUBLIC+1..N.
start_servers() {
  local n=$1 threads=$2 port=$3 i a
  for ((i = 0; i <= n; i++)); do
    port_free $((port + i)) || { echo "port $((port + i)) is in use" >&2; exit 1; }
  done
  for ((i = 1; i <= n; i++)); do
    a=$((port + i))
    "$BIN/sse-edge" --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$a" --threads "$threads" \
      "${SERVER_ARGS[@]}" >"$OUT/$RUN.server$i.log" 2>&1 &
    SERVERS+=($!); ADMINS+=("$a")
  done
  for a in "${ADMINS[@]}"; do
    for ((i = 0; i < 100; i++)); do
      curl -sf --max-time 1 "http://127.0.0.1:$a/healthz" >/dev/null && break
      sleep 0.1
    done
    ((i < 100)) || { echo "server on admin port $a did not come up" >&2; exit 1; }
  done
  head -n 2 "$OUT/$RUN.server1.log"
}

# scrape TAG: one JSON line per server with the figures of its /metrics (all servers at once;
# a server that does not answer within 10 s gets "ok":false).
scrape() {
  local tag=$1 k a p curls=()
  for k in "${!ADMINS[@]}"; do
    curl -s --max-time 10 -o "$OUT/$RUN.$tag.$k.prom" "http://127.0.0.1:${ADMINS[$k]}/metrics" &
    curls+=($!)
  done
  for p in "${curls[@]}"; do wait "$p" || true; done
  for k in "${!ADMINS[@]}"; do
    a=${ADMINS[$k]}
    touch "$OUT/$RUN.$tag.$k.prom"
    awk -v tag="$tag" -v i=$((k + 1)) -v pid="${SERVERS[$k]}" -v a="$a" '
      /^sse_streams_active/ {s += $2}
      /^sse_connections_active/ {c += $2}
      /^sse_connections_rejected_total\{reason="capacity"\}/ {rej = $2}
      /^sse_deliveries_total/ {d += $2}
      /^process_resident_memory_bytes/ {r = $2}
      /^process_open_fds/ {f = $2}
      /^sse_connections_max/ {mx = $2}
      END {printf "{\"tag\":\"%s\",\"server\":%d,\"pid\":%d,\"admin\":%d,\"ok\":%s,\"streams\":%d,\"connections\":%d,\"max_connections\":%d,\"rejected_capacity\":%d,\"deliveries\":%d,\"rss_bytes\":%d,\"open_fds\":%d}\n",
                   tag, i, pid, a, (NR > 0 ? "true" : "false"), s, c, mx, rej, d, r, f}' \
      "$OUT/$RUN.$tag.$k.prom"
  done >>"$OUT/$RUN.metrics.jsonl"
}


# fanout ARGS...: runs sse-load fanout against the current servers; scrapes every server before
# connecting ("start"), as soon as every stream is ready ("ready") and after the run ("end").
fanout() {
  local spids=() p i
  for p in "${SERVERS[@]}"; do spids+=(--server-pid "$p"); done
  scrape start
  echo "load average before $RUN: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$OUT/$RUN.loadavg"
  timeout 600 "$BIN/sse-load" fanout "$@" "${spids[@]}" \
    --json-out "$OUT/$RUN.json" --md-out "$OUT/$RUN.md" >"$OUT/$RUN.sse-load.log" 2>&1 &
  LOADGEN=$!
  local lp=$LOADGEN scraped=0
  for ((i = 0; i < 6000; i++)); do      # at most 600 s
    kill -0 "$lp" 2>/dev/null || break
    if ((!scraped)) && grep -q "streams ready" "$OUT/$RUN.sse-load.log"; then
      scrape ready; scraped=1
    fi
    sleep 0.1
  done
  wait "$lp" || echo "sse-load exited with $?" >&2
  LOADGEN=""
  ((scraped)) || scrape ready
  scrape end
  grep -E "streams ready|worker processes" "$OUT/$RUN.sse-load.log" || true
}

run_a() {
  RUN=A
  echo "== run A: 1 process, 19,600 streams"
  start_servers 1 2 "$PORT_BASE"
  fanout --addr "127.0.0.1:$PORT_BASE" --publish-addr "127.0.0.1:${ADMINS[0]}" --streams 19600 \
    --source-count 4 --rate 1 --count 5 --payload-bytes 100 --drain-seconds 30
  stop_servers
}

run_b() {                               # run_b PROCESSES
  local n=$1 port=$((PORT_BASE + 100)) pub=() a
  RUN=B$n
  echo "== run B$n: $n processes on one SO_REUSEPORT port, 100,000 streams"
  start_servers "$n" 2 "$port"
  for a in "${ADMINS[@]}"; do pub+=(--publish-addr "127.0.0.1:$a"); done
  fanout --addr "127.0.0.1:$port" "${pub[@]}" --streams 100000 --source-count 8 --rate 1 --count 5 \
    --payload-bytes 100 --drain-seconds 30
  grep -h "overload mode" "$OUT/$RUN".server*.log | cut -c1-160 | head -n 4 || true
  stop_servers
}

run_bus() {                             # run_bus PROCESSES
  local n=$1 port=$((PORT_BASE + 200)) rport=$((PORT_BASE + 300)) i
  RUN=BUS$n
  echo "== run BUS$n: $n processes on one SO_REUSEPORT port and one Redis bus, 100,000 streams, one publish per event"
  command -v redis-server >/dev/null || { echo "capacity.sh: BUS runs need redis-server" >&2; exit 1; }
  port_free "$rport" || { echo "port $rport is in use" >&2; exit 1; }
  redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$OUT" \
    >"$OUT/$RUN.redis.log" 2>&1 &
  REDIS=$!
  for ((i = 0; i < 100; i++)); do (exec 3<>"/dev/tcp/127.0.0.1/$rport") 2>/dev/null && break; sleep 0.1; done
  local cpu0
  cpu0=$(awk '{print $14 + $15}' "/proc/$REDIS/stat")
  SERVER_ARGS=(--bus "redis://127.0.0.1:$rport")
  start_servers "$n" 2 "$port"
  fanout --addr "127.0.0.1:$port" --publish-addr "127.0.0.1:${ADMINS[0]}" --streams 100000 --source-count 8 \
    --rate 1 --count 5 --payload-bytes 100 --drain-seconds 30
  awk -v c0="$cpu0" -v hz="$(getconf CLK_TCK)" '{printf "redis CPU during the run: %.2f s\n", ($14 + $15 - c0) / hz}' \
    "/proc/$REDIS/stat" | tee "$OUT/$RUN.redis-cpu"
  grep -h "overload mode" "$OUT/$RUN".server*.log | cut -c1-160 | head -n 4 || true
  stop_servers
  SERVER_ARGS=()
  stop_pids "$REDIS"; REDIS=""
}

summary() {                             # summary RUN
  local r=$1 j="$OUT/$1.json"
  [ -f "$j" ] || { echo "$r: no report"; return; }
  echo "== $r ($(cat "$OUT/$r.loadavg"))"
  [ ! -f "$OUT/$r.redis-cpu" ] || cat "$OUT/$r.redis-cpu"
  jq -r '
    .subscribers as $s | .publisher as $p | .server as $v |
    "streams planned/ready/failed/lost: \($s.raw.planned)/\($s.raw.ready)/\($s.raw.failed)/\($s.raw.lost)",
    "deliveries expected/received: \($s.expected_deliveries)/\($s.raw.deliveries)  missing: \($s.raw.missing_total)  seq holes: \($s.raw.seq_holes)  gap notices: \($s.raw.gap_notices)  id regressions: \($s.raw.id_regressions)",
    "publishes accepted per address: \($p.raw.accepted_by_target)  statuses: \($p.raw.statuses)",
    "subscriber errors: \($s.raw.errors)  unstamped events per stream: \(if $s.raw.readers_ready > 0 then $s.raw.other_events / $s.raw.readers_ready else 0 end) (server notices such as system.overloaded)",
    "connect ms p50/p99/max: \($s.connect_ms.p50)/\($s.connect_ms.p99)/\($s.connect_ms.max)  ttfb ms p50/p99/max: \($s.ttfb_ms.p50)/\($s.ttfb_ms.p99)/\($s.ttfb_ms.max)",
    "delivery latency ms p50/p99/max: \($s.latency_ms.p50)/\($s.latency_ms.p99)/\($s.latency_ms.max)",
    "server RSS delta per stream (all pids): \($v.rss_per_stream_bytes | floor) B  server CPU during run: \($v.cpu_seconds_during_run) s (\($v.cpu_s_per_million_deliveries) s per million deliveries)  load generator CPU: \(.loadgen_cpu_seconds) s  connect phase: \(.connect_phase_seconds) s"
  ' "$j"
  echo "per process: streams (its /metrics, scraped once sse-load logged every stream ready), idle RSS and"
  echo "delta per stream (sse-load's /proc samples before connecting and at all-ready), RSS at that scrape"
  echo "(deliveries it had made by then), 503s at capacity"
  jq -rs --slurpfile rep "$j" '
    ($rep[0].server.start | INDEX(.pid)) as $s0 | ($rep[0].server.ready | INDEX(.pid)) as $s1 |
    map(select(.tag == "ready"))[] | (.pid | tostring) as $p |
    "  server \(.server) pid \(.pid) admin :\(.admin): \(.streams) streams of \(.max_connections), idle RSS \($s1[$p].rss_bytes / 1048576 * 10 | floor / 10) MiB (+\(($s1[$p].rss_bytes - $s0[$p].rss_bytes) / 1048576 * 10 | floor / 10) MiB), \(if .streams > 0 then (($s1[$p].rss_bytes - $s0[$p].rss_bytes) / .streams | floor | tostring) + " B/stream" else "n/a" end), RSS at scrape \(.rss_bytes / 1048576 * 10 | floor / 10) MiB (\(.deliveries) deliveries), 503 at capacity \(.rejected_capacity)"
  ' "$OUT/$r.metrics.jsonl"
  jq -rs 'map(select(.tag == "ready")) | "  total: \(map(.streams) | add) streams held"' "$OUT/$r.metrics.jsonl"
}

for r in $RUNS; do
  case $r in
    A) run_a ;;
    B5) run_b 5 ;;
    B6) run_b 6 ;;
    BUS6) run_bus 6 ;;
    *) echo "unknown run $r" >&2; exit 2 ;;
  esac
done
echo
echo "== summary (files in $OUT)"
for r in $RUNS; do summary "$r"; done | tee "$OUT/summary.txt"
