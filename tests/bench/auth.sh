#!/usr/bin/env bash
# tests/bench/auth.sh: what handshake tokens cost (make bench-auth). The same release wsgate
# without and with --jwt-secret-file, each fresh: the connect rate and connect time of
# BENCH_AUTH_CLIENTS plain clients opened at BENCH_AUTH_RATE per second (each handshake checks
# a token), and server CPU per delivery at a fixed BENCH_AUTH_MSGS msg/s fan-out (1,000
# subscribers, 10 publishers, 64 B: the token is checked once per connection, so this should
# not move). Tokens are HS256, minted here with Python's hmac. Writes DIR/auth-*.json.
set -euo pipefail

BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BENCH_AUTH_CLIENTS=${BENCH_AUTH_CLIENTS:-10000}
BENCH_AUTH_RATE=${BENCH_AUTH_RATE:-5000}
BENCH_AUTH_MSGS=${BENCH_AUTH_MSGS:-500}

# Binaries and the output directory (WSGATE_BIN, LOAD_BIN, BENCH_OUT, BENCH_SOURCE_IPS)
# default there.
# shellcheck source=tests/bench/peers.sh
BENCH_CLASSIC_MAXCONN=0 source "$BENCH_ROOT/tests/bench/peers.sh"
mkdir -p "$BENCH_OUT"
trap peer_stop EXIT
key_dir=$(mktemp -d)
printf 'bench-secret-0123456789abcdef' >"$key_dir/jwt.key"
token=$(python3 - "$key_dir/jwt.key" <<'PY'
import base64, hashlib, hmac, json, sys, time
key = open(sys.argv[1], "rb").read()
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
body = b64(json.dumps({"exp": int(time.time()) + 3600, "sub": "bench", "rooms": ["*"]}).encode())
sig = b64(hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest())
print(f"{head}.{body}.{sig}")
PY
)

run() {
  local name=$1 query=$2
  shift 2
  PEER_DIR=$(mktemp -d)
  start_wsgate "$@"
  "$LOAD_BIN" idle --url "ws://$PEER_ADDR/ws$query" --clients "$BENCH_AUTH_CLIENTS" \
    --connect-rate "$BENCH_AUTH_RATE" --hold 1s --source-ips "$BENCH_SOURCE_IPS" \
    --pid "$PEER_PIDS" 2>/dev/null | tail -1 >"$BENCH_OUT/auth-$name-idle.json"
  peer_stop
  PEER_DIR=$(mktemp -d)
  start_wsgate "$@"
  "$LOAD_BIN" fanout --url "ws://$PEER_ADDR/ws$query" --clients 1000 --publishers 10 --size 64 \
    --rate "$BENCH_AUTH_MSGS" --duration 5s --threads 2 --pid "$PEER_PIDS" 2>/dev/null |
    tail -1 >"$BENCH_OUT/auth-$name-fanout.json"
  peer_stop
  python3 - "$BENCH_OUT/auth-$name-idle.json" "$BENCH_OUT/auth-$name-fanout.json" "$name" <<'PY'
import json, sys
idle, fan = (json.load(open(p)) for p in sys.argv[1:3])
step = fan["steps"][0] if "steps" in fan else fan
ms = idle["connect_ms"]
print(f"{sys.argv[3]:>11}: {idle['connected']} connected at {idle['connect_rate']:.0f}/s, "
      f"connect p50 {ms['p50']:.2f} ms p99 {ms['p99']:.2f} ms; fan-out {step['deliveries_per_s']:,.0f} "
      f"deliveries/s, server {step['cpu_us_per_delivery']:.2f} us/delivery, p99 {step['latency_ms']['p99']:.1f} ms")
PY
}

echo "bench-auth: $(nproc) cores, $(uname -sr); $BENCH_AUTH_CLIENTS connects at $BENCH_AUTH_RATE/s, fan-out at $BENCH_AUTH_MSGS msg/s"
run no-tokens ""
run tokens "?token=$token" --jwt-secret-file "$key_dir/jwt.key"
rm -rf "$key_dir"
