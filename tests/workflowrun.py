"""Run the repository's workflow in a scratch directory, as a user would: shared by the workflow tests.

The workflow files are copied (the rules' `salt/` source inputs included) and run with the `salt`
of this environment; a config is either a file or a dict written as config.yaml.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests/data/config.tiny.yaml"
WORKFLOW_PARTS = ("Snakefile", "workflow", "profiles", "salt")


def tiny_config() -> dict[str, Any]:
    return yaml.safe_load(TINY.read_text())


def copy_workflow(dest: Path, config: Path | dict[str, Any] | None = TINY,
                  parts: Iterable[str] = WORKFLOW_PARTS, root: Path = ROOT) -> Path:
    """Copy `parts` of the checkout at `root` into `dest`, with `config` as config.yaml (None: keep
    the copied one)."""
    for part in parts:
        src = root / part
        if src.is_symlink():  # e.g. the root's `slurm` profile link: kept a link, as in a clone
            (dest / part).parent.mkdir(parents=True, exist_ok=True)
            (dest / part).symlink_to(os.readlink(src))
        elif src.is_dir():
            shutil.copytree(src, dest / part, ignore=shutil.ignore_patterns("__pycache__", ".snakemake"))
        elif src.exists():
            (dest / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / part)
    if isinstance(config, dict):
        (dest / "config.yaml").write_text(yaml.safe_dump(config))
    elif config is not None:
        shutil.copy2(config, dest / "config.yaml")
    return dest


def snakemake_env(**extra: str) -> dict[str, str]:
    """This environment with its bin first on PATH, so rules find this `salt`."""
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **extra)


def snakemake(workdir: Path, *args: str, cores: int = 2, check: bool = True, env: dict[str, str] | None = None,
              timeout: int = 900) -> subprocess.CompletedProcess:
    """`python -m snakemake -c CORES ARGS` in `workdir`; with `check`, a failure raises with the tail
    of the output and of every non-empty job log."""
    proc = subprocess.run([sys.executable, "-m", "snakemake", f"-c{cores}", *args], cwd=workdir,
                          env=env or snakemake_env(),
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted((workdir / "logs").rglob("*.log"))
                         if p.stat().st_size) if (workdir / "logs").exists() else ""
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}\n{logs}")
    return proc
