#!/usr/bin/env python
"""What the demo's generated jets look like: multiplicities, the pT spectrum at the window's
edge, and the jet pT that N kept particles carry.

    .venv/bin/python benchmarks/demo_jets.py --dir /tmp/jets_ref --jets 600 --pthat-min 250 \\
        --part-pt-min 0 --thresholds 0.5 0.75 1 1.5 2 --pthat-cuts 300 350 400 450
    .venv/bin/python benchmarks/demo_jets.py --dir /tmp/jets_demo --jets 600   # the generator's defaults

Generates --jets jets per class with `salt.data.pythia.generate` into --dir (a file that
is already there with the same settings is reused), then prints JSON with, per class and pooled
over the five classes (equal numbers, as in the demo):

* multiplicity: mean, median, 5 % and 95 % quantiles of the constituents per jet, at the file's
  own threshold and, with --thresholds, counting only constituents above each (an offline
  approximation of generating with that threshold: the jets are not reclustered);
* edge: the share of the window's jets in 500-550 GeV (pt_min .. 1.1 pt_min) and, with
  --pthat-cuts, the fraction of the jets in that bin and in the whole window whose event had
  pTHat below each cut, i.e. the jets a generation with pTHatMin = cut would not have made
  (generation with a lower --pthat-min is the unbiased reference);
* kept_pt: median and 5 % quantile of the fraction of the jet's pT (scalar sum over its
  constituents) that the N particles kept carry, with the ΔR sort, for both truncations,
  computed by `kinematics.sort_and_pad` as preprocessing does.

HLS4ML's stored constituents, for comparison: mean 49, 5-95 % 22-89 (pooled over its five classes).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from salt.data import pythia  # noqa: E402

EDGE_FRACTION = 1.1  # the edge bin: pt_min .. 1.1 pt_min


def sample(directory: Path, process: str, args: argparse.Namespace) -> Path:
    """One class's file, generated unless a file with the same settings is there."""
    path = directory / f"{process}.root"
    stamp = path.with_suffix(".json")
    settings = {"jets": args.jets, "seed": args.seed, "pthat_min": args.pthat_min, "part_pt_min": args.part_pt_min}
    if path.exists() and stamp.exists() and json.loads(stamp.read_text())["settings"] == settings:
        return path
    summary = pythia.generate(process, args.jets, args.seed + pythia.CLASSES.index(process), path,
                              pthat_min=args.pthat_min, part_pt_min=args.part_pt_min, progress=False)
    stamp.write_text(json.dumps({"settings": settings, "summary": summary}, default=str))
    print(f"{process}: {args.jets} jets, {summary['events_generated']} events, {summary['wall_time_s']:.0f} s",
          file=sys.stderr)
    return path


def quantiles(x: np.ndarray) -> dict[str, float]:
    q5, q50, q95 = np.quantile(x, [0.05, 0.5, 0.95])
    return {"mean": round(float(np.mean(x)), 1), "median": float(q50), "p5": float(q5), "p95": float(q95)}


def read(path: Path) -> dict[str, np.ndarray]:
    import awkward as ak
    import uproot

    with uproot.open(path) as f:
        t = f[pythia.TREE]
        a = t.arrays(["jet_pt", "aux_pthat", "part_px", "part_py"])
    return {"jet_pt": np.asarray(a["jet_pt"], dtype=np.float64), "pthat": np.asarray(a["aux_pthat"], dtype=np.float64),
            "part_pt": np.hypot(a["part_px"], a["part_py"]), "counts": np.asarray(ak.num(a["part_px"]))}


def multiplicity(data: dict, thresholds: list[float]) -> dict[str, dict[str, float]]:
    import awkward as ak

    out = {"file": quantiles(data["counts"])}
    for thr in thresholds:
        out[f">= {thr:g} GeV"] = quantiles(np.asarray(ak.sum(data["part_pt"] >= thr, axis=1)))
    return out


def edge(data: dict, cuts: list[float], pt_min: float) -> dict[str, float]:
    pt, pthat = data["jet_pt"], data["pthat"]
    in_edge = pt < EDGE_FRACTION * pt_min
    out = {"edge_share": round(float(in_edge.mean()), 4), "jets": int(len(pt)), "edge_jets": int(in_edge.sum())}
    for cut in cuts:
        low = pthat < cut
        out[f"lost_edge_pthat<{cut:g}"] = round(float(low[in_edge].mean()), 4) if in_edge.any() else None
        out[f"lost_all_pthat<{cut:g}"] = round(float(low.mean()), 4)
        kept = ~low
        out[f"edge_share_pthat>={cut:g}"] = round(float(in_edge[kept].mean()), 4) if kept.any() else None
    return out


def kept_pt(path: Path, n_particles: int) -> dict[str, dict[str, float]]:
    import awkward as ak

    from salt.data import sources
    from salt.data.kinematics import sort_and_pad

    out = {}
    for truncation in ("pt", "key"):
        fractions = []
        for rec in sources.get("pythia").iter_records(path, **sources.get("pythia").reader_options()):
            x, _, _ = sort_and_pad(rec, ["pt"], "deltaR", n_particles, truncation)
            fractions.append(x[:, :, 0].sum(axis=1) / np.asarray(ak.sum(rec.particles.pt, axis=1)))
        f = np.concatenate(fractions)
        out[truncation] = {"median": round(float(np.median(f)), 4), "p5": round(float(np.quantile(f, 0.05)), 4)}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, required=True, help="where the generated files live")
    parser.add_argument("--jets", type=int, default=600, help="jets per class")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--pthat-min", type=float, default=None, help="generator's pTHatMin (default: its own)")
    parser.add_argument("--part-pt-min", type=float, default=None, help="constituent threshold (default: its own)")
    parser.add_argument("--thresholds", type=float, nargs="*", default=[], help="offline constituent thresholds, GeV")
    parser.add_argument("--pthat-cuts", type=float, nargs="*", default=[], help="pTHat cuts to evaluate, GeV")
    parser.add_argument("--particles", type=int, default=64, help="N for the kept-pT fraction")
    parser.add_argument("--classes", nargs="+", default=list(pythia.CLASSES))
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)

    report: dict = {"settings": {k: v for k, v in vars(args).items() if k != "dir"}, "classes": {}}
    pooled: dict[str, list] = {"counts": [], "part_pt": []}
    for process in args.classes:
        path = sample(args.dir, process, args)
        data = read(path)
        pooled["counts"].append(data["counts"])
        pooled["part_pt"].append(data["part_pt"])
        report["classes"][process] = {"multiplicity": multiplicity(data, args.thresholds),
                                      "edge": edge(data, args.pthat_cuts, 500.0),
                                      "kept_pt_deltaR": kept_pt(path, args.particles)}
    import awkward as ak

    report["pooled_multiplicity"] = multiplicity(
        {"counts": np.concatenate(pooled["counts"]), "part_pt": ak.concatenate(pooled["part_pt"])}, args.thresholds)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
