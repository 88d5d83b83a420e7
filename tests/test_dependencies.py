"""The salt/ sources of each stage, derived from its imports (the rules' source-file inputs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from salt.cli import SUBCOMMANDS
from salt.dependencies import source_files

ROOT = Path(__file__).resolve().parent.parent


def stage(name: str) -> list[str]:
    return source_files([SUBCOMMANDS[name][0]], ROOT)


def test_generation_depends_on_the_kinematics_and_the_reader_it_imports():
    files = stage("generate")
    assert {"salt/data/pythia.py", "salt/data/kinematics.py", "salt/data/sources/jetclass.py"} <= set(files)
    assert not any(f.startswith(("salt/models/", "salt/training/")) for f in files), files


def test_the_cost_model_is_a_source_of_evaluation_and_benchmarks_but_not_of_training():
    assert "salt/models/cost.py" in stage("evaluate")   # imported inside evaluate(): lazy imports count
    assert "salt/models/cost.py" in stage("bench")
    report = stage("report")   # reads sizes and attention maps from the files; runs no model, reads no shard
    assert not any(f.startswith(("salt/models/", "salt/data/")) for f in report), report
    assert {"salt/attention.py", "salt/identity.py"} <= set(report) & set(stage("evaluate"))  # the files' formats
    train = stage("train")
    assert "salt/models/cost.py" not in train and "salt/models/attention.py" in train


def test_how_results_are_written_is_not_a_source():
    for name in ("generate", "preprocess", "train"):
        assert not {"salt/atomic.py", "salt/provenance.py", "salt/__init__.py", "salt/cli.py"} & set(stage(name))


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_the_walk_follows_each_kind_of_import(tmp_path):
    root = write(tmp_path, {
        "salt/__init__.py": "",
        "salt/pkg/__init__.py": "from salt.pkg.reexported import thing\n",
        "salt/pkg/reexported.py": "",
        "salt/pkg/sub.py": "from . import sibling\nfrom .deep.leaf import f\n",
        "salt/pkg/sibling.py": "import salt.cycle\n",
        "salt/pkg/deep/__init__.py": "",
        "salt/pkg/deep/leaf.py": "def f():\n    from salt.lazy import g\n",
        "salt/lazy.py": "import numpy\n",
        "salt/cycle.py": "import salt.pkg.sibling\n",
        "salt/entry.py": "from salt.pkg import sub\nfrom salt.pkg.sibling import x\n",
        "salt/uses_init.py": "from salt.pkg import thing\n",
        "salt/unused.py": "",
    })
    assert source_files(["salt.entry"], root) == [
        "salt/cycle.py", "salt/entry.py", "salt/lazy.py", "salt/pkg/deep/leaf.py", "salt/pkg/sibling.py",
        "salt/pkg/sub.py"]
    # a name defined by the package itself: its __init__ and what that imports
    assert source_files(["salt.uses_init"], root) == ["salt/pkg/__init__.py", "salt/pkg/reexported.py",
                                                      "salt/uses_init.py"]
    assert source_files(["salt.entry"], root, exclude=["salt.pkg.sibling"]) == [
        "salt/entry.py", "salt/lazy.py", "salt/pkg/deep/leaf.py", "salt/pkg/sub.py"]


def test_an_import_of_a_missing_module_names_it(tmp_path):
    root = write(tmp_path, {"salt/__init__.py": "", "salt/a.py": "import salt.gone\n"})
    with pytest.raises(FileNotFoundError, match="salt.gone"):
        source_files(["salt.a"], root)
