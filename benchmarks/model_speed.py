#!/usr/bin/env python
"""Speed goals of the model implementation, checked on this machine.

    .venv/bin/python benchmarks/model_speed.py [--before] [--pair] [--output speed.json]

Measures inference throughput (jets/s) of SAL-T, Linformer and the Transformer at
N = 128, 150, 512, 1024 (batch 1024, one thread, CPU; salt.bench's interleaved median),
prints a table and the goals, and exits 1 when a goal is missed:

* N = 150: SAL-T >= 3x the Transformer's throughput and >= 0.75x Linformer's;
* SAL-T time at N = 1024 / time at N = 128 <= 9 (linear in N, cache effects allowed).

--pair adds the pairwise-bias models and their goals: SAL-T with the bias over
(particle, partition) pairs stays linear (time ratio 1024/128 <= 9), while the Transformer
with ParT's N×N bias grows quadratically (ratio >= 32, half of the 64 of N²).

--before adds the straightforward (line-by-line port) path of SAL-T and Linformer,
the "before" column of the optimisation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from salt.bench import bench_models  # noqa: E402
from salt.benchmarking.runtime import tune_allocator  # noqa: E402

GOALS = {
    "salt_vs_transformer_at_150": 3.0,   # throughput ratio, at least
    "salt_vs_linformer_at_150": 0.75,    # throughput ratio, at least
    "salt_time_1024_over_128": 9.0,      # time ratio, at most
    "salt_pair_time_1024_over_128": 9.0,  # time ratio, at most (--pair)
    "part_time_1024_over_128": 32.0,     # time ratio, at least (--pair): quadratic growth
}
MODELS = ["salt", "linformer", "transformer"]
PAIR_MODELS = ["salt_pair", "part"]


def measure(particles: list[int], batch: int, threads: int, repeats: int, before: bool,
            chunk_rows: int | None, models: list[str] = MODELS) -> list[dict]:
    rows = []
    for n in particles:
        reps = repeats if n <= 512 else max(3, repeats // 2)  # the Transformer takes seconds a pass at N=1024
        rows += bench_models(models, n, batch, threads=threads, repeats=reps,
                             warmup=1, impls=("fused", "straightforward") if before else ("fused",),
                             chunk_rows=chunk_rows)
        print(f"  N={n} done", file=sys.stderr, flush=True)
    return rows


def check_goals(rows: list[dict]) -> dict[str, dict]:
    def time_of(model: str, n: int, impl: str = "fused") -> float | None:
        for r in rows:
            if (r["model"], r["particles"], r["impl"]) == (model, n, impl):
                return r["median_s"]
        return None

    out = {}
    salt, transformer, linformer = time_of("salt", 150), time_of("transformer", 150), time_of("linformer", 150)
    if salt and transformer:
        out["salt_vs_transformer_at_150"] = {"value": transformer / salt, "goal": ">= 3.0"}
    if salt and linformer:
        out["salt_vs_linformer_at_150"] = {"value": linformer / salt, "goal": ">= 0.75"}
    for model in ("salt", "salt_pair", "part"):
        small, large = time_of(model, 128), time_of(model, 1024)
        if small and large:
            at_least = model == "part"
            out[f"{model}_time_1024_over_128"] = {
                "value": large / small, "goal": f"{'>=' if at_least else '<='} {GOALS[f'{model}_time_1024_over_128']}"}
    for name, item in out.items():
        limit = GOALS[name]
        at_most = name.endswith("over_128") and not name.startswith("part")
        item["met"] = item["value"] <= limit if at_most else item["value"] >= limit
    return out


def print_table(rows: list[dict], goals: dict[str, dict]) -> None:
    columns = sorted({(r["model"], r["impl"]) for r in rows},
                     key=lambda c: ((MODELS + PAIR_MODELS).index(c[0]), c[1] != "fused"))
    particles = sorted({r["particles"] for r in rows})
    head = "".join(f"{v + ('' if i == 'fused' else ' (' + i + ')'):>28s}" for v, i in columns)
    print(f"{'N':>6s}{head}      jets/s")
    for n in particles:
        cells = []
        for v, i in columns:
            match = [r for r in rows if (r["model"], r["impl"], r["particles"]) == (v, i, n)]
            cells.append(f"{match[0]['jets_per_s']:28,.0f}" if match else f"{'-':>28s}")
        print(f"{n:6d}{''.join(cells)}")
    print()
    for name, item in goals.items():
        print(f"{name:30s} {item['value']:7.2f}  goal {item['goal']:8s} {'met' if item['met'] else 'MISSED'}")
    missing = sorted(set(GOALS) - set(goals))
    if missing:
        print(f"not measured (needs N=128, 150 and 1024; the pair goals --pair): {', '.join(missing)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--particles", default="128,150,512,1024")
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--before", action="store_true", help="also time the straightforward path")
    parser.add_argument("--pair", action="store_true", help="also time salt_pair and part (pairwise bias)")
    parser.add_argument("--chunk-rows", type=int, default=None, help="model inference slicing (0 = off)")
    parser.add_argument("--no-tune-allocator", action="store_true")
    parser.add_argument("--output", help="write rows and goals as JSON")
    args = parser.parse_args(argv)
    tuned = False if args.no_tune_allocator else tune_allocator()
    particles = [int(v) for v in args.particles.split(",")]
    print(f"batch {args.batch}, {args.threads} thread(s), cpu, allocator tuned: {tuned}, "
          f"chunk rows: {'default' if args.chunk_rows is None else args.chunk_rows}", flush=True)
    rows = measure(particles, args.batch, args.threads, args.repeats, args.before, args.chunk_rows,
                   MODELS + PAIR_MODELS if args.pair else MODELS)
    goals = check_goals(rows)
    print_table(rows, goals)
    if args.output:
        from salt.atomic import write_json
        from salt.provenance import provenance

        write_json(args.output, {"provenance": provenance(device="cpu"), "allocator_tuned": tuned,
                                 "rows": rows, "goals": goals})
    return 0 if all(item["met"] for item in goals.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
