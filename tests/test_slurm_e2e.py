"""The whole pipeline through a real SLURM: sbatch, the slurm executor plugin, sacct.

A throwaway single-node SLURM (tests/slurm/up.sh: munged, MariaDB + slurmdbd, slurmctld, slurmd)
is started for the session unless it is already up, and stopped again only if this session
started it. The workflow is copied into a temporary directory, the copy's cluster profile gets
this site's values (tests/slurm/site.yaml: account, partition, job sizes), as a site fills in
its own, and the run is exactly what a user types on a login node, `snakemake --profile slurm`,
with `--configfile tests/data/config.tiny.yaml`; every non-local job must show up in `sacct` as
COMPLETED, under this run's job name and rule comment.

Without the SLURM packages (or without root to start the daemons) the test is skipped, unless
SALT_REQUIRE_SLURM=1 (CI), where that is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml
from workflowrun import copy_workflow

ROOT = Path(__file__).resolve().parent.parent
UP, DOWN = ROOT / "tests/slurm/up.sh", ROOT / "tests/slurm/down.sh"
CLUSTER = "salt-ci"  # the ClusterName up.sh writes; any other answering cluster is left alone
TINY = "tests/data/config.tiny.yaml"  # relative to the repository root (and to the copy)
# what a run needs from the repository; salt/ also because rules list its sources as inputs
WORKFLOW_PARTS = ("Snakefile", "config.yaml", "workflow", "salt", "envs", "profiles", "slurm", "tests/data")
SITE = ROOT / "tests/slurm/site.yaml"
DAEMONS = ("sbatch", "sacct", "squeue", "scontrol", "munged", "slurmctld", "slurmd", "slurmdbd", "mariadbd")
RUN_TIMEOUT_S = 1500

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("SALT_REQUIRE_SLURM") == "1":
        pytest.fail(f"SALT_REQUIRE_SLURM=1 but {reason}")
    pytest.skip(reason)


def _path_with_sbin() -> str:
    return os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def _answering_cluster() -> str | None:
    """Name of the SLURM cluster whose controller answers here, or None."""
    if shutil.which("scontrol", path=_path_with_sbin()) is None:
        return None
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return None
    m = re.search(r"^ClusterName\s*=\s*(\S+)", out.stdout, re.M)
    return m.group(1) if out.returncode == 0 and m else None


@pytest.fixture(scope="session")
def local_slurm():
    """A running throwaway SLURM with accounting; started (and later stopped) here if needed."""
    cluster = _answering_cluster()
    if cluster is not None and cluster != CLUSTER:
        _skip_or_fail(f"a SLURM cluster '{cluster}' answers on this machine; not submitting test jobs to it")
    started = False
    if cluster is None:
        missing = [b for b in DAEMONS if shutil.which(b, path=_path_with_sbin()) is None]
        if missing:
            _skip_or_fail(f"SLURM is not installed (missing {', '.join(missing)}; "
                          "apt-get install slurm-wlm slurmdbd munge mariadb-server, or run .ci/run)")
        if os.geteuid() != 0:
            _skip_or_fail("starting the SLURM daemons (tests/slurm/up.sh) needs root")
        env = dict(os.environ, WITH_DBD="1", FAKE_GPUS="1", SLURM_CI_INSTALL="0")
        t0 = time.monotonic()
        up = subprocess.run([str(UP)], env=env, capture_output=True, text=True, timeout=600)
        if up.returncode != 0:
            pytest.fail(f"tests/slurm/up.sh failed (rc={up.returncode}):\n{up.stdout}\n{up.stderr}")
        started = "already up" not in up.stdout
        print(f"\nSLURM up in {time.monotonic() - t0:.1f}s:\n{up.stdout}")
    accounting = subprocess.run(["sacct", "-n", "-X", "-S", "now-1minutes"], capture_output=True, text=True,
                                timeout=30)
    try:
        if accounting.returncode != 0:
            pytest.fail("the throwaway SLURM runs without accounting (sacct: "
                        f"{accounting.stderr.strip()}); stop it with tests/slurm/down.sh and rerun")
        yield
    finally:
        if started:
            down = subprocess.run([str(DOWN)], capture_output=True, text=True, timeout=300)
            print(down.stdout, down.stderr)
            assert down.returncode == 0, f"tests/slurm/down.sh failed:\n{down.stdout}\n{down.stderr}"


def snakemake_env() -> dict[str, str]:
    """The submitting environment, which sbatch --export=ALL hands to every job: this venv's bin
    first on PATH, so jobs run `python -m snakemake` and the rules' `salt` from the same venv."""
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), _path_with_sbin()]))
    for key in [k for k in env if k.startswith("SLURM_")]:
        del env[key]  # a test started inside a SLURM job must not leak that job's settings
    return env


def run_snakemake(workdir: Path, *args: str, timeout_s: int, log: Path) -> int:
    """snakemake with `timeout -s INT` semantics: on expiry SIGINT makes the plugin scancel its
    jobs (SIGTERM would wait for them); SIGKILL 60 s later if it still has not exited."""
    cmd = ["timeout", "-s", "INT", "-k", "60", str(timeout_s), sys.executable, "-m", "snakemake", *args]
    with log.open("w") as out:
        return subprocess.run(cmd, cwd=workdir, env=snakemake_env(), stdout=out, stderr=subprocess.STDOUT).returncode


