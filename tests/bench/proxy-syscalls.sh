#!/usr/bin/env bash
# tests/bench/proxy-syscalls.sh wsgate|nginx [EXTRA_WSGATE_FLAGS]: the proxy's syscalls
# (`strace -c -f`) during 4 s of `make bench-proxy`'s fan-out (500 subscribers, 5 publishers,
# 100 msg/s, PROXY v1), in front of the Node `ws` app. Needs strace and a release build.
set -u
BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$BENCH_ROOT"
source tests/bench/peers.sh
command -v strace >/dev/null || { echo "needs strace (apt-get install strace)" >&2; exit 1; }
PEER_DIR=$(mktemp -d)
PEER_PID_LIST=()
trap peer_stop EXIT
start_node tests/peers/node-ws server.js
if [ "$1" = wsgate ]; then
  # shellcheck disable=SC2086
  target/release/wsgate --listen 127.0.0.1:0 --proxy-protocol required \
    --upstream "http://127.0.0.1:$NODE_PORT" ${2:-} 2>"$PEER_DIR/w.log" &
  P=$!
  PEER_PID_LIST+=("$P")
  URL="ws://$(wait_line "$PEER_DIR/w.log" 's/.* listening addr=\([^ ]*\).*/\1/p' "$P")/"
  TRACED=$P
else
  start_nginx tests/peers/proxy/nginx.conf.in
  URL="ws://127.0.0.1:$NGINX_PORT/"
  TRACED=$(pgrep -P "$NGINX_PID" | tr '\n' ' ') # the workers
fi
target/release/wsgate-load fanout --url "$URL" --proxy v1 --clients 500 --publishers 5 \
  --rate 100 --duration 8s >"$PEER_DIR/load.log" 2>&1 &
LOAD=$!
sleep 3
args=()
for p in $TRACED; do args+=(-p "$p"); done
timeout 4 strace -c -f "${args[@]}" 2>"$PEER_DIR/strace.txt"
wait "$LOAD"
grep -o '"deliveries_per_s": *[0-9.]*' "$PEER_DIR/load.log" | tail -1
grep -v '^strace:' "$PEER_DIR/strace.txt"
