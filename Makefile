# SeqLab: `make repro` runs the pipeline, `make test` the tests; both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Where torch comes from; e.g. TORCH_INDEX=https://download.pytorch.org/whl/cpu on a machine without a GPU.
TORCH_INDEX ?=

.PHONY: setup repro test ui

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

repro: setup
	. $(BIN)/activate && dvc repro

test: setup
	. $(BIN)/activate && python -m pytest

ui: setup
	. $(BIN)/activate && seqlab ui --port 5000
