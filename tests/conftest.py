"""Shared pytest fixtures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# test helper modules (formats.py, httpserver.py) import as top-level modules
sys.path.insert(0, str(Path(__file__).resolve().parent))

from httpserver import LoopbackServer  # noqa: E402


@pytest.fixture
def http_server():
    """A fresh loopback HTTP server (see tests/httpserver.py for its modes and request log)."""
    with LoopbackServer() as server:
        yield server
