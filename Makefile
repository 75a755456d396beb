# cnnlib: the two commands are `make report` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
export CNNLIB_DATA ?= $(CURDIR)/data

.PHONY: setup test report lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3
	touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest

report: setup
	$(PY) -m cnnlib report

lint: setup
	$(PY) -m ruff check cnnlib tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
