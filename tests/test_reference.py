"""The authors' own Keras outputs, reproduced: `salt reference-check` on the fixture cases.

tests/data/reference_models holds the authors' Keras models' outputs with their weights (small data,
shipped with the repository so the check runs wherever the repository is cloned).
SALT_REFERENCE_DIR, when set, names another copy to check as well.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from salt import cli
from salt.models.reference import check_directory

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "data" / "reference_models"
CASES = json.loads((FIXTURES / "index.json").read_text())
PAPER_PARAMS = {"salt_n150_p4": 3264, "linformer_n150_p4": 6809, "transformer_n150": 2009, "salt_n200_p4_binary": 3580}


def run_check(directory: Path, *extra: str) -> subprocess.CompletedProcess:
    """`salt reference-check` as a user runs it (a separate process)."""
    return subprocess.run([sys.executable, "-m", "salt.cli", "reference-check", str(directory), *extra],
                          capture_output=True, text=True, timeout=300)


def check_in_process(capsys, directory: Path, *extra: str) -> subprocess.CompletedProcess:
    """The same command in this process (saves a torch import per call)."""
    code = cli.main(["reference-check", str(directory), *extra])
    out = capsys.readouterr()
    return subprocess.CompletedProcess([], code, out.out, out.err)


def test_every_case_matches_through_the_cli():
    proc = run_check(FIXTURES, "--impl", "both", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["failed"] == []
    seen = {(r["case"], r["impl"]) for r in report["cases"]}
    assert seen == {(c, i) for c in CASES for i in ("fused", "straightforward")}
    for r in report["cases"]:
        assert r["max_abs_diff"] < 1e-5, r
        assert r["params"] == CASES[r["case"]]["params"] == r["params_expected"], r
    for case, params in PAPER_PARAMS.items():
        assert CASES[case]["params"] == params


def test_text_output_names_every_case(capsys):
    proc = check_in_process(capsys, FIXTURES)
    assert proc.returncode == 0, proc.stderr
    for case in CASES:
        assert case in proc.stdout
    assert f"{len(CASES)}/{len(CASES)} within 1e-05" in proc.stdout


@pytest.mark.skipif(not os.environ.get("SALT_REFERENCE_DIR"), reason="SALT_REFERENCE_DIR not set")
def test_external_fixture_directory():
    directory = Path(os.environ["SALT_REFERENCE_DIR"])
    assert (directory / "index.json").is_file(), f"SALT_REFERENCE_DIR={directory} has no index.json"
    proc = run_check(directory)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_wrong_probability_fails_the_check(tmp_path, capsys):
    work = tmp_path / "fx"
    shutil.copytree(FIXTURES, work)
    path = work / "salt_n150_p4.npz"
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["probabilities"] = arrays["probabilities"].copy()
    arrays["probabilities"][3, 1] += 3e-5
    np.savez(path, **arrays)
    proc = check_in_process(capsys, work)
    assert proc.returncode == 1
    assert "FAIL" in proc.stdout and "salt_n150_p4" in proc.stdout


def test_missing_and_misnamed_weights_are_reported(tmp_path, capsys):
    work = tmp_path / "fx"
    shutil.copytree(FIXTURES, work)
    path = work / "salt_n16_p4.npz"
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files if k != "w.block0.attn.conv_h3.kernel"}
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="conv_h3.kernel"):
        check_directory(work)
    proc = check_in_process(capsys, work)
    assert proc.returncode == 2 and "conv_h3.kernel" in proc.stderr

    arrays["w.block0.attn.conv_h3.kernel"] = np.zeros((3, 5), np.float32)  # wrong shape
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=r"shape \(3, 5\)"):
        check_directory(work)


def test_not_a_fixture_directory(tmp_path, capsys):
    proc = check_in_process(capsys, tmp_path)
    assert proc.returncode == 2 and "index.json" in proc.stderr
