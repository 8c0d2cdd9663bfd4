# Test dependencies, installed only when missing, so `make test` works on a fresh machine.
# Debian packages: haproxy (the CLB/NLB stand-in), chromium (browser tests), rpm (rpmbuild
# for the packages) and systemd (systemd-analyze verify of the packaged unit),
# qemu-user-static (runs the aarch64 build), redis-server (the backplane tests), iproute2
# (`ip` for the half-open test's network namespace, `ss` for the slow-consumer test).
# npm: ws, socket.io-client, playwright-core (into tests/node). PyPI: websockets, and cfn-lint
# (the CloudFormation template's linter, whose decoder tests/clients/render_stack.py uses).

APT_GET := DEBIAN_FRONTEND=noninteractive apt-get
NODE_DIR := tests/node
CLASSIC_APP := tests/peers/socketio-chat

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
	command -v ss >/dev/null || missing="$$missing iproute2"; \
	command -v rpmbuild >/dev/null || missing="$$missing rpm"; \
	command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(APT_GET) update -qq && $(APT_GET) install -y -qq $$missing >/dev/null; \
	fi

node-deps: $(NODE_DIR)/node_modules/.installed $(CLASSIC_APP)/node_modules/.installed
$(NODE_DIR)/node_modules/.installed: $(NODE_DIR)/package.json
	cd $(NODE_DIR) && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-audit --no-fund --silent
	touch $@

# The classic chat app (express + socket.io), unchanged, behind `--upstream`; versions pinned by
# its package-lock.json.
$(CLASSIC_APP)/node_modules/.installed: $(CLASSIC_APP)/package-lock.json
	npm ci --prefix $(CLASSIC_APP) --no-audit --no-fund --silent
	touch $@

# Whichever python3 is first on PATH: a pyenv one takes a plain pip install; Debian's own is
# "externally managed" (PEP 668) and may lack pip, so it gets python3-pip and an explicit
# --break-system-packages (a test machine's system Python, root only).
PY_WEBSOCKETS := 'websockets>=13,<18'
PY_CFN_LINT := 'cfn-lint>=1.20,<2'
py-deps:
	@python3 -c 'import websockets' 2>/dev/null || { \
	  python3 -m pip --version >/dev/null 2>&1 || \
	    { $(APT_GET) update -qq && $(APT_GET) install -y -qq python3-pip >/dev/null; }; \
	  python3 -m pip install --quiet $(PY_WEBSOCKETS) 2>/dev/null || \
	    python3 -m pip install --quiet --break-system-packages $(PY_WEBSOCKETS); \
	}
	@{ command -v cfn-lint >/dev/null && python3 -c 'import cfnlint' 2>/dev/null; } || { \
	  python3 -m pip install --quiet $(PY_CFN_LINT) 2>/dev/null || \
	    python3 -m pip install --quiet --break-system-packages $(PY_CFN_LINT); \
	}
