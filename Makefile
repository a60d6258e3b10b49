# The README's commands. Each creates .venv if missing and installs (see scripts/install.sh).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test test-slow bench bench-quality lint install clean base
run: $(STAMP)
	$(VENV)/bin/sweep run sweeps/pricer.yaml

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile

# The long end-to-end runs `make test` leaves out (marked `slow`): SIGKILL/resume, model build, promotion.
test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow -n 2 --dist loadfile

# Figures printed and written to benchmarks/last.json (the previous run's kept as benchmarks/prev.json).
bench: $(STAMP)
	$(PY) -m benchmarks

# Time to a near-best config: harness vs HF hyperparameter_search, random search, a grid (~48 min, 2 cores).
bench-quality: $(STAMP)
	$(PY) -m benchmarks.quality

# ruff (lint + format) and mypy (settings in pyproject.toml: harness/, pydantic plugin).
lint: $(STAMP)
	$(VENV)/bin/ruff check harness tests benchmarks scripts
	$(VENV)/bin/ruff format --check harness tests benchmarks scripts
	$(VENV)/bin/mypy

install: $(STAMP)

# Rebuild the shipped builtin base (harness/builtin/tiny-llama-*; ~10 min on 2 cores). Bump its VERSION first.
base: $(STAMP)
	$(PY) -m harness.builtin.tiny_model

$(STAMP): pyproject.toml scripts/install.sh
	VENV=$(VENV) bash scripts/install.sh
	touch $(STAMP)

clean:
	rm -rf $(VENV) results
