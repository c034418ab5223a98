# Set-up is part of every target: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.attnflow-installed
TORCH  ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install test lint demo bench clean

install: $(STAMP)

# torch first, explicitly (override TORCH= for another build), so nothing pulls an unwanted multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

test: $(STAMP)
	$(VENV)/bin/ruff check attnflow tests benchmarks docs
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check attnflow tests benchmarks docs

demo: $(STAMP)
	$(VENV)/bin/attnflow demo

# The demo preset's training and sampling speed per attention kind, then the attention layers alone.
bench: $(STAMP)
	$(VENV)/bin/attnflow bench --preset mnist
	$(PY) benchmarks/layers.py

clean:
	rm -rf $(VENV) runs .pytest_cache
