# The README's two commands. Each creates .venv on first use and reuses it after.
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install torch==2.13.0 -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/evoflow demo
	$(VENV)/bin/evoflow verify

test: $(STAMP)
	HYPOTHESIS_PROFILE=ci $(PY) -m pytest -q -n 2 proofs tests
	$(VENV)/bin/ruff check .

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) -m bench.bench_solve
	$(PY) -m bench.bench_batching
	$(PY) -m bench.bench_estimators

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
