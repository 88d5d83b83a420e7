"""The floating-point rules of the GPU runs: fp32 that is fp32, and training that repeats itself.

Both are context managers that restore what they change, so one process can train, evaluate and
benchmark in turn (a test session does) and each step runs under its own rules.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def fp32_convolutions() -> Iterator[None]:
    """cuDNN convolutions in full fp32 while inside.

    By default PyTorch lets cuDNN compute fp32 convolutions in TF32 (a 10-bit mantissa) on
    Ampere and newer GPUs, unlike its matrix products, which stay fp32. SAL-T's logit convolution
    would then be the one TF32 step of an "fp32" run: GPU results would differ from the CPU's in
    the third digit, and the fused kernel's exact-fp32 agreement check would fail against it.
    bf16 autocast is not affected (it casts the convolution's inputs itself)."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):  # torch >= 2.9; mixing it with allow_tf32 is refused
        owner, name, exact = conv, "fp32_precision", "ieee"
    else:
        owner, name, exact = torch.backends.cudnn, "allow_tf32", False
    saved = getattr(owner, name)
    setattr(owner, name, exact)
    try:
        yield
    finally:
        setattr(owner, name, saved)


@contextmanager
def reproducible_training(dev: torch.device) -> Iterator[None]:
    """On a GPU: deterministic kernels and fp32 convolutions while training; on a CPU nothing changes.

    Several backward kernels accumulate with atomics, whose order varies from run to run: cuDNN's
    for SAL-T's logit convolution (a grouped conv2d), the indexing backward (index_put_ with
    accumulate) of the weights that convolution is built from, and the fused attention kernels'
    (flash, memory-efficient) of the Transformer. Without this, a run resumed from a checkpoint, or
    run twice, would not give the same weights bit for bit. PyTorch makes the attention kernels
    deterministic only in its strict mode (with warn_only they warn and stay as they are), so the
    mode is strict: an op with no deterministic kernel raises, naming itself, instead of silently
    breaking reproducibility; every model family trains under it in the `gpu` tests. cuBLAS needs a
    fixed workspace for it (CUBLAS_WORKSPACE_CONFIG, read when its first workspace is made)."""
    if dev.type != "cuda":
        yield
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        with fp32_convolutions():
            yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]
