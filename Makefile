# The README's two commands. Each creates .venv on first use and reuses it after.
# torch: the CPU pin is installed only when .venv has no torch yet, so a GPU build installed
# into .venv beforehand (see the README) is kept.
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH := torch==2.13.0

.PHONY: demo test lint bench experiments clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(VENV)/bin/pip install $(TORCH)
	$(VENV)/bin/pip install -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/evoflow demo

test: $(STAMP)
	HYPOTHESIS_PROFILE=ci $(PY) -m pytest -q -n 2 proofs tests
	$(PY) -m pytest -q -n 2 --nbmake notebooks
	$(VENV)/bin/ruff check .

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) -m bench.bench_solve
	$(PY) -m bench.bench_batching
	$(PY) -m bench.bench_estimators
	$(PY) -m bench.bench_edges
	$(PY) -m bench.bench_train
	$(PY) -m bench.bench_decode

experiments: $(STAMP)
	$(PY) -m experiments.e01_unified_elbo.run
	$(PY) -m experiments.e02_solvers_paths.run
	$(PY) -m experiments.e03_interpolation.run
	$(PY) -m experiments.e04_adaptive_decoding.run
	$(PY) -m experiments.e05_trained_decoding.run

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
