"""Every `salt` subcommand answers bad input with one line naming the culprit, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from salt.cli import SUBCOMMANDS, main

TRAIN = '{"schedule": [[8, 1]]}'
RUN = ["--dataset", "pythia", "--variant", "salt", "--sort", "kt", "--seed", "1"]  # the identity evaluate records


def bad_inputs(tmp: Path) -> list[tuple[str, list[str], int, str]]:
    """(subcommand, arguments, exit status, text the error line must name). Status 2: a usage error or an
    invalid option value (argparse's convention); 1: the command failed on the user's files."""
    text = tmp / "notes.txt"   # written by the test
    missing = str(tmp / "missing.json")
    return [
        ("generate", ["--process", "g", "--jets", "0", "--seed", "1", "--output", str(tmp / "g.root")], 2, "n_jets"),
        ("download", ["--dataset", "jetclass", "--file", "nope.tar", "--output", str(tmp / "a")], 1, "nope.tar"),
        ("extract", [str(tmp / "missing.tar"), "--output-dir", str(tmp / "x")], 1, "missing.tar"),
        ("preprocess", ["--source", "jetclass", "--input", str(tmp / "missing.root"), "--sort", "kt",
                        "--particles", "8", "--features", "pt", "--output-train", str(tmp / "a.h5"),
                        "--output-val", str(tmp / "b.h5"), "--output-test", str(tmp / "c.h5")], 1, "missing.root"),
        ("preprocess", ["--source", "jetclass", "--input", "x", "--sort", "kt", "--particles", "8", "--features",
                        "pt", "--options", "{oops", "--output-train", "a", "--output-val", "b", "--output-test", "c"],
         2, "--options"),
        ("manifest", ["--train", str(text), "--output", str(tmp / "m.json")], 1, "notes.txt"),
        ("manifest", ["--train", str(tmp / "missing.h5"), "--output", str(tmp / "m.json")], 1, "missing.h5"),
        ("train", ["--manifest", missing, "--spec", "{}", "--train-config", TRAIN, "--seed", "1",
                   "--output-dir", str(tmp / "m")], 1, "missing.json"),
        ("train", ["--manifest", missing, "--spec", "{model: salt}", "--train-config", TRAIN, "--seed", "1",
                   "--output-dir", str(tmp / "m")], 2, "--spec"),
        ("train", ["--manifest", missing, "--spec", "{}", "--train-config", '{"lr": 1}', "--seed", "1",
                   "--output-dir", str(tmp / "m")], 1, "schedule"),
        ("evaluate", ["--model", str(text), "--manifest", missing, *RUN, "--metrics", str(tmp / "m.json"),
                      "--predictions", str(tmp / "p.npz"), "--attention", str(tmp / "a.npz")], 1, "notes.txt"),
        ("evaluate", ["--model", str(tmp / "model.pt"), "--manifest", missing, *RUN, "--metrics", str(tmp / "m.json"),
                      "--predictions", str(tmp / "p.npz"), "--attention", str(tmp / "a.npz")], 1, "model.pt"),
        ("evaluate", ["--model", str(tmp / "model.pt"), "--manifest", missing, *RUN[:-2], "--seed", "first",
                      "--metrics", str(tmp / "m.json"), "--predictions", str(tmp / "p.npz"),
                      "--attention", str(tmp / "a.npz")], 2, "--seed"),
        ("bench", ["--spec", "{oops", "--output", str(tmp / "b.json")], 2, "--spec"),
        ("report", ["tables", "--metrics", str(text), "--output-dir", str(tmp / "t")], 1, "notes.txt"),
        ("report", ["tables", "--metrics", missing, "--output-dir", str(tmp / "t")], 1, "missing.json"),
        ("model-info", ["--model", "nope", "--particles", "16", "--classes", "5"], 2, "nope"),
        ("reference-check", [str(tmp / "no_fixtures")], 2, "no_fixtures"),
    ]


CASES = [(c[0], i) for i, c in enumerate(bad_inputs(Path("/nonexistent")))]


def test_every_subcommand_has_a_bad_input_case():
    assert {name for name, _ in CASES} == set(SUBCOMMANDS)


@pytest.mark.parametrize("name,index", CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_bad_input_is_one_line_naming_it(name, index, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a model, a manifest or an archive\n")
    _, args, status, culprit = bad_inputs(tmp_path)[index]
    try:
        rc = main([name, *args])
    except SystemExit as stop:   # argparse: usage errors
        rc = stop.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(f"salt {name}: error: ")]
    assert rc == status and len(lines) == 1, err
    assert culprit in lines[0] and "Traceback" not in err, err


def test_the_installed_command_prints_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "salt", "evaluate", "--model", str(tmp_path / "model.pt"),
                           "--manifest", "m.json", *RUN, "--metrics", "x.json", "--predictions", "p.npz",
                           "--attention", "a.npz"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"salt evaluate: error: {tmp_path / 'model.pt'}: No such file or directory"
