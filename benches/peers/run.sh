#!/usr/bin/env bash
# Peer benchmark (issue 6 item 6): sse-edge against nginx+nchan, Pushpin, an axum/tokio
# broadcast server and a Node.js server, on this machine, in one run, under the same load
# generator (target/release/sse-load).
#
#   benches/peers/run.sh [--quick] [--peers sse-edge,nchan,pushpin,axum,node]
#                        [--scenarios M1,M2,M2h,M3,M4,M4b] [--repeat N] [--nice N] [--out DIR]
#                        [--no-build] [--no-report]
#
# One peer at a time. Every server process of a peer is pinned to CPU 0 (`taskset -c 0`: the
# sse-edge, axum and Node processes, the nginx master and its one worker, Pushpin's runner and
# everything it starts, its zurl, and the GRIP origin/adapter) and sse-load to CPU 1
# (`taskset -c 1`), both at `nice -n -15` (--nice) because the machine is shared. The kernel's
# loopback work that a server's writes cause partly runs in ksoftirqd at nice 0, which the
# renice can delay a little; the same holds for every peer.
# Each scenario starts a fresh server (M3's ramp keeps one server for all its steps), passes
# every server pid to sse-load with --server-pid (RSS and CPU sampling), and stops the server
# by pid (TERM, bounded wait, then KILL). Nothing is stopped by name. Only 127.0.0.1 is used.
#
# Scenarios (issue 6); --quick shrinks them to a smoke run (2,000 streams, 5 s). M1, M2, M2h and
# M4b run --repeat times (default 3, 1 with --quick) and the report takes medians:
#   M1 idle memory: 10,000 streams, one event; RSS per stream and connect time
#   M2 fan-out:     10,000 streams, 50 events/s of 100 B for 20 s
#   M2h fan-out x2: M2 at 100 events/s (issue 14: the peer table at two rates)
#   M3 ceiling:     1,000 streams, 500 → 20,000 events/s, 5 s a step, until p99 > 1 s or
#                   deliveries fall short twice at a step (the last sustained rate is the ceiling)
#   M4 slow:        10,000 streams, 20% never read, 200 events/s of 1 KiB for 30 s
#   M4b slow, lighter: M4 at 20 events/s, a tenth (M4 asks 1.6 GB/s of deliveries from one
#                   core and one load-generator core, an overload for every peer here)
#   M5 overload:    10,000 streams, 100 B events ramped 50 → 1,600 events/s, 10 s a step, every
#                   step run whatever the last gave (issue 15: past the knee); the publisher
#                   keeps at most 8 requests in flight per connection (--max-inflight), so a
#                   server that parks publishers is offered less instead of a growing queue.
#                   sse-edge's /metrics is sampled every 0.5 s for sse_loop_saturation.
#                   Not in the default list: `--scenarios M5`, then benches/peers/overload.py.
#   O outbox size:  M4 for 12 s on a fresh sse-edge with the default outbox, then with
#                   --outbox-max-bytes 16384, alternating, --repeat times (default 3) each
#                   (issue 15: small outboxes keep the node's throughput). sse-edge only. Not
#                   in the default list: `--scenarios O`, then benches/peers/outbox.py.
#   F frontier:     M2 on a fresh sse-edge at each --write-delay-ms of 0 5 10 25 50 100 250 500,
#                   once on each other peer (issue 14: p99 against CPU per delivery). Not in
#                   the default list: `--scenarios F`, then benches/peers/frontier.py.
#
# Output: DIR/<quick|full>/<peer>/<scenario>.{json,md,log,procs} plus meta.json; then
# benches/peers/report.py writes benches/RESULTS.md and benches/plots/*.svg (a quick run, or a
# run with --out, writes them under DIR/<mode>/ instead). DIR defaults to benches/out (gitignored).
set -euo pipefail

ORIG_ARGS="$*"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PEERS_DIR="$ROOT/benches/peers"
QUICK=0
PEERS="sse-edge,nchan,pushpin,axum,node"
SCENARIOS="M1,M2,M2h,M3,M4,M4b"
OUT_BASE="$ROOT/benches/out"
BUILD=1
REPORT=1
REPEAT=
SERVER_CPU=0
LOAD_CPU=1
# The machine is shared: nice -15 gives the benchmark's processes the larger share of their core
# when something else (a compiler) wants it too; each run still records what others used.
NICE=-15

