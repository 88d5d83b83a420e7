"""`salt report`: the paper's tables and figures from metrics and benchmark files.

    salt report tables  --metrics M.json... --bench B.json... --output-dir results/tables
    salt report figures --metrics M.json... --bench B.json... --output-dir results/figures/DATASET
                        [--dataset DATASET] [--attention attention.npz]

Tables cover every dataset given; figures are per dataset (the workflow runs one job each).
Every input is a file an earlier stage wrote; the report loads no model and no shard.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from salt.report.inputs import ReportInputError, load_attention, load_benches, load_evaluations

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="what", metavar="WHAT", required=True)
    for name, text in (("tables", "accuracy, resources, partitions and summary tables (CSV, Markdown, LaTeX, HTML)"),
                       ("figures", "ROC, accuracy, multiplicity, latency, FLOPs and attention figures (PDF, PNG)")):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--metrics", nargs="*", default=[], metavar="JSON",
                       help="metrics.json files from `salt evaluate` (each names its dataset, variant, sort and seed)")
        p.add_argument("--bench", nargs="*", default=[], metavar="JSON", help="benchmark files from `salt bench`")
        p.add_argument("--output-dir", required=True, type=Path)
        if name == "figures":
            p.add_argument("--dataset", help="the dataset these files belong to (default: the one they name)")
            p.add_argument("--attention", type=Path,
                           help="attention.npz from `salt evaluate` of the run whose maps to draw (SAL-T, kT-sorted)")
            p.add_argument("--only", nargs="*", metavar="FIGURE", help="write only these figures")


def _one_dataset(args: argparse.Namespace, evals: list, benches: list) -> str:
    names = {e.dataset for e in evals} | {b.dataset for b in benches}
    if args.dataset:
        stray = [str(x.path) for x in [*evals, *benches] if x.dataset != args.dataset]
        if stray:
            raise ReportInputError(f"--dataset {args.dataset}: these files belong to another dataset: {stray}")
        return args.dataset
    if len(names) != 1:
        raise ReportInputError(f"figures are per dataset; the inputs name {sorted(names) or 'none'} (use --dataset)")
    return names.pop()


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # font substitution notes are not news
    evals = load_evaluations(args.metrics)
    benches = load_benches(args.bench)
    log.info("read %d metrics and %d benchmark files", len(evals), len(benches))
    if args.what == "tables":
        from salt.report.tables import build_tables, write_tables

        written = write_tables(build_tables(evals, benches), args.output_dir)
        print(json.dumps({"written": [str(p) for p in written]}, indent=1))
        return 0

    from salt.report.figures import FIGURES, Context, build_figures

    names = args.only or FIGURES
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        raise ReportInputError(f"--only: unknown figures {unknown}; expected some of {list(FIGURES)}")
    dataset = _one_dataset(args, evals, benches)
    attention = None if args.attention is None else load_attention(args.attention)
    if attention is not None and attention.identity.dataset != dataset:
        raise ReportInputError(f"{args.attention}: attention maps of dataset {attention.identity.dataset!r}, "
                               f"but the figures are for {dataset!r}")
    ctx = Context(dataset=dataset, evals=evals, benches=benches, attention=attention)
    status = build_figures(ctx, args.output_dir, names)
    print(json.dumps(status, indent=1))
    return 0
