# Both entry points bootstrap .venv themselves; re-running is cheap (a stamp file
# remembers the install until pyproject.toml changes). The install builds the Rust core
# (core/, needs cargo); after a change to its sources only the crate is rebuilt (`make core`).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.toolgate-installed
CORE   := rules/_core.abi
CORE_SOURCES := core/Cargo.toml core/Cargo.lock $(wildcard core/src/*.rs core/src/*/*.rs)

.PHONY: run test system-deps core lint fuzz soak bench-rules clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $(STAMP) $(CORE)

# The extension module, rebuilt in place when the crate changes (what the install would do,
# without reinstalling everything); replaced by a rename, so a running gateway keeps its copy.
# (The install builds it too and marks it done: a fresh clone compiles the crate once.)
$(CORE): $(CORE_SOURCES)
	PYO3_PYTHON=$(abspath $(BIN)/python) cargo build --quiet --release --locked --lib --manifest-path core/Cargo.toml
	cp core/target/release/lib_core.so rules/.core.so.new
	mv rules/.core.so.new rules/_core$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
	@touch $(CORE)

core: $(STAMP) $(CORE)

# The crate's lints (make test checks its formatting and runs its tests).
lint: $(STAMP) $(CORE)
	cargo fmt --manifest-path core/Cargo.toml -- --check
	PYO3_PYTHON=$(abspath $(BIN)/python) cargo clippy --quiet --locked --all-targets --manifest-path core/Cargo.toml -- -D warnings

run: $(STAMP) $(CORE)
	$(BIN)/python -m toolgate.scripts.demo

# PostgreSQL's server and HAProxy for the fleet tests (tests/fleet), from Debian's packages:
# installed when missing (as root or with passwordless sudo), otherwise named and those tests skip.
system-deps:
	@scripts/system_deps.sh

test: system-deps $(STAMP) $(CORE)
	cargo fmt --manifest-path core/Cargo.toml -- --check
	PYO3_PYTHON=$(abspath $(BIN)/python) cargo test --quiet --locked --manifest-path core/Cargo.toml
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# The property-based fuzz tests with many more examples (the regular suite runs 200 each).
FUZZ_EXAMPLES ?= 20000
fuzz: $(STAMP) $(CORE)
	TOOLGATE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q -p no:cacheprovider tests/rules/test_rules_protocols_fuzz.py

# The load and soak run: every call checked, recorded exactly once, memory and throughput
# reported (the regular suite runs a reduced one: tests/e2e/test_soak_e2e.py).
SOAK_CALLS ?= 10000
SOAK_CONCURRENCY ?= 50
soak: $(STAMP) $(CORE)
	$(BIN)/python scripts/soak.py --calls $(SOAK_CALLS) --concurrency $(SOAK_CONCURRENCY)

bench-rules: $(STAMP) $(CORE)
	$(BIN)/python scripts/bench_rules.py

clean:
	rm -rf $(VENV) .toolgate build *.egg-info core/target rules/_core*.so rules/.core.so.new $(CORE)
