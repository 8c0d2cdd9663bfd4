#!/usr/bin/env bash
# cross/measure.sh: the numbers in cross/README.md "Measurements", from the built binaries.
#
#   cross/measure.sh [TARGET_DIR]        (make measure)
#
# Prints the size of each musl binary, then starts the x86_64 wsgate on 127.0.0.1:0 and prints
# its VmRSS from /proc/PID/status right after the `listening` line. When wsgate-load was built
# too, it then holds 1,000 idle WebSocket connections with `wsgate-load idle` and prints the
# figure that reports. Everything stays on 127.0.0.1.
set -euo pipefail

target_dir=${1:-target}
bins=${WSGATE_BINS:-wsgate wsgate-load}
clients=${CLIENTS:-1000}

for triple in aarch64-unknown-linux-musl x86_64-unknown-linux-musl; do
  for bin in $bins; do
    f=$target_dir/$triple/release/$bin
    [ -f "$f" ] && printf '%10d bytes  %s\n' "$(stat -c %s "$f")" "$f"
  done
done

dir=$target_dir/x86_64-unknown-linux-musl/release
# wsgate and wsgate-load each need one fd per client, past a default soft limit of 1024.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
log=$(mktemp)
"$dir/wsgate" --listen 127.0.0.1:0 2>"$log" &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 100); do
  grep -q ' listening ' "$log" && break
  kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
  sleep 0.05
done
addr=$(sed -n 's/.* listening addr=\([^ ]*\).*/\1/p' "$log" | head -1)
[ -n "$addr" ] || { echo "measure: no 'listening addr=' line from wsgate" >&2; cat "$log" >&2; exit 1; }
sleep 0.5
threads=$(awk '/^Threads:/ {print $2}' "/proc/$pid/status")
echo "RSS after start: $(awk '/^VmRSS:/ {print $2, $3}' "/proc/$pid/status") (pid $pid, $threads threads, addr $addr, $(nproc) cores)"

if [ -x "$dir/wsgate-load" ]; then
  "$dir/wsgate-load" idle --url "ws://$addr/ws" --clients "$clients" --pid "$pid"
else
  echo "RSS with $clients idle connections: skipped, no $dir/wsgate-load"
fi
