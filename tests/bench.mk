# tests/bench.mk: measure wsgate with wsgate-load on this machine. Included by the top Makefile,
# so every path here is relative to the repository root. See tests/bench/run.sh for the scenarios.
#
#   make bench           wsgate alone: idle 10,000, fanout 100 msg/s, fanout rate ladder;
#                        prints a table, writes target/bench/<peer>-<scenario>.json, summary.json
#   make bench-compare   the same against wsgate (raw and Socket.IO), the classic stack
#                        (HAProxy send-proxy -> nginx proxy_protocol -> Node socket.io chat) and
#                        a Node `ws` server, in one run; adds compare.json and compare.md
#   make bench-proxy     wsgate --upstream against nginx in front of the same Node `ws` app:
#                        CPU per proxied message, KiB per idle proxied connection, added p99
#   make bench-polling   KiB per idle Socket.IO polling session (10,000 held), and the same
#                        sessions on the websocket transport for comparison
#   make bench-auth      handshake tokens off and on: connect rate and time, CPU per delivery
#   make bench-syscalls  syscalls per delivery at the everyday step (50 msg/s x 1,000
#                        subscribers), wsgate and nginx + Nchan side by side (perf stat)
#   make bench-everyday  server CPU per delivery and p99 at that step, wsgate and nginx + Nchan
#                        in BENCH_AB_ROUNDS (4) alternating rounds (tests/bench/ab.sh; other
#                        builds: tests/bench/ab.sh ROUNDS NAME=BINARY... nchan), and a chart
#   make bench-deps      what bench-compare needs, installed only when missing: haproxy, nginx,
#                        libnginx-mod-nchan, linux-perf, node + npm (Debian packages), and the
#                        peers' npm packages (npm ci)
#
# Knobs (environment or make variables): BENCH_OUT, BENCH_LADDER, BENCH_DURATION, BENCH_IDLE_CLIENTS,
# BENCH_MAX_P99_MS and the others at the top of tests/bench/run.sh.

BENCH_OUT ?= target/bench
# Messages per second over all 10 publishers; x1,010 members = deliveries per second offered.
# `bench` starts at ~100k deliveries/s; `bench-compare` starts lower, where the peers saturate.
# Steps of about x1.25, so a capacity is known to within 25%.
BENCH_LADDER ?= 100,125,160,200,250,320,400,500,630,800,1000,1250,1600,2000,2500,3200
BENCH_COMPARE_LADDER ?= 20,25,32,40,50,63,80,$(BENCH_LADDER)
BENCH_PEERS ?= wsgate wsgate-sio classic node-ws nchan
BENCH_APT_GET := DEBIAN_FRONTEND=noninteractive apt-get
# Root runs apt-get itself; anyone else goes through sudo.
BENCH_SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
BENCH_NODE_PEERS := tests/peers/node-ws tests/peers/socketio-chat

.PHONY: bench bench-compare bench-proxy bench-polling bench-auth bench-history bench-redis bench-syscalls bench-everyday bench-deps bench-apt-deps bench-release

bench-release:
	$(CARGO) build --release --bins

bench: bench-release
	BENCH_LADDER='$(BENCH_LADDER)' tests/bench/run.sh --out '$(BENCH_OUT)' wsgate

bench-compare: bench-release bench-deps
	BENCH_LADDER='$(BENCH_COMPARE_LADDER)' tests/bench/run.sh --compare --out '$(BENCH_OUT)' $(BENCH_PEERS)

# wsgate --upstream against nginx, each in front of the same Node `ws` app (tests/bench/proxy.sh).
bench-proxy: bench-release bench-deps
	BENCH_OUT='$(BENCH_OUT)' tests/bench/proxy.sh

# Memory per idle Socket.IO polling session (tests/bench/polling.sh).
bench-polling: bench-release
	BENCH_OUT='$(BENCH_OUT)' tests/bench/polling.sh

# Syscalls per delivery, wsgate against nginx + Nchan (tests/bench/syscalls.sh).
bench-syscalls: bench-release bench-deps
	BENCH_OUT='$(BENCH_OUT)' tests/bench/syscalls.sh

# CPU per delivery at the everyday step in alternating rounds with nginx + Nchan.
bench-everyday: bench-release bench-deps
	mkdir -p '$(BENCH_OUT)'
	tests/bench/ab.sh $(or $(BENCH_AB_ROUNDS),4) wsgate=target/release/wsgate nchan | tee '$(BENCH_OUT)/everyday-ab.txt'
	tests/bench/ab_chart.py '$(BENCH_OUT)/everyday-ab.txt' '$(BENCH_OUT)/everyday-cpu.svg' \
	  "50 msg/s x 1,000 subscribers: server CPU per delivery, alternating rounds"

# What the history holds per room at the defaults (tests/bench/history.sh).
bench-history: bench-release
	BENCH_OUT='$(BENCH_OUT)' tests/bench/history.sh

# What the shared order through Redis costs in latency (tests/bench/redis.sh).
bench-redis: bench-release
	BENCH_OUT='$(BENCH_OUT)' tests/bench/redis.sh

# What handshake tokens cost (tests/bench/auth.sh).
bench-auth: bench-release
	BENCH_OUT='$(BENCH_OUT)' tests/bench/auth.sh

bench-deps: bench-apt-deps $(addsuffix /node_modules/.bench-installed,$(BENCH_NODE_PEERS))

# One `apt-get update` at most, and only when something is missing.
bench-apt-deps:
	@missing=""; \
	command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || missing="$$missing haproxy"; \
	command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	[ -f /usr/lib/nginx/modules/ngx_nchan_module.so ] || missing="$$missing libnginx-mod-nchan"; \
	command -v perf >/dev/null || missing="$$missing linux-perf"; \
	command -v node >/dev/null || missing="$$missing nodejs"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	command -v python3 >/dev/null || missing="$$missing python3"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(BENCH_SUDO) $(BENCH_APT_GET) update -qq && \
	  $(BENCH_SUDO) $(BENCH_APT_GET) install -y -qq $$missing >/dev/null; \
	fi

# Versions pinned by each peer's package-lock.json.
tests/peers/%/node_modules/.bench-installed: tests/peers/%/package-lock.json | bench-apt-deps
	npm ci --prefix tests/peers/$* --no-audit --no-fund --silent
	touch $@
