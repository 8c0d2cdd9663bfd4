# wsgate: `make run` starts the gateway with embedded defaults; `make test` installs what the
# tests need when it is missing and runs them all. See README.md.
SHELL := /bin/bash
CARGO ?= cargo
# haproxy, nginx and ip live in /usr/sbin, which a non-login root shell may not have on PATH.
export PATH := $(PATH):/usr/local/sbin:/usr/sbin:/sbin

.PHONY: all run build release test check fmt clippy
all: aarch64 x86_64

run:
	$(CARGO) run --release --bin wsgate

build:
	$(CARGO) build --bins

release:
	$(CARGO) build --release --bins

check: fmt clippy

fmt:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --all-targets -- -D warnings

test: check test-deps
	$(CARGO) test --all-targets
	$(MAKE) size-check qemu-smoke

# Per-area targets live beside their code.
-include tests/deps.mk
-include cross/cross.mk
-include fuzz/fuzz.mk
-include tests/bench.mk
