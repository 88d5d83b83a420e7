"""The cluster profile as users type it: `snakemake --profile slurm` from the repository root.

Snakemake resolves a bare profile name as a relative folder first, so the root's `slurm` link to
`profiles/slurm` makes the short form work in a fresh clone with no setup step. A dry run needs
no SLURM: it plans the paper config's jobs that the profile loads."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from workflowrun import copy_workflow, snakemake

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("Snakefile", "config.yaml", "workflow", "salt", "profiles", "slurm")


def job_stats(stdout: str) -> dict[str, int]:
    assert "Job stats:" in stdout, stdout[-3000:]
    return {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)$", stdout.split("Job stats:")[1], re.M)}


def test_root_slurm_is_a_relative_link_to_the_cluster_profile():
    link = ROOT / "slurm"
    assert link.is_symlink(), "the repository root needs the `slurm` link for `snakemake --profile slurm`"
    assert Path(link.readlink()) == Path("profiles/slurm")  # relative: valid in every clone
    assert (link / "config.yaml").resolve() == (ROOT / "profiles/slurm/config.yaml").resolve()


def test_short_and_long_profile_names_plan_the_paper_config(tmp_path):
    work = copy_workflow(tmp_path, config=None, parts=PARTS)
    short = job_stats(snakemake(work, "--profile", "slurm", "-n").stdout)
    long = job_stats(snakemake(work, "--profile", "profiles/slurm", "-n").stdout)
    direct = job_stats(snakemake(work, "-n", "--configfile", "workflow/configs/paper.yaml").stdout)
    assert short == long == direct
    assert yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())["configfile"] == \
        "workflow/configs/paper.yaml"
    # the paper's datasets are downloaded; the demo's built-in Pythia jets would be generated instead
    assert short["download"] > 0 and short["train"] > 0 and "generate" not in short
