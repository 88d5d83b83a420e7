"""The conda environment and pyproject declare the same requirements."""

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _normalise(req: str) -> str:
    return req.replace(" ", "").lower()


def test_conda_env_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_normalise(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        declared |= {_normalise(r) for r in extra}
    env = yaml.safe_load((ROOT / "envs/salt.yaml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    in_env = {_normalise(r) for r in pip_section}
    assert in_env == declared, (f"only in envs/salt.yaml: {sorted(in_env - declared)}; "
                                f"only in pyproject.toml: {sorted(declared - in_env)}")


def test_torch_range_admits_the_cpu_wheel_and_the_gpu_images_torch():
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch = next(Requirement(r) for r in project["dependencies"] if r.startswith("torch"))
    assert torch.specifier.contains("2.13.0")
    assert torch.specifier.contains("2.11.0")  # what `make compat-test` runs


def test_cli_lists_every_stage():
    from salt.cli import SUBCOMMANDS

    for stage in ("generate", "preprocess", "train", "evaluate", "bench", "report"):
        assert stage in SUBCOMMANDS


def test_every_subcommand_prints_its_help(capsys):
    import pytest

    from salt.cli import SUBCOMMANDS, main

    for name in [None, *SUBCOMMANDS]:
        with pytest.raises(SystemExit) as exit_info:
            main(["--help"] if name is None else [name, "--help"])
        assert exit_info.value.code == 0, name
        assert "usage: salt" in capsys.readouterr().out
