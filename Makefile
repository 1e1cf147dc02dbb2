# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create the virtualenv in .venv on first use and reinstall when pyproject.toml changes.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench clean

# PyTorch for the tests of PyTorch models, only as a CPU-only build (PyPI's wheel brings
# gigabytes of CUDA libraries): where pip finds none, those tests skip with a one-line reason.
TORCH_CPU ?= torch==2.13.0+cpu

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m pip install --quiet '$(TORCH_CPU)' 2>/dev/null \
	  || echo "no CPU-only PyTorch build ($(TORCH_CPU)) to be had here: the tests of PyTorch models will skip"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/labelstitch demo

# The suite runs on TEST_WORKERS processes (pytest-xdist), each test file on one worker so that
# its module fixtures are made once; the tests marked `serial` (real processes timed against
# signals and kills) run alone afterwards, on an idle machine. Both parts run; either failing fails.
TEST_WORKERS ?= 2

test: $(STAMP)
	status=0; \
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not serial" || status=$$?; \
	$(PY) -m pytest -q -m serial || status=$$?; \
	exit $$status

bench: $(STAMP)
	$(PY) benchmarks/bench_core.py

clean:
	rm -rf $(VENV) build .pytest_cache .hypothesis
