"""benchmarks/loader_speed.py runs end to end (tiny sizes: the figures themselves are the script's job)
and says whether the loader reaches its goal; on a GPU through pinned memory and non-blocking copies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def loader_speed(tmp_path: Path, device: str, goal: float) -> tuple[subprocess.CompletedProcess, Path]:
    pytest.importorskip("hdf5plugin")
    out = tmp_path / "speed.json"
    cmd = [sys.executable, str(ROOT / "benchmarks/loader_speed.py"), "--device", device, "--dir", str(tmp_path / "d"),
           "--jets", "4096", "--shards", "2", "--particles", "32", "--batch", "256", "--workers", "0", "1",
           "--epochs", "1", "--steps", "2", "--goal", str(goal), "--output", str(out)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300), out


@pytest.mark.parametrize("device", [pytest.param("cpu", marks=pytest.mark.slow), pytest.param("cuda", marks=pytest.mark.gpu)])
def test_loader_speed_reports_both_rates_and_the_verdict(tmp_path, device):
    proc, out = loader_speed(tmp_path, device, goal=0.0)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert [r["workers"] for r in doc["loader"]] == [0, 1]
    assert all(r["jets"] == 4096 and r["jets_per_s"] > 0 and r["pin_memory"] == (device == "cuda")
               for r in doc["loader"])
    assert doc["step"]["jets_per_s"] > 0 and doc["pass"] is True
    assert "PASS: best loader" in proc.stdout
    # an unreachable goal fails with exit status 1
    proc, out = loader_speed(tmp_path, device, goal=1e9)
    assert proc.returncode == 1 and "FAIL: best loader" in proc.stdout
    assert json.loads(out.read_text())["pass"] is False
