# The two commands of the README: `make demo` (the main job) and `make test`.
# Both create the virtual environment when it is missing and always run the full install,
# so a missing install step fails here rather than on a user's machine.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python

.PHONY: install demo test bench-eval

install:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[test,bench]'

demo: install
	$(VENV)/bin/ahcl demo

test: install
	AHCL_PROGRESS=0 $(PY) -m pytest -q

bench-eval: install
	$(PY) benchmarks/bench_eval.py
