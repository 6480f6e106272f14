# The two commands of the README: `make run` and `make test`. Everything else is their set-up.
VENV ?= .venv
PYTHON ?= python3

.PHONY: run test wheel smoke lint bench clean

$(VENV)/.run: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e .
	touch $@

$(VENV)/.test: $(VENV)/.run
	$(VENV)/bin/pip install --quiet -e '.[test,postgres]'
	touch $@

# A clone's bridge keeps its database where it always has, in ./data/ (unless
# BRIDGE_DATABASE_URL says otherwise); an installed one, in the user's data folder.
run: $(VENV)/.run
	BRIDGE_DATABASE_URL="$${BRIDGE_DATABASE_URL:-sqlite:///$(CURDIR)/data/bridge.db}" \
	  $(VENV)/bin/loops-bridge serve

# On every core (pytest-xdist, see pyproject.toml). Bytecode is written even where
# PYTHONDONTWRITEBYTECODE is set (as in many containers): else each worker and each
# `loops-bridge` process the tests start compiles the same modules again.
test: $(VENV)/.test
	$(VENV)/bin/ruff check .
	PYTHONDONTWRITEBYTECODE= $(VENV)/bin/pytest

# dist/loops_bridge-<version>-py3-none-any.whl: what `pip install`, pipx, uv and the
# Dockerfile install.
wheel: $(VENV)/.run
	rm -rf dist
	$(VENV)/bin/pip wheel --quiet --no-deps --wheel-dir dist .

# The wheel, installed into a fresh venv outside the checkout, serving one webhook (.ci/run).
smoke: $(VENV)/.run
	$(VENV)/bin/python .ci/smoke

bench: $(VENV)/.test
	$(VENV)/bin/python bench/ingest.py
	$(VENV)/bin/python bench/backfill.py

clean:
	rm -rf $(VENV) data .pytest_cache build dist *.egg-info
