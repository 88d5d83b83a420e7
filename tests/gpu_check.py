"""The check for a GPU node, in one command (`make gpu-check`):

1. every test marked `gpu` (bench sweeps on cuda, the attention memory estimate against the GPU's
   own peak, training in fp32 and bf16, checkpoint and resume on cuda, DDP over NCCL, evaluation),
2. benchmarks/loader_speed.py --device cuda: the streaming loader against the SAL-T training step
   at N = 150, batch 1024 (goal: loader >= 2x the step),
3. the tiny workflow (tests/data/config.tiny.yaml) with `use_gpu: true` and `bench.devices: [cpu, cuda]`,
   end to end with Snakemake, then `snakemake --report`;

and prints a summary: the GPU, the tests passed, the loader's verdict, the workflow's jobs, the GPU
rows of Table 2 and where the report is. Exit status 0 only if all three passed.

    python tests/gpu_check.py [--workdir DIR] [--wheels DIR] [--cores N] [--skip-tests|loader|workflow]

Part 1 needs torch with CUDA, numpy and pytest (the tests that train or stream also need h5py,
hdf5plugin and tqdm, and say so when skipped), part 2 also h5py and hdf5plugin; part 3 needs every
dependency of salt (snakemake, pythia8mc, fastjet, awkward, uproot, vector, hdf5plugin, mplhep,
pyyaml, tqdm): when some are missing it names them instead of running. Wheels for what the image
lacks can travel in ./.whl (or --wheels DIR; `make gpu-wheels` builds it where PyPI is reachable):
they are installed into $TMPDIR/salt-gpu-check/site (pip --no-index --no-deps --target) and put on
the path; a requirement of theirs that the node's own distributions miss (attrs, packaging, ...: the
image's, at versions unknown in advance) is named as a warning before anything runs. This checkout's
`salt` is used (a launcher on PATH, the checkout on PYTHONPATH); nothing else is installed. The
summary is also written to WORKDIR/summary.txt.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW_MODULES = {"snakemake": "snakemake", "yaml": "pyyaml", "pythia8mc": "pythia8mc", "fastjet": "fastjet",
                    "awkward": "awkward", "uproot": "uproot", "vector": "vector", "hdf5plugin": "hdf5plugin",
                    "mplhep": "mplhep", "tqdm": "tqdm", "sklearn": "scikit-learn", "pandas": "pandas",
                    "matplotlib": "matplotlib", "requests": "requests"}


def say(text: str = "") -> None:
    print(text, flush=True)


def installed(distribution: str) -> bool:
    """Whether this interpreter already has `distribution` (its own numpy, torch, ... stay in charge)."""
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def install_wheels(wheels: Path, scratch: Path) -> Path | None:
    """The wheels in `wheels` of distributions this interpreter lacks into scratch/site, as they are (no
    index, no dependencies, nothing of the interpreter's own touched or shadowed): how the dependencies
    a GPU image lacks travel to it."""
    site = scratch / "site"
    files = sorted(str(p) for p in wheels.glob("*.whl") if not installed(p.name.split("-")[0]))
    if files and not (site / ".installed").exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                        "--target", str(site), *files], check=True)
        (site / ".installed").write_text("\n".join(files))
    if not site.exists():
        return None  # the interpreter has them all
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    return site


def unmet_requirements(site: Path) -> list[str]:
    """What the wheels installed into `site` require that is absent, or present at a version they do
    not accept, among the node's own distributions (the image's attrs, requests, ... that the wheels
    rely on): named before anything runs, not found as a traceback deep in a job's log. What
    gpu_wheels leaves out on purpose (PuLP, PyTables) is not asked for."""
    from packaging.requirements import InvalidRequirement, Requirement

    from gpu_wheels import NOT_FOR_THE_CHECK, normalize

    problems = []
    for dist in sorted(importlib.metadata.distributions(path=[str(site)]), key=lambda d: normalize(d.metadata["Name"])):
        for text in dist.requires or []:
            try:
                req = Requirement(text)
            except InvalidRequirement:
                continue
            if (req.marker and not req.marker.evaluate({"extra": ""})) or normalize(req.name) in NOT_FOR_THE_CHECK:
                continue
            found = next(iter(importlib.metadata.distributions(name=req.name, path=[str(site), *sys.path])), None)
            if found is None:
                problems.append(f"{dist.metadata['Name']} {dist.version} (a wheel) needs {req}: not installed")
            elif not req.specifier.contains(found.version, prereleases=True):
                problems.append(f"{dist.metadata['Name']} {dist.version} (a wheel) needs {req}: found {found.version}")
    return problems


def environment(scratch: Path, site: Path | None = None) -> dict[str, str]:
    """This interpreter and a `salt` launcher for this checkout first on PATH, the checkout (and the
    installed wheels) on PYTHONPATH, and Pythia's data where a pythia8mc wheel put it."""
    bin_dir = scratch / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    launcher = bin_dir / "salt"
    launcher.write_text(f"#!{sys.executable}\nimport sys\nfrom salt.cli import main\nsys.exit(main())\n")  # via PYTHONPATH
    launcher.chmod(0o755)
    path = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), site and str(site), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PATH=path, PYTHONPATH=pythonpath)
    xmldoc = site / "share/Pythia8/xmldoc" if site else None
    if xmldoc and xmldoc.is_dir():  # pythia8mc's data lands beside the packages under --target, not in its prefix
        env["PYTHIA8DATA"] = str(xmldoc)
    return env


