#!/usr/bin/env bash
# tests/bench/run.sh: the standard wsgate-load scenarios against one or more servers on this
# machine, one JSON file per run, then a table (tests/bench/report.py).
#
#   tests/bench/run.sh [--compare] [--out DIR] PEER...        (make bench, make bench-compare)
#
# PEER: wsgate (raw /ws), wsgate-sio (wsgate's /socket.io/ with --protocol socketio),
# classic (haproxy send-proxy -> nginx proxy_protocol -> Node socket.io chat, socketio) and
# node-ws (Node `ws` broadcast server, raw). For each peer, each scenario gets a fresh server:
#
#   idle         BENCH_IDLE_CLIENTS (10000; Socket.IO peers BENCH_SIO_IDLE_CLIENTS, 1000)
#                connections over 39 loopback source addresses, held BENCH_IDLE_HOLD;
#                kb_per_conn = the server's RSS growth per connection
#   fanout-100   1,000 subscribers + 10 publishers in one room, 64 B, a fixed 100 msg/s in total
#                (101,000 deliveries/s offered) for BENCH_FIXED_DURATION; p99 latency (the tool on
#                BENCH_FIXED_TOOL_THREADS threads, 2; the other runs on BENCH_TOOL_THREADS, 1)
#   fanout-50    the same at BENCH_EVERYDAY_RATE (50 msg/s, about 50k deliveries/s): a chat's
#                everyday load, where CPU per delivery and syscalls, not capacity, are compared
#   fanout-ladder  the same members, BENCH_LADDER msg/s (x1,010 = deliveries/s offered), run in
#                chunks of BENCH_CHUNK steps, each chunk on one set of connections; the ladder
#                stops after the chunk in which two steps in a row missed, so a server is pushed a
#                few steps past saturation only (Node queues without bound: far past saturation it
#                only eats memory and time), and one step disturbed by another process on a
#                shared machine does not end it
#
# Writes DIR/<peer>-<scenario>.json (the tool's last stdout line; the ladder's chunks merged),
# DIR/machine.json, DIR/summary.json (plus compare.json and compare.md with --compare), and
# the charts DIR/ladder.svg, DIR/p99.svg, DIR/memory.svg (tests/bench/charts.py).
# Every run is bounded by wsgate-load's own --deadline; servers listen on 127.0.0.1 only and
# are stopped by pid when the script exits.
set -euo pipefail

BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BENCH_DIR=$BENCH_ROOT/tests/bench
RELEASE_DIR=${RELEASE_DIR:-$BENCH_ROOT/target/release}
WSGATE_BIN=${WSGATE_BIN:-$RELEASE_DIR/wsgate}
LOAD_BIN=${LOAD_BIN:-$RELEASE_DIR/wsgate-load}

# The scenarios. Rates are messages per second over all publishers.
BENCH_SUBSCRIBERS=${BENCH_SUBSCRIBERS:-1000}
BENCH_PUBLISHERS=${BENCH_PUBLISHERS:-10}
BENCH_SIZE=${BENCH_SIZE:-64}
BENCH_DURATION=${BENCH_DURATION:-3s}
BENCH_DRAIN=${BENCH_DRAIN:-2s}
BENCH_FIXED_RATE=${BENCH_FIXED_RATE:-100}
# The everyday step: a chat's ordinary load (50 msg/s x 1,010 members, about 50k deliveries/s).
BENCH_EVERYDAY_RATE=${BENCH_EVERYDAY_RATE:-50}
BENCH_FIXED_DURATION=${BENCH_FIXED_DURATION:-5s}
BENCH_LADDER=${BENCH_LADDER:-100,125,160,200,250,320,400,500,630,800,1000,1250,1600,2000,2500,3200}
BENCH_CHUNK=${BENCH_CHUNK:-3}
BENCH_IDLE_CLIENTS=${BENCH_IDLE_CLIENTS:-10000}
BENCH_IDLE_RATE=${BENCH_IDLE_RATE:-2000}
BENCH_IDLE_HOLD=${BENCH_IDLE_HOLD:-3s}
BENCH_SOURCE_IPS=${BENCH_SOURCE_IPS:-127.0.0.2-127.0.0.40}
BENCH_CONNECT_RATE=${BENCH_CONNECT_RATE:-2000}
BENCH_CONNECT_TIMEOUT=${BENCH_CONNECT_TIMEOUT:-10s}
# The tool's threads: one leaves the other core to the server (idle, ladder). The fixed-rate
# latency run gets two: on one thread the tool itself is ~90% busy receiving 100k frames/s
# and its own queueing adds to the p99 it reports.
BENCH_TOOL_THREADS=${BENCH_TOOL_THREADS:-1}
BENCH_FIXED_TOOL_THREADS=${BENCH_FIXED_TOOL_THREADS:-2}
# Before each run, wait up to BENCH_QUIET_WAIT seconds until other processes keep fewer than
# BENCH_QUIET_CORES cores busy (a shared machine); the tables flag steps disturbed anyway.
BENCH_QUIET_WAIT=${BENCH_QUIET_WAIT:-10}
BENCH_QUIET_CORES=${BENCH_QUIET_CORES:-0.3}
# "Keeping up" = the tool's keeping_up (nothing lost, >= 95% of the offered deliveries/s, the
# publishers on schedule) and p99 latency at most this.
BENCH_MAX_P99_MS=${BENCH_MAX_P99_MS:-250}
# The Socket.IO peers (classic, and wsgate-sio, which behaves like the chat app) send `hi` to
# everyone else on each connect: N^2/2 messages for N clients, 50 million for 10,000. So they
# connect slower and hold fewer idle clients; the table says how many they actually held.
BENCH_SIO_IDLE_CLIENTS=${BENCH_SIO_IDLE_CLIENTS:-1000}
BENCH_SIO_IDLE_RATE=${BENCH_SIO_IDLE_RATE:-100}
BENCH_SIO_CONNECT_RATE=${BENCH_SIO_CONNECT_RATE:-250}
BENCH_SIO_CONNECT_TIMEOUT=${BENCH_SIO_CONNECT_TIMEOUT:-30s}

