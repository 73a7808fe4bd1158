# Both entry points bootstrap .venv themselves; re-running is cheap (a stamp file
# remembers the install until pyproject.toml changes).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.toolgate-installed

.PHONY: run test fuzz soak bench-rules clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m toolgate.scripts.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The property-based fuzz tests with many more examples (the regular suite runs 200 each).
FUZZ_EXAMPLES ?= 20000
fuzz: $(STAMP)
	TOOLGATE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q -p no:cacheprovider tests/rules/test_rules_protocols_fuzz.py

# The load and soak run: every call checked, recorded exactly once, memory and throughput
# reported (the regular suite runs a reduced one: tests/e2e/test_soak_e2e.py).
SOAK_CALLS ?= 10000
SOAK_CONCURRENCY ?= 50
soak: $(STAMP)
	$(BIN)/python scripts/soak.py --calls $(SOAK_CALLS) --concurrency $(SOAK_CONCURRENCY)

bench-rules: $(STAMP)
	$(BIN)/python scripts/bench_rules.py

clean:
	rm -rf $(VENV) .toolgate build *.egg-info
