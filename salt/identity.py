"""Which run a result file belongs to: its dataset, variant, sort and seed.

The workflow names a run by the wildcards of its paths, but a file that names it in its own
content can be read, copied and combined without trusting where it lies, and a later stage
never has to parse a path to know what it holds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KEYS = ("dataset", "variant", "sort", "seed")


@dataclass(frozen=True)
class RunIdentity:
    dataset: str
    variant: str  # the name of a model spec in config.yaml's variants, e.g. salt_p8
    sort: str
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_file(cls, data: Mapping[str, Any], path: str | Path) -> RunIdentity:
        """The 'identity' entry of a result file's content; a file without one (written before files
        named their run) is refused with the file and the missing key named."""
        block = data.get("identity")
        if not isinstance(block, Mapping):
            raise ValueError(f"{path}: no 'identity' entry (the run's {', '.join(KEYS)}); "
                             "it was written by an older salt evaluate: evaluate the run again")
        for key in KEYS:
            if key not in block:
                raise ValueError(f"{path}: 'identity' has no {key!r} entry")
        try:
            seed = int(block["seed"])
        except (TypeError, ValueError):
            raise ValueError(f"{path}: 'identity' seed is {block['seed']!r}; expected an integer") from None
        return cls(dataset=str(block["dataset"]), variant=str(block["variant"]), sort=str(block["sort"]), seed=seed)
