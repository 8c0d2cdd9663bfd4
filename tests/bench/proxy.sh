#!/usr/bin/env bash
# `make bench-proxy`: wsgate --upstream against nginx (configured like the classic block), each
# in front of the same Node `ws` broadcast app (tests/peers/node-ws), and the app alone as the
# baseline for added latency. The load tool sends PROXY v1 to both proxies, as a CLB would.
#
#   idle     BENCH_PROXY_IDLE (2000) connections held; RSS growth of the proxy alone per connection
#   BENCH_PROXY_WSGATE_ARGS   extra wsgate flags (e.g. --threads 1)
#   fanout   BENCH_PROXY_SUBS (500) subscribers, 5 publishers, BENCH_PROXY_RATE (100) msg/s for
#            BENCH_PROXY_DURATION (5s): CPU of the proxy alone per delivered message, p50/p99
#
# Writes target/bench/proxy-<peer>-<scenario>.json and proxy.md (the table), and prints it.
set -euo pipefail
BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
source "$BENCH_ROOT/tests/bench/peers.sh"
OUT=${BENCH_OUT:-$BENCH_ROOT/target/bench}
LOAD=${WSGATE_LOAD_BIN:-$BENCH_ROOT/target/release/wsgate-load}
WSGATE_BIN=${WSGATE_BIN:-$BENCH_ROOT/target/release/wsgate}
IDLE=${BENCH_PROXY_IDLE:-2000}
SUBS=${BENCH_PROXY_SUBS:-500}
RATE=${BENCH_PROXY_RATE:-100}
DURATION=${BENCH_PROXY_DURATION:-5s}
mkdir -p "$OUT"
trap 'peer_stop' EXIT

# start_proxy KIND: the app, then the proxy in front of it; sets PROXY_PID and URL.
start_proxy() {
  PEER_DIR=$(mktemp -d "${TMPDIR:-/tmp}/wsgate-bench-proxy.XXXXXX")
  PEER_PID_LIST=()
  start_node "$BENCH_ROOT/tests/peers/node-ws" server.js
  case $1 in
    direct)
      PROXY_PID=$NODE_PID
      URL="ws://127.0.0.1:$NODE_PORT/"
      PROXY_ARGS=()
      ;;
    wsgate)
      # shellcheck disable=SC2086
      "$WSGATE_BIN" --listen 127.0.0.1:0 --proxy-protocol required \
        --upstream "http://127.0.0.1:$NODE_PORT" ${BENCH_PROXY_WSGATE_ARGS:-} \
        2>"$PEER_DIR/wsgate.log" &
      PROXY_PID=$!
      PEER_PID_LIST+=("$PROXY_PID")
      URL="ws://$(wait_line "$PEER_DIR/wsgate.log" 's/.* listening addr=\([^ ]*\).*/\1/p' "$PROXY_PID")/"
      PROXY_ARGS=(--proxy v1)
      ;;
    nginx)
      start_nginx "$BENCH_ROOT/tests/peers/proxy/nginx.conf.in"
      PROXY_PID=$NGINX_PID
      URL="ws://127.0.0.1:$NGINX_PORT/"
      PROXY_ARGS=(--proxy v1)
      ;;
  esac
}

run() { # NAME ARGS...: the tool's JSON (its last line) into $OUT/NAME.json
  local name=$1
  shift
  "$LOAD" "$@" >"$OUT/$name.log" 2>&1 || true
  tail -n 1 "$OUT/$name.log" >"$OUT/$name.json"
}

for peer in direct wsgate nginx; do
  start_proxy "$peer"
  if [ "$peer" != direct ]; then
    run "proxy-$peer-idle" idle --url "$URL" "${PROXY_ARGS[@]}" --clients "$IDLE" \
      --connect-rate 2000 --hold 3s --pid "$PROXY_PID"
  fi
  run "proxy-$peer-fanout" fanout --url "$URL" "${PROXY_ARGS[@]}" --clients "$SUBS" \
    --publishers 5 --rate "$RATE" --duration "$DURATION" --pid "$PROXY_PID"
  peer_stop
done

python3 - "$OUT" "$IDLE" "$SUBS" "$RATE" <<'PY'
import json, os, sys
out, idle, subs, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def load(name):
    try:
        return json.load(open(os.path.join(out, name + ".json")))
    except Exception:
        return {}
d, w, n = (load(f"proxy-{p}-fanout") for p in ("direct", "wsgate", "nginx"))
wi, ni = load("proxy-wsgate-idle"), load("proxy-nginx-idle")
def p(x, k):
    return x.get("latency_ms", {}).get(k)
rows = [
    ("proxy CPU per delivered message, us", w.get("cpu_us_per_delivery"), n.get("cpu_us_per_delivery")),
    ("KiB per idle proxied connection", wi.get("kb_per_conn"), ni.get("kb_per_conn")),
    ("p50 ms", p(w, "p50"), p(n, "p50")),
    ("p99 ms", p(w, "p99"), p(n, "p99")),
    ("added p99 over the app alone, ms", (p(w, "p99") or 0) - (p(d, "p99") or 0), (p(n, "p99") or 0) - (p(d, "p99") or 0)),
    ("deliveries/s", w.get("deliveries_per_s"), n.get("deliveries_per_s")),
    ("lost", w.get("lost"), n.get("lost")),
]
def f(v):
    return "-" if v is None else (f"{v:,.2f}" if isinstance(v, float) else f"{v:,}")
lines = [
    f"Each proxy in front of the same Node `ws` app; {subs} subscribers, 5 publishers, {rate} msg/s, 64 B; idle: {idle} connections; app alone: p99 {f(p(d, 'p99'))} ms.",
    "",
    "| | wsgate --upstream | nginx | wsgate / nginx |",
    "|---|---:|---:|---:|",
]
for name, a, b in rows:
    ratio = f"{a / b:.2f}x" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else "-"
    lines.append(f"| {name} | {f(a)} | {f(b)} | {ratio} |")
goals = []
def goal(text, ok):
    goals.append(f"| {text} | {'met' if ok else 'NOT met'} |")
cw, cn = w.get("cpu_us_per_delivery"), n.get("cpu_us_per_delivery")
mw, mn = wi.get("kb_per_conn"), ni.get("kb_per_conn")
if cw and cn: goal(f"CPU per proxied message <= 0.5x nginx ({cw / cn:.2f}x)", cw <= 0.5 * cn)
if mw and mn: goal(f"memory per idle proxied connection <= 0.25x nginx ({mw / mn:.2f}x)", mw <= 0.25 * mn)
aw, an = (p(w, "p99") or 0) - (p(d, "p99") or 0), (p(n, "p99") or 0) - (p(d, "p99") or 0)
goal(f"added p99 no worse than nginx ({aw:.1f} ms vs {an:.1f} ms)", aw <= an)
lines += ["", "| goal (issue 13) | |", "|---|---|"] + goals
open(os.path.join(out, "proxy.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
