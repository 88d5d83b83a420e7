"""The jet classifier shell shared by every model (models/Linformer.py:220-237):

    per-particle Dense(d_model, relu) -> blocks -> pool over particles
    -> Dense(d_model, relu) × max(1, blocks - 1) -> Dense(classes)

It returns logits; `probabilities` applies the softmax (or the sigmoid for one class).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from salt.models.attention import IMPLEMENTATIONS
from salt.models.blocks import EncoderBlock
from salt.models.keras_init import keras_dense_
from salt.models.pairwise import PairBias
from salt.models.spec import ModelSpec


class JetClassifier(nn.Module):
    # Without autograd on a CPU, forward runs the batch in slices of at most this many particle
    # rows (jets × N) so that each intermediate (rows × d_model floats, 4 MiB) stays in cache:
    # the model is bound by memory traffic, and per-jet results do not depend on the slicing.
    # 0 disables the slicing.
    inference_chunk_rows: int = 65536

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        d = spec.d_model
        self.embed = keras_dense_(nn.Linear(spec.features, d))
        self.blocks = nn.ModuleList(EncoderBlock(spec) for _ in range(spec.blocks))
        self.hidden = nn.ModuleList(keras_dense_(nn.Linear(d, d)) for _ in range(spec.hidden_layers))
        self.out = keras_dense_(nn.Linear(d, spec.classes))
        # built last, so that a seed gives the shared weights the plain model gets
        self.pair = PairBias(spec) if spec.pair_bias else None

    def set_impl(self, impl: str) -> JetClassifier:
        """Choose the fused (default) or the straightforward forward path; both compute the same function."""
        if impl not in IMPLEMENTATIONS:
            raise ValueError(f"impl is {impl!r}; expected one of {IMPLEMENTATIONS}")
        for module in self.modules():
            if hasattr(module, "impl"):
                module.impl = impl
        return self

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, N, F) float; mask: (B, N) bool (True = real particle), used only when spec.reads_mask
        (spec.mask, or a pairwise bias that leaves padding out). Returns logits (B, C)."""
        rows = self.inference_chunk_rows
        tracing = torch.compiler.is_compiling() or getattr(torch.compiler, "is_exporting", lambda: False)()
        if (rows and not tracing and not torch.is_grad_enabled() and x.device.type == "cpu" and x.dim() == 3
                and x.shape[0] * x.shape[1] > rows):
            step = max(1, rows // x.shape[1])
            return torch.cat([self._run(x[i : i + step], None if mask is None else mask[i : i + step], False)[0]
                              for i in range(0, x.shape[0], step)])
        return self._run(x, mask, need_weights=False)[0]

    @torch.no_grad()
    def probabilities(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return probabilities(self(x, mask))

    def attention_maps(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Attention weights after the softmax, one per block: (B, H, N, p), or (B, H, N, N) for full attention."""
        return self._run(x, mask, need_weights=True)[1]

    def _run(self, x: torch.Tensor, mask: torch.Tensor | None, need_weights: bool
             ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        spec = self.spec
        used = check_inputs(spec, x, mask)
        bias = None if self.pair is None else self.pair(x, mask)  # one bias for every block, as in ParT
        mask = used  # the pair features leave padding out; attention and pooling see it unless spec.mask
        h = F.relu(self.embed(x))
        maps = []
        for block in self.blocks:
            h, weights = block(h, mask, need_weights, bias)
            maps.append(weights)
        z = pool(h, mask, spec.aggregation)
        for layer in self.hidden:
            z = F.relu(layer(z))
        return self.out(z), maps


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities from logits (B, C): the softmax, or the sigmoid for one class."""
    return torch.sigmoid(logits) if logits.shape[-1] == 1 else torch.softmax(logits, dim=-1)


def check_inputs(spec: ModelSpec, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor | None:
    """The mask attention and pooling use: None unless spec.mask (the reference has no mask:
    padded slots take part everywhere); raises on a wrongly shaped input, or mask when the
    model reads it (spec.reads_mask: a pairwise bias always leaves padding out)."""
    if x.dim() != 3 or x.shape[1] != spec.particles or x.shape[2] != spec.features:
        raise ValueError(f"input has shape {tuple(x.shape)}; expected (batch, {spec.particles}, {spec.features})")
    if not spec.reads_mask:
        return None
    if mask is not None and (mask.dtype != torch.bool or mask.shape != x.shape[:2]):
        raise ValueError(f"mask has shape {tuple(mask.shape)} and dtype {mask.dtype}; "
                         f"expected bool of shape {tuple(x.shape[:2])}")
    return mask if spec.mask else None


def pool(h: torch.Tensor, mask: torch.Tensor | None, how: str) -> torch.Tensor:
    """Aggregate (B, N, d) over particles; with a mask only real particles count (an empty jet gives 0)."""
    if mask is None:
        if how == "max":
            return _max_over_particles(h)
        return h.sum(1) if how == "sum" else h.mean(1)
    m = mask[..., None]
    if how == "max":
        z = _max_over_particles(h.masked_fill(~m, float("-inf")))
        return torch.where(mask.any(1, keepdim=True), z, torch.zeros_like(z))
    total = (h * m).sum(1)
    return total if how == "sum" else total / m.sum(1).clamp(min=1).to(h.dtype)


def _max_over_particles(h: torch.Tensor) -> torch.Tensor:
    """max over dim 1 by halving: PyTorch's CPU amax over a middle axis is several times slower."""
    while h.shape[1] > 1:
        half = h.shape[1] // 2
        top = torch.maximum(h[:, :half], h[:, half : 2 * half])
        h = torch.cat([top, h[:, 2 * half :]], 1) if h.shape[1] % 2 else top
    return h[:, 0]
