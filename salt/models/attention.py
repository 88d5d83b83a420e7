"""Attention over the particles of a jet: full softmax, and the Linformer / SAL-T family.

Semantics follow the authors' Keras code (github.com/aaronw5/SAL-T4HEP). Each linear-attention
model has two forward paths that compute the same function:

* ``straightforward`` is a line-by-line port: K and V are zero-padded and cut into
  chunks, every convolution height is its own ``Conv2d`` over the (N, p) logit
  image, and the heights are averaged. It is kept to check the fast path against
  and to measure what the fast path gains.
* ``fused`` (the default) rearranges the same algebra so that on a CPU, where this
  small model is bound by memory traffic, every step is one pass over (B, N, ·) data:

  - E and F act on the block input x itself: E^T(x W_k) = (E^T x) W_k, so K and V are
    never built at full length. A partitioned E is applied chunk by chunk (one batched
    matmul over the full chunks, one for a short last chunk); nothing is padded.
  - Per head, logits = x · G_h with G_h = W_q,h W_k,h^T (E_h^T x)^T / sqrt(d_k), a tiny
    (d, p) matrix per jet; all heads come out of one batched matmul as (B, N, H·p).
  - The averaged convolutions are one convolution (kernels zero-padded to the tallest
    height and averaged, biases averaged). As the kernel is as wide as the image it
    is a 1-D convolution along N with p input and p output channels per head, the same
    for every head: a grouped Conv2d that reads the logits in place (channels-last).
  - The softmax over each head's p logits is spelled out (`group_softmax`), and
    A · (F^T x W_v W_o) plus the residual is one batched matmul.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from salt.models.keras_init import glorot_uniform_, keras_dense_
from salt.models.spec import ModelSpec

IMPLEMENTATIONS = ("fused", "straightforward")
_LOG2E = 1.0 / math.log(2.0)


class LogitConv(nn.Module):
    """Convolutions over the (N, p) logit image: one single-channel kernel (h, p) and one
    bias per height, shared by all heads, 'same' zero padding, outputs averaged."""

    def __init__(self, heights: tuple[int, ...], heads: int, partitions: int) -> None:
        super().__init__()
        self.heights = tuple(heights)
        self.heads, self.partitions = heads, partitions
        self.kernels = nn.ParameterList(nn.Parameter(torch.empty(h, partitions)) for h in self.heights)
        self.bias = nn.Parameter(torch.zeros(len(self.heights)))
        for h, kernel in zip(self.heights, self.kernels):
            glorot_uniform_(kernel, (h, partitions, 1, 1))  # Keras Conv2D kernel layout
        # rows each height reaches, relative to the output row: [-(h-1)//2, h-1-(h-1)//2]
        self.top = max((h - 1) // 2 for h in self.heights)
        self.bottom = max(h - 1 - (h - 1) // 2 for h in self.heights)
        # M_r[c, j] = kernel[r, c - j + left] where 0 <= c - j + left < p (left = (p-1)//2)
        left = (partitions - 1) // 2
        tap = torch.arange(partitions)[:, None] - torch.arange(partitions)[None, :] + left
        self.register_buffer("_tap", tap.clamp(0, partitions - 1), persistent=False)
        self.register_buffer("_tap_valid", (tap >= 0) & (tap < partitions), persistent=False)

    @property
    def size(self) -> int:
        """Height of the fused kernel."""
        return self.top + 1 + self.bottom

    def fused(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The one kernel (size, p) and bias (scalar) equal to the average of all heights."""
        padded = [F.pad(k, (0, 0, self.top - (h - 1) // 2, self.bottom - (h - 1 - (h - 1) // 2)))
                  for h, k in zip(self.heights, self.kernels)]
        return torch.stack(padded).mean(0), self.bias.mean()

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        """logits: (B, N, H·p), particles-major -> same shape, convolved.

        With the kernel as wide as the image, output column j of row n mixes input
        columns c through M_r[c, j] = kernel[r, c - j + left]: a 1-D convolution along
        N with p input and p output channels per head, the same weights for every head.
        As a grouped Conv2d over (B, H·p, 1, N) in channels-last memory it reads and
        writes the logits where they are, with no layout change.
        """
        b, n, hp = logits.shape
        weight, bias = cached_weights(self, self._conv2d_weights)
        image = logits.view(b, 1, n, hp).permute(0, 3, 1, 2)  # (B, H·p, 1, N), channels-last memory
        if self.top != self.bottom:  # some height is even: 'same' padding is lopsided
            image, padding = F.pad(image, (self.top, self.bottom)), (0, 0)
        else:
            padding = (0, self.top)
        out = F.conv2d(image, weight, bias, padding=padding, groups=self.heads)
        return out.permute(0, 2, 3, 1).reshape(b, n, hp)

    def _conv2d_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        kernel, bias = self.fused()
        mixers = kernel[:, self._tap] * self._tap_valid  # (R, c, j)
        weight = mixers.permute(2, 1, 0).repeat(self.heads, 1, 1)[:, :, None, :]  # (H·p out, p in, 1, R)
        # repeated, not expanded: torch 2.11's Inductor cannot lower a convolution whose bias is a view
        return weight, bias.repeat(weight.shape[0])

    def straightforward(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-height Conv2d over (B·H, 1, N, p), averaged (the reference's AttentionConvLayer)."""
        b, h, n, p = logits.shape
        image = logits.reshape(b * h, 1, n, p)
        left = (p - 1) // 2  # TF 'same': the odd extra column/row goes right/bottom
        outs = [F.conv2d(F.pad(image, (left, p - 1 - left, (kh - 1) // 2, kh - 1 - (kh - 1) // 2)),
                         k[None, None], self.bias[i : i + 1])
                for i, (kh, k) in enumerate(zip(self.heights, self.kernels))]
        return torch.stack(outs).mean(0).reshape(b, h, n, p)


def group_softmax(logits: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Softmax within consecutive groups of p columns of (B, N, H·p) logits.

    PyTorch's softmax over a last axis of 4 runs at a fraction of memory speed, so it
    is spelled out with whole-row operations: the group max from p strided maxima,
    subtracted (spread back to its columns by a matmul) together with the change of
    base, exp2 (several times faster than exp on CPU), and the group sums spread back
    to every column by one matmul with a block-diagonal matrix of ones. `groups` is the
    (H, H·p) 0/1 matrix of which column belongs to which group.
    """
    b, n, hp = logits.shape
    p = hp // groups.shape[0]
    flat = logits.reshape(b * n, hp)
    with torch.no_grad():  # any per-group shift gives the same softmax; the max only avoids overflow
        top = flat[:, 0::p]
        for c in range(1, p):
            top = torch.maximum(top, flat[:, c::p])
    spread = groups.t() @ groups  # (H·p, H·p) block-diagonal ones
    if inplace_ok(logits):  # the logits are ours and not needed afterwards
        e = flat.addmm_(top, groups, beta=_LOG2E, alpha=-_LOG2E).exp2_()
        return e.div_(e @ spread).view(b, n, hp)
    e = torch.addmm(flat, top, groups, beta=_LOG2E, alpha=-_LOG2E).exp2()
    return (e / (e @ spread)).view(b, n, hp)


def inplace_ok(*tensors: torch.Tensor) -> bool:
    """True when intermediates can be updated in place: no gradient is being recorded for
    them, and no autocast could hand an in-place op operands of another dtype."""
    if torch.is_autocast_enabled(tensors[0].device.type):
        return False
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


def cached_weights(module: nn.Module, compute: Callable[[], Any]) -> Any:
    """`compute()`, a product of `module`'s own parameters only, reused across calls while no
    gradient is recorded and the parameters are unchanged (same storage, same version).

    At small batches these weight-only products cost as much as the jets themselves.
    Training (autograd on), torch.compile and export always recompute. Products made under
    autocast come out in its dtype (bf16), so the autocast state is part of the key: a bf16
    product must never be reused by an fp32 pass (a dtype mismatch), nor the reverse.
    """
    tracing = torch.compiler.is_compiling() or getattr(torch.compiler, "is_exporting", lambda: False)()
    if torch.is_grad_enabled() or tracing:
        return compute()
    params = list(module.parameters())
    kind = params[0].device.type if params else "cpu"
    autocast = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else None
    key = (autocast, *((p.data_ptr(), p._version, p.dtype) for p in params))
    hit = module.__dict__.get("_weights_cache")
    if hit is not None and hit[0] == key:
        return hit[1]
    value = compute()
    module.__dict__["_weights_cache"] = (key, value)
    return value


class LinearAttention(nn.Module):
    """Linformer-style attention: keys and values projected from N particles to p rows.

    `partitioned` makes E/F block-diagonal (SAL-T's contiguous partitions of the sorted
    sequence, parameters (H, p, ceil(N/p))); otherwise E/F are dense (H, N, p).
    `conv_heights` adds SAL-T's convolution on the logits.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        d, h, p, n = spec.d_model, spec.heads, spec.partitions, spec.particles
        self.heads, self.head_dim, self.partitions, self.particles = h, spec.head_dim, p, n
        self.partitioned = spec.partitioned
        self.impl = "fused"
        self.q = keras_dense_(nn.Linear(d, d, bias=False))
        self.k = keras_dense_(nn.Linear(d, d, bias=False))
        self.v = keras_dense_(nn.Linear(d, d, bias=False))
        self.out = keras_dense_(nn.Linear(d, d))
        shape = (h, p, spec.chunk) if spec.partitioned else (h, n, p)
        self.E = nn.Parameter(glorot_uniform_(torch.empty(shape)))
        self.F = nn.Parameter(glorot_uniform_(torch.empty(shape)))
        self.conv = LogitConv(spec.conv_heights, h, p) if spec.conv else None
        self.register_buffer("_groups", torch.eye(h).repeat_interleave(p, dim=1), persistent=False)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """E^T x and F^T x for every head and partition: (B, N, d) -> (B, p, 2, H, d).

        Projecting x instead of K = x W_k (and V) gives the same keys after W_k and
        never builds K or V at full length. A partitioned E touches each slot once, so
        the full chunks are one batched matmul and a short last chunk another; nothing
        is padded.
        """
        return self._project(x, cached_weights(self, self._weights)["projection"])

    def _project(self, x: torch.Tensor, weights: tuple[torch.Tensor, ...]) -> torch.Tensor:
        b, n, d = x.shape
        h, p = self.heads, self.partitions
        if not self.partitioned:
            return torch.matmul(weights[0], x).view(b, p, 2, h, d)
        full_w, rest_w = weights
        full, chunk = full_w.shape[0], full_w.shape[2]
        parts = [torch.matmul(full_w, x[:, : full * chunk].view(b, full, chunk, d))]
        if rest_w.shape[1]:
            parts.append(torch.matmul(rest_w, x[:, full * chunk :]).unsqueeze(1))
        filled = full + (rest_w.shape[1] > 0)
        if filled < p:  # more partitions than non-empty chunks (tiny N): empty ones are zero
            parts.append(x.new_zeros(b, p - filled, 2 * h, d))
        return torch.cat(parts, 1).view(b, p, 2, h, d)

    def _weights(self) -> dict[str, Any]:
        """The weight-only products of the fused path (see `cached_weights`)."""
        d, h, k, p, n = self.q.in_features, self.heads, self.head_dim, self.partitions, self.particles
        ef = torch.cat([self.E, self.F])  # (2H, p, chunk) or (2H, N, p)
        if self.partitioned:
            full, rest = divmod(n, ef.shape[-1])
            rest_w = ef[:, full, :rest] if rest else ef.new_zeros(2 * h, 0)
            projection = (ef[:, :full].transpose(0, 1), rest_w)
        else:
            projection = (ef.permute(2, 0, 1).reshape(p * 2 * h, n),)
        wq, wk, wv = (layer.weight.view(h, k, d) for layer in (self.q, self.k, self.v))
        qk = torch.einsum("hke,hkf->hfe", wq, wk) / math.sqrt(k)  # W_q,h W_k,h^T / sqrt(d_k), transposed
        vo = torch.einsum("hke,fhk->hef", wv, self.out.weight.view(d, h, k))  # W_v,h W_o,h
        # every head's weights sum to 1, so the out-projection bias rides along as bias/H per row; H as a
        # float: torch 2.11's ONNX exporter cannot decompose a parameter divided by a Python int
        return {"projection": projection, "qkvo": torch.cat([qk, vo]), "value_bias": self.out.bias / float(h)}

    def forward(self, x: torch.Tensor, need_weights: bool = False, residual: torch.Tensor | None = None,
                bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: (B, N, d) -> (attention(x) [+ residual], weights (B, H, N, p) or None).

        bias: (B, H, p, N), added to the logits after the convolution, before the softmax
        (a pairwise bias, models/pairwise.py: keys before particles). Without autograd the sum is written into
        `residual`'s memory."""
        if self.impl == "straightforward":
            out, weights = self.straightforward(x, need_weights, bias)
            return (out if residual is None else out + residual), weights
        return self.fused(x, need_weights, residual, bias)

    # --- the fast path -------------------------------------------------------------
    def fused(self, x: torch.Tensor, need_weights: bool = False, residual: torch.Tensor | None = None,
              bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, n, d = x.shape
        h, p = self.heads, self.partitions
        w = cached_weights(self, self._weights)
        xp = self._project(x, w["projection"])  # (B, p, 2, H, d)
        # per head: logits = x (W_q,h W_k,h^T / sqrt(d_k)) (E_h^T x)^T, output = A (F_h^T x) W_v,h W_o,h;
        # both per-jet products in one batched matmul over (key/value, head)
        small = torch.matmul(xp.permute(2, 3, 0, 1, 4).reshape(2 * h, b * p, d), w["qkvo"]).view(2, h, b, p, d)
        g = small[0].permute(1, 3, 0, 2).reshape(b, d, h * p)  # (B, d, H·p): logits = x @ g
        values = small[1].permute(1, 0, 2, 3).reshape(b, h * p, d) + w["value_bias"]
        logits = torch.bmm(x, g)  # (B, N, H·p)
        if self.conv is not None:
            logits = self.conv(logits)
        if bias is not None:
            bias = bias.permute(0, 3, 1, 2).reshape(b, n, h * p)
            logits = logits.add_(bias) if inplace_ok(logits, bias) else logits + bias
        attn = group_softmax(logits, self._groups)
        if residual is None:
            out = torch.bmm(attn, values)
        elif inplace_ok(residual, attn, values):
            out = residual.baddbmm_(attn, values)
        else:
            out = torch.baddbmm(residual, attn, values)
        return out, (attn.view(b, n, h, p).transpose(1, 2) if need_weights else None)

    # --- the line-by-line port -----------------------------------------------------
    def straightforward(self, x: torch.Tensor, need_weights: bool = False, bias: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, n, d = x.shape
        h, k, p = self.heads, self.head_dim, self.partitions
        q, key, val = (layer(x).view(b, n, h, k).transpose(1, 2) for layer in (self.q, self.k, self.v))
        if self.partitioned:
            chunk = self.E.shape[-1]
            key = F.pad(key, (0, 0, 0, chunk * p - n)).reshape(b, h, p, chunk, k)
            val = F.pad(val, (0, 0, 0, chunk * p - n)).reshape(b, h, p, chunk, k)
            key = torch.einsum("bhcld,hcl->bhcd", key, self.E)
            val = torch.einsum("bhcld,hcl->bhcd", val, self.F)
        else:
            key = torch.einsum("bhnd,hnr->bhrd", key, self.E)
            val = torch.einsum("bhnd,hnr->bhrd", val, self.F)
        logits = q @ key.transpose(-1, -2) / math.sqrt(k)  # (B, H, N, p)
        if self.conv is not None:
            logits = self.conv.straightforward(logits)
        if bias is not None:
            logits = logits + bias.transpose(2, 3)
        weights = torch.softmax(logits, dim=-1)
        out = (weights @ val).transpose(1, 2).reshape(b, n, d)
        return self.out(out), (weights if need_weights else None)


class FullAttention(nn.Module):
    """Standard multi-head softmax attention over all N particles (the paper's Transformer).

    One path only: scaled_dot_product_attention is already PyTorch's fast kernel."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        d = spec.d_model
        self.heads, self.head_dim = spec.heads, spec.head_dim
        self.impl = "fused"
        self.q = keras_dense_(nn.Linear(d, d, bias=False))
        self.k = keras_dense_(nn.Linear(d, d, bias=False))
        self.v = keras_dense_(nn.Linear(d, d, bias=False))
        self.out = keras_dense_(nn.Linear(d, d))

    def sdpa_inputs(self, x: torch.Tensor, key_mask: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(q, k, v, attn_mask) as forward hands them to scaled_dot_product_attention; the memory
        estimate of salt.benchmarking.limits asks torch which kernel these inputs get."""
        b, n, _ = x.shape
        h, k = self.heads, self.head_dim
        w = torch.cat([self.q.weight, self.k.weight, self.v.weight])
        q, key, val = F.linear(x, w).view(b, n, 3, h, k).permute(2, 0, 3, 1, 4).unbind(0)
        attn_mask = None
        if key_mask is not None:
            # a jet without particles attends to its (zero) padding rather than to nothing (NaN)
            attn_mask = (key_mask | ~key_mask.any(1, keepdim=True))[:, None, None, :]
        return q, key, val, attn_mask

    def forward(self, x: torch.Tensor, need_weights: bool = False, residual: torch.Tensor | None = None,
                key_mask: torch.Tensor | None = None, bias: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: (B, N, d); key_mask: (B, N) bool, True for particles that may be attended to;
        bias: (B, H, N, N) added to the logits (ParT's pairwise bias, models/pairwise.py; symmetric,
        so its (keys, queries) layout needs no transpose).
        Returns (attention(x) [+ residual], weights (B, H, N, N) or None)."""
        b, n, d = x.shape
        q, key, val, attn_mask = self.sdpa_inputs(x, key_mask)
        if bias is not None:  # one float mask: the bias, and -inf where a key is masked
            attn_mask = bias if attn_mask is None else bias.masked_fill(~attn_mask, float("-inf"))
        # with a bias, attention is spelled out: the ONNX exporter's decomposition of SDPA with a
        # float mask gives an output its later reshape cannot view
        if need_weights or bias is not None:
            logits = q @ key.transpose(-1, -2) / math.sqrt(self.head_dim)
            if attn_mask is not None and attn_mask.dtype == torch.bool:
                logits = logits.masked_fill(~attn_mask, float("-inf"))
            elif attn_mask is not None:
                logits = logits + attn_mask
            weights = torch.softmax(logits, dim=-1)
            out = weights @ val
        else:
            weights = None
            out = F.scaled_dot_product_attention(q, key, val, attn_mask=attn_mask)
        out = self.out(out.transpose(1, 2).reshape(b, n, d))
        return (out if residual is None else out.add_(residual)), (weights if need_weights else None)


def build_attention(spec: ModelSpec) -> nn.Module:
    return FullAttention(spec) if spec.attention == "full" else LinearAttention(spec)
