# cross/cross.mk: static musl builds (aarch64 for Graviton, x86_64), the 1 MiB size budget,
# the qemu smoke test of the aarch64 binary, and release tarballs. Included by the top Makefile,
# so every path here is relative to the repository root. See cross/README.md.
#
#   make aarch64 x86_64   build target/<triple>/release/{wsgate,...} (static, stripped)
#   make size             print the size in bytes of each binary
#   make size-check       fail when the aarch64 wsgate is over SIZE_BUDGET bytes
#   make qemu-smoke       run tests/smoke.rs against the aarch64 binary under qemu-aarch64-static
#   make dist             dist/wsgate-<version>-<triple>.tar.gz and .tar.gz.sha256 for both
#   make measure          sizes, and the x86_64 wsgate's RSS after start and with 1,000 idle clients

CROSS_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
AARCH64_TRIPLE := aarch64-unknown-linux-musl
X86_64_TRIPLE := x86_64-unknown-linux-musl
MUSL_TRIPLES := $(AARCH64_TRIPLE) $(X86_64_TRIPLE)
# Linker settings (rust-lld, +crt-static). Empty it to link with the target's default `cc`,
# e.g. `make aarch64 MUSL_CONFIG=` natively on a Graviton host without rust-lld.
MUSL_CONFIG ?= $(CROSS_DIR)/config.toml
# Where cargo puts its output; follows CARGO_TARGET_DIR when that is set.
CROSS_TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
# The aarch64 `wsgate` must stay at or below this many bytes (1 MiB), every feature on.
SIZE_BUDGET ?= 1048576
QEMU_AARCH64 ?= qemu-aarch64-static
DIST_DIR ?= dist
# Binaries that size and dist report or pack when the package has them (wsgate is required).
WSGATE_BINS ?= wsgate wsgate-load
# Package version, read from the [package] table of Cargo.toml.
WSGATE_VERSION = $(shell sed -n '/^\[package\]/,/^\[/s/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml)
# Root runs apt-get itself; anyone else goes through sudo.
CROSS_SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

musl_dir = $(CROSS_TARGET_DIR)/$(1)/release
AARCH64_BIN := $(call musl_dir,$(AARCH64_TRIPLE))/wsgate
X86_64_BIN := $(call musl_dir,$(X86_64_TRIPLE))/wsgate

# $(call musl_build,TRIPLE): add the rustup target when missing, then build every binary.
define musl_build
	@if command -v rustup >/dev/null; then \
	  rustup target list --installed | grep -qx '$(1)' || rustup target add '$(1)'; \
	fi
	$(CARGO) build --release --bins --target $(1) $(if $(MUSL_CONFIG),--config $(MUSL_CONFIG))
endef

.PHONY: aarch64 x86_64 size size-check qemu-user-static qemu-smoke dist measure

aarch64:
	$(call musl_build,$(AARCH64_TRIPLE))

x86_64:
	$(call musl_build,$(X86_64_TRIPLE))

size: aarch64 x86_64
	@for f in $(foreach t,$(MUSL_TRIPLES),$(addprefix $(call musl_dir,$(t))/,$(WSGATE_BINS))); do \
	  [ -f "$$f" ] || continue; \
	  printf '%10d bytes  %s\n' "$$(stat -c %s "$$f")" "$$f"; \
	done

size-check: aarch64
	@size=$$(stat -c %s '$(AARCH64_BIN)'); \
	if [ "$$size" -gt $(SIZE_BUDGET) ]; then \
	  echo "size-check: FAIL $(AARCH64_BIN) is $$size bytes, budget $(SIZE_BUDGET) bytes (over by $$((size - $(SIZE_BUDGET))))" >&2; \
	  exit 1; \
	fi; \
	echo "size-check: ok $(AARCH64_BIN) is $$size bytes, budget $(SIZE_BUDGET) bytes"

qemu-user-static:
	@command -v $(QEMU_AARCH64) >/dev/null || \
	  ($(CROSS_SUDO) apt-get update -qq && $(CROSS_SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static)

qemu-smoke: aarch64 qemu-user-static
	WSGATE_BIN=$(abspath $(AARCH64_BIN)) WSGATE_RUNNER=$(QEMU_AARCH64) $(CARGO) test --test smoke

dist: aarch64 x86_64
	@test -n '$(WSGATE_VERSION)' || { echo 'dist: no version in Cargo.toml [package]' >&2; exit 1; }
	WSGATE_BINS='$(WSGATE_BINS)' $(CROSS_DIR)/dist.sh '$(DIST_DIR)' '$(WSGATE_VERSION)' \
	  $(foreach t,$(MUSL_TRIPLES),'$(t)=$(call musl_dir,$(t))')

measure: aarch64 x86_64
	WSGATE_BINS='$(WSGATE_BINS)' $(CROSS_DIR)/measure.sh '$(CROSS_TARGET_DIR)'

# Packages (cross/pkg.sh): a .deb and an .rpm per architecture from the static builds, in
# $(DIST_DIR). `make deb` and `make rpm` build both formats (one script makes the pair).
.PHONY: packages deb rpm pkg-check pkg-deps
packages: aarch64 x86_64 pkg-deps
	@for t in aarch64 x86_64; do \
	  cross/pkg.sh $$t '$(CROSS_TARGET_DIR)/'$$t'-unknown-linux-musl/release/wsgate' '$(DIST_DIR)' || exit 1; \
	done
deb rpm: packages

# The packages as `make test` checks them: both architectures, inspected (tests/deploy.rs).
pkg-check: packages
	WSGATE_PKG_DIR='$(abspath $(DIST_DIR))' $(CARGO) test --test deploy

# dpkg-deb is Debian's own; rpmbuild and rpm come with the `rpm` package.
pkg-deps:
	@command -v rpmbuild >/dev/null || { $(CROSS_SUDO) $(APT_GET) update -qq && $(CROSS_SUDO) $(APT_GET) install -y -qq rpm >/dev/null; }
