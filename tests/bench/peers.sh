# tests/bench/peers.sh: start and stop the servers that the bench drives. Sourced by run.sh.
#
#   peer_start NAME     start peer NAME (wsgate, wsgate-sio, classic, node-ws, nchan) on 127.0.0.1;
#                       sets PEER_URL (for wsgate-load --url), PEER_PROTOCOL (raw|socketio) and
#                       PEER_PIDS (comma list for wsgate-load --pid)
#   peer_stop           stop what peer_start started (by pid), wait for it, remove its tmp dir
#
# Everything listens on 127.0.0.1 on a free port. nginx and haproxy run in the foreground from
# configs generated into a tmp dir from tests/peers/classic/*.in; their logs stay in that dir
# (kept when BENCH_KEEP_LOGS=1). Needs: BENCH_ROOT (repository root), WSGATE_BIN and
# BENCH_CLASSIC_MAXCONN (HAProxy maxconn; it takes two fds per connection). BENCH_WSGATE_ARGS
# adds flags to every wsgate started (e.g. "--threads 1").

# shellcheck shell=bash disable=SC2034  # sets PEER_* for run.sh

# The release binaries, where the bench results go, and the loopback source addresses for
# runs of 10,000 connections; each caller may set them first.
RELEASE_DIR=${RELEASE_DIR:-$BENCH_ROOT/target/release}
WSGATE_BIN=${WSGATE_BIN:-$RELEASE_DIR/wsgate}
LOAD_BIN=${LOAD_BIN:-$RELEASE_DIR/wsgate-load}
BENCH_OUT=${BENCH_OUT:-$BENCH_ROOT/target/bench}
BENCH_SOURCE_IPS=${BENCH_SOURCE_IPS:-127.0.0.2-127.0.0.40}

# Most wsgate sessions at once: far above the 10,000 idle clients plus the fanout members.
BENCH_MAX_CONNECTIONS=${BENCH_MAX_CONNECTIONS:-100000}
# Debian puts these in /usr/sbin, which is not on every user's PATH.
NGINX_BIN=${NGINX_BIN:-$(command -v nginx || echo /usr/sbin/nginx)}
HAPROXY_BIN=${HAPROXY_BIN:-$(command -v haproxy || echo /usr/sbin/haproxy)}
# Debian's libnginx-mod-nchan puts the module here.
NCHAN_MODULE=${NCHAN_MODULE:-/usr/lib/nginx/modules/ngx_nchan_module.so}
# How long a server may take to print its listening line / open its port.
PEER_START_TIMEOUT_S=${PEER_START_TIMEOUT_S:-20}

PEER_DIR=""
PEER_PID_LIST=()

# A free TCP port on 127.0.0.1 (bind to port 0, read it, release it).
bench_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# wait_line FILE SED_EXPR PID: print the first match of SED_EXPR in FILE once it appears.
wait_line() {
  local file=$1 expr=$2 pid=$3 i v
  for ((i = 0; i < PEER_START_TIMEOUT_S * 20; i++)); do
    v=$(sed -n "$expr" "$file" 2>/dev/null | head -1)
    if [ -n "$v" ]; then
      echo "$v"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  echo "bench: no listening line in $file" >&2
  cat "$file" >&2
  return 1
}

# wait_port PORT PID: until 127.0.0.1:PORT accepts a connection.
wait_port() {
  local port=$1 pid=$2 i
  for ((i = 0; i < PEER_START_TIMEOUT_S * 20; i++)); do
    if python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2).close()' "$port" 2>/dev/null; then
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  echo "bench: nothing listens on 127.0.0.1:$port" >&2
  return 1
}

# start_wsgate [FLAG...]: wsgate on a free loopback port, with FLAGs added.
start_wsgate() {
  "$WSGATE_BIN" --listen 127.0.0.1:0 --max-connections "$BENCH_MAX_CONNECTIONS" ${BENCH_WSGATE_ARGS:-} "$@" \
    2>"$PEER_DIR/wsgate.log" &
  local pid=$! addr
  PEER_PID_LIST+=("$pid")
  addr=$(wait_line "$PEER_DIR/wsgate.log" 's/.* listening addr=\([^ ]*\).*/\1/p' "$pid") || return 1
  PEER_PIDS=$pid
  PEER_ADDR=$addr
  PEER_URL="ws://$addr/"
}

# start_node DIR SCRIPT: a Node peer that prints `listening port=N`; node runs directly (no npm
# wrapper), so its pid is the server.
start_node() {
  local dir=$1 script=$2 port
  (cd "$dir" && PORT=0 HOST=127.0.0.1 exec node "$script") >"$PEER_DIR/node.log" 2>&1 &
  local pid=$!
  PEER_PID_LIST+=("$pid")
  port=$(wait_line "$PEER_DIR/node.log" 's/^listening port=\([0-9]*\).*/\1/p' "$pid") || return 1
  NODE_PID=$pid
  NODE_PORT=$port
}

