# tf-cme: the two commands (`make demo`, `make test`) work on a fresh clone with
# nothing installed: they create .venv and install the package with constraints.txt.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
EXTRAS := test,bench
export TF_CPP_MIN_LOG_LEVEL ?= 3
export PYTHONUNBUFFERED := 1

.PHONY: demo test bench clean install

install: $(STAMP)

$(STAMP): setup.py constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[$(EXTRAS)]"
	@touch $(STAMP)

## make demo: the whole pipeline on the generated demo corpus, under runs/demo/
demo: $(STAMP)
	$(PY) scripts/demo.py --out runs/demo

## make test: the test suite (every extra the tests use is installed)
test: $(STAMP)
	$(PY) -m pytest -q tests

## make bench: every data-moving stage side by side with its peer; writes bench.json
bench: $(STAMP)
	$(PY) scripts/bench.py --out bench.json

clean:
	rm -rf runs/demo bench.json .pytest_cache build *.egg-info
	find . -name __pycache__ -prune -exec rm -rf {} +
