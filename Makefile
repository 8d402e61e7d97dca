# The two set-up commands of the README: `make study` and `make test`. Each creates .venv if it is
# missing and installs the project into it. `make study` also renders every preset's
# figures/<preset>/findings.md and the README's findings block (python -m interp.findings). torch
# is installed first,
# pinned: a GPU user overrides it, e.g. `make study TORCH="torch==2.13.0 --index-url <your CUDA wheel index>"`.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PRESET ?= default
OUT ?= study_out
JOBS ?= 2

.PHONY: install study test check format figures bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# pip's default byte-compiles every installed file (transformers alone is thousands), which
# takes longer than the rest of the install; --no-compile skips it and the last step compiles
# only what the kit imports (about 70 s saved on 2 cores).
PIP := $(BIN)/pip install --quiet --no-compile --disable-pip-version-check
PRECOMPILE := import importlib, pkgutil, interp; \
	[importlib.import_module(m.name) for m in pkgutil.walk_packages(interp.__path__, "interp.") \
	 if not m.name.endswith("__main__")]; \
	import pytest, sklearn.linear_model, submitit, nbclient, nbformat, ipykernel.kernelapp

$(STAMP): pyproject.toml | $(BIN)/python
	$(PIP) $(TORCH)
	$(PIP) -e ".[dev]"
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -c '$(PRECOMPILE)'
	touch $(STAMP)

install: $(STAMP)

# The default study writes figures/; every other preset writes figures/<preset>/ (tiny too: a
# smoke run never overwrites the committed figures), as interp.plan.Preset.figures_dir says.
FIGDIR = $(if $(filter $(PRESET),default),figures,figures/$(PRESET))

study: $(STAMP)
	$(BIN)/interp study --preset $(PRESET) --out $(OUT) --jobs $(JOBS) --figures-dir $(FIGDIR)
	$(BIN)/python -m interp.findings figures README.md

test: $(STAMP)
	$(BIN)/python -m pytest

check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy interp
	$(BIN)/python -m pytest -m provenance tests/test_findings.py

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

figures: $(STAMP)
	$(BIN)/python experiments/plot.py --study $(OUT) --figures-dir figures

# Each benchmark measures its ratios inside one command against its own reference (patching,
# training at both presets, threads alone and two at once, the scaling table, the default
# study's time and peak memory); bench_all.py runs them in turn and ends with a summary of the
# numbers. The thread benchmark starts its trainings with a clean thread environment itself.
bench: $(STAMP)
	$(BIN)/python experiments/bench_all.py --jobs $(JOBS)

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
