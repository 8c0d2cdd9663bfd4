#!/usr/bin/env bash
# tests/bench/syscalls.sh: syscalls per delivery at the everyday step, side by side.
#
#   tests/bench/syscalls.sh [PEER...]          (make bench-syscalls; default: wsgate nchan)
#
# For each peer (tests/bench/peers.sh: wsgate, nchan, node-ws, ...): a fresh server, then
# wsgate-load fanout with BENCH_SYSCALL_SUBSCRIBERS (1,000) subscribers and 10 publishers in
# one room at BENCH_SYSCALL_RATE (50 msg/s, about 50,000 deliveries/s); once it runs, `perf
# stat` counts every syscall the server's processes make for BENCH_SYSCALL_SECONDS (4 s).
# Prints, per peer: deliveries in that window (from the rate), syscalls by name (the top ones),
# syscalls per delivery, the tool's p99 and loss, and (a 3 s `perf record` after the count)
# the share of the server's CPU spent in the kernel. Writes DIR/syscalls.json.
# Needs perf (Debian's linux-perf) with the syscalls tracepoints; loopback only, bounded by
# the tool's own --deadline.
set -euo pipefail

BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BENCH_DIR=$BENCH_ROOT/tests/bench
RATE=${BENCH_SYSCALL_RATE:-50}
SUBSCRIBERS=${BENCH_SYSCALL_SUBSCRIBERS:-1000}
PUBLISHERS=${BENCH_SYSCALL_PUBLISHERS:-10}
SECONDS_COUNTED=${BENCH_SYSCALL_SECONDS:-4}
[ $# -gt 0 ] || set -- wsgate nchan

# shellcheck source=tests/bench/peers.sh
. "$BENCH_DIR/peers.sh"
mkdir -p "$BENCH_OUT"
out=$(cd "$BENCH_OUT" && pwd)
trap 'peer_stop' EXIT
command -v perf >/dev/null || { echo "syscalls: needs perf (apt-get install linux-perf)" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
BENCH_CLASSIC_MAXCONN=${BENCH_CLASSIC_MAXCONN:-10000}

# The server's processes: the roots and their descendants (nginx's workers).
tree() {
  local roots=$1 all="" p
  for p in ${roots//,/ }; do
    all+="$p,"
    for c in $(pgrep -P "$p" || true); do all+="$c,"; done
  done
  echo "${all%,}"
}

results=()
for peer in "$@"; do
  echo "== $peer"
  peer_start "$peer"
  duration=$((SECONDS_COUNTED + 11))
  "$LOAD_BIN" fanout --url "$PEER_URL" --protocol "$PEER_PROTOCOL" --pid "$PEER_PIDS" \
    --clients "$SUBSCRIBERS" --publishers "$PUBLISHERS" --rate "$RATE" --size 64 \
    --duration "${duration}s" --threads 1 >"$out/syscalls-$peer.load" 2>/dev/null &
  load=$!
  # Connected and sending: wait past the set-up, then count.
  sleep 4
  # Where the CPU goes: a 3 s profile, split into user space and the kernel.
  perf record -F 999 -p "$(tree "$PEER_PIDS")" -o "$out/profile-$peer.data" -- sleep 3 \
    >"$out/profile-$peer.log" 2>&1 || true
  perf report -i "$out/profile-$peer.data" --no-children --sort dso --stdio 2>/dev/null |
    grep -E '^ +[0-9]' >"$out/profile-$peer.dso" || true
  perf stat -x, -e 'syscalls:sys_enter_*' -p "$(tree "$PEER_PIDS")" -- sleep "$SECONDS_COUNTED" \
    2>"$out/syscalls-$peer.perf" >/dev/null
  wait "$load" || true
  peer_stop
  results+=("$peer")
done

python3 - "$out" "$RATE" "$SUBSCRIBERS" "$PUBLISHERS" "$SECONDS_COUNTED" "${results[@]}" <<'EOF'
import json, sys
out, rate, subs, pubs, secs = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
summary = {}
for peer in sys.argv[6:]:
    counts = {}
    for line in open(f"{out}/syscalls-{peer}.perf"):
        f = line.strip().split(",")
        if len(f) > 2 and f[2].startswith("syscalls:sys_enter_") and f[0].isdigit() and int(f[0]):
            counts[f[2][len("syscalls:sys_enter_"):]] = counts.get(f[2][len("syscalls:sys_enter_"):], 0) + int(f[0])
    load = {}
    for line in open(f"{out}/syscalls-{peer}.load"):
        if line.startswith("{"):
            load = json.loads(line)
    step = (load.get("steps") or [load])[0]
    deliveries = rate * (subs + pubs) * secs
    total = sum(counts.values())
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:6]
    summary[peer] = {
        "deliveries_in_window": deliveries,
        "syscalls": total,
        "syscalls_per_delivery": round(total / deliveries, 3) if deliveries else None,
        "top": dict(top),
        "p99_ms": (step.get("latency_ms") or {}).get("p99"),
        "lost": step.get("lost"),
        "server_cpu_us_per_delivery": step.get("cpu_us_per_delivery"),
    }
    kernel = 0.0
    try:
        for line in open(f"{out}/profile-{peer}.dso"):
            pct, dso = line.split()[0], line.split()[-1]
            if dso.startswith("[kernel"):
                kernel += float(pct.rstrip("%"))
    except OSError:
        kernel = None
    summary[peer]["kernel_share_pct"] = kernel
    tops = ", ".join(f"{k} {v:,}" for k, v in top)
    s = summary[peer]
    print(f"{peer:8} {total:>9,} syscalls / {deliveries:>9,.0f} deliveries = {s['syscalls_per_delivery']} per delivery;"
          f" p99 {s['p99_ms']} ms, lost {s['lost']}, server {s['server_cpu_us_per_delivery']} us/delivery"
          f" ({'?' if kernel is None else f'{kernel:.0f}%'} of it in the kernel); {tops}")
json.dump(summary, open(f"{out}/syscalls.json", "w"), indent=2)
print(f"JSON: {out}/syscalls.json")
EOF
