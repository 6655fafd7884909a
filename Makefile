# Two commands for a fresh machine (Python 3.11): `make reproduce` and `make test`.
PYTHON ?= python3.11
SHELL  := /bin/bash
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0

.PHONY: reproduce reproduce-quick test nbtest pytest check-sync export clean-nbs kernel docs browser clean

$(BIN)/activate:
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# runtime install: CPU torch pinned first, then the package (editable: the notebooks are the source)
$(VENV)/.installed: $(BIN)/activate settings.ini setup.py
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e .
	touch $@

# dev install: test tools and the docs toolchain (Sphinx, MyST-NB, a local MathJax), into .venv only
$(VENV)/.installed-dev: $(VENV)/.installed settings.ini
	$(BIN)/pip install -q -e '.[dev,docs]'
	$(BIN)/pip check
	touch $@

## the Jupyter kernel "dpmed" (Python of .venv) that the notebooks name, registered inside .venv (found by
## .venv/bin/jupyter and papermill); for a Jupyter outside .venv: python -m ipykernel install --user --name dpmed
KERNEL_JSON := $(VENV)/share/jupyter/kernels/dpmed/kernel.json
$(KERNEL_JSON): $(VENV)/.installed
	$(BIN)/python -m ipykernel install --sys-prefix --name dpmed --display-name "Python (dpmed)" >/dev/null

kernel: $(KERNEL_JSON)

## the default study (phantoms with and without public pretraining, the embedded real sets):
## runs/reproduce/results.csv, figures/, and README's result tables (included from figures/*.md)
reproduce: $(VENV)/.installed kernel
	$(BIN)/dpmed reproduce --out runs/reproduce --figures figures
	$(BIN)/python tools/render_readme.py

reproduce-quick: $(VENV)/.installed
	$(BIN)/dpmed reproduce --quick --out runs/quick --figures runs/quick/figures

## kernel and browser set up, notebooks and package in sync, notebooks clean, notebook tests, the docs site, pytest
test: $(VENV)/.installed-dev kernel browser check-sync nbtest docs pytest

check-sync: $(VENV)/.installed-dev
	@snap() { find dpmed nbs -type f \( -name '*.py' -o -name '*.ipynb' \) -not -path '*/.ipynb_checkpoints/*' -exec md5sum {} + | sort; }; \
	before="$$(snap)"; $(BIN)/nbdev_export && $(BIN)/nbdev_clean; after="$$(snap)"; \
	if [ "$$before" != "$$after" ]; then \
	  echo "nbdev_export/nbdev_clean changed these files: notebooks and package were out of sync or unclean."; \
	  echo "Run 'make export' and commit the result."; diff <(echo "$$before") <(echo "$$after"); exit 1; fi

nbtest: $(VENV)/.installed-dev
	$(BIN)/nbdev_test --n_workers 2 --timing

## two workers (the CI machine's two cores), a test file per worker so module fixtures run once; 20 -> 14 min
PYTEST_WORKERS ?= 2
pytest: $(VENV)/.installed-dev
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadfile --durations=10 tests

export: $(VENV)/.installed-dev
	$(BIN)/nbdev_export
	$(BIN)/nbdev_clean
	$(BIN)/python tools/render_readme.py

## documentation site in _docs/ (Sphinx + MyST-NB from .venv, offline; docs/build.py stages the notebooks in
## _proc/docs): installs nothing into the active environment and changes no tracked file
docs: $(VENV)/.installed-dev
	$(BIN)/python docs/build.py -q

## headless Chromium for the docs test (tests/test_docs.py), from Debian when missing
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "the docs test needs Chromium: apt-get install chromium (as root)"; exit 1; fi; }

clean:
	rm -rf runs/quick _docs _proc
