#!/usr/bin/env bash
# tests/bench/ab.sh: alternating rounds of the fan-out step, for A/B comparisons of builds
# (and nginx + Nchan) whose differences are smaller than this machine's run-to-run spread.
#
#   tests/bench/ab.sh ROUNDS NAME=BINARY... [nchan]
#
# Each round runs every NAME in turn, each on a fresh server: wsgate-load fanout with 1,000
# subscribers and 10 publishers in one room, 64 B, at BENCH_AB_RATE msg/s (50) for
# BENCH_AB_DURATION (12s), the tool on BENCH_AB_THREADS threads (1). `nchan` is nginx +
# Nchan (tests/peers/nchan); BENCH_WSGATE_ARGS adds flags to every wsgate. Prints one line per
# run: round, name, lost, p99 ms, server CPU us per delivery; tests/bench/ab_chart.py draws them.
# Loopback only; every run is bounded by the tool's --duration and --deadline.
set -uo pipefail
BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BENCH_DIR=$BENCH_ROOT/tests/bench
# shellcheck source=tests/bench/peers.sh
. "$BENCH_DIR/peers.sh"
trap 'peer_stop' EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
BENCH_CLASSIC_MAXCONN=${BENCH_CLASSIC_MAXCONN:-10000}
rounds=${1:?rounds}
shift
for r in $(seq "$rounds"); do
  for spec in "$@"; do
    name=${spec%%=*}
    peer=wsgate
    if [ "$name" = nchan ]; then peer=nchan; else WSGATE_BIN=${spec#*=}; fi
    peer_start "$peer"
    line=$("$LOAD_BIN" fanout --url "$PEER_URL" --protocol "$PEER_PROTOCOL" --pid "$PEER_PIDS" \
      --clients 1000 --publishers 10 --rate "${BENCH_AB_RATE:-50}" --size 64 \
      --duration "${BENCH_AB_DURATION:-12s}" --threads "${BENCH_AB_THREADS:-1}" 2>/dev/null | tail -1)
    peer_stop
    python3 -c '
import json, sys
r = json.loads(sys.argv[3] or "{}")
s = (r.get("steps") or [r])[0]
print(sys.argv[1], sys.argv[2], s.get("lost"), (s.get("latency_ms") or {}).get("p99"), s.get("cpu_us_per_delivery"))
' "$r" "$name" "$line"
  done
done
