# Two commands on a fresh machine: `make run` (the main job) and `make test`.
# Each creates the virtual environment and installs the pinned versions when needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: run tag test parity lint docs check-wheel

$(INSTALLED): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.[torch,dev,data,plot]'
	touch $(INSTALLED)

run: $(INSTALLED)  # the main job: train the text classifier on BBC News
	$(VENV)/bin/flaxseq train classify --overwrite

EWT ?= ../shared/data/ud-english-ewt
tag: $(INSTALLED)  # the tagger on UD English-EWT, passed explicitly (dev to train, test to test)
	$(VENV)/bin/flaxseq train tag --train $(EWT)/en_ewt-ud-dev.conllu --test $(EWT)/en_ewt-ud-test.conllu --overwrite

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .

test: lint docs  # the tests on every core (at most 4 workers, idle ones take queued tests), then the wheel outside the repository
	$(PY) -m pytest -q -n auto --maxprocesses 4 --dist worksteal
	$(MAKE) check-wheel

docs: $(INSTALLED)  # the API reference from the docstrings, warnings as errors: open build/docs/index.html
	$(PY) scripts/docs.py build/docs

check-wheel:  # the built wheel in a fresh environment without torch, run from outside the repository
	PYTHON=$(PYTHON) bash scripts/check_wheel.sh

parity: $(INSTALLED)  # the parity report: every layer, cell and model against PyTorch
	$(PY) -m parity
