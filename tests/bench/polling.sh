#!/usr/bin/env bash
# tests/bench/polling.sh: memory per idle Socket.IO polling session (make bench-polling).
# A fresh release wsgate on 127.0.0.1; wsgate-load idle --protocol socketio-polling holds
# BENCH_POLL_CLIENTS sessions (each with a GET held, as a browser's), connected to `/` in
# BENCH_POLL_ROOMS rooms (one room would make every connect's `hi` reach everyone: N^2
# messages), then the server's RSS growth per session and the same for the websocket
# transport under the same settings, for comparison. Writes DIR/polling-idle.json and
# DIR/sio-ws-idle.json. Bounded by wsgate-load's --deadline; servers stopped by pid on exit.
set -euo pipefail

BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BENCH_POLL_CLIENTS=${BENCH_POLL_CLIENTS:-10000}
BENCH_POLL_ROOMS=${BENCH_POLL_ROOMS:-1000}
BENCH_POLL_RATE=${BENCH_POLL_RATE:-2000}
BENCH_POLL_HOLD=${BENCH_POLL_HOLD:-5s}

# Binaries and the output directory (WSGATE_BIN, LOAD_BIN, BENCH_OUT, BENCH_SOURCE_IPS)
# default there.
# shellcheck source=tests/bench/peers.sh
BENCH_CLASSIC_MAXCONN=0 source "$BENCH_ROOT/tests/bench/peers.sh"
mkdir -p "$BENCH_OUT"
trap peer_stop EXIT

one() {
  local name=$1 protocol=$2
  PEER_DIR=$(mktemp -d)
  # shellcheck disable=SC2086 # BENCH_POLL_FLAGS: extra wsgate flags, split on spaces
  start_wsgate ${BENCH_POLL_FLAGS:-}
  "$LOAD_BIN" idle --url "$PEER_URL" --protocol "$protocol" --clients "$BENCH_POLL_CLIENTS" \
    --rooms "$BENCH_POLL_ROOMS" --connect-rate "$BENCH_POLL_RATE" --hold "$BENCH_POLL_HOLD" \
    --source-ips "$BENCH_SOURCE_IPS" --pid "$PEER_PIDS" 2>"$BENCH_OUT/$name.log" |
    tee "$BENCH_OUT/$name.txt" | tail -1 >"$BENCH_OUT/$name.json"
  peer_stop
  python3 - "$BENCH_OUT/$name.json" "$name" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
kb = r.get("kb_per_conn")
print(f"{sys.argv[2]}: held {r['held']} of {r['clients']} ({r['failed']} failed, {r['dropped']} dropped), "
      f"{kb:.2f} KiB per session" if kb is not None else f"{sys.argv[2]}: no RSS sample")
PY
}

echo "bench-polling: $(nproc) cores, $(uname -sr); $BENCH_POLL_CLIENTS sessions in $BENCH_POLL_ROOMS rooms"
one polling-idle socketio-polling
one sio-ws-idle socketio