def failure_report(workdir: Path, log: Path) -> str:
    parts = [f"--- {log.name} (tail)\n{log.read_text()[-6000:]}"]
    for f in sorted((workdir / ".snakemake/slurm_logs").rglob("*.log"))[-6:]:
        parts.append(f"--- {f.relative_to(workdir)} (tail)\n{f.read_text(errors='replace')[-2000:]}")
    return "\n".join(parts)


def submitted_jobs(log_text: str) -> dict[str, str]:
    """SLURM job id -> rule, from the plugin's 'Job N has been submitted with SLURM jobid X
    (log: .../slurm_logs/rule_<rule>/...)' lines."""
    pat = re.compile(r"has been submitted with SLURM jobid (\d+) \(log: \S*?/slurm_logs/rule_([^/\s]+)/")
    return {m.group(1): m.group(2) for m in pat.finditer(log_text)}


def sacct_jobs(workdir: Path, since: datetime) -> dict[str, dict[str, str]]:
    """Allocations started since `since` whose working directory is `workdir`, by job id."""
    fields = ("JobIDRaw", "JobName", "State", "Comment", "WorkDir")
    out = subprocess.run(
        ["sacct", "-X", "--parsable2", "--noheader", "-S", since.strftime("%Y-%m-%dT%H:%M:%S"), "-E", "now",
         "--format", ",".join(fields)],
        capture_output=True, text=True, timeout=60, check=True).stdout
    rows = [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line.strip()]
    return {r["JobIDRaw"]: r for r in rows if Path(r["WorkDir"]) == workdir}


def fill_in_site(profile: Path, site: Path = SITE) -> None:
    """Write `site`'s values into the cluster profile `profile` (config.yaml): top-level keys are
    replaced, and default-resources / set-resources entries are replaced one by one, so the rest
    of the shipped profile is what runs."""
    config = yaml.safe_load(profile.read_text())
    for key, value in yaml.safe_load(site.read_text()).items():
        if key == "default-resources":
            config.setdefault(key, {}).update(value)
        elif key == "set-resources":
            for rule, resources in value.items():
                config.setdefault(key, {}).setdefault(rule, {}).update(resources)
        else:
            config[key] = value
    placeholders = re.findall(r"<[a-z-]+>", yaml.safe_dump(config))
    assert not placeholders, f"{site} leaves the profile's placeholders {sorted(set(placeholders))} unfilled"
    profile.write_text(yaml.safe_dump(config, sort_keys=False))


def check_run_on_slurm(source: Path, workdir: Path, configfile: str = TINY) -> None:
    """Run the workflow of `source` through the local SLURM in `workdir` and check that every
    non-local job went through sbatch and finished in SLURM's accounting, and that a second
    dry run has nothing to do."""
    assert (source / "Snakefile").is_file(), f"no Snakefile in {source}"
    assert (source / configfile).is_file(), f"missing {source / configfile}"
    copy_workflow(workdir, config=None, parts=WORKFLOW_PARTS, root=source)
    assert (workdir / "slurm").is_symlink(), "the root's `slurm` profile link was not copied as a link"
    fill_in_site(workdir / "profiles/slurm/config.yaml")
    args = ("--profile", "slurm", "--configfile", configfile)
    since = datetime.now() - timedelta(seconds=5)

    t0 = time.monotonic()
    log = workdir / "snakemake-slurm.log"
    rc = run_snakemake(workdir, *args, timeout_s=RUN_TIMEOUT_S, log=log)
    elapsed = time.monotonic() - t0
    if rc == 124:
        pytest.fail(f"snakemake did not finish within {RUN_TIMEOUT_S}s\n{failure_report(workdir, log)}")
    assert rc == 0, f"snakemake exited with {rc}\n{failure_report(workdir, log)}"
    print(f"\nworkflow through SLURM in {elapsed:.1f}s")

    text = log.read_text()
    submitted = submitted_jobs(text)
    assert submitted, f"no job was submitted through sbatch\n{failure_report(workdir, log)}"
    # each non-local job is announced as "rule X:" (local ones as "localrule X:")
    assert Counter(submitted.values()) == Counter(re.findall(r"^rule (\w+):", text, re.M))

    # sacct: the same jobs, COMPLETED, one run (one job name), rule names in the comments
    deadline = time.monotonic() + 60
    while True:  # slurmdbd may record the final state a moment after the controller
        acct = sacct_jobs(workdir, since)
        if set(acct) == set(submitted) and all(r["State"] == "COMPLETED" for r in acct.values()):
            break
        assert time.monotonic() < deadline, (
            f"sacct does not show the submitted jobs as COMPLETED:\nsubmitted {submitted}\nsacct {acct}")
        time.sleep(2)
    names = {r["JobName"] for r in acct.values()}
    assert len(names) == 1 and names.pop().startswith("salt-ci_"), f"expected one salt-ci_<uuid> run: {acct}"
    for job_id, rule in submitted.items():
        comment = acct[job_id]["Comment"]
        assert comment == f"rule_{rule}" or comment.startswith(f"rule_{rule}_wildcards_"), (job_id, rule, comment)

    dry = workdir / "snakemake-dry-run.log"
    assert run_snakemake(workdir, *args, "-n", timeout_s=300, log=dry) == 0, dry.read_text()[-4000:]
    assert "Nothing to be done" in dry.read_text(), dry.read_text()[-4000:]


def test_tiny_pipeline_runs_through_slurm(local_slurm, tmp_path):
    check_run_on_slurm(ROOT, tmp_path.resolve())
