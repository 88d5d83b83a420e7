"""Process settings and inputs shared by every benchmark: allocator, threads, random jets."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys
from collections.abc import Iterator

import torch

from salt.models import ModelSpec


_ALLOCATOR_TUNED = False


def tune_allocator() -> bool:
    """Keep freed memory mapped in this process (glibc only); returns whether it applied.

    glibc hands large freed blocks straight back to the kernel, so every new
    intermediate tensor of a forward pass is page-faulted in again; on a VM that costs
    as much as the arithmetic. Raising the mmap and trim thresholds lets the heap reuse
    them, which is what jemalloc/tcmalloc setups for PyTorch CPU inference achieve. It
    changes no result, only time, and it applies to every model alike.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    name = ctypes.util.find_library("c")
    if not sys.platform.startswith("linux") or name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_trim_threshold, ctypes.c_int(2**31 - 1)) == 1
        ok = libc.mallopt(m_mmap_threshold, ctypes.c_int(1 << 30)) == 1 and ok
    except (OSError, AttributeError):
        return False
    _ALLOCATOR_TUNED = ok
    return ok


@contextlib.contextmanager
def num_threads(threads: int | None) -> Iterator[None]:
    """Run the block with `threads` intra-op threads (None: leave as is)."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def random_jets(spec: ModelSpec, batch: int, device: str | torch.device = "cpu", seed: int = 0
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Standard-normal features and a mask with a realistic share of padding (about a third)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, spec.particles, spec.features, generator=gen)
    counts = torch.randint(max(1, spec.particles // 3), spec.particles + 1, (batch, 1), generator=gen)
    mask = torch.arange(spec.particles)[None, :] < counts
    x = x * mask[..., None]
    return x.to(device), mask.to(device)


def indexed_device(device: str | torch.device) -> torch.device:
    """The device with its index: "cuda" is the current CUDA device ("cuda:0" in a fresh process).
    torch.cuda.set_device and friends need the index; a plain "cuda" makes them fail."""
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return dev


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
