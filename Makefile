# Two entry points: `make demo` (set up + run the pipeline on the built-in Pythia jets)
# and `make test` (set up + run the test suite). Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
# The CPU wheel; on a GPU machine use e.g. `make TORCH=torch demo` to get the CUDA build.
TORCH ?= torch==2.13.0
EXTRAS ?= test,onnx,slurm,triton
CORES ?= all

.PHONY: venv demo test clean

$(BIN)/salt: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

venv: $(BIN)/salt

# Rules call `salt <stage>`, so the environment's bin goes first on PATH.
demo: venv
	PATH="$(BIN):$$PATH" snakemake -c $(CORES)

test: venv
	PATH="$(BIN):$$PATH" python -m pytest

clean:
	rm -rf results logs .snakemake
