"""`salt train` as a cluster job: preempted by a real signal, exit status 75, resumed bit for bit;
and DistributedDataParallel (gloo, 2 CPU processes) against one process at the same global batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from jetshards import write_dataset
from salt.models import load_model
from salt.train import train
from salt.training.settings import TrainSettings
from salt.training.signals import EXIT_PREEMPTED, SIGNAL_HOOK_ENV

torch.set_num_threads(1)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("data"), chunk_jets=64)


def settings(schedule):
    return {"schedule": schedule, "loader": "memory", "workers": 0, "patience": 40}


def reference(data, out, spec, schedule):
    train(data, dict(spec), TrainSettings.from_dict(settings(schedule)), seed=3, device="cpu", out_dir=out)
    return load_model(out / "model.pt")[0].state_dict()


def command(data, out, spec, schedule, nproc=1):
    return [sys.executable, "-m", "salt.cli", "train", "--manifest", str(data), "--spec", json.dumps(spec),
            "--train-config", json.dumps(settings(schedule)), "--seed", "3", "--device", "cpu", "--threads", "1",
            "--output-dir", str(out), "--nproc", str(nproc)]


def start(cmd, log: Path, **env):
    return subprocess.Popen(cmd, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                            env=dict(os.environ, OMP_NUM_THREADS="1", **env))


def finish(proc, log: Path, timeout=120) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"training did not end in {timeout} s:\n{log.read_text()[-3000:]}")


def kill_when(proc, path: Path, sig, log: Path, timeout=60):
    """Send `sig` once `path` exists (the first epoch's checkpoint): the run is then mid-training."""
    t0 = time.monotonic()
    while not path.exists():
        assert proc.poll() is None, f"training ended before {path.name} appeared:\n{log.read_text()[-3000:]}"
        assert time.monotonic() - t0 < timeout, f"no {path.name} after {timeout} s:\n{log.read_text()[-3000:]}"
        time.sleep(0.02)
    proc.send_signal(sig)


def assert_close(a, b, atol):
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=0, atol=atol), (k, float((a[k] - b[k]).abs().max()))


def test_cli_exits_75_on_a_signal_and_resumes_bit_for_bit(data, tmp_path):
    spec, schedule = {"model": "salt"}, [[32, 3], [64, 2]]
    ref = reference(data, tmp_path / "ref", spec, schedule)
    out, log = tmp_path / "job", tmp_path / "job.log"
    cmd = command(data, out, spec, schedule)
    # attempt 1: SIGTERM right after step 30 (inside epoch 1)
    assert finish(start(cmd, log, **{SIGNAL_HOOK_ENV: "30"}), log) == EXIT_PREEMPTED
    assert (out / "checkpoint.pt").exists() and not (out / "model.pt").exists()
    assert "stopped by SIGTERM" in log.read_text()
    # attempt 2: the same command, as Snakemake/SLURM would resubmit it
    assert finish(start(cmd, log), log) == 0, log.read_text()[-3000:]
    assert "resumed from" in log.read_text() and not (out / "checkpoint.pt").exists()
    got = load_model(out / "model.pt")[0].state_dict()
    for k in ref:
        assert torch.equal(got[k], ref[k]), k


def test_real_sigusr1_at_an_arbitrary_moment_resumes_bit_for_bit(data, tmp_path):
    spec, schedule = {"model": "salt"}, [[32, 30]]
    ref = reference(data, tmp_path / "ref", spec, schedule)
    out, log = tmp_path / "job", tmp_path / "job.log"
    cmd = command(data, out, spec, schedule)
    proc = start(cmd, log)
    kill_when(proc, out / "checkpoint.pt", signal.SIGUSR1, log)
    assert finish(proc, log) == EXIT_PREEMPTED, log.read_text()[-3000:]
    assert finish(start(cmd, log), log) == 0, log.read_text()[-3000:]
    got = load_model(out / "model.pt")[0].state_dict()
    for k in ref:
        assert torch.equal(got[k], ref[k]), k


# DDP. Linformer, not SAL-T: SAL-T's convolution bias shifts every logit of a softmax group
# alike, so its true gradient is zero and Adam turns rounding noise into steps of ~1e-6 that
# differ between any two summation orders; the model function does not depend on it.

def test_ddp_two_processes_match_one_and_resume_after_a_stop_on_one_rank(data, tmp_path):
    spec, schedule = {"model": "linformer"}, [[32, 2], [64, 2]]
    ref = reference(data, tmp_path / "ref", spec, schedule)
    out, log = tmp_path / "ddp", tmp_path / "ddp.log"
    cmd = command(data, out, spec, schedule, nproc=2)
    # only rank 0 gets the signal (after step 25); the ranks agree to stop at the same step
    assert finish(start(cmd, log, **{SIGNAL_HOOK_ENV: "25"}), log) == EXIT_PREEMPTED, log.read_text()[-3000:]
    assert finish(start(cmd, log), log) == 0, log.read_text()[-3000:]
    model, extra = load_model(out / "model.pt")
    assert extra["summary"]["world_size"] == 2 and extra["summary"]["attempts"] == 2
    assert_close(model.state_dict(), ref, atol=1e-6)


def test_ddp_launcher_forwards_sigterm_and_resumes_bit_for_bit(data, tmp_path):
    # long enough to be caught mid-run; over hundreds of steps one and two processes drift apart
    # (Adam amplifies rounding differences: ~1e-7 after 60 steps, ~1e-3 after 200), so the
    # reference here is an uninterrupted two-process run, which gloo makes exactly repeatable
    spec, schedule = {"model": "linformer"}, [[32, 10]]
    ref_out, log = tmp_path / "ref", tmp_path / "ddp.log"
    assert finish(start(command(data, ref_out, spec, schedule, nproc=2), log), log) == 0, log.read_text()[-3000:]
    out = tmp_path / "ddp"
    cmd = command(data, out, spec, schedule, nproc=2)
    proc = start(cmd, log)
    kill_when(proc, out / "checkpoint.pt", signal.SIGTERM, log)   # to the launcher, as SLURM would
    assert finish(proc, log) == EXIT_PREEMPTED, log.read_text()[-3000:]
    assert finish(start(cmd, log), log) == 0, log.read_text()[-3000:]
    got, ref = (load_model(o / "model.pt")[0].state_dict() for o in (out, ref_out))
    for k in ref:
        assert torch.equal(got[k], ref[k]), k
