"""The attention file: mean attention maps of a model's first block, per class, as the figure draws them.

`salt evaluate` computes them, because it already holds the trained model and the normalised
test split; it writes them beside metrics.json as attention.npz, so the report reads one small
file and never loads a model or a shard. Every variant gets one (every model exposes its
attention weights), so the evaluate rule's outputs are the same for all runs. This module is
the file's format, shared by its writer and its reader; it imports no model code.

The file: `maps` float32 (C, H, N, K), the mean over the selected jets of class c of head h's
weights from query particle n to key k (a particle, or a partition for the linear variants),
counting a jet only where particle n is real (NaN where no selected jet has it); `jets` int (C,),
the jets averaged per class; `meta`, a JSON string with the run's identity, the model spec, the
classes, the key axis, the number of blocks and the jets asked for per class.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from salt.atomic import atomic_path
from salt.identity import RunIdentity

FORMAT = "salt-attention-1"
ARRAYS = ("maps", "jets", "meta")


@dataclass
class AttentionMaps:
    identity: RunIdentity
    spec: dict[str, Any]
    classes: list[str]
    maps: np.ndarray  # (C, H, N, K)
    jets: np.ndarray  # (C,)
    key_axis: str  # "particle" (full attention: K = N) or "partition" (K = p)
    blocks: int
    jets_per_class: int

    def by_class(self) -> dict[str, tuple[np.ndarray, int]]:
        """{class: ((H, N, K) map, jets)} for the classes that had test jets."""
        return {c: (self.maps[k], int(self.jets[k])) for k, c in enumerate(self.classes) if self.jets[k] > 0}


def write_attention(path: str | Path, a: AttentionMaps) -> None:
    meta = {"format": FORMAT, "identity": a.identity.to_dict(), "spec": a.spec, "classes": a.classes,
            "key_axis": a.key_axis, "blocks": a.blocks, "block": 1, "jets_per_class": a.jets_per_class}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, maps=a.maps, jets=a.jets, meta=np.array(json.dumps(meta)))


def read_attention(path: str | Path) -> AttentionMaps:
    """Read an attention.npz; a file that is not one names itself and what is wrong."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in ARRAYS if k in npz.files}
    except OSError:
        raise
    except Exception as err:  # noqa: BLE001 - numpy and zipfile raise many types for a file of another kind
        raise ValueError(f"{path}: not an attention file written by salt evaluate ({type(err).__name__}: {err})") from err
    missing = [k for k in ARRAYS if k not in arrays]
    if missing:
        raise ValueError(f"{path}: attention file has no {missing[0]!r} array")
    maps, jets, meta_text = arrays["maps"], arrays["jets"], str(arrays["meta"])
    try:
        meta = json.loads(meta_text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: 'meta' is not valid JSON ({err})") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"{path}: format is {found!r}; expected {FORMAT!r}")
    identity = RunIdentity.from_file(meta, path)
    for key in ("spec", "classes", "key_axis", "blocks", "jets_per_class"):
        if key not in meta:
            raise ValueError(f"{path}: 'meta' has no {key!r} entry")
    if maps.ndim != 4 or maps.shape[0] != len(meta["classes"]) or jets.shape != (len(meta["classes"]),):
        raise ValueError(f"{path}: maps {maps.shape} and jets {jets.shape} do not fit "
                         f"{len(meta['classes'])} classes (expected (C, H, N, K) and (C,))")
    return AttentionMaps(identity=identity, spec=dict(meta["spec"]), classes=[str(c) for c in meta["classes"]],
                         maps=maps, jets=jets, key_axis=str(meta["key_axis"]), blocks=int(meta["blocks"]),
                         jets_per_class=int(meta["jets_per_class"]))
