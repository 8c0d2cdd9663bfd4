#!/usr/bin/env bash
# `make bench-proxy`: wsgate --upstream against nginx (configured like the classic block), each
# in front of the same Node `ws` broadcast app (tests/peers/node-ws), and the app alone as the
# baseline for added latency. The load tool sends PROXY v1 to both proxies, as a CLB would.
#
#   idle     BENCH_PROXY_IDLE (2000) connections held; RSS growth of the proxy alone per connection
#   BENCH_PROXY_WSGATE_ARGS   extra wsgate flags (e.g. --threads 1)
#   fanout   BENCH_PROXY_SUBS (500) subscribers, 5 publishers, BENCH_PROXY_RATE (100) msg/s for
#            BENCH_PROXY_DURATION (5s): CPU of the proxy alone per delivered message, p50/p99;
#            BENCH_PROXY_ROUNDS (3) alternating rounds of the app alone, wsgate and nginx, each
#            on fresh processes (one round of each moves by 10% on a shared 2-core machine;
#            the table gives the means and every round's ratio)
#
# Writes target/bench/proxy-<peer>-<scenario>[-<round>].json and proxy.md (the table), and
# prints it.
#
#   tests/bench/proxy.sh ab ROUNDS NAME=BINARY... [nginx]
#
# compares builds instead: the fan-out alone, ROUNDS alternating rounds of every NAME (a
# wsgate binary) and nginx, each on fresh processes; one line per run: round, name, server CPU
# us per proxied message, p50 and p99 ms, lost.
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
ROUNDS=${BENCH_PROXY_ROUNDS:-3}
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

run() { # NAME COMMAND...: the tool's JSON (its last line) into $OUT/NAME.json
  local name=$1
  shift
  "$@" >"$OUT/$name.log" 2>&1 || true
  tail -n 1 "$OUT/$name.log" >"$OUT/$name.json"
}

fanout() { # the fan-out against the proxy start_proxy started
  "$LOAD" fanout --url "$URL" "${PROXY_ARGS[@]}" --clients "$SUBS" --publishers 5 \
    --rate "$RATE" --duration "$DURATION" --pid "$PROXY_PID"
}

if [ "${1:-}" = ab ]; then
  rounds=${2:?rounds}
  shift 2
  for round in $(seq "$rounds"); do
    for spec in "$@"; do
      name=${spec%%=*}
      peer=nginx
      if [ "$name" != nginx ]; then peer=wsgate WSGATE_BIN=${spec#*=}; fi
      start_proxy "$peer"
      fanout 2>/dev/null | tail -n 1 |
        python3 -c 'import json, sys
d = json.loads(sys.stdin.read()); s = (d.get("steps") or [d])[0]; l = s.get("latency_ms", {})
print(sys.argv[1], sys.argv[2], s.get("cpu_us_per_delivery"), l.get("p50"), l.get("p99"), s.get("lost"))' \
          "$round" "$name"
      peer_stop
    done
  done
  exit 0
fi

for peer in wsgate nginx; do
  start_proxy "$peer"
  run "proxy-$peer-idle" "$LOAD" idle --url "$URL" "${PROXY_ARGS[@]}" --clients "$IDLE" \
    --connect-rate 2000 --hold 3s --pid "$PROXY_PID"
  peer_stop
done
for round in $(seq "$ROUNDS"); do
  for peer in direct wsgate nginx; do
    start_proxy "$peer"
    run "proxy-$peer-fanout-$round" fanout
    peer_stop
  done
done

python3 - "$OUT" "$IDLE" "$SUBS" "$RATE" "$ROUNDS" <<'PY'
import json, os, sys
out, idle, subs, rate, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
def load(name):
    try:
        return json.load(open(os.path.join(out, name + ".json")))
    except Exception:
        return {}
def mean(vals):
    vals = [v for v in vals if isinstance(v, (int, float))]
    return sum(vals) / len(vals) if vals else None
runs = {p: [load(f"proxy-{p}-fanout-{r}") for r in range(1, rounds + 1)] for p in ("direct", "wsgate", "nginx")}
def merged(p):
    # The rounds' means, in the shape of one run.
    rs = runs[p]
    return {
        "cpu_us_per_delivery": mean([r.get("cpu_us_per_delivery") for r in rs]),
        "deliveries_per_s": mean([r.get("deliveries_per_s") for r in rs]),
        "lost": sum(r.get("lost") or 0 for r in rs),
        "latency_ms": {k: mean([r.get("latency_ms", {}).get(k) for r in rs]) for k in ("p50", "p99")},
    }
d, w, n = (merged(p) for p in ("direct", "wsgate", "nginx"))
json.dump({"rounds": rounds, "direct": d, "wsgate": w, "nginx": n}, open(os.path.join(out, "proxy-fanout.json"), "w"), indent=2)
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
def times(a, b):
    return f"{a / b:.2f}x" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b else "-"
per_round = ", ".join(
    times(runs["wsgate"][i].get("cpu_us_per_delivery"), runs["nginx"][i].get("cpu_us_per_delivery"))
    for i in range(rounds)
)
lines = [
    f"Each proxy in front of the same Node `ws` app; {subs} subscribers, 5 publishers, {rate} msg/s, 64 B; means of {rounds} alternating rounds; idle: {idle} connections; app alone: p99 {f(p(d, 'p99'))} ms.",
    "",
    f"CPU per proxied message, wsgate / nginx, round by round: {per_round}.",
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
