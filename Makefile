# Two commands for a fresh machine: `make run` and `make test`.
# Both create .venv on first use and reinstall when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test matrix bench screenshots clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("heartmon needs Python >= 3.11" if sys.version_info < (3, 11) else 0)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/heartmon

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python tools/typecheck.py
	sh tools/install_browser.sh  # the browser tests/integration/test_serve.py drives
	$(BIN)/python -m pytest

matrix: $(STAMP)
	$(BIN)/heartmon matrix

# About a quarter of an hour on 2 cores. Each benchmark repeats itself (RUNS) and prints the
# median and spread with the machine's load; e.g. `make bench RUNS=5 TUI_SECONDS=30 BURN=0`.
RUNS ?= 3
PAIRS ?= 5
TUI_SECONDS ?= 15
BURN ?= 1
bench: $(STAMP)
	$(BIN)/python benchmarks/capture.py --runs $(RUNS)
	$(BIN)/python benchmarks/detector.py --runs $(RUNS)
	$(BIN)/python benchmarks/pipeline.py --pairs $(PAIRS)
	$(BIN)/python benchmarks/deadlines.py --runs $(RUNS)
	$(BIN)/python benchmarks/tui.py --workers 1000 --rate 10 --seconds $(TUI_SECONDS) --runs $(RUNS) --burn $(BURN)
	$(BIN)/python benchmarks/tui.py --workers 10000 --rate 1 --seconds $(TUI_SECONDS) --runs $(RUNS) --burn $(BURN)
	$(BIN)/python benchmarks/tui.py --idle --workers 1000,10000 --seconds 10 --runs $(RUNS)
	$(BIN)/python benchmarks/hub_abuse.py
	$(BIN)/python benchmarks/systems.py --runs $(RUNS)
	$(BIN)/python benchmarks/nats_scale.py --runs $(RUNS)

screenshots: $(STAMP)
	$(BIN)/python screenshots/generate.py

clean:
	rm -rf $(VENV) build *.egg-info
