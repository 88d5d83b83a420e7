"""The train rule under Snakemake: per-variant schedules, and the preemption flow of a cluster run.

A failed attempt must leave checkpoint.pt (not a declared output) for the next attempt, which
resumes it, whether the retry comes from `--retries` (as the SLURM profile's `retries:` does) or
from running Snakemake again (a requeued or restarted campaign). The workflow here is the real
train rule with its config schema, on shards written by the test (no data rules).
"""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from jetshards import write_dataset
from workflowrun import ROOT, copy_workflow, snakemake_env, tiny_config
from workflowrun import snakemake as run
from salt.models import load_model
from salt.train import train
from salt.training.settings import TrainSettings
from salt.training.signals import SIGNAL_HOOK_ENV

MODEL = "results/models/pythia/salt/kt/seed1/model.pt"
SNAKEFILE = """\
from snakemake.utils import validate
configfile: "config.yaml"
validate(config, "workflow/schemas/config.schema.yaml")
include: "workflow/rules/common.smk"
include: "workflow/rules/train.smk"
"""


def make_workflow(work: Path, train_only: bool = False, profiles: bool = False, **train) -> Path:
    """The workflow in `work`: the real Snakefile, or one with only the train rule (shards as plain inputs);
    with `profiles`, profiles/default too (which Snakemake loads by itself)."""
    config = tiny_config()
    config["runs"] = [{"variants": ["salt", "transformer"], "sorts": ["kt"]}]
    config["train"] = {"schedule": [[16, 3]], "loader": "memory"} | train
    parts = ("workflow", "salt") if train_only else ("Snakefile", "workflow", "salt")
    copy_workflow(work, config, parts=parts + (("profiles",) if profiles else ()))
    if train_only:
        (work / "Snakefile").write_text(SNAKEFILE)
    return work


def snakemake(work: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return run(work, *args, cores=1, check=False, env=snakemake_env(**env), timeout=600)


def test_schedules_are_chosen_per_variant_and_only_that_variant_reruns(tmp_path):
    work = make_workflow(tmp_path, schedules={"transformer": [[8, 2], [16, 1]]})
    out = snakemake(work, "-n", "-p", MODEL, MODEL.replace("salt", "transformer"))
    assert out.returncode == 0, out.stderr[-3000:]
    commands = [line for line in out.stdout.splitlines() if "salt train" in line]
    assert len(commands) == 2
    by_variant = {("transformer" if '"model":"transformer"' in c else "salt"): c for c in commands}
    assert '"schedule":[[8,2],[16,1]]' in by_variant["transformer"]
    assert '"schedule":[[16,3]]' in by_variant["salt"]
    assert "schedules" not in by_variant["salt"] and "--nproc 1" in by_variant["salt"]


def test_schema_defaults_are_the_trainer_defaults():
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    props = schema["properties"]["train"]["properties"]
    defaults = TrainSettings.from_dict({"schedule": [[1, 1]]})
    for key, prop in props.items():
        if key in ("schedule", "schedules", "threads", "gpus"):
            continue
        assert prop["default"] == getattr(defaults, key), key
    assert set(props) - {"schedules", "threads", "gpus"} == set(defaults.result_dict()) | {"checkpoint_minutes"}


def write_shards(work: Path) -> None:
    classes = ["g", "q", "W", "Z", "t"]
    write_dataset(work / "results/shards/pythia/kt", n_particles=16, classes=classes, names=[f"{c}_000" for c in classes],
                  relative_to=work, chunk_jets=64)


@pytest.mark.slow
def test_a_preempted_job_is_retried_by_default_and_every_attempt_keeps_its_log(tmp_path):
    work = make_workflow(tmp_path, train_only=True, profiles=True)
    write_shards(work)
    # no --retries: profiles/default retries the job stopped at step 50 (exit 75), which resumes
    proc = snakemake(work, MODEL, **{SIGNAL_HOOK_ENV: "50"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    logs = work / "logs/train/pythia/salt/kt"
    first, second = (logs / "seed1.attempt1.log").read_text(), (logs / "seed1.attempt2.log").read_text()
    assert "exiting with 75" in first and "resumed from" not in first
    assert "resumed from" in second and "attempt 2" in second
    assert (logs / "seed1.log").read_text() == second and not (logs / "seed1.attempt3.log").exists()


@pytest.mark.slow
def test_failed_attempts_keep_the_checkpoint_and_retries_resume_it(tmp_path, monkeypatch):
    work = make_workflow(tmp_path, train_only=True)
    write_shards(work)
    out_dir = work / Path(MODEL).parent

    # attempt 1 is preempted (SIGTERM after step 50 of 114) and no retry is allowed: the job fails
    first = snakemake(work, MODEL, **{SIGNAL_HOOK_ENV: "50"})
    assert first.returncode != 0
    assert (out_dir / "checkpoint.pt").exists() and not (out_dir / "model.pt").exists()
    assert "exiting with 75" in (work / "logs/train/pythia/salt/kt/seed1.log").read_text()

    # a new campaign with --retries 1: attempt 2 resumes and is preempted again, attempt 3 finishes
    second = snakemake(work, "--retries", "1", MODEL, **{SIGNAL_HOOK_ENV: "90"})
    assert second.returncode == 0, second.stderr[-4000:]
    with open(out_dir / "history.csv") as f:
        attempts = [int(r["attempt"]) for r in csv.DictReader(f)]
    assert attempts == [1, 2, 3] and not (out_dir / "checkpoint.pt").exists()

    # the same weights as one uninterrupted run with the settings the rule passed
    settings = TrainSettings.from_dict({"schedule": [[16, 3]], "loader": "memory"})
    monkeypatch.chdir(work)   # the manifest lists shard paths relative to the workflow directory
    train(work / "results/shards/pythia/kt/manifest.json", {"model": "salt", "particles": 16, "features": 3,
                                                            "classes": 5}, settings, seed=1, device="cpu",
          out_dir=tmp_path / "ref")
    got, ref = (load_model(p)[0].state_dict() for p in (out_dir / "model.pt", tmp_path / "ref/model.pt"))
    for k in ref:
        assert torch.equal(got[k], ref[k]), k
