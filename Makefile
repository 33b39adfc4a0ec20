# Two commands for a fresh clone: `make run` trains configs/mnist_softmax.yaml,
# `make test` runs the whole test suite. Both build the local venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench clean chaos

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall when the project's metadata changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# The optional extras too, so that the plot, TensorBoard and Ray tests run rather than skip.
$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,plot,tensorboard,ray]'
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/gdtrain run configs/mnist_softmax.yaml

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest
	$(BIN)/ruff check gdtrain tests

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check gdtrain tests

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# Speed table: gdtrain against a minimal NumPy loop and PyTorch CPU (benchmarks/bench.py;
# not part of `make test`). PyTorch is compared only when it imports; `make bench TORCH=1`
# installs the pinned CPU build first. BENCH_ARGS passes options, e.g. --reps 3 --threads 1.
TORCH ?= 0
BENCH_ARGS ?=
bench: $(VENV)/.installed
ifeq ($(TORCH),1)
	$(BIN)/python -m pip install --quiet torch==2.13.0
endif
	$(BIN)/python -m benchmarks.bench $(BENCH_ARGS)

# Kill -9 N real MNIST trainings at random moments, resume each until it finishes, and
# count how many end bit-identical to an uninterrupted run (scripts/chaos.py).
N ?= 50
chaos: $(VENV)/.installed
	$(BIN)/python scripts/chaos.py $(N)
