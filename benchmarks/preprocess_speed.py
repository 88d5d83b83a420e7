#!/usr/bin/env python
"""Preprocessing throughput: JetClass-format ROOT -> sorted HDF5 shards, on one core.

    .venv/bin/python benchmarks/preprocess_speed.py                  # 100k jets, N=128, kt
    .venv/bin/python benchmarks/preprocess_speed.py --step 50000 --repeats 5 --phases
    .venv/bin/python benchmarks/preprocess_speed.py --sort lund_kt  # C/A clustering-history sorts

Writes (once, kept in --dir) a 100k-jet ROOT file in the JetClass schema with tests/formats.py's
writer: one class per file, ~50 particles per jet (Poisson), the real branch set and dtypes,
ZLIB(1) baskets of 20k entries, ~185 MB (a real JetClass file: 100k jets, ~152 MB). Then runs
`salt preprocess` on it as a child process pinned to one CPU with one thread, exactly as a
workflow job does (N=128, features pt/deta/dphi, sort kt, seeded random split), and reports
per run:

* jets/s end to end: jets / wall time of the whole process (imports included);
* jets/s in the loop: what `salt preprocess` logs (read, sort, pad, split, write);
* CPU seconds (user + sys) and the child's peak RSS (ru_maxrss).

--phases also runs the same preprocessing in this process with timers around the reader,
sort_and_pad and the shard writer, to show where the time goes. The goal is >= 100k jets/s per
core end to end, >= 20k for the sorts that recluster every jet with FastJet (ca_depth, lund_kt;
--phases then also times the clustering); the exit status is 1 when the median misses it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

GOAL = 100_000  # jets/s per core, end to end
CLUSTERING_GOAL = 20_000  # the same for the C/A clustering-history sorts
ONE_THREAD = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")}


def input_file(directory: Path, jets: int, mean_particles: float, seed: int = 1) -> Path:
    path = directory / f"jetclass_{jets}_{mean_particles:g}.root"
    if not path.exists():
        from formats import write_jetclass_file

        t0 = time.perf_counter()
        tmp = path.with_suffix(".part.root")
        write_jetclass_file(tmp, jets, seed=seed, classes=1, mean_particles=mean_particles)
        os.replace(tmp, path)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.0f} s")
    return path


def command(path: Path, out: Path, args: argparse.Namespace) -> list[str]:
    salt = Path(sys.executable).parent / "salt"
    return [str(salt), "preprocess", "--source", "jetclass", "--input", str(path), "--sort", args.sort,
            "--particles", str(args.particles), "--features", *args.features, "--step", str(args.step),
            "--val-fraction", "0.15", "--test-fraction", "0.15", "--seed", "42",
            *[f"--output-{s}={out / f'{s}.h5'}" for s in ("train", "val", "test")]]


def run_child(cmd: list[str], cpu: int) -> dict:
    """One `salt preprocess` process on one CPU; its wall time, CPU time, peak RSS and log."""
    env = dict(os.environ, **ONE_THREAD)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: os.sched_setaffinity(0, {cpu}))
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"salt preprocess failed ({proc.returncode}):\n{output}")
    m = re.search(r"(\d+) objects in [\d.]+ s \((\d+)/s\)", output)
    jets, rate = int(m.group(1)), int(m.group(2))
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "user_s": usage.ru_utime,
            "sys_s": usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024, "jets": jets, "loop_s": jets / rate}


def phases(path: Path, out: Path, args: argparse.Namespace) -> dict[str, float]:
    """Seconds spent in each stage of one in-process run."""
    import uproot

    import salt.data.clustering as clustering
    import salt.data.preprocess as pp
    from salt.data.record import Record
    from salt.data.shards import ShardWriter

    spent: dict[str, float] = defaultdict(float)

    def timed(owner, name: str, label: str) -> None:
        func = getattr(owner, name)
        spent[label] = 0.0    # report the stages in this order

        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return func(*a, **k)
            finally:
                spent[label] += time.perf_counter() - t
        setattr(owner, name, wrapper)

    timed(uproot.TTree, "arrays", "read: uproot (baskets, decompression)")
    timed(Record, "validate", "record validation")
    timed(clustering, "declustering_positions", "  of which C/A keys (FastJet + trees)")
    timed(clustering, "_fastjet_postorder", "    of which FastJet C/A clustering")
    timed(pp, "sort_and_pad", "sort and pad")
    timed(ShardWriter, "append", "shard write (Blosc LZ4)")
    timed(ShardWriter, "__exit__", "shard close")
    t0 = time.perf_counter()
    pp.preprocess("jetclass", [path], {s: out / f"{s}.h5" for s in ("train", "val", "test")}, sort=args.sort,
                  n_particles=args.particles, features=args.features, step=args.step)
    total = time.perf_counter() - t0
    spent["other (record building, split, ...)"] = total - sum(v for k, v in spent.items() if not k.startswith(" "))
    spent["total"] = total
    return dict(spent)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jets", type=int, default=100_000)
    parser.add_argument("--mean-particles", type=float, default=50.0)
    parser.add_argument("--particles", type=int, default=128, help="N")
    parser.add_argument("--features", nargs="+", default=["pt", "deta", "dphi"])
    parser.add_argument("--sort", default="kt")
    parser.add_argument("--step", type=int, default=20_000, help="jets per read (paper.yaml's JetClass value)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: the last allowed one)")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "salt_preprocess_speed")
    parser.add_argument("--phases", action="store_true", help="also time the stages in-process")
    parser.add_argument("--output", type=Path, help="write the results as JSON")
    args = parser.parse_args()

    args.dir.mkdir(parents=True, exist_ok=True)
    path = input_file(args.dir, args.jets, args.mean_particles)
    cpu = args.cpu if args.cpu is not None else max(os.sched_getaffinity(0))
    runs = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        out = Path(tmp)
        cmd = command(path, out, args)
        print("command:", " ".join(cmd), f"(pinned to CPU {cpu}, 1 thread)")
        for i in range(args.repeats):
            r = run_child(cmd, cpu)
            runs.append(r)
            print(f"run {i + 1}: {r['jets'] / r['wall_s']:8.0f} jets/s end to end ({r['wall_s']:.2f} s wall, "
                  f"{r['cpu_s']:.2f} s CPU: {r['user_s']:.2f} user + {r['sys_s']:.2f} sys), "
                  f"{r['jets'] / r['loop_s']:8.0f} jets/s in the loop, "
                  f"{r['jets'] / r['cpu_s']:8.0f} jets per CPU second, "
                  f"peak RSS {r['peak_rss_mb']:.0f} MB")
        stages = None
        if args.phases:
            os.sched_setaffinity(0, {cpu})
            os.environ.update(ONE_THREAD)
            stages = phases(path, out, args)
            print("stages of one in-process run (s):")
            for name, seconds in stages.items():
                print(f"  {name:40s} {seconds:6.3f}")

    from salt.data.clustering import SORTS

    goal = CLUSTERING_GOAL if args.sort in SORTS else GOAL
    end_to_end = statistics.median(r["jets"] / r["wall_s"] for r in runs)
    in_loop = statistics.median(r["jets"] / r["loop_s"] for r in runs)
    per_cpu_s = statistics.median(r["jets"] / r["cpu_s"] for r in runs)
    peak = max(r["peak_rss_mb"] for r in runs)
    print(f"median: {end_to_end:.0f} jets/s/core end to end, {in_loop:.0f} jets/s/core in the loop, "
          f"{per_cpu_s:.0f} jets per CPU second (what a shared machine's wall time hides); "
          f"peak RSS {peak:.0f} MB per file of {args.jets} jets; goal >= {goal} jets/s/core end to end: "
          f"{'met' if end_to_end >= goal else 'MISSED'}")
    if args.output:
        args.output.write_text(json.dumps({"command": cmd, "cpu": cpu, "runs": runs, "stages": stages,
                                           "median_jets_per_s_end_to_end": end_to_end,
                                           "median_jets_per_s_in_loop": in_loop, "median_jets_per_cpu_s": per_cpu_s,
                                           "peak_rss_mb": peak,
                                           "goal_jets_per_s": goal}, indent=2) + "\n")
    return 0 if end_to_end >= goal else 1


if __name__ == "__main__":
    sys.exit(main())
