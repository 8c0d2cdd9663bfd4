# Fuzzing (included by the top-level Makefile): `make fuzz` runs every cargo-fuzz target in
# fuzz/ for FUZZ_SECONDS each, starting from the seed corpus in fuzz/corpus/<target>/.
# Needs a nightly toolchain (cargo-fuzz builds with sanitizers); installs cargo-fuzz if missing.
CARGO ?= cargo
FUZZ_SECONDS ?= 60

.PHONY: fuzz
fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	@rustup run nightly rustc --version >/dev/null 2>&1 || { echo "fuzz: needs a nightly toolchain (rustup toolchain install nightly)" >&2; exit 1; }
	@for target in $$($(CARGO) +nightly fuzz list); do \
		echo "fuzz: $$target for $(FUZZ_SECONDS)s"; \
		$(CARGO) +nightly fuzz run $$target -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done
