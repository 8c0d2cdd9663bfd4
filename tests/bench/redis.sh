#!/usr/bin/env bash
# tests/bench/redis.sh: what the shared order costs (make bench-redis). Two release wsgate
# instances on one local redis-server, subscribers on one and publishers on the other (so
# every message crosses Redis), BENCH_REDIS_CLIENTS (1,000) subscribers and 10 publishers, 64 B, at BENCH_REDIS_RATE
# msg/s for BENCH_REDIS_DURATION, three ways:
#   local:    one instance, no Redis (the floor);
#   pubsub:   --redis with --recovery-window 0 (plain PUBLISH, at-most-once: before);
#   ordered:  --redis with history on (the PUBLISH script numbers each message: after);
#   ordered-one: the same, publishers and subscribers on one instance (before, their messages
#             did not wait for Redis; now the one instance delivers them from Redis's echo).
# Prints p50/p99/max latency, lost and out-of-order counts, and server CPU per delivery, and
# writes DIR/redis-*.json.
set -euo pipefail

BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BENCH_REDIS_RATE=${BENCH_REDIS_RATE:-100}
BENCH_REDIS_DURATION=${BENCH_REDIS_DURATION:-20s}
BENCH_REDIS_CLIENTS=${BENCH_REDIS_CLIENTS:-1000}

# shellcheck source=tests/bench/peers.sh
BENCH_CLASSIC_MAXCONN=0 source "$BENCH_ROOT/tests/bench/peers.sh"
mkdir -p "$BENCH_OUT"
redis_dir=$(mktemp -d)
redis_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --loglevel warning \
  --dir "$redis_dir" >/dev/null 2>&1 &
redis_pid=$!
cleanup() { peer_stop; kill "$redis_pid" 2>/dev/null || true; rm -rf "$redis_dir"; }
trap cleanup EXIT
for _ in $(seq 50); do
  redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
  sleep 0.1
done

run() {
  local name=$1
  shift
  PEER_DIR=$(mktemp -d)
  local pids urls
  if [ "$name" = local ] || [ "$name" = ordered-one ]; then
    if [ "$name" = local ]; then start_wsgate "$@"; else start_wsgate --redis "redis://127.0.0.1:$redis_port" "$@"; fi
    pids=$PEER_PIDS
    urls=(--url "ws://$PEER_ADDR/ws/bench")
  else
    start_wsgate --redis "redis://127.0.0.1:$redis_port" "$@"
    local a_pid=$PEER_PIDS a_addr=$PEER_ADDR
    start_wsgate --redis "redis://127.0.0.1:$redis_port" "$@"
    pids="$a_pid,$PEER_PIDS"
    urls=(--url "ws://$a_addr/ws/bench" --publish-url "ws://$PEER_ADDR/ws/bench")
    sleep 0.5
  fi
  "$LOAD_BIN" fanout "${urls[@]}" --clients "$BENCH_REDIS_CLIENTS" --publishers 10 --size 64 \
    --rate "$BENCH_REDIS_RATE" --duration "$BENCH_REDIS_DURATION" --threads 1 --pid "$pids" \
    2>/dev/null | tail -1 >"$BENCH_OUT/redis-$name.json"
  peer_stop
  python3 - "$BENCH_OUT/redis-$name.json" "$name" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s = r["steps"][0] if "steps" in r else r
ms = s["latency_ms"]
print(f"{sys.argv[2]:>11}: p50 {ms['p50']:.2f} ms, p99 {ms['p99']:.2f} ms, max {ms['max']:.2f} ms; "
      f"{s['deliveries_per_s']:,.0f} deliveries/s, lost {s['lost']}, out of order {s['out_of_order']}, "
      f"server {s['cpu_us_per_delivery']:.2f} us/delivery")
PY
}

echo "bench-redis: $(nproc) cores, $(uname -sr), $(redis-server --version | cut -d' ' -f3); $BENCH_REDIS_CLIENTS subscribers, 10 publishers, 64 B at $BENCH_REDIS_RATE msg/s for $BENCH_REDIS_DURATION"
run local
run pubsub --recovery-window 0
run ordered
run ordered-one
