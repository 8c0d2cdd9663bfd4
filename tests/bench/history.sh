#!/usr/bin/env bash
# tests/bench/history.sh: what the history holds per room at the defaults (make
# bench-history). A fresh release wsgate; BENCH_HISTORY_ROOMS rooms, each with one publisher
# and one subscriber; the publishers send BENCH_HISTORY_PER_ROOM messages of
# BENCH_HISTORY_SIZE bytes into every room (the default --history-size keeps the newest 1,000
# of each). The same run with --recovery-window 0 is the baseline (the same sessions and
# buffers, no history). Reports the server's RSS growth per room with history on minus off,
# and wsgate_history_entries / wsgate_history_bytes.
set -euo pipefail

BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BENCH_HISTORY_ROOMS=${BENCH_HISTORY_ROOMS:-100}
BENCH_HISTORY_PER_ROOM=${BENCH_HISTORY_PER_ROOM:-1200}
BENCH_HISTORY_SIZE=${BENCH_HISTORY_SIZE:-64}

# shellcheck source=tests/bench/peers.sh
BENCH_CLASSIC_MAXCONN=0 source "$BENCH_ROOT/tests/bench/peers.sh"
mkdir -p "$BENCH_OUT"
trap peer_stop EXIT

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

run() {
  local name=$1
  shift
  PEER_DIR=$(mktemp -d)
  start_wsgate --admin-listen 127.0.0.1:0 "$@"
  local admin
  admin=$(sed -n 's/.* listening .*admin=\([^ ]*\).*/\1/p' "$PEER_DIR/wsgate.log" | head -1)
  local rate=$((BENCH_HISTORY_ROOMS * 100))
  local secs=$((BENCH_HISTORY_PER_ROOM / 100))
  "$LOAD_BIN" fanout --url "ws://$PEER_ADDR/ws" --rooms "$BENCH_HISTORY_ROOMS" \
    --clients "$BENCH_HISTORY_ROOMS" --publishers "$BENCH_HISTORY_ROOMS" \
    --size "$BENCH_HISTORY_SIZE" --rate "$rate" --duration "${secs}s" --drain 1s \
    --threads 1 2>/dev/null | tail -1 >"$BENCH_OUT/history-$name.json"
  # The fan-out clients have gone; what the rooms keep stays for the window.
  sleep 1
  local rss
  rss=$(rss_kb "$PEER_PIDS")
  local m
  m=$(curl -s "http://$admin/metrics" | grep -E '^wsgate_history_(entries|bytes) ' | tr '\n' ' ')
  echo "$name $rss $m"
  peer_stop
}

echo "bench-history: $(nproc) cores; $BENCH_HISTORY_ROOMS rooms, $BENCH_HISTORY_PER_ROOM messages of $BENCH_HISTORY_SIZE B into each"
on=$(run on)
off=$(run off --recovery-window 0)
python3 - "$on" "$off" "$BENCH_HISTORY_ROOMS" <<'PY'
import sys
on, off, rooms = sys.argv[1].split(), sys.argv[2].split(), int(sys.argv[3])
rss_on, rss_off = int(on[1]), int(off[1])
metrics = dict(zip(on[2::2], on[3::2]))
entries, held = int(float(metrics["wsgate_history_entries"])), int(float(metrics["wsgate_history_bytes"]))
per_room = (rss_on - rss_off) / rooms
print(f"history on: RSS {rss_on} KiB, off: {rss_off} KiB; {entries} entries kept, {held} bytes counted")
print(f"per room: {per_room:.1f} KiB ({per_room * 1024 / max(entries / rooms, 1):.0f} B per entry kept); "
      f"counted by --history-memory: {held / rooms / 1024:.1f} KiB per room")
PY
