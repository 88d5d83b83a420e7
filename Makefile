# Two entry points: `make demo` (set up + run the pipeline on the built-in Pythia jets)
# and `make test` (set up + run the test suite). Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
# The CPU wheel; on a GPU machine use e.g. `make TORCH=torch demo` to get the CUDA build.
TORCH ?= torch==2.13.0
EXTRAS ?= test,onnx,slurm,triton
CORES ?= all

.PHONY: venv demo test compat-test gpu-check gpu-wheels clean

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

# The version-sensitive tests (torch.compile, ONNX export, the Triton kernel in its interpreter, bf16,
# the CPU halves of the CUDA paths, checkpoint and resume) under a GPU image's torch 2.11 and Triton
# 3.6, in their own environment: PyPI's torch 2.11 is a CUDA build, which runs on a CPU (~4.6 GB).
# 2.11 failed on code that 2.13 runs: ONNX export of a parameter divided by a Python int, and
# torch.compile of a convolution whose bias is a view.
COMPAT_VENV ?= .venv-torch2.11
COMPAT_TESTS ?= tests/test_export.py tests/test_bench_sweep.py tests/test_bench_bf16.py tests/test_fused_triton.py \
	tests/test_kernel_offline.py tests/test_cuda_paths.py tests/test_models.py tests/test_train_resume.py
COMPAT_BIN := $(abspath $(COMPAT_VENV))/bin
compat-test:
	$(MAKE) VENV=$(COMPAT_VENV) TORCH=torch==2.11.0 venv
	PATH="$(COMPAT_BIN):$$PATH" python -c "import torch, triton; v = (torch.__version__, triton.__version__); \
	assert v[0].startswith('2.11.') and v[1].startswith('3.6.'), v; print('compat-test: torch %s, triton %s' % v)"
	PATH="$(COMPAT_BIN):$$PATH" python -m pytest $(COMPAT_TESTS)

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
