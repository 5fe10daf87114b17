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
	$(BIN)/python -m pytest

matrix: $(STAMP)
	$(BIN)/heartmon matrix

bench: $(STAMP)
	$(BIN)/python benchmarks/detector.py
	$(BIN)/python benchmarks/pipeline.py
	$(BIN)/python benchmarks/tui.py

screenshots: $(STAMP)
	$(BIN)/python screenshots/generate.py

clean:
	rm -rf $(VENV) build *.egg-info
