"""Shared pytest fixtures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# test helper modules (formats.py, httpserver.py) import as top-level modules
sys.path.insert(0, str(Path(__file__).resolve().parent))

from httpserver import LoopbackServer  # noqa: E402


GPU_SKIP = "needs a CUDA GPU (torch.cuda.is_available() is False here); on a GPU node run `make gpu-check`"


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` are skipped, with the reason shown, where torch sees no CUDA device."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    for item in gpu_items:
        item.add_marker(pytest.mark.skip(reason=GPU_SKIP))


@pytest.fixture
def http_server():
    """A fresh loopback HTTP server (see tests/httpserver.py for its modes and request log)."""
    with LoopbackServer() as server:
        yield server
