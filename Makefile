# wsgate: `make run` starts the gateway with embedded defaults; `make test` installs what the
# tests need when it is missing and runs them all. See README.md.
SHELL := /bin/bash
CARGO ?= cargo
# haproxy, nginx and ip live in /usr/sbin, which a non-login root shell may not have on PATH.
export PATH := $(PATH):/usr/local/sbin:/usr/sbin:/sbin

.PHONY: all run build release test check fmt clippy layers socketio-client
all: aarch64 x86_64

run:
	$(CARGO) run --release --bin wsgate

build:
	$(CARGO) build --bins

release:
	$(CARGO) build --release --bins

check: fmt clippy layers

# The layer rule of src/lib.rs (tests/layers.rs): no import points up, no module cycle.
layers:
	$(CARGO) test --quiet --test layers

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --all-targets -- -D warnings

test: check test-deps
	$(CARGO) test --all-targets
	$(MAKE) size-check qemu-smoke pkg-check

# The Socket.IO client bundle a classic page loads from `/socket.io/socket.io.js` (the Node
# server used to serve it), fetched from npm into SITE, next to your index.html:
#   make socketio-client SITE=site && wsgate --static site
SITE ?= site
SOCKETIO_CLIENT_VERSION ?= 4.8.4
socketio-client:
	@command -v npm >/dev/null || { echo "socketio-client: needs npm" >&2; exit 1; }
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	  (cd "$$tmp" && npm pack --silent socket.io-client@$(SOCKETIO_CLIENT_VERSION) >/dev/null && \
	   tar xzf socket.io-client-$(SOCKETIO_CLIENT_VERSION).tgz) && \
	  mkdir -p '$(SITE)/socket.io' && \
	  for f in socket.io.js socket.io.js.map socket.io.min.js socket.io.min.js.map; do \
	    cp "$$tmp/package/dist/$$f" '$(SITE)/socket.io/'; \
	  done && \
	  echo "socketio-client: socket.io-client $(SOCKETIO_CLIENT_VERSION) in $(SITE)/socket.io/"

# Per-area targets live beside their code.
-include tests/deps.mk
-include cross/cross.mk
-include fuzz/fuzz.mk
-include tests/bench.mk
