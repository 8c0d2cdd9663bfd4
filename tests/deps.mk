# Test dependencies, installed only when missing, so `make test` works on a fresh machine.
# Debian packages: haproxy (the CLB/NLB stand-in), chromium (browser tests),
# qemu-user-static (runs the aarch64 build), redis-server (the backplane tests).
# npm: ws, socket.io-client, playwright-core (into tests/node). PyPI: websockets.

APT_GET := DEBIAN_FRONTEND=noninteractive apt-get
NODE_DIR := tests/node

.PHONY: test-deps apt-deps node-deps py-deps
test-deps: apt-deps node-deps py-deps

# One `apt-get update` at most, and only when something is missing.
apt-deps:
	@missing=""; \
	command -v haproxy >/dev/null || missing="$$missing haproxy"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v qemu-aarch64-static >/dev/null || missing="$$missing qemu-user-static"; \
	command -v node >/dev/null || missing="$$missing nodejs npm"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(APT_GET) update -qq && $(APT_GET) install -y -qq $$missing >/dev/null; \
	fi

node-deps: $(NODE_DIR)/node_modules/.installed
$(NODE_DIR)/node_modules/.installed: $(NODE_DIR)/package.json
	cd $(NODE_DIR) && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-audit --no-fund --silent
	touch $@

py-deps:
	@python3 -c 'import websockets' 2>/dev/null || python3 -m pip install --quiet 'websockets>=13,<18'
