# cnnlib: the two commands are `make report` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
export CNNLIB_DATA ?= $(CURDIR)/data
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup test report refresh lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3
	touch $@

setup: $(VENV)/.installed

NBVAL := --nbval-current-env -p no:cacheprovider notebooks

# 1. the import contracts (make lint's); 2. unit tests; 3. every notebook against its stored outputs (strict, from
# a copy of the committed results; figures go to a temporary folder); 4. every notebook from scratch in the smoke
# profile: the command line trains the seed-0 runs the notebooks need (the original report's models, the
# controlled and the degradation family) into a temporary folder, then the notebooks read them (lax): rendering
# never trains. No pass reads or writes the user's results, checkpoints, weights or figures, so a run the user
# trained never changes an outcome; the engine checks stay in the temporary folder too: the user's cache holds
# the checks whose rates the training plan's estimates read.
SMOKE_MODELS = $$($(PY) -m cnnlib list | awk '$$1 != "depth" { for (i = 2; i <= NF; i++) print $$i }')

test: setup
	$(VENV)/bin/lint-imports
	$(PY) -m pytest --durations=15 tests
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && export CNNLIB_ENGINE_CACHE=$$tmp/engine.json && \
	$(PY) tests/committed.py $$tmp/committed && \
	CNNLIB_RESULTS=$$tmp/committed CNNLIB_CHECKPOINTS=$$tmp/checkpoints CNNLIB_WEIGHTS=$$tmp/weights \
	CNNLIB_FIGURES=$$tmp/figures $(PY) -m pytest --nbval --nbval-sanitize-with tests/nbval_sanitize.cfg $(NBVAL) && \
	export CNNLIB_RESULTS=$$tmp/results CNNLIB_CHECKPOINTS=$$tmp/checkpoints CNNLIB_WEIGHTS=$$tmp/weights && \
	$(PY) -m cnnlib train $(SMOKE_MODELS) --profile smoke && \
	CNNLIB_PROFILE=smoke CNNLIB_FIGURES=$$tmp/smoke-figures $(PY) -m pytest --nbval-lax $(NBVAL)

# the HTML report in report/ (the committed notebooks stay as they are)
report: setup
	$(PY) -m cnnlib report

# after new runs land: re-execute the notebooks and save them over the committed ones
refresh: setup
	$(PY) -m cnnlib report --in-place
	$(PY) -m cnnlib readme

# ruff, and the import contracts of pyproject.toml: layers that point one way, no torch under the verdicts
lint: setup
	$(PY) -m ruff check cnnlib tests benchmarks
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) build *.egg-info