def run_logged(cmd: list[str], log: Path, env: dict[str, str], cwd: Path = ROOT, timeout: float = 1800) -> int:
    """Run `cmd`, its output to the console and to `log`; killed (with its children) after `timeout`
    seconds, returning 124, so one hang cannot use up a GPU node's time."""
    say(f"$ {' '.join(cmd)}")
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        fired = threading.Event()

        def kill() -> None:
            fired.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                sys.stdout.write(line)
                f.write(line)
            code = proc.wait()
        finally:
            timer.cancel()
        if fired.is_set():
            f.write(f"\ngpu-check: TIMED OUT after {timeout:.0f} s: {' '.join(cmd)}\n")
            say(f"gpu-check: TIMED OUT after {timeout:.0f} s")
            return 124
        return code


def gpu_header() -> list[str]:
    import torch

    if not torch.cuda.is_available():
        raise SystemExit(f"gpu-check: torch {torch.__version__} sees no CUDA GPU here "
                         f"(built with CUDA {torch.version.cuda}); run this on a GPU node")
    lines = [f"python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda})"]
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        lines.append(f"cuda:{i}: {props.name}, {props.total_memory / 2**30:.1f} GiB, "
                     f"compute capability {props.major}.{props.minor}")
    try:
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=10).stdout.split()[0]
        lines.append(f"driver {driver}")
    except (OSError, subprocess.SubprocessError, IndexError):
        pass
    return lines


def triton_build_problems() -> list[str]:
    """What Triton lacks to build its launchers at the first kernel launch (the fused backend,
    torch.compile): a C compiler and Python's headers. The interpreter and an ahead-of-time compile
    need neither, so only a GPU run finds out."""
    if importlib.util.find_spec("triton") is None:
        return ["triton is not installed: the fused backend and torch.compile are skipped or fail"]
    problems = []
    if not (os.environ.get("CC") or shutil.which("gcc") or shutil.which("clang") or shutil.which("cc")):
        problems.append("no C compiler (gcc, clang, cc or $CC)")
    include = sysconfig.get_paths().get("include", "")
    if not (Path(include) / "Python.h").exists():
        problems.append(f"no Python.h in {include} (the python3-dev package)")
    return [f"triton cannot build its launchers: {p}; the fused and compile backends will fail" for p in problems]


def gpu_test_files() -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                  if "mark.gpu" in p.read_text())


def pytest_summary(log: Path) -> str:
    pattern = re.compile(r"\d+ (passed|failed|errors?|skipped)\b.* in [\d.]+s")
    lines = [ln.strip("= \n") for ln in log.read_text().splitlines() if pattern.search(ln)]
    return lines[-1] if lines else "no pytest summary (see the log)"


def missing_modules() -> list[str]:
    return [pkg for module, pkg in WORKFLOW_MODULES.items() if importlib.util.find_spec(module) is None]


