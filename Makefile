# Two entry points: `make demo` (set up + run the pipeline on the built-in Pythia jets)
# and `make test` (set up + run the test suite). Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
# The CPU wheel; on a GPU machine use e.g. `make TORCH=torch demo` to get the CUDA build.
TORCH ?= torch==2.13.0
EXTRAS ?= test,onnx,slurm,triton
CORES ?= all

.PHONY: venv demo test gpu-check gpu-wheels clean

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

# On a GPU node: every `gpu` test, the loader benchmark on cuda and the tiny workflow on cpu + cuda
# (tests/gpu_check.py). Runs with .venv's Python if there is one, else $(PYTHON) as it is: a GPU
# image's own CUDA build of torch is used and nothing is installed. Scratch: GPU_CHECK_DIR (./gpu-check).
GPU_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))

gpu-check:
	$(GPU_PYTHON) tests/gpu_check.py

# For a GPU node with no package index: wheels (into ./.whl) of what salt needs beyond the node's own
# distributions (HAVE: `pip list --format=freeze` there; default tests/data/gpu_image_packages.txt),
# for its Python (NODE_PYTHON). Run where PyPI is reachable; carry .whl to the node; `make gpu-check`.
NODE_PYTHON ?= 3.12
gpu-wheels: venv
	$(BIN)/python tests/gpu_wheels.py --python-version $(NODE_PYTHON) $(if $(HAVE),--have $(HAVE))

clean:
	rm -rf results logs .snakemake