# The classic stack: haproxy (TCP, send-proxy) -> nginx (proxy_protocol) -> Node socket.io chat.
# start_nginx TEMPLATE: nginx in the foreground with TEMPLATE's @...@ filled in, in front of
# the app on $NODE_PORT (when there is one); sets NGINX_PID and NGINX_PORT.
start_nginx() {
  local nofile
  NGINX_PORT=$(bench_free_port)
  nofile=$(ulimit -Hn)
  [ "$nofile" = unlimited ] && nofile=1048576
  mkdir -p "$PEER_DIR/nginx"
  sed -e "s|@TMP@|$PEER_DIR/nginx|g" -e "s|@NOFILE@|$nofile|g" \
    -e "s|@WORKER_CONNECTIONS@|$((nofile - 100))|g" \
    -e "s|@APP_PORT@|${NODE_PORT:-0}|g" -e "s|@NGINX_PORT@|$NGINX_PORT|g" \
    -e "s|@NCHAN_MODULE@|$NCHAN_MODULE|g" \
    "$1" >"$PEER_DIR/nginx/nginx.conf"
  "$NGINX_BIN" -p "$PEER_DIR/nginx" -c "$PEER_DIR/nginx/nginx.conf" -e "$PEER_DIR/nginx/error.log" \
    -g 'daemon off;' \
    >"$PEER_DIR/nginx/stdout.log" 2>&1 &
  NGINX_PID=$!
  PEER_PID_LIST+=("$NGINX_PID")
  wait_port "$NGINX_PORT" "$NGINX_PID" || { cat "$PEER_DIR/nginx/error.log" >&2; return 1; }
}

start_classic() {
  local conf=$BENCH_ROOT/tests/peers/classic nginx_port haproxy_port
  start_node "$BENCH_ROOT/tests/peers/socketio-chat" index.js || return 1
  start_nginx "$conf/nginx.conf.in" || return 1
  local nginx_pid=$NGINX_PID
  nginx_port=$NGINX_PORT
  haproxy_port=$(bench_free_port)
  sed -e "s|@TMP@|$PEER_DIR|g" -e "s|@MAXCONN@|$BENCH_CLASSIC_MAXCONN|g" \
    -e "s|@HAPROXY_PORT@|$haproxy_port|g" -e "s|@NGINX_PORT@|$nginx_port|g" \
    "$conf/haproxy.cfg.in" >"$PEER_DIR/haproxy.cfg"
  "$HAPROXY_BIN" -db -f "$PEER_DIR/haproxy.cfg" >"$PEER_DIR/haproxy.log" 2>&1 &
  PEER_PID_LIST+=("$!")
  local haproxy_pid=$!
  wait_port "$haproxy_port" "$haproxy_pid" || { cat "$PEER_DIR/haproxy.log" >&2; return 1; }
  PEER_PIDS="$haproxy_pid,$nginx_pid,$NODE_PID"
  PEER_URL="ws://127.0.0.1:$haproxy_port/"
}

peer_start() {
  PEER_DIR=$(mktemp -d "${TMPDIR:-/tmp}/wsgate-bench.XXXXXX")
  PEER_PID_LIST=()
  PEER_PROTOCOL=raw
  case $1 in
    wsgate) start_wsgate && PEER_URL+=ws ;;
    wsgate-sio) start_wsgate && PEER_PROTOCOL=socketio ;;
    node-ws)
      start_node "$BENCH_ROOT/tests/peers/node-ws" server.js || return 1
      PEER_PIDS=$NODE_PID
      PEER_URL="ws://127.0.0.1:$NODE_PORT/"
      ;;
    classic) start_classic && PEER_PROTOCOL=socketio ;;
    nchan)
      start_nginx "$BENCH_ROOT/tests/peers/nchan/nginx.conf.in" || return 1
      # The master and its two workers: the workers do the work.
      PEER_PIDS=$NGINX_PID
      PEER_URL="ws://127.0.0.1:$NGINX_PORT/ws/main"
      ;;
    *)
      echo "bench: unknown peer $1 (wsgate, wsgate-sio, classic, node-ws, nchan)" >&2
      return 1
      ;;
  esac
}

peer_stop() {
  local i pid
  # Last started first: the balancer, then nginx, then the app.
  for ((i = ${#PEER_PID_LIST[@]} - 1; i >= 0; i--)); do
    pid=${PEER_PID_LIST[i]}
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PEER_PID_LIST[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  PEER_PID_LIST=()
  if [ -n "$PEER_DIR" ]; then
    if [ "${BENCH_KEEP_LOGS:-0}" = 1 ]; then
      echo "bench: logs kept in $PEER_DIR" >&2
    else
      rm -rf "$PEER_DIR"
    fi
  fi
  PEER_DIR=""
}
