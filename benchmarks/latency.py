#!/usr/bin/env python
"""Latency table of a config's variants on this machine: what the pipeline's bench rule measures.

    .venv/bin/python benchmarks/latency.py [--config config.yaml] [--dataset pythia] [--device cpu]
        [--variants salt,transformer] [--threads 1] [--output-dir results/bench-manual]

For each variant of the dataset (the config's `runs`), the N sweep of `bench.particles` (plus the
dataset's N) at batch 1 and the largest of `bench.batch_sizes`, with the config's backends,
precisions, repeats and memory budget (salt.bench.run_sweep; each configuration in a fresh
process). Prints one markdown table: ms per batch (p10-p90) at batch 1 and at the largest batch,
ns per jet, and peak memory at the largest batch; skipped configurations are listed with why.
--output-dir also writes the result files, in the bench rule's format.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from salt import bench, plan  # noqa: E402
from salt.models import ModelSpec  # noqa: E402


def table(documents: list[dict], largest: int, threads: int) -> list[str]:
    lines = [f"| variant | backend | N | batch 1: ms (p10-p90) | batch {largest}: ms (p10-p90) | "
             f"batch {largest}: ns/jet | batch {largest}: jets/s | batch {largest}: peak MB |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for doc in documents:
        skipped = {(s["particles"], s["backend"], s["batch"]) for s in doc["skipped"]}
        for backend in doc["settings"]["backends"]:
            for n in doc["settings"]["particles"]:
                def cell(batch: int, key: str = "ms") -> str:
                    rows = [r for r in doc["results"] if (r["particles"], r["backend"], r["batch"]) == (n, backend, batch)
                            and r["precision"] == "fp32" and r["threads"] == threads]
                    if not rows:
                        return "skipped" if (n, backend, batch) in skipped else "-"
                    r = rows[0]
                    if key == "ms":
                        return f"{r['latency_ms']:.3f} ({r['latency_ms_p10']:.3f}-{r['latency_ms_p90']:.3f})"
                    if key == "ns":
                        return f"{r['ns_per_jet']:,.0f}"
                    if key == "jets":
                        return f"{r['jets_per_s']:,.0f}"
                    return "-" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:.1f}"

                lines.append(f"| {doc['variant']} | {backend} | {n} | {cell(1)} | {cell(largest)} | "
                             f"{cell(largest, 'ns')} | {cell(largest, 'jets')} | {cell(largest, 'mb')} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("--dataset", help="default: the config's first dataset")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--variants", help="comma-separated (default: every variant the config runs on the dataset)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="0 = all cores (default 1)")
    parser.add_argument("--output-dir", help="also write {device}/{dataset}/{variant}.json here")
    args = parser.parse_args(argv)
    config = yaml.safe_load(Path(args.config).read_text())
    dataset = args.dataset or config["datasets"][0]
    variants = args.variants.split(",") if args.variants else plan.variants_of(config, dataset)
    cfg = config.get("bench", {})
    kind = bench.device_kind(args.device)
    batches = cfg.get("batch_sizes", list(bench.DEFAULT_BATCHES))
    budget_gb = cfg.get("memory_budget_gb", {}).get(kind)
    try:
        bench.require_device(args.device)
    except bench.BenchError as err:
        print(f"latency.py: {err}", file=sys.stderr)
        return 1
    documents = []
    for variant in variants:
        spec = ModelSpec.from_dict(plan.variant_spec(config, dataset, variant))
        print(f"{variant} (N = {spec.particles}):", file=sys.stderr, flush=True)
        sweep = bench.run_sweep(
            spec, device=args.device, particles=cfg.get("particles", []), batches=batches, threads=args.threads,
            backends=cfg.get("backends", {}).get(kind), precisions=cfg.get("precisions", {}).get(kind),
            repeats=cfg.get("repeats", 20), warmup=cfg.get("warmup", 3), time_budget_s=cfg.get("time_budget_s", 60),
            memory_budget_mb=None if budget_gb is None else budget_gb * 1024, impl=cfg.get("impl", "fused"),
            chunk_rows=cfg.get("chunk_rows"), tune_allocator=cfg.get("tune_allocator", True))
        doc = bench.bench_document(spec, variant=variant, dataset=dataset, device=args.device, sweep=sweep)
        documents.append(doc)
        if args.output_dir:
            from salt.atomic import write_json

            write_json(Path(args.output_dir) / args.device / dataset / f"{variant}.json", doc)
    info = documents[0]["device_info"] if documents else {}
    print(f"{dataset} on {args.device} ({info.get('gpu') or info.get('cpu')}), threads {args.threads[0]}, "
          f"fp32, repeats {cfg.get('repeats', 20)}, median (p10-p90)")
    print("\n".join(table(documents, max(batches), args.threads[0])))
    for doc in documents:
        for s in doc["skipped"]:
            print(f"skipped: {doc['variant']} {bench.describe(s)}: {s['reason']}")
        for note in doc["notes"]:
            print(f"note: {doc['variant']}: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