compare=0
out=$BENCH_ROOT/target/bench
peers=()
while [ $# -gt 0 ]; do
  case $1 in
    --compare) compare=1 ;;
    --out) out=$2; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//; /^set -euo/d'; exit 0 ;;
    -*) echo "run.sh: unknown flag $1" >&2; exit 1 ;;
    *) peers+=("$1") ;;
  esac
  shift
done
[ ${#peers[@]} -gt 0 ] || peers=(wsgate)
for bin in "$WSGATE_BIN" "$LOAD_BIN"; do
  [ -x "$bin" ] || { echo "run.sh: no $bin (cargo build --release --bins)" >&2; exit 1; }
done
mkdir -p "$out"
out=$(cd "$out" && pwd)

# One fd per connection in the server and in the tool (the tool raises its own soft limit).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
nofile=$(ulimit -n)
[ "$nofile" = unlimited ] && nofile=1048576
# HAProxy needs two fds per connection and cannot go past the hard limit.
BENCH_CLASSIC_MAXCONN=${BENCH_CLASSIC_MAXCONN:-$(((nofile > 40400 ? 40400 : nofile) / 2 - 200))}

# shellcheck source=tests/bench/peers.sh
. "$BENCH_DIR/peers.sh"
trap 'peer_stop' EXIT
trap 'exit 130' INT TERM

report() { python3 "$BENCH_DIR/report.py" "$@"; }

# load NAME SCENARIO ARGS...: runs wsgate-load against the current peer; DIR/NAME.json gets its
# last stdout line, DIR/NAME.log its human summary and progress lines.
load() {
  local name=$1 scenario=$2 rc=0 threads=${LOAD_THREADS:-$BENCH_TOOL_THREADS}
  shift 2
  report wait-quiet "$BENCH_QUIET_WAIT" "$BENCH_QUIET_CORES"
  echo "  wsgate-load $scenario $* --url $PEER_URL --protocol $PEER_PROTOCOL --pid $PEER_PIDS --threads $threads" \
    >"$out/$name.log"
  "$LOAD_BIN" "$scenario" --url "$PEER_URL" --protocol "$PEER_PROTOCOL" --pid "$PEER_PIDS" \
    --threads "$threads" "$@" >"$out/$name.out" 2>>"$out/$name.log" || rc=$?
  cat "$out/$name.out" >>"$out/$name.log"
  report last-json "$out/$name.out" "$rc" "$threads" >"$out/$name.json"
  rm -f "$out/$name.out"
  report one-line "$out/$name.json" "$name"
}

# start_or_fail PEER NAME: starts PEER, or records why it did not start in DIR/NAME.json (so the
# table shows it) and returns 1; the other peers still run.
start_or_fail() {
  if peer_start "$1" 2>"$out/$2.log"; then
    return 0
  fi
  cat "$out/$2.log" >&2
  report error-json "could not start $1 (see $2.log)" >"$out/$2.json"
  peer_stop
  return 1
}

fanout_args() {
  echo --clients "$BENCH_SUBSCRIBERS" --publishers "$BENCH_PUBLISHERS" --size "$BENCH_SIZE" \
    --drain "$BENCH_DRAIN" --connect-rate "$connect_rate" --connect-timeout "$connect_timeout"
}

bench_peer() {
  local peer=$1 idle_clients=$BENCH_IDLE_CLIENTS idle_rate=$BENCH_IDLE_RATE
  local connect_rate=$BENCH_CONNECT_RATE connect_timeout=$BENCH_CONNECT_TIMEOUT
  if [ "$peer" = classic ] || [ "$peer" = wsgate-sio ]; then
    idle_clients=$BENCH_SIO_IDLE_CLIENTS
    idle_rate=$BENCH_SIO_IDLE_RATE
    connect_rate=$BENCH_SIO_CONNECT_RATE
    connect_timeout=$BENCH_SIO_CONNECT_TIMEOUT
  fi
  echo "== $peer"

  start_or_fail "$peer" "$peer-idle" || return 0
  load "$peer-idle" idle --clients "$idle_clients" --connect-rate "$idle_rate" \
    --hold "$BENCH_IDLE_HOLD" --source-ips "$BENCH_SOURCE_IPS" --connect-timeout "$connect_timeout"
  peer_stop

  start_or_fail "$peer" "$peer-fanout-100" || return 0
  # shellcheck disable=SC2046
  LOAD_THREADS=$BENCH_FIXED_TOOL_THREADS load "$peer-fanout-100" fanout $(fanout_args) --rate "$BENCH_FIXED_RATE" \
    --duration "$BENCH_FIXED_DURATION"
  peer_stop

  start_or_fail "$peer" "$peer-fanout-50" || return 0
  # shellcheck disable=SC2046
  LOAD_THREADS=$BENCH_FIXED_TOOL_THREADS load "$peer-fanout-50" fanout $(fanout_args) --rate "$BENCH_EVERYDAY_RATE" \
    --duration "$BENCH_FIXED_DURATION"
  peer_stop

  start_or_fail "$peer" "$peer-fanout-ladder" || return 0
  local rates parts=() chunk=0 i
  IFS=, read -r -a rates <<<"$BENCH_LADDER"
  for ((i = 0; i < ${#rates[@]}; i += BENCH_CHUNK)); do
    local step_rates
    step_rates=$(IFS=,; echo "${rates[*]:i:BENCH_CHUNK}")
    chunk=$((chunk + 1))
    # shellcheck disable=SC2046
    load "$peer-fanout-ladder.$chunk" fanout $(fanout_args) --rate "$step_rates" \
      --duration "$BENCH_DURATION"
    parts+=("$out/$peer-fanout-ladder.$chunk.json")
    report climb "$BENCH_MAX_P99_MS" "${parts[@]}" || break
  done
  peer_stop
  report merge-ladder "$BENCH_MAX_P99_MS" "$out/$peer-fanout-ladder.json" "${parts[@]}"
  rm -f "${parts[@]}"
  for ((i = 1; i <= chunk; i++)); do
    cat "$out/$peer-fanout-ladder.$i.log"
    rm -f "$out/$peer-fanout-ladder.$i.log"
  done >"$out/$peer-fanout-ladder.log"
  report one-line "$out/$peer-fanout-ladder.json" "$peer-fanout-ladder"
}

started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
load_start=$(uptime)
echo "bench: $(nproc) cores, $(uname -sr); uptime at start: $load_start"
rm -f "$out"/*.json "$out"/*.log "$out/compare.md"
for peer in "${peers[@]}"; do
  bench_peer "$peer"
done
load_end=$(uptime)
echo "bench: uptime at end: $load_end"

NGINX_BIN=$NGINX_BIN HAPROXY_BIN=$HAPROXY_BIN \
  BENCH_STARTED=$started BENCH_LOAD_START=$load_start BENCH_LOAD_END=$load_end \
  BENCH_SETTINGS="subscribers=$BENCH_SUBSCRIBERS publishers=$BENCH_PUBLISHERS size=$BENCH_SIZE duration=$BENCH_DURATION drain=$BENCH_DRAIN fixed_rate=$BENCH_FIXED_RATE fixed_duration=$BENCH_FIXED_DURATION ladder=$BENCH_LADDER chunk=$BENCH_CHUNK idle_clients=$BENCH_IDLE_CLIENTS sio_idle_clients=$BENCH_SIO_IDLE_CLIENTS idle_hold=$BENCH_IDLE_HOLD tool_threads=$BENCH_TOOL_THREADS fixed_tool_threads=$BENCH_FIXED_TOOL_THREADS max_p99_ms=$BENCH_MAX_P99_MS quiet_wait=$BENCH_QUIET_WAIT quiet_cores=$BENCH_QUIET_CORES" \
  report machine "$out/machine.json"
report table "$BENCH_MAX_P99_MS" "$out" "${peers[@]}"
# SVG charts next to the JSON: the ladder, p99 per step, memory per idle connection.
python3 "$BENCH_DIR/charts.py" "$out" "${peers[@]}" || true
if [ "$compare" = 1 ]; then
  report compare "$BENCH_MAX_P99_MS" "$out" "${peers[@]}"
fi
