# Both entry points bootstrap .venv themselves; re-running is cheap (a stamp file
# remembers the install until pyproject.toml changes).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.toolgate-installed

.PHONY: run test fuzz bench-rules clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m scripts.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The property-based fuzz tests with many more examples (the regular suite runs 200 each).
FUZZ_EXAMPLES ?= 20000
fuzz: $(STAMP)
	TOOLGATE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_fuzz_protocols.py

bench-rules: $(STAMP)
	$(BIN)/python scripts/bench_rules.py

clean:
	rm -rf $(VENV) .toolgate build *.egg-info
