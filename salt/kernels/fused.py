"""A built classifier's weights packed for the one-kernel Triton forward (salt_forward.py).

    fused = fused_model(model)        # FusedClassifier, or `model` itself with one logged line
    logits = fused(x, mask)           # == model(x, mask) within 1e-5 (fp32)

Triton is imported only when a kernel is first launched, so this module (and `coverage`)
work where Triton is absent. The kernel needs a CUDA device; the one exception is
Triton's CPU interpreter, selected by TRITON_INTERPRET=1 before Triton is imported
(the tests run it that way).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os

import torch
from torch import nn

from salt.models.classifier import JetClassifier, check_inputs, probabilities
from salt.models.spec import AGGREGATIONS, ModelSpec

log = logging.getLogger(__name__)

# the widest padded d_model, d_ff and heads × partitions one program keeps in registers
MAX_WIDTH = 128
# compiler options of every launch: multiply-adds contracted to FMAs (as Triton <= 3.9 does by default;
# stated so a changed default cannot change the numbers); one stage, because the tile loops read a
# jet's scratch from L1/L2 and Triton's software pipelining would stage those loads through shared
# memory (87 kB per program on sm_90 at N = 150) at the cost of a quarter more instructions
FUSED_OPTIONS = {"enable_fp_fusion": True, "num_stages": 1}
# tl.dot's input precision: "ieee" is exact fp32; "tf32x3" (three TF32 tensor-core products) is near it
PRECISIONS = ("ieee", "tf32x3")


def _pow2(n: int, least: int = 16) -> int:
    """n rounded up to a power of two, at least `least` (tl.dot's smallest tile side)."""
    return max(least, 1 << (n - 1).bit_length())


def coverage(spec: ModelSpec) -> str | None:
    """Why the fused kernel cannot run `spec`, or None when it can."""
    if spec.attention != "linear":
        return f"model {spec.model!r} uses full softmax attention; the fused kernel covers the linear-attention family"
    if spec.pair_bias:
        return f"model {spec.model!r} adds a pairwise attention bias, which the fused kernel does not compute"
    widths = {"d_model": spec.d_model, "d_ff": spec.d_ff, "heads x partitions": spec.heads * spec.partitions}
    for name, value in widths.items():
        if _pow2(value) > MAX_WIDTH:
            return f"{name} {value} pads to more than {MAX_WIDTH} columns, too wide for one program"
    return None


def default_tile(particles: int, batch: int, multiprocessors: int) -> tuple[int, int]:
    """Rows per tile and warps per program, from the kernel compiled for sm_90 and counted
    (benchmarks/fused_static.py, N = 150). A batch that fills the GPU wants the fewest
    instructions per jet: 32 rows on 2 warps (Triton 3.9: 18.4k warp-instructions, 166
    registers, no spills; 3.6: 19.0k, 126 registers), and the fewest cache lines through L1
    (3.6k, against 5.2k on 16 rows, whose scratch columns are half a line). A batch smaller
    than the multiprocessor count leaves SMs idle and waits on each jet's slowest warp: 64
    rows on 8 warps executes the fewest instructions per warp of the default tiles (3.6k,
    against 9.2k on 2 warps)."""
    rows = _pow2(particles)
    if batch < multiprocessors:
        return min(rows, 64), max(1, min(rows, 64) // 8)
    return min(rows, 32), max(1, min(rows, 32) // 16)


def partition_span(particles: int, chunk: int, block_n: int) -> int:
    """The most partitions of `chunk` particles that one tile of `block_n` rows reaches into."""
    return max((min(start + block_n, particles) - 1) // chunk - start // chunk + 1
               for start in range(0, particles, block_n))


def compact_rows(spec: ModelSpec, block_n: int) -> tuple[int, int]:
    """(SPAN, RA) of the kernel's pass 1: for a partitioned E and F, the partitions a tile reaches
    into and the rows (E or F, partition, head), padded, it multiplies by; (0, 16) where those
    rows would not be fewer than E's and F's (H·p each, padded), and the dense products run."""
    if not spec.partitioned:
        return 0, 16
    span = partition_span(spec.particles, spec.chunk, block_n)
    rows = _pow2(2 * spec.heads * span)
    return (span, rows) if rows < 2 * _pow2(spec.heads * spec.partitions) else (0, 16)


def logit_rows(particles: int, block_n: int, taps: int) -> int:
    """Rows of a jet's raw-logit scratch: the particles between the convolution's zero rows, and
    zero rows down to the last one a tile reads, rounded to 16 bytes."""
    rows = math.ceil(particles / block_n) * block_n + taps - 1
    return -(-rows // 4) * 4


def fused_extra_bytes(spec: ModelSpec, batch: int) -> int:
    """Device memory the fused forward needs beside the model and its inputs: the packed
    weights (E and F as (H·p, N) matrices dominate), the mask as bytes, and the scratch
    buffers of block inputs, raw logits (read back at shifted rows), a tile's softmax
    (at the largest tile a launch picks, a small batch's) and, when partitioned, the sums
    E^T x and F^T x."""
    block_n = default_tile(spec.particles, batch=1, multiprocessors=2)[0]
    n, dp, hpp, ffp = spec.particles, _pow2(spec.d_model), _pow2(spec.heads * spec.partitions), _pow2(spec.d_ff)
    heights = spec.conv_heights or (1,)
    taps = max((h - 1) // 2 for h in heights) + 1 + max(h - 1 - (h - 1) // 2 for h in heights)
    per_block = 2 * hpp * n + 4 * dp * dp + 2 * dp * ffp + taps * spec.partitions * hpp + 4 * dp + ffp + 5
    head = spec.hidden_layers * (dp * dp + dp) + (spec.features + 2 + _pow2(spec.classes)) * dp
    scratch = batch * (n * min(2, spec.blocks) * dp + (logit_rows(n, block_n, taps) * hpp if spec.conv else 0)
                       + 2 * block_n * hpp
                       + (spec.blocks * 2 * hpp * dp if spec.partitioned else 0))
    return 4 * (spec.blocks * per_block + head + scratch) + batch * n


def interpreting() -> bool:
    """True when Triton runs kernels on the CPU (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _pad(t: torch.Tensor, *shape: int) -> torch.Tensor:
    out = t.new_zeros(shape)
    out[tuple(slice(0, s) for s in t.shape)] = t
    return out


def _projection(weight: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    """E (or F) as a dense (H·p, N) matrix: row h·p + c holds what partition c of head h sums.

    Partitioned (H, p, chunk): partition c covers slots [c·chunk, min((c+1)·chunk, N)); a short
    last partition reads only its slots and partitions past N are zero, as the eager model's.
    Dense (H, N, p): the transpose.
    """
    h, p, n = spec.heads, spec.partitions, spec.particles
    if not spec.partitioned:
        return weight.permute(0, 2, 1).reshape(h * p, n)
    out = weight.new_zeros(h, p, n)
    chunk = weight.shape[-1]
    for c in range(p):
        lo, hi = c * chunk, min((c + 1) * chunk, n)
        if lo < hi:
            out[:, c, lo:hi] = weight[:, c, : hi - lo]
    return out.reshape(h * p, n)


class FusedClassifier(nn.Module):
    """The inference forward of a linear-attention JetClassifier as one Triton kernel.

    The weights are packed once, at construction: later changes to `model`'s parameters are
    not seen (build a new one). Takes and returns what JetClassifier.forward does. The tile
    (rows per tile, warps per program) is `default_tile`'s for each call's batch unless
    block_n and num_warps fix it; max_registers caps registers per thread (ptxas spills past
    it), so more programs fit on a multiprocessor, which can pay for a few spills.
    """

    def __init__(self, model: JetClassifier, block_n: int | None = None, num_warps: int | None = None,
                 precision: str = "ieee", max_registers: int | None = None) -> None:
        super().__init__()
        spec = model.spec
        reason = coverage(spec)
        if reason is not None:
            raise ValueError(f"fused kernel: {reason}")
        if precision not in PRECISIONS:
            raise ValueError(f"fused kernel: precision {precision!r}; expected one of {PRECISIONS}")
        self.spec = spec
        n, h, p = spec.particles, spec.heads, spec.partitions
        dp, hpp, ffp, cp = _pow2(spec.d_model), _pow2(h * p), _pow2(spec.d_ff), _pow2(spec.classes)
        if block_n is not None and (block_n < 16 or block_n & (block_n - 1)):
            raise ValueError(f"fused kernel: block_n {block_n} must be a power of two >= 16")
        self.block_n, self.num_warps = block_n, num_warps
        self._per_tile: dict[int, dict[str, object]] = {}  # launch constants that depend on the rows per tile
        self.options = {**FUSED_OPTIONS, **({"maxnreg": max_registers} if max_registers is not None else {})}
        blocks = list(model.blocks)
        conv = blocks[0].attn.conv
        taps, top = (conv.size, conv.top) if conv is not None else (1, 0)
        self.meta = dict(N=n, F=spec.features, C=spec.classes, P=p, HP=h * p, DK=spec.head_dim, DP=dp, H=h,
                         CH=spec.chunk if spec.partitioned else 1,
                         HPP=hpp, FFP=ffp, CP=cp, D=spec.d_model, BLOCKS=spec.blocks, HIDDEN=spec.hidden_layers,
                         CONV=conv is not None, R=taps, TOP=top,
                         AGG=AGGREGATIONS.index(spec.aggregation), PREC=precision)
        with torch.no_grad():
            packed = self._pack(model, blocks, dp, hpp, ffp, cp, taps)
        for name, value in packed.items():
            self.register_buffer(name, value.float().contiguous(), persistent=False)

    @staticmethod
    def _pack(model: JetClassifier, blocks: list[nn.Module], dp: int, hpp: int, ffp: int, cp: int,
              taps: int) -> dict[str, torch.Tensor]:
        spec = model.spec
        h, p = spec.heads, spec.partitions
        scale = spec.head_dim ** -0.5
        out: dict[str, list[torch.Tensor]] = {k: [] for k in ("pe", "wk", "wq", "wv", "wo", "bo", "mc", "cb",
                                                              "w1", "b1", "w2", "b2", "dyt")}
        for block in blocks:
            attn = block.attn
            out["pe"].append(torch.stack([_pad(_projection(w, spec), hpp, spec.particles) for w in (attn.E, attn.F)]))
            out["wk"].append(_pad(attn.k.weight.t() * scale, dp, dp))
            out["wq"].append(_pad(attn.q.weight, dp, dp))
            out["wv"].append(_pad(attn.v.weight.t(), dp, dp))
            out["wo"].append(_pad(attn.out.weight.t(), dp, dp))
            out["bo"].append(_pad(attn.out.bias, dp))
            if attn.conv is not None:
                kernel, bias = attn.conv.fused()
                mixers = kernel[:, attn.conv._tap] * attn.conv._tap_valid  # (R, c, j) as LogitConv uses them
                mix = mixers.repeat(1, 1, h)  # (R, c, H·p): input column c of a head into every head's column j
            else:
                mix, bias = attn.E.new_zeros(1, p, h * p), attn.E.new_zeros(())  # not read
            out["mc"].append(_pad(mix, taps, p, hpp))
            out["cb"].append(bias.reshape(1))
            out["w1"].append(_pad(block.ffn1.weight.t(), dp, ffp))
            out["b1"].append(_pad(block.ffn1.bias, ffp))
            out["w2"].append(_pad(block.ffn2.weight.t(), ffp, dp))
            out["b2"].append(_pad(block.ffn2.bias, dp))
            out["dyt"].append(torch.cat([block.dyt1.alpha, block.dyt1.beta, block.dyt2.alpha, block.dyt2.beta]))
        packed = {k: torch.stack(v) for k, v in out.items()}
        packed["cb"] = packed["cb"].reshape(-1)
        packed["we"] = _pad(model.embed.weight.t(), spec.features, dp)
        packed["be"] = _pad(model.embed.bias, dp)
        packed["wh"] = torch.stack([_pad(layer.weight.t(), dp, dp) for layer in model.hidden])
        packed["bh"] = torch.stack([_pad(layer.bias, dp) for layer in model.hidden])
        packed["wout"] = _pad(model.out.weight.t(), dp, cp)
        packed["bout"] = _pad(model.out.bias, cp)
        return packed

    def tile(self, batch: int, device: torch.device) -> tuple[int, int]:
        """(rows per tile, warps per program) of a launch for `batch` jets on `device`."""
        sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 1
        rows, warps = default_tile(self.spec.particles, batch, sms)
        rows = self.block_n or rows
        return rows, self.num_warps or (warps if self.block_n is None else max(1, rows // 16))

    def launch(self, batch: int, device: torch.device, has_mask: bool) -> tuple[dict[str, object], dict[str, object]]:
        """The kernel's compile-time constants and launch options for this call."""
        rows, warps = self.tile(batch, device)
        if rows not in self._per_tile:
            span, compact = compact_rows(self.spec, rows)
            lr = logit_rows(self.spec.particles, rows, self.meta["R"])
            self._per_tile[rows] = {"BLOCK_N": rows, "SPAN": span, "RA": compact, "LR": lr,
                                    "PADS": _pow2(lr - self.spec.particles, 1)}
        # FAST: ftz exp and reciprocal (inline PTX); the interpreter runs the same math in numpy
        meta = {**self.meta, **self._per_tile[rows], "HAS_MASK": has_mask, "FAST": not interpreting()}
        return meta, {"num_warps": warps, **self.options}

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = check_inputs(self.spec, x, mask)
        if x.device.type != "cuda" and not interpreting():
            raise ValueError(f"fused kernel: input is on {x.device.type}; it needs a CUDA device "
                             f"(or TRITON_INTERPRET=1 for Triton's CPU interpreter)")
        from salt.kernels.salt_forward import salt_forward_kernel  # Triton only when a kernel runs

        x = x.float().contiguous()
        b, n = x.shape[0], self.spec.particles
        out = x.new_empty(b, self.spec.classes)
        if b == 0:
            return out
        mask_u8 = mask.to(torch.uint8).contiguous() if mask is not None else x.new_zeros(1, dtype=torch.uint8)
        # block inputs (two when a block's output is the next one's input) and the raw logits
        xs = x.new_empty(min(2, self.spec.blocks), b, n, self.meta["DP"])
        meta, options = self.launch(b, x.device, mask is not None)
        ls = x.new_empty(b, self.meta["HPP"], meta["LR"]) if self.meta["CONV"] else x.new_empty(1)
        ss = x.new_empty(b, 2, self.meta["HPP"], meta["BLOCK_N"])  # a tile's logits and exponentials
        # pass 1's sums E^T x and F^T x, when they are added up tile by tile in scratch
        zs = x.new_empty(b, self.spec.blocks, 2, self.meta["HPP"], self.meta["DP"]) if meta["SPAN"] else x.new_empty(1)
        # Triton launches on the current device: make it the input's (cuda:1 while cuda:0 is current)
        with torch.cuda.device(x.device) if x.device.type == "cuda" else contextlib.nullcontext():
            salt_forward_kernel[(b,)](
                x, mask_u8, xs, ls, ss, zs, out, self.we, self.be,
                self.pe, self.wk, self.wq, self.wv, self.wo, self.bo, self.mc, self.cb,
                self.w1, self.b1, self.w2, self.b2, self.dyt, self.wh, self.bh, self.wout, self.bout,
                **meta, **options,
            )
        return out

    @torch.no_grad()
    def probabilities(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return probabilities(self(x, mask))


def fused_model(model: JetClassifier, **kwargs: object) -> nn.Module:
    """`model`'s fused kernel, or `model` itself (eager) with one logged line saying why not."""
    reason = coverage(model.spec)
    if reason is not None:
        log.warning("fused kernel not used for %s, running eager: %s", model.spec.model, reason)
        return model
    return FusedClassifier(model, **kwargs)
