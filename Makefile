# The two commands of the README: `make run` and `make test`. Everything else is their set-up.
VENV ?= .venv
PYTHON ?= python3

.PHONY: run test lint bench clean

$(VENV)/.run: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e .
	touch $@

$(VENV)/.test: $(VENV)/.run
	$(VENV)/bin/pip install --quiet -e '.[test,postgres]'
	touch $@

run: $(VENV)/.run
	$(VENV)/bin/loops-bridge serve

test: $(VENV)/.test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest

bench: $(VENV)/.test
	$(VENV)/bin/python bench/ingest.py

clean:
	rm -rf $(VENV) data .pytest_cache
