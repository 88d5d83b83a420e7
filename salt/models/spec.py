"""One dataclass names a model completely.

The spec is what a config file, a checkpoint and a result file store: a plain dict
with every knob spelled out, so a number can always be traced back to the exact
architecture that produced it. Defaults are the paper's HLS4ML setting (the authors'
SAL-T4HEP code: d_model 16, one head, one block, p = 4, N = 150, five classes).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

# model -> (attention kind, partitioned E/F, convolution on the logits)
MODELS: dict[str, tuple[str, bool, bool]] = {
    "transformer": ("full", False, False),
    "linformer": ("linear", False, False),
    "salt": ("linear", True, True),
    "salt_noconv": ("linear", True, False),
    "salt_nopartition": ("linear", False, True),
    "part": ("full", False, False),
    "salt_pair": ("linear", True, True),
}
# models that add Particle Transformer's pairwise features as an attention bias (models/pairwise.py):
# part over all particle pairs, salt_pair over (particle, partition) pairs
PAIR_BIAS = ("part", "salt_pair")
AGGREGATIONS = ("max", "mean", "sum")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Every architectural knob of one classifier.

    `pair_hidden` (pair-bias models only) is the width of the pointwise network that maps
    the four pair features to one bias per head; 0 makes it a linear map.

    `conv_heights` left as None resolves to the authors' choice: [1, 3, 5] for one
    block, [1, 3, 5, 7, 9] for more (scripts/train_linformer.py:356,373); models
    without the convolution store an empty tuple.
    """

    model: str
    particles: int
    classes: int
    features: int = 3
    d_model: int = 16
    d_ff: int = 16
    heads: int = 4
    partitions: int = 4
    conv_heights: tuple[int, ...] | None = None
    blocks: int = 1
    aggregation: str = "max"
    mask: bool = False
    pair_hidden: int = 0

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model spec: 'model' is {self.model!r}; expected one of {sorted(MODELS)}")
        for key in ("particles", "classes", "features", "d_model", "d_ff", "heads", "partitions", "blocks"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"model spec: {key!r} is {value!r}; expected a positive integer")
        if self.d_model % self.heads:
            raise ValueError(f"model spec: d_model {self.d_model} is not divisible by heads {self.heads}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"model spec: 'aggregation' is {self.aggregation!r}; expected one of {AGGREGATIONS}")
        if not isinstance(self.mask, bool):
            raise ValueError(f"model spec: 'mask' is {self.mask!r}; expected true or false")
        if isinstance(self.pair_hidden, bool) or not isinstance(self.pair_hidden, int) or self.pair_hidden < 0:
            raise ValueError(f"model spec: 'pair_hidden' is {self.pair_hidden!r}; expected a non-negative integer")
        if self.pair_hidden and not self.pair_bias:
            raise ValueError(f"model spec: model {self.model!r} has no pairwise bias; 'pair_hidden' must be 0")
        heights = self.conv_heights
        if heights is None:
            heights = ((1, 3, 5) if self.blocks == 1 else (1, 3, 5, 7, 9)) if self.conv else ()
        elif isinstance(heights, (str, bytes)) or not hasattr(heights, "__iter__"):
            raise ValueError(f"model spec: 'conv_heights' is {heights!r}; expected a list of positive integers")
        heights = tuple(heights)
        if any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in heights):
            raise ValueError(f"model spec: 'conv_heights' is {list(heights)}; expected positive integers")
        if self.conv and not heights:
            raise ValueError(f"model spec: model {self.model!r} convolves the logits; 'conv_heights' must not be empty")
        if not self.conv and heights:
            raise ValueError(f"model spec: model {self.model!r} has no convolution; 'conv_heights' must be empty")
        object.__setattr__(self, "conv_heights", heights)

    # what the model name implies
    @property
    def attention(self) -> str:
        return MODELS[self.model][0]

    @property
    def partitioned(self) -> bool:
        return MODELS[self.model][1]

    @property
    def conv(self) -> bool:
        return MODELS[self.model][2]

    @property
    def pair_bias(self) -> bool:
        return self.model in PAIR_BIAS

    @property
    def reads_mask(self) -> bool:
        """Whether forward uses the mask: for attention and pooling (`mask`), or to leave padding out
        of the pairwise features."""
        return self.mask or self.pair_bias

    @property
    def head_dim(self) -> int:
        return self.d_model // self.heads

    @property
    def chunk(self) -> int:
        """Slots per partition: ceil(N/p); the last partition is shorter when p does not divide N."""
        return math.ceil(self.particles / self.partitions)

    @property
    def hidden_layers(self) -> int:
        """Dense(d_model, relu) layers in the head: one for one block, blocks-1 for deeper models."""
        return max(1, self.blocks - 1)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["conv_heights"] = list(self.conv_heights or ())
        if not self.pair_bias:  # the other models' specs read as before the knob existed
            del out["pair_hidden"]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        if not isinstance(data, dict):
            raise ValueError(f"model spec: expected a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        for key in data:
            if key not in known:
                raise ValueError(f"model spec: unknown key {key!r}; expected some of {sorted(known)}")
        for key in ("model", "particles", "classes"):
            if key not in data:
                raise ValueError(f"model spec: missing required key {key!r}")
        return cls(**data)

    def replace(self, **changes: Any) -> ModelSpec:
        """A copy with some knobs changed (conv_heights re-resolves unless given)."""
        data = self.to_dict()
        if "conv_heights" not in changes and ("blocks" in changes or "model" in changes):
            data["conv_heights"] = None
        data.update(changes)
        return ModelSpec.from_dict(data)
