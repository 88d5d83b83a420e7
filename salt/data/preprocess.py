"""One raw file -> sorted, padded HDF5 shards for the train, val and test splits.

One Snakemake job per raw file and sort: the file is read in bounded entry
ranges, every range is sorted, cut and padded in one vectorised pass
(`kinematics.sort_and_pad`), and each object is sent to a split. The split is
either fixed by the file (JetClass val files, HLS4ML's official val = test set)
or drawn per object from a generator seeded by the split seed and the file
name, so it is reproducible and independent of the order jobs run in.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from salt.cli import json_value
from salt.data import sources
from salt.data.kinematics import TRUNCATIONS, required_fields, resolve_truncation, sort_and_pad
from salt.data.record import KINDS, Record, RecordError
from salt.data.shards import SPLITS, ShardError, ShardWriter

log = logging.getLogger(__name__)


def split_rng(seed: int, source: str | Path) -> np.random.Generator:
    """The split generator of one raw file: a function of the seed and the file's last two path
    components only (ModelNet10 units are folders named class/train), so it does not depend on
    where the data lives or on the order jobs run in."""
    path = Path(source)
    return np.random.default_rng([seed, zlib.crc32(f"{path.parent.name}/{path.name}".encode())])


def assign_splits(rng: np.random.Generator, n: int, val_fraction: float, test_fraction: float) -> np.ndarray:
    """Split index per object (0 train, 1 val, 2 test)."""
    u = rng.random(n)
    return np.where(u < test_fraction, 2, np.where(u < test_fraction + val_fraction, 1, 0))


def preprocess(source: str, inputs: Sequence[str | Path], outputs: dict[str, str | Path], *, sort: str,
               n_particles: int, features: Sequence[str], truncation: str = "auto", split: str | None = None,
               val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 42, step: int = 50_000,
               options: dict[str, Any] | None = None, classes: Sequence[str] | None = None,
               progress: bool = False) -> dict[str, int]:
    """Write one shard per split from `inputs`; returns the number of objects per split.

    split: None draws a seeded random split; "train", "val" or "test" sends every object there.
    truncation: which N particles are kept (kinematics.TRUNCATIONS; auto = the N hardest for jets).
    classes: the class order the caller expects (the config's); a file with other classes is an
    error, not a silent relabelling. The shards record these arguments as the settings that made them.
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
    missing = [s for s in SPLITS if s not in outputs]
    if missing:
        raise ValueError(f"outputs for splits {missing} missing")
    reader = sources.get(source)
    options = reader.reader_options(options=options)
    settings = {"source": source, "classes": None if classes is None else list(classes), "particles": n_particles,
                "truncation": truncation, "features": list(features), "sort": sort, "options": options,
                "split": {"fixed": split, "val": val_fraction, "test": test_fraction, "seed": seed}}
    fields = required_fields(features, sort, resolve_truncation(truncation, reader.kind))
    first: Record | None = None
    writers: dict[str, ShardWriter] = {}
    counts = {s: 0 for s in SPLITS}
    t0 = time.perf_counter()
    try:
        for path in inputs:
            rng = split_rng(seed, path)
            bar = tqdm(desc=Path(path).name, unit="jets", disable=not progress, mininterval=2)
            for rec in reader.iter_records(path, step=step, fields=fields, **options):
                if first is None:
                    first = rec
                    if classes is not None and list(classes) != list(rec.class_names):
                        raise RecordError(f"{path}: the file's classes {list(rec.class_names)} differ from the "
                                          f"configured classes {list(classes)} (same names, same order)")
                    jet_features = list(KINDS[rec.kind][1])
                    attrs = {"classes": list(rec.class_names), "sort": sort, "kind": rec.kind,
                             "truncation": resolve_truncation(truncation, rec.kind),
                             "config": settings, "source": [str(p) for p in inputs]}
                    for s in SPLITS:
                        writers[s] = ShardWriter(Path(outputs[s]), n_particles, features, jet_features,
                                                 dict(attrs, split=s)).__enter__()
                elif tuple(rec.class_names) != tuple(first.class_names):
                    raise ValueError(f"{path}: classes {rec.class_names} differ from {first.class_names} "
                                     f"of {first.source}")
                particles, mask, sort_value = sort_and_pad(rec, features, sort, n_particles, truncation)
                jet = np.stack([np.asarray(rec.jets[k], dtype=np.float32) for k in jet_features], axis=1)
                if split is None:
                    which = assign_splits(rng, len(rec), val_fraction, test_fraction)
                else:
                    which = np.full(len(rec), SPLITS.index(split))
                for i, s in enumerate(SPLITS):
                    sel = which == i
                    if sel.any():
                        writers[s].append(particles[sel], mask[sel], sort_value[sel], rec.labels[sel], jet[sel])
                        counts[s] += int(sel.sum())
                bar.update(len(rec))
            bar.close()
        if first is None:
            raise ValueError(f"{', '.join(map(str, inputs))}: no objects read")
    except BaseException as err:
        for w in writers.values():
            w.__exit__(type(err), err, err.__traceback__)
        raise
    for w in writers.values():
        w.__exit__(None, None, None)
    elapsed = time.perf_counter() - t0
    total = sum(counts.values())
    log.info("%s: %d objects in %.1f s (%.0f/s); %s", ", ".join(map(str, inputs)), total, elapsed,
             total / max(elapsed, 1e-9), counts)
    return counts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", required=True, choices=sorted(sources.MODULES), help="dataset reader")
    parser.add_argument("--input", required=True, nargs="+", help="raw file(s) of this job")
    for s in SPLITS:
        parser.add_argument(f"--output-{s}", required=True, help=f"{s} shard to write")
    parser.add_argument("--sort", required=True, help="sort key (kt, pt, deltaR, none, ca_depth, lund_kt; radius for point clouds)")
    parser.add_argument("--particles", type=int, required=True, help="particles per object after cut/padding")
    parser.add_argument("--features", nargs="+", required=True, help="per-particle features to store")
    parser.add_argument("--truncation", choices=TRUNCATIONS, default="auto",
                        help="which N particles to keep: pt = the N hardest, then sorted (the authors'); key = the "
                             "first N of the sort; auto = pt for jets, key for point clouds")
    parser.add_argument("--split", choices=SPLITS, default=None, help="send every object to this split")
    parser.add_argument("--val-fraction", type=float, default=0.15)
    parser.add_argument("--test-fraction", type=float, default=0.15)
    parser.add_argument("--seed", type=int, default=42, help="split seed")
    parser.add_argument("--step", type=int, default=50_000, help="objects read per chunk (bounds memory)")
    parser.add_argument("--options", default={}, type=json_value, help="JSON of reader options")
    parser.add_argument("--classes", nargs="+", help="the class order the files must have (default: theirs)")
    parser.add_argument("--progress", action="store_true")


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        counts = preprocess(args.source, args.input, {s: getattr(args, f"output_{s}") for s in SPLITS},
                            sort=args.sort, n_particles=args.particles, features=args.features,
                            truncation=args.truncation, split=args.split,
                            val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed,
                            step=args.step, options=args.options, classes=args.classes,
                            progress=args.progress)
    except (RecordError, ShardError, FileNotFoundError) as exc:  # bad input: the message names file and entry
        print(f"salt preprocess: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(counts))
    return 0
