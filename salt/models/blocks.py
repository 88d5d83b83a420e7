"""The encoder block: attention and a feed-forward layer, each closed by a residual and DyT.

    o1  = DyT1(x + attention(x))          (post-norm; DyT replaces LayerNorm)
    out = DyT2(o1 + Dense(relu(Dense(o1))))

DyT is the authors' version, tanh(α·x + β) with scalar α and β (paper.md §1.4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from salt.models.attention import FullAttention, build_attention, inplace_ok
from salt.models.keras_init import keras_dense_
from salt.models.spec import ModelSpec


class DyT(nn.Module):
    """tanh(α·x + β), scalar α (init 1) and β (init 0); no per-channel affine."""

    def __init__(self) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1))
        self.beta = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.alpha * x + self.beta)

    def fused(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """DyT(x + bias) over (..., d) in three passes, in place when no gradient is recorded.

        tanh(z) = 2·sigmoid(2z) - 1 (exact; rounding of order 1e-7) because PyTorch's CPU
        tanh is several times slower than its sigmoid; a pending bias is folded into β.
        """
        if bias is None:
            bias = x.new_zeros(x.shape[-1])  # a (d,) shift broadcasts faster than a scalar
        shift = 2 * (self.alpha * bias + self.beta)
        minus_one = x.new_full((), -1.0)
        if inplace_ok(x, self.alpha, self.beta, shift):
            s = torch.addcmul(shift, 2 * self.alpha, x, out=x).sigmoid_()
            return torch.add(minus_one, s, alpha=2, out=s)
        # sigmoid keeps its output for backward, so the affine map must not overwrite it
        return torch.add(minus_one, torch.addcmul(shift, 2 * self.alpha, x).sigmoid(), alpha=2)


class EncoderBlock(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.attn = build_attention(spec)
        self.dyt1 = DyT()
        self.ffn1 = keras_dense_(nn.Linear(spec.d_model, spec.d_ff))
        self.ffn2 = keras_dense_(nn.Linear(spec.d_ff, spec.d_model))
        self.dyt2 = DyT()
        self.impl = "fused"

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, need_weights: bool = False,
                bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: (B, N, d); mask: (B, N) bool of real particles, or None to let every slot take part.

        With a mask, attention reads zeros for padded slots: they add nothing to a
        partition, their logit rows are zero where the convolution looks across them, and
        full attention does not attend to them at all.

        When no gradient is recorded (inference) the block writes its intermediates, and
        its result, over the memory of `x`: the classifier owns x and never reads it again.

        bias: an additive logit bias (B, H, keys, N) for the attention, or None.
        """
        inputs = x if mask is None else x * mask[..., None]
        extra: dict[str, torch.Tensor] = {} if bias is None else {"bias": bias}
        if mask is not None and isinstance(self.attn, FullAttention):
            extra["key_mask"] = mask
        if self.impl == "straightforward":
            attn, weights = self.attn(inputs, need_weights, **extra)
            o1 = self.dyt1(x + attn)
            return self.dyt2(o1 + self.ffn2(F.relu(self.ffn1(o1)))), weights
        s1, weights = self.attn(inputs, need_weights, residual=x, **extra)  # x + attention(x)
        o1 = self.dyt1.fused(s1)
        b, n, d = o1.shape
        flat = o1.view(b * n, d)
        hidden = torch.addmm(self.ffn1.bias, flat, self.ffn1.weight.t()).relu_()
        # o1 + FFN(o1), its bias folded into DyT; without autograd o1 is not needed any more
        if inplace_ok(flat, hidden, self.ffn2.weight):
            s2 = flat.addmm_(hidden, self.ffn2.weight.t())
        else:
            s2 = torch.addmm(flat, hidden, self.ffn2.weight.t())
        return self.dyt2.fused(s2, self.ffn2.bias).view(b, n, d), weights