# usage: the comment block at the top of this file.
usage() { sed -n '2,/^[^#]/{/^#/p}' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --peers) PEERS="$2"; shift ;;
    --peers=*) PEERS="${1#*=}" ;;
    --scenarios) SCENARIOS="$2"; shift ;;
    --scenarios=*) SCENARIOS="${1#*=}" ;;
    --out) OUT_BASE="$2"; shift ;;
    --no-build) BUILD=0 ;;
    --nice) NICE="$2"; shift ;;
    --nice=*) NICE="${1#*=}" ;;
    --repeat) REPEAT="$2"; shift ;;
    --repeat=*) REPEAT="${1#*=}" ;;
    --no-report) REPORT=0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

[[ $NICE =~ ^-?[0-9]+$ ]] || { echo "run.sh: --nice takes an integer" >&2; exit 2; }
ON_SERVER_CPU="nice -n $NICE taskset -c $SERVER_CPU"
ON_LOAD_CPU="nice -n $NICE taskset -c $LOAD_CPU"
MODE=$([[ $QUICK == 1 ]] && echo quick || echo full)
[[ -n $REPEAT ]] || REPEAT=$([[ $QUICK == 1 ]] && echo 1 || echo 3)
[[ $REPEAT =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: --repeat takes a positive number" >&2; exit 2; }
OUT="$OUT_BASE/$MODE"
BIN="$OUT/bin"
WORK=$(mktemp -d /tmp/sse-peers.XXXXXX)
mkdir -p "$OUT" "$BIN"

# Ports (127.0.0.1 only).
P_SSE_EDGE=18081 P_AXUM=18082 P_NODE=18083 P_NCHAN=18084 P_PUSHPIN=18085
P_ORIGIN=18086 P_PUSHPIN_CONTROL=15561

if [[ $QUICK == 1 ]]; then
  M1_STREAMS=2000
  M2_STREAMS=2000 M2_RATE=50 M2_SECONDS=5 M2H_RATE=100
  M3_STREAMS=1000 M3_RATES="500 2000 5000" M3_SECONDS=2
  M4_STREAMS=2000 M4_RATE=200 M4_SECONDS=5 M4B_RATE=20
  M5_STREAMS=2000 M5_RATES="100 800" M5_SECONDS=3
  F_DELAYS="0 25"
  O_SECONDS=5
else
  M1_STREAMS=10000
  M2_STREAMS=10000 M2_RATE=50 M2_SECONDS=20 M2H_RATE=100
  M3_STREAMS=1000 M3_RATES="500 1000 2000 5000 10000 20000" M3_SECONDS=5
  M4_STREAMS=10000 M4_RATE=200 M4_SECONDS=30 M4B_RATE=20
  M5_STREAMS=10000 M5_RATES="50 100 200 400 800 1600" M5_SECONDS=10
  F_DELAYS="0 5 10 25 50 100 250 500"
  O_SECONDS=12
fi

log() { printf '[run.sh %s] %s\n' "$(date +%T)" "$*" >&2; }
has() { [[ ",$1," == *",$2,"* ]]; }

# --- process bookkeeping ------------------------------------------------------------------
STARTED=()        # every pid this script started (stopped on exit)
PEER_MAIN=()      # pids to signal to stop the current peer
PEER_PIDS=()      # every pid of the current peer (sampled by sse-load)
PEER_NAMES=()     # role of each pid in PEER_PIDS (for the per-process CPU table)

alive() { kill -0 "$1" 2>/dev/null; }

# stop_pids PID...: TERM, wait up to 10 s, then KILL; reaps our own children.
stop_pids() {
  local pid
  for pid in "$@"; do alive "$pid" && kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 100); do
    local any=0
    for pid in "$@"; do alive "$pid" && any=1; done
    [[ $any == 0 ]] && break
    sleep 0.1
  done
  for pid in "$@"; do
    if alive "$pid"; then log "pid $pid still alive after 10 s: KILL"; kill -KILL "$pid" 2>/dev/null || true; fi
  done
  for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
}

stop_peer() {
  [[ ${#PEER_MAIN[@]} -gt 0 ]] || return 0
  stop_pids "${PEER_MAIN[@]}"
  # Children of a runner (nginx worker, Pushpin's services) normally exit with it.
  local left=()
  for pid in "${PEER_PIDS[@]}"; do alive "$pid" && left+=("$pid"); done
  [[ ${#left[@]} -gt 0 ]] && stop_pids "${left[@]}"
  PEER_MAIN=() PEER_PIDS=() PEER_NAMES=()
  return 0
}

cleanup() {
  local rc=$?
  stop_peer || true
  local left=()
  for pid in "${STARTED[@]}"; do alive "$pid" && left+=("$pid"); done
  [[ ${#left[@]} -gt 0 ]] && stop_pids "${left[@]}"
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# children PID: direct children's pids.
children() { ps --ppid "$1" -o pid= 2>/dev/null | tr -d ' ' || true; }
comm_of() { cat "/proc/$1/comm" 2>/dev/null || echo "?"; }

# wait_stream ADDR: until a GET /events on ADDR yields a comment line (the stream's prelude),
# at most 20 s.
wait_stream() {
  local addr=$1 i
  local got
  for i in $(seq 40); do
    # curl ends with status 28 (timeout) on a live stream: judge by what it printed.
    got=$(curl -s -m 0.5 -H 'Accept: text/event-stream' "http://$addr/events?topic=probe" 2>/dev/null || true)
    if grep -q '^:' <<<"$got"; then
      return 0
    fi
    sleep 0.25
  done
  log "no stream from $addr after 20 s"
  return 1
}

# --- peers --------------------------------------------------------------------------------
ADDR= PUB_ADDR= PUB_VIA=

start_sse_edge() {
  ADDR=127.0.0.1:$P_SSE_EDGE PUB_ADDR=$ADDR PUB_VIA="sse-edge itself"
  # SSE_EDGE_ARGS: extra options for one scenario's runs (the frontier's --write-delay-ms).
  # shellcheck disable=SC2086
  RUST_LOG=warn $ON_SERVER_CPU "$BIN/sse-edge" --listen "$ADDR" --threads 1 \
    --pin-threads false ${SSE_EDGE_ARGS:-} >"$PEER_OUT/server.log" 2>&1 &
  local pid=$!
  STARTED+=("$pid") PEER_MAIN=("$pid") PEER_PIDS=("$pid") PEER_NAMES=("sse-edge")
}

start_axum() {
  ADDR=127.0.0.1:$P_AXUM PUB_ADDR=$ADDR PUB_VIA="the axum server itself"
  $ON_SERVER_CPU "$BIN/axum-sse-peer" "$ADDR" 1024 >"$PEER_OUT/server.log" 2>&1 &
  local pid=$!
  STARTED+=("$pid") PEER_MAIN=("$pid") PEER_PIDS=("$pid") PEER_NAMES=("axum-sse-peer")
}

start_node() {
  ADDR=127.0.0.1:$P_NODE PUB_ADDR=$ADDR PUB_VIA="the Node server itself"
  $ON_SERVER_CPU node "$PEERS_DIR/node-sse/server.js" "$P_NODE" 127.0.0.1 \
    >"$PEER_OUT/server.log" 2>&1 &
  local pid=$!
  STARTED+=("$pid") PEER_MAIN=("$pid") PEER_PIDS=("$pid") PEER_NAMES=("node")
}

NCHAN_MODULE=/usr/lib/nginx/modules/ngx_nchan_module.so
start_nchan() {
  ADDR=127.0.0.1:$P_NCHAN PUB_ADDR=$ADDR PUB_VIA="nginx (nchan_publisher location)"
  local d="$WORK/nchan"
  rm -rf "$d" && mkdir -p "$d/logs"
  sed -e "s#@PORT@#$P_NCHAN#" -e "s#@MODULE@#$NCHAN_MODULE#" "$PEERS_DIR/nchan/nginx.conf" >"$d/nginx.conf"
  $ON_SERVER_CPU nginx -p "$d" -c "$d/nginx.conf" \
    -g "daemon off; pid $d/nginx.pid; error_log $d/error.log warn;" >"$PEER_OUT/server.log" 2>&1 &
  local pid=$!
  STARTED+=("$pid") PEER_MAIN=("$pid") PEER_PIDS=("$pid") PEER_NAMES=("nginx-master")
  CHILDREN_OF=$pid CHILD_ROLE=nginx-worker
}

start_pushpin() {
  ADDR=127.0.0.1:$P_PUSHPIN
  if [[ $HAVE_PUBLISH_ADDR == 1 ]]; then
    PUB_ADDR=127.0.0.1:$P_ORIGIN PUB_VIA="the Node adapter directly (--publish-addr), then Pushpin's HTTP control API"
  else
    PUB_ADDR=$ADDR PUB_VIA="Pushpin's proxy (route * → origin), the Node adapter, then Pushpin's HTTP control API"
  fi
  local d="$WORK/pushpin"
  rm -rf "$d" && mkdir -p "$d/run" "$d/log"
  sed -e "s#@DIR@#$d#" -e "s#@PORT@#$P_PUSHPIN#" -e "s#@CONTROL_PORT@#$P_PUSHPIN_CONTROL#" \
    "$PEERS_DIR/pushpin/pushpin.conf" >"$d/pushpin.conf"
  sed -e "s#@DIR@#$d#" "$PEERS_DIR/pushpin/zurl.conf" >"$d/zurl.conf"
  echo "* 127.0.0.1:$P_ORIGIN" >"$d/routes"
  $ON_SERVER_CPU node "$PEERS_DIR/pushpin/origin.js" "$P_ORIGIN" "$P_PUSHPIN_CONTROL" \
    >"$PEER_OUT/origin.log" 2>&1 &
  local origin=$!
  STARTED+=("$origin")
  $ON_SERVER_CPU zurl --config="$d/zurl.conf" --logfile="$d/log/zurl.log" --loglevel=1 \
    >"$PEER_OUT/zurl.log" 2>&1 &
  local zurl=$!
  STARTED+=("$zurl")
  $ON_SERVER_CPU pushpin --config "$d/pushpin.conf" >"$PEER_OUT/server.log" 2>&1 &
  local runner=$!
  STARTED+=("$runner") PEER_MAIN=("$runner" "$zurl" "$origin") PEER_PIDS=("$runner") PEER_NAMES=("pushpin-runner")
  PEER_PIDS+=("$zurl" "$origin") PEER_NAMES+=("zurl" "node-origin-adapter")
  CHILDREN_OF=$runner CHILD_ROLE=
}

# start_peer NAME: starts a peer and waits for its first stream. Worker processes a peer forks
# (nginx's worker, Pushpin's proxy/handler/condure) are listed only then, once it is surely up,
# so none started late is left out of the CPU and RSS figures.
start_peer() {
  CHILDREN_OF= CHILD_ROLE=
  case "$1" in
    sse-edge) start_sse_edge ;;
    axum) start_axum ;;
    node) start_node ;;
    nchan) start_nchan ;;
    pushpin) start_pushpin ;;
    *) log "unknown peer $1"; return 1 ;;
  esac
  wait_stream "$ADDR" || return 1
  local c
  if [[ -n $CHILDREN_OF ]]; then
    for c in $(children "$CHILDREN_OF"); do PEER_PIDS+=("$c") PEER_NAMES+=("${CHILD_ROLE:-$(comm_of "$c")}"); done
  fi
  log "$1 up on $ADDR: pids ${PEER_PIDS[*]} (${PEER_NAMES[*]})"
}

# --- measurement --------------------------------------------------------------------------
# procs_snapshot FILE: one line per peer process: role pid cpu_ticks rss_kB
procs_snapshot() {
  local i pid
  for i in "${!PEER_PIDS[@]}"; do
    pid=${PEER_PIDS[$i]}
    if [[ -r /proc/$pid/stat ]]; then
      local stat rss
      stat=$(sed 's/^.*) //' "/proc/$pid/stat")
      rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
      awk -v role="${PEER_NAMES[$i]}" -v pid="$pid" -v rss="${rss:-0}" \
        '{print role, pid, $12 + $13, rss}' <<<"$stat"
    fi
  done >"$1"
  # The kernel thread that takes over softirq work (mostly loopback network work the server's
  # writes cause) when there is too much of it: its CPU time is the server's cost too.
  local k
  k=$(ps -eo pid=,comm= | awk -v c="ksoftirqd/$SERVER_CPU" '$2 == c {print $1}')
  if [[ -n $k && -r /proc/$k/stat ]]; then
    awk -v pid="$k" -v cpu="$SERVER_CPU" '{print "ksoftirqd/" cpu, pid, $12 + $13, 0}' \
      <<<"$(sed 's/^.*) //' "/proc/$k/stat")" >"$1.kernel"
  fi
}

# load TAG ARGS...: one sse-load fanout run against the current peer.
load() {
  local tag=$1; shift
  local args=(fanout --addr "$ADDR" --topic bench)
  [[ $PUB_ADDR != "$ADDR" ]] && args+=(--publish-addr "$PUB_ADDR")
  local pid
  for pid in "${PEER_PIDS[@]}"; do args+=(--server-pid "$pid"); done
  # EventSource clients reconnect after a refused attempt; sse-load retries a stream that failed
  # before it was ready up to 5 times (every attempt is counted in the report).
  args+=(--connect-retries 5 --json-out "$PEER_OUT/$tag.json" --md-out "$PEER_OUT/$tag.md" "$@")
  echo "$ON_LOAD_CPU sse-load ${args[*]}" >"$PEER_OUT/$tag.cmd"
  cut -d' ' -f1-3 /proc/loadavg >"$PEER_OUT/$tag.loadavg"
  grep -E "^cpu$SERVER_CPU |^cpu$LOAD_CPU " /proc/stat >"$PEER_OUT/$tag.cpustat.before"
  procs_snapshot "$PEER_OUT/$tag.procs.before"
  log "$PEER $tag: sse-load $*"
  local rc=0
  RUST_LOG=warn timeout -k 10 900 $ON_LOAD_CPU "$BIN/sse-load" "${args[@]}" \
    >"$PEER_OUT/$tag.log" 2>&1 || rc=$?
  procs_snapshot "$PEER_OUT/$tag.procs.after"
  # sse-edge measures its own delivery lag (hub accept -> bytes taken by the kernel): kept to tell
  # the server's share of the latency from the load generator's.
  if [[ $PEER == sse-edge ]]; then
    curl -s -m 5 "http://$ADDR/metrics" >"$PEER_OUT/$tag.metrics" 2>/dev/null || true
  fi
  grep -E "^cpu$SERVER_CPU |^cpu$LOAD_CPU " /proc/stat >"$PEER_OUT/$tag.cpustat.after"
  [[ $rc == 0 ]] || log "$PEER $tag: sse-load exited $rc (see $PEER_OUT/$tag.log)"
  python3 "$PEERS_DIR/report.py" --summary "$PEER_OUT/$tag.json" >&2 || true
  return 0
}

fresh_peer() { stop_peer; start_peer "$PEER"; }

scenario_m1() {
  fresh_peer || return 1
  load "M1$REP" --streams "$M1_STREAMS" --rate 1 --count 1 --drain-seconds 2
}

scenario_m2() {
  fresh_peer || return 1
  load "M2$REP" --streams "$M2_STREAMS" --rate "$M2_RATE" --duration "$M2_SECONDS" --payload-bytes 100
}

# M2 at twice the rate (issue 14): where a peer that keeps up at 50 events/s starts queueing.
scenario_m2h() {
  fresh_peer || return 1
  load "M2h$REP" --streams "$M2_STREAMS" --rate "$M2H_RATE" --duration "$M2_SECONDS" --payload-bytes 100
}

# The latency/CPU frontier (issue 14): M2 once per --write-delay-ms for sse-edge, once for any
# other peer, each on a fresh server.
scenario_frontier() {
  if [[ $PEER != sse-edge ]]; then
    fresh_peer || return 1
    load "F-base" --streams "$M2_STREAMS" --rate "$M2_RATE" --duration "$M2_SECONDS" --payload-bytes 100
    return
  fi
  local d
  for d in $F_DELAYS; do
    SSE_EDGE_ARGS="--write-delay-ms $d" fresh_peer || return 1
    load "F-d$d" --streams "$M2_STREAMS" --rate "$M2_RATE" --duration "$M2_SECONDS" --payload-bytes 100
  done
}

# Small outboxes against the default (issue 15 item 2): M4 on a fresh sse-edge per run, the two
# sizes alternating so drift on a shared machine hits both alike.
scenario_outbox() {
  [[ $PEER == sse-edge ]] || { log "$PEER: scenario O is for sse-edge only"; return 0; }
  local n size
  for ((n = 1; n <= REPEAT; n++)); do
    for size in default 16384; do
      # The flag, not the environment, sets the size: an exported SSE_EDGE_OUTBOX_MAX_BYTES
      # would otherwise change the default run too.
      if [[ $size == default ]]; then
        SSE_EDGE_OUTBOX_MAX_BYTES=1048576 SSE_EDGE_OUTBOX_MAX_EVENTS=1024 SSE_EDGE_ARGS= fresh_peer || return 1
      else
        SSE_EDGE_ARGS="--outbox-max-bytes $size" fresh_peer || return 1
      fi
      load "O-$size-r$n" --streams "$M4_STREAMS" --slow 0.2 --rate "$M4_RATE" --duration "$O_SECONDS" \
        --payload-bytes 1024
    done
  done
}

scenario_m3() {
  fresh_peer || return 1
  local r verdict try
  for r in $M3_RATES; do
    # A step must fail twice to end the ramp: one run on this shared machine can be unlucky.
    for try in "" _r2; do
      load "M3-$r$try" --streams "$M3_STREAMS" --rate "$r" --duration "$M3_SECONDS" \
        --payload-bytes 100 --drain-seconds 3
      verdict=$(python3 "$PEERS_DIR/report.py" --verdict "$PEER_OUT/M3-$r$try.json" || echo "fail: no report")
      log "$PEER M3 at $r/s${try:+ (second try)}: $verdict"
      [[ $verdict == ok* ]] && break
      wait_stream "$ADDR" || break
    done
    if [[ $verdict != ok* ]]; then break; fi
    # A peer that crashed or hangs is not given the next step.
    if ! wait_stream "$ADDR"; then log "$PEER not answering after M3-$r"; break; fi
  done
}

scenario_m4() {
  fresh_peer || return 1
  load M4 --streams "$M4_STREAMS" --slow 0.2 --rate "$M4_RATE" --duration "$M4_SECONDS" \
    --payload-bytes 1024
}

# saturation_sampler FILE: appends the max sse_loop_saturation of sse-edge's /metrics every 0.5 s
# until killed (a background job of scenario_m5; bounded by the step's sse-load run).
saturation_sampler() {
  while true; do
    curl -s -m 1 "http://$ADDR/metrics" 2>/dev/null |
      awk '/^sse_loop_saturation/ { if ($2 > m) m = $2 } END { print m + 0 }' >>"$1" || true
    sleep 0.5
  done
}

scenario_m5() {
  fresh_peer || return 1
  local r sampler
  for r in $M5_RATES; do
    : >"$PEER_OUT/M5-$r.saturation"
    if [[ $PEER == sse-edge ]]; then
      saturation_sampler "$PEER_OUT/M5-$r.saturation" &
      sampler=$!
    fi
    load "M5-$r" --streams "$M5_STREAMS" --rate "$r" --duration "$M5_SECONDS" --payload-bytes 100 \
      --max-inflight 8 --drain-seconds 5
    if [[ -n ${sampler:-} ]]; then kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true; sampler=; fi
    if ! wait_stream "$ADDR"; then log "$PEER not answering after M5-$r"; break; fi
  done
}

scenario_m4b() {
  fresh_peer || return 1
  load "M4b$REP" --streams "$M4_STREAMS" --slow 0.2 --rate "$M4B_RATE" --duration "$M4_SECONDS" \
    --payload-bytes 1024
}

# repeat FN: runs a short scenario REPEAT times (tags M2, M2_r2, M2_r3, ...); the report takes
# the median of each figure, since one run on a shared two-core machine is noisy.
REP=
repeat() {
  local i rc=0
  for i in $(seq "$REPEAT"); do
    REP=$([[ $i == 1 ]] && echo "" || echo "_r$i")
    "$1" || rc=1
  done
  REP=
  return $rc
}

# --- setup --------------------------------------------------------------------------------
cd "$ROOT"
if [[ $BUILD == 1 ]]; then
  log "building sse-edge and sse-load (release)"
  cargo build --release --bin sse-edge --bin sse-load
  if has "$PEERS" axum; then
    log "building the axum peer (release)"
    cargo build --release --manifest-path "$PEERS_DIR/axum-sse/Cargo.toml"
  fi
fi

# Peers that need Debian packages: install them when missing (as root), or skip with a reason.
declare -A SKIP=()
need_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
ensure_pkgs() {
  local peer=$1; shift
  local missing=() p
  for p in "$@"; do need_pkg "$p" || missing+=("$p"); done
  [[ ${#missing[@]} == 0 ]] && return 0
  if [[ $(id -u) == 0 ]]; then
    log "installing ${missing[*]} for $peer"
    # The packages' own daemons are not wanted; policy-rc.d (where present) keeps them stopped.
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >"$OUT/apt-$peer.log" 2>&1; then
      SKIP[$peer]="apt-get install ${missing[*]} failed (see $OUT/apt-$peer.log)"
      return 0
    fi
  else
    SKIP[$peer]="packages missing: ${missing[*]} (run as root to install)"
  fi
}
has "$PEERS" nchan && ensure_pkgs nchan nginx libnginx-mod-nchan
has "$PEERS" pushpin && ensure_pkgs pushpin pushpin condure zurl
if has "$PEERS" nchan && [[ -z ${SKIP[nchan]:-} && ! -f $NCHAN_MODULE ]]; then
  SKIP[nchan]="$NCHAN_MODULE not found"
fi
if has "$PEERS" node && ! command -v node >/dev/null; then SKIP[node]="node not installed"; fi
if has "$PEERS" pushpin && ! command -v node >/dev/null; then SKIP[pushpin]="node (for the GRIP origin) not installed"; fi

# Stable copies: other people may rebuild target/ while this runs.
cp "$ROOT/target/release/sse-edge" "$ROOT/target/release/sse-load" "$BIN/"
if has "$PEERS" axum; then
  cp "$PEERS_DIR/axum-sse/target/release/axum-sse-peer" "$BIN/" 2>/dev/null ||
    SKIP[axum]="benches/peers/axum-sse not built"
fi
HAVE_PUBLISH_ADDR=0
"$BIN/sse-load" fanout --help | grep -q -- '--publish-addr' && HAVE_PUBLISH_ADDR=1

# Machine facts and versions for the report.
ver() { "$@" 2>&1 | head -1 || true; }
pkgver() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo "not installed"; }
python3 - "$OUT/meta.json" <<EOF
import json, os, platform, subprocess, sys, time
def sh(c):
    try:
        return subprocess.run(c, shell=True, capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception as e:
        return f"? ({e})"
meta = {
    "mode": "$MODE",
    "repeat": $REPEAT,
    "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    "command": "benches/peers/run.sh $ORIG_ARGS".strip(),
    "peers": "$PEERS".split(","),
    "scenarios": "$SCENARIOS".split(","),
    "skip": {},
    "cpu_model": sh("lscpu | sed -n 's/^Model name: *//p'"),
    "cores": os.cpu_count(),
    "memory": sh("free -h | awk '/^Mem:/ {print \$2}'"),
    "kernel": platform.release(),
    "os": sh(". /etc/os-release && echo \$PRETTY_NAME"),
    "loadavg_start": open("/proc/loadavg").read().split()[:3],
    "nofile": sh("ulimit -Hn"),
    "somaxconn": sh("cat /proc/sys/net/core/somaxconn"),
    "sse_edge_rev": sh("git -C '$ROOT' rev-parse --short HEAD") + (" (dirty tree)" if sh("git -C '$ROOT' status --porcelain --untracked-files=no") else ""),
    "versions": {
        "rustc": sh("rustc --version"),
        "node": sh("node --version"),
        "nginx": sh("nginx -v 2>&1"),
        "libnginx-mod-nchan": sh("dpkg-query -W -f='\${Version}' libnginx-mod-nchan"),
        "pushpin": sh("dpkg-query -W -f='\${Version}' pushpin"),
        "condure": sh("dpkg-query -W -f='\${Version}' condure"),
        "zurl": sh("dpkg-query -W -f='\${Version}' zurl"),
        "axum": sh("grep -A1 '^name = \"axum\"' '$PEERS_DIR/axum-sse/Cargo.lock' | sed -n 's/version = //p' | tr -d '\"'"),
        "tokio": sh("grep -A1 '^name = \"tokio\"' '$PEERS_DIR/axum-sse/Cargo.lock' | sed -n 's/version = //p' | tr -d '\"'"),
    },
    "have_publish_addr": $HAVE_PUBLISH_ADDR == 1,
    "pin": {"server_cpu": $SERVER_CPU, "load_cpu": $LOAD_CPU, "nice": $NICE},
    "params": {
        "M1": {"streams": $M1_STREAMS},
        "M2": {"streams": $M2_STREAMS, "rate": $M2_RATE, "seconds": $M2_SECONDS, "payload": 100},
        "M2h": {"streams": $M2_STREAMS, "rate": $M2H_RATE, "seconds": $M2_SECONDS, "payload": 100},
        "M3": {"streams": $M3_STREAMS, "rates": [int(x) for x in "$M3_RATES".split()], "seconds": $M3_SECONDS, "payload": 100},
        "M4": {"streams": $M4_STREAMS, "rate": $M4_RATE, "seconds": $M4_SECONDS, "payload": 1024, "slow": 0.2},
        "M4b": {"streams": $M4_STREAMS, "rate": $M4B_RATE, "seconds": $M4_SECONDS, "payload": 1024, "slow": 0.2},
        "O": {"streams": $M4_STREAMS, "rate": $M4_RATE, "seconds": $O_SECONDS, "payload": 1024, "slow": 0.2,
              "outbox_bytes": [1048576, 16384]},
    },
}
# A run of some scenarios or peers only (e.g. --scenarios M3, --peers sse-edge) adds to the
# report of the last full one.
try:
    old = json.load(open(sys.argv[1]))
except (OSError, ValueError):
    old = None
if old and (set(meta["scenarios"]) != {"M1", "M2", "M2h", "M3", "M4", "M4b"}
            or set(meta["peers"]) != {"sse-edge", "nchan", "pushpin", "axum", "node"}):
    old.setdefault("later", []).append(
        {k: meta[k] for k in ("started", "command", "peers", "scenarios", "loadavg_start", "sse_edge_rev")}
    )
    # A scenario the last full run did not have yet (M2h on an older run) brings its params.
    for k, v in meta["params"].items():
        old.setdefault("params", {}).setdefault(k, v)
    meta = old
json.dump(meta, open(sys.argv[1], "w"), indent=2)
EOF

# --- run ----------------------------------------------------------------------------------
IFS=, read -r -a PEER_LIST <<<"$PEERS"
IFS=, read -r -a SCEN_LIST <<<"$SCENARIOS"
for PEER in "${PEER_LIST[@]}"; do
  PEER_OUT="$OUT/$PEER"
  mkdir -p "$PEER_OUT"
  rm -f "$PEER_OUT/SKIPPED" "$PEER_OUT/FAILED"
  # Only the files of the scenarios run now are replaced: `--scenarios M3` redoes M3 alone.
  for S in "${SCEN_LIST[@]}"; do rm -f "$PEER_OUT/$S".* "$PEER_OUT/$S"_r* "$PEER_OUT/$S"-*; done
  if [[ -n ${SKIP[$PEER]:-} ]]; then
    log "skipping $PEER: ${SKIP[$PEER]}"
    echo "${SKIP[$PEER]}" >"$PEER_OUT/SKIPPED"
    continue
  fi
  for S in "${SCEN_LIST[@]}"; do
    case "$S" in
      M1) repeat scenario_m1 ;;
      M2) repeat scenario_m2 ;;
      M2h) repeat scenario_m2h ;;
      M3) scenario_m3 ;;
      M4) scenario_m4 ;;
      M4b) repeat scenario_m4b ;;
      M5) scenario_m5 ;;
      F) scenario_frontier ;;
      O) scenario_outbox ;;
      *) log "unknown scenario $S"; exit 2 ;;
    esac || { log "$PEER $S failed to run"; echo "$S: peer did not start" >>"$PEER_OUT/FAILED"; }
  done
  [[ -n $PUB_VIA ]] && echo "$PUB_VIA" >"$PEER_OUT/publish_path"
  stop_peer
done

if [[ $REPORT == 1 ]]; then
  if [[ $MODE == full && $OUT_BASE == "$ROOT/benches/out" ]]; then
    python3 "$PEERS_DIR/report.py" "$OUT" --results "$ROOT/benches/RESULTS.md" --plots "$ROOT/benches/plots"
  else
    python3 "$PEERS_DIR/report.py" "$OUT" --results "$OUT/RESULTS.md" --plots "$OUT/plots"
  fi
fi
log "done: $OUT"