def workflow(workdir: Path, env: dict[str, str], cores: int, timeout: float) -> tuple[bool, list[str]]:
    """The tiny config on cpu and cuda, then the report; returns (ok, summary lines)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from workflowrun import copy_workflow, tiny_config

    work = workdir / "workflow"
    if work.exists():
        shutil.rmtree(work)
    config = tiny_config()
    config["use_gpu"] = True
    config["bench"]["devices"] = ["cpu", "cuda"]
    copy_workflow(work, config)
    snakemake = [sys.executable, "-m", "snakemake", f"-c{cores}"]
    code = run_logged([*snakemake, "--printshellcmds"], workdir / "workflow.log", env, cwd=work, timeout=timeout)
    lines = []
    stats = re.search(r"Job stats:\n(.*?)\n\n", (workdir / "workflow.log").read_text(), re.S)
    if stats:
        lines += ["workflow jobs:", *("  " + ln for ln in stats.group(1).splitlines())]
    if code != 0:
        logs = sorted(p for p in (work / "logs").rglob("*.log") if p.stat().st_size) if (work / "logs").exists() else []
        return False, lines + [f"workflow FAILED (exit {code}); log {workdir / 'workflow.log'}; job logs:",
                               *(f"  {p}" for p in logs)]
    code = run_logged([*snakemake, "--report", "report.html"], workdir / "report.log", env, cwd=work, timeout=timeout)
    tables = work / "results/tables/resources.md"
    gpu_rows = []
    if tables.exists():
        sections = tables.read_text().split("\n## ")
        gpu_rows = [s for s in sections if "best backend per variant" in s]
    lines += ["Table 2, GPU rows:", *(gpu_rows[0].splitlines() if gpu_rows else ["  (no GPU section in resources.md)"])]
    lines += [f"report: {work / 'report.html'}" + ("" if code == 0 else " (snakemake --report FAILED, see report.log)"),
              f"tables: {work / 'results/tables'} (resources.md / .html / .csv = Table 2)",
              f"figures: {work / 'results/figures/pythia'} (latency_vs_n.png has the cuda panel)",
              f"bench files: {work / 'results/bench/cuda/pythia'}"]
    return code == 0 and bool(gpu_rows), lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default=os.environ.get("GPU_CHECK_DIR", str(ROOT / "gpu-check")),
                   help="logs, the loader benchmark's result and the workflow run with its report (default ./gpu-check)")
    p.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)), help="Snakemake's -c")
    p.add_argument("--wheels", default=os.environ.get("GPU_CHECK_WHEELS", str(ROOT / ".whl")),
                   help="a folder of wheels for what the image lacks (snakemake, hdf5plugin, ...): installed "
                        "with --no-deps into a scratch site folder, used where present (default ./.whl)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds each part may run before it is killed "
                   "(default %(default)s)")
    p.add_argument("--test-timeout", type=float, default=300, help="seconds one gpu test may run, with pytest-timeout "
                   "where installed (default %(default)s)")
    p.add_argument("--skip-tests", action="store_true", help="to split the check over several runs")
    p.add_argument("--skip-loader", action="store_true")
    p.add_argument("--skip-workflow", action="store_true")
    args = p.parse_args()
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.gettempdir()) / "salt-gpu-check"  # bulky and rebuildable: kept out of workdir
    t0 = time.monotonic()
    wheels = Path(args.wheels)
    site = install_wheels(wheels, scratch) if wheels.is_dir() and any(wheels.glob("*.whl")) else None
    env = environment(scratch, site)
    summary = gpu_header()
    if site is not None:
        summary.append(f"wheels from {wheels} installed into {site}")
    problems = (unmet_requirements(site) if site is not None else []) + triton_build_problems()
    for problem in problems:
        say(f"gpu-check: WARNING: {problem}")
    summary += problems
    ok = True

    if not args.skip_tests:
        say("== 1. every gpu test")
        files = gpu_test_files()
        per_test = [f"--timeout={args.test_timeout:g}"] if importlib.util.find_spec("pytest_timeout") else []
        code = run_logged([sys.executable, "-m", "pytest", "-m", "gpu", "-rs", "-v", "--durations=10",
                           "-p", "no:cacheprovider",
                           *per_test, *files], workdir / "pytest.log", env, timeout=args.timeout)
        summary.append(f"gpu tests ({', '.join(files)}): {pytest_summary(workdir / 'pytest.log')}")
        ok &= code == 0

    if not args.skip_loader:
        say("== 2. loader against the training step (N = 150, batch 1024)")
        if importlib.util.find_spec("hdf5plugin") is None:
            summary.append("loader benchmark NOT RUN: needs hdf5plugin (pip install hdf5plugin)")
            ok = False
        else:
            code = run_logged([sys.executable, str(ROOT / "benchmarks/loader_speed.py"), "--device", "cuda",
                               "--workers", "0", "4", "8", "12", "--dir", str(scratch / "loader-shards"),
                               "--output", str(workdir / "loader_speed.json")], workdir / "loader.log", env,
                              timeout=args.timeout)
            verdict = [ln for ln in (workdir / "loader.log").read_text().splitlines()
                       if ln.startswith(("training step", "loader,", "PASS", "FAIL"))]
            verdict = verdict or (workdir / "loader.log").read_text().splitlines()[-3:]  # its error
            summary += ["loader benchmark:", *("  " + ln for ln in verdict)]
            ok &= code == 0

    if not args.skip_workflow:
        say("== 3. tiny workflow, use_gpu: true, bench.devices: [cpu, cuda]")
        missing = missing_modules()
        if missing:
            summary.append(f"workflow NOT RUN: missing {', '.join(missing)}; bring their wheels (and their "
                           "dependencies') in ./.whl or --wheels DIR, or pip install them")
            ok = False
        else:
            flow_ok, lines = workflow(workdir, env, args.cores, args.timeout)
            summary += lines
            ok &= flow_ok

    summary.append(f"{'PASSED' if ok else 'FAILED'} in {time.monotonic() - t0:.0f} s; logs in {workdir}")
    say("\n== gpu-check summary")
    say("\n".join(summary))
    (workdir / "summary.txt").write_text("\n".join(summary) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
