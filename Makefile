# Two commands for a fresh machine (Python 3.11): `make reproduce` and `make test`.
PYTHON ?= python3.11
SHELL  := /bin/bash
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0

.PHONY: reproduce reproduce-quick test nbtest pytest check-sync export clean-nbs kernel docs clean

$(BIN)/activate:
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# runtime install: CPU torch pinned first, then the package (editable: the notebooks are the source)
$(VENV)/.installed: $(BIN)/activate settings.ini setup.py
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed settings.ini
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip check
	touch $@

kernel: $(VENV)/.installed
	$(BIN)/python -m ipykernel install --user --name dpmed --display-name "Python (dpmed)" >/dev/null

## the default study on the embedded phantom data: runs/reproduce/results.csv and figures/
reproduce: $(VENV)/.installed kernel
	$(BIN)/dpmed reproduce --out runs/reproduce --figures figures

reproduce-quick: $(VENV)/.installed
	$(BIN)/dpmed reproduce --quick --out runs/quick --figures runs/quick/figures

## notebooks and package in sync, notebooks clean, notebook tests, pytest
test: $(VENV)/.installed-dev check-sync nbtest pytest

check-sync: $(VENV)/.installed-dev
	@snap() { find dpmed nbs -type f \( -name '*.py' -o -name '*.ipynb' \) -not -path '*/.ipynb_checkpoints/*' -exec md5sum {} + | sort; }; \
	before="$$(snap)"; $(BIN)/nbdev_export && $(BIN)/nbdev_clean; after="$$(snap)"; \
	if [ "$$before" != "$$after" ]; then \
	  echo "nbdev_export/nbdev_clean changed these files: notebooks and package were out of sync or unclean."; \
	  echo "Run 'make export' and commit the result."; diff <(echo "$$before") <(echo "$$after"); exit 1; fi

nbtest: $(VENV)/.installed-dev
	$(BIN)/nbdev_test --n_workers 2 --timing

pytest: $(VENV)/.installed-dev
	$(BIN)/pytest -q tests

export: $(VENV)/.installed-dev
	$(BIN)/nbdev_export
	$(BIN)/nbdev_clean
	$(BIN)/python tools/render_readme.py

## documentation site in _docs/ (quarto from PyPI's quarto-cli, whose build downloads the quarto binary from
## GitHub); the committed figures/ are copied next to the notebooks for the duration so the chapters show them
docs: $(VENV)/.installed-dev
	$(BIN)/pip install -q quarto-cli
	rm -rf nbs/figures && cp -r figures nbs/figures
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/nbdev_docs; status=$$?; rm -rf nbs/figures; exit $$status

clean:
	rm -rf runs/quick _docs _proc
