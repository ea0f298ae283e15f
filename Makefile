# neurorad: `make demo` and `make test` each install everything they need on a fresh
# Debian 12 machine (root), then run. Re-running skips what is already installed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.neurorad-installed
DATA_STAMP := .data/.fetched
WEB_STAMP := web/node_modules/.neurorad-installed
PYTEST_ARGS ?=

.PHONY: install system-deps web demo test lint constraints clean

install: system-deps $(STAMP) $(DATA_STAMP) web

system-deps:
	bash scripts/install_system.sh

# torch==2.13.0 first: it pins the CPU build on local disk; anything later that wants torch
# sees it satisfied instead of pulling a multi-GB CUDA build.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	set -o pipefail; $(PIP) install -q --disable-pip-version-check torch==2.13.0 2>&1 | { grep -v "is ignored" || true; }
	set -o pipefail; $(PIP) install -q --disable-pip-version-check -c constraints.txt -e ".[dev]" 2>&1 | { grep -v "is ignored" || true; }
	# nnU-Net v2 without its declared dependencies (pyproject.toml's "nnunet" list says why)
	set -o pipefail; $(PIP) install -q --disable-pip-version-check --no-deps -c constraints.txt \
	  $$($(PY) -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['nnunet'])") \
	  2>&1 | { grep -v "is ignored" || true; }
	touch $@

$(DATA_STAMP): scripts/fetch_data.sh | $(STAMP)
	bash scripts/fetch_data.sh
	touch $@

web: $(STAMP)
	@if [ -f web/package.json ]; then \
	  if [ ! -f $(WEB_STAMP) ] || [ web/package-lock.json -nt $(WEB_STAMP) ]; then \
	    (cd web && npm ci --no-audit --no-fund) && touch $(WEB_STAMP); fi; \
	  (cd web && npm run --silent build); fi

demo: install
	$(VENV)/bin/neurorad demo --out demo_out

test: install
	bash scripts/run_tests.sh $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check neurorad tests bench

# Regenerate the pinned versions from the current venv (after adding a dependency).
constraints:
	$(PIP) freeze --exclude-editable | grep -v '^neurorad' | sed 's/+cpu$$//' > constraints.txt

clean:
	rm -rf $(VENV) .data web/node_modules demo_out
