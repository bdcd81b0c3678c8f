# tf-cme: the two commands (`make demo`, `make test`) work on a fresh clone with
# nothing installed: they create .venv and install the package with constraints.txt
# (TensorFlow 2.17.1). `make demo` installs only what the demo runs (the `demo` extra: no
# torch, no jax); `make test` adds every extra the tests use (test, bench, tfio) to the
# same .venv. `make test-tf221` runs the suite again on the newest tested TensorFlow
# (2.21, constraints-tf221.txt, no tensorflow-io) in .venv-tf221.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP_DEMO := $(VENV)/.installed-demo
STAMP_TEST := $(VENV)/.installed-test
EXTRAS_DEMO := demo
EXTRAS_TEST := test,bench,tfio
VENV221  := .venv-tf221
PY221    := $(VENV221)/bin/python
STAMP221 := $(VENV221)/.installed
EXTRAS221 := test,bench
export TF_CPP_MIN_LOG_LEVEL ?= 3
export PYTHONUNBUFFERED := 1
# a test skipped for a missing Python package fails instead (tests/conftest.py); -rs
# lists every other skip with its reason
# TEST_WORKERS: pytest-xdist processes (a test file stays in one, so its module fixtures
# are built once); 0 runs in this process, serially
TEST_WORKERS ?= 2
PYTEST := -m pytest -q -rs --durations=25 -n $(TEST_WORKERS) --dist loadfile -m "not slow" tests
PYTEST_SLOW := -m pytest -q -rs -m slow tests
export TF_CME_STRICT_SKIPS := 1

.PHONY: demo test test-slow test-tf221 bench clean install

install: $(STAMP_TEST)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# the test install is a superset of the demo's, so it stamps both
$(STAMP_TEST): pyproject.toml setup.py constraints.txt | $(VENV)/bin/python
	$(PY) -m pip install --quiet -c constraints.txt -e ".[$(EXTRAS_TEST)]"
	@touch $(STAMP_TEST) $(STAMP_DEMO)

$(STAMP_DEMO): pyproject.toml setup.py constraints.txt | $(VENV)/bin/python
	$(PY) -m pip install --quiet -c constraints.txt -e ".[$(EXTRAS_DEMO)]"
	@touch $(STAMP_DEMO)

$(STAMP221): pyproject.toml setup.py constraints-tf221.txt
	@test -x $(PY221) || $(PYTHON) -m venv $(VENV221)
	$(PY221) -m pip install --quiet --upgrade pip
	$(PY221) -m pip install --quiet -c constraints-tf221.txt -e ".[$(EXTRAS221)]"
	@touch $(STAMP221)

## make demo: the whole pipeline on the generated demo corpus, under runs/demo/
demo: $(STAMP_DEMO)
	$(PY) scripts/demo.py --out runs/demo

## make test: the test suite on the pinned stack (every extra the tests use is installed)
test: $(STAMP_TEST)
	$(PY) $(PYTEST)

## make test-slow: the multi-process distribution tests (minutes each) that make test leaves out
test-slow: $(STAMP_TEST)
	$(PY) $(PYTEST_SLOW)

## make test-tf221: the same suite on TensorFlow 2.21 (.venv-tf221, without tensorflow-io)
test-tf221: $(STAMP221)
	$(PY221) $(PYTEST)

## make bench: every data-moving stage side by side with its peer; writes bench.json
bench: $(STAMP_TEST)
	$(PY) scripts/bench.py --out bench.json

clean:
	rm -rf runs/demo bench.json .pytest_cache build *.egg-info
	find . -name __pycache__ -prune -exec rm -rf {} +
