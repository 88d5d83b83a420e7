"""Parameter and FLOP counts of a model spec, per jet (batch 1).

Two FLOP counts, because they answer different questions:

* ``flops_paper`` copies the authors' number: TensorFlow's v1 profiler on the frozen
  Keras graph, as in the authors' SAL-T4HEP code. Its rules: MatMul/BatchMatMul 2·m·n·k, BiasAdd
  1 per element, Conv2D 2·(h·p) per output, Mean 1 per input element, Sum (inputs -
  outputs), RealDiv 1 per logit, Softmax 5 per element, AddV2/Mul 1 per element. The
  graph's einsum (the E/F projections), tanh, relu, the max over particles, padding and
  the output sigmoid have no registered cost and count zero. This reproduces every
  cell of the paper's tables; use it to compare with them.
* ``flops`` counts every arithmetic operation of the model as defined (one multiply and
  one add per multiply-accumulate, each elementwise add/multiply/divide/compare/exp/tanh
  as one), the E/F projections included and the padded zero slots of a partition not.
  This is what the network actually computes; no table in the paper uses it.

Both follow the model's definition, not how `fused` rearranges the arithmetic.

The pairwise bias of ``part`` and ``salt_pair`` (models/pairwise.py) has no Keras
counterpart; ``flops_paper`` counts it as the same graph written in TF ops would be
counted (Sub/Add/Mul/RealDiv/Maximum/Minimum/Log 1 per element; Sqrt, FloorMod, sin, cos,
sinh, cosh, atan2, log1p and GELU are not registered and count zero), under the key
"PairBias", plus its MatMul/BiasAdd and the AddV2 of the bias onto each block's logits.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from salt.models.spec import MODELS, ModelSpec


def count_params(spec: ModelSpec) -> int:
    from salt.models.registry import build_model

    return sum(p.numel() for p in build_model(spec).parameters())


def flops_paper(spec: ModelSpec) -> dict[str, int]:
    """FLOPs by TF op type, as the authors' `get_flops()` counts them."""
    n, f, d, dff, h, c = spec.particles, spec.features, spec.d_model, spec.d_ff, spec.heads, spec.classes
    keys = n if spec.attention == "full" else spec.partitions  # length of the key axis
    logits = h * n * keys
    out = dict.fromkeys(("MatMul", "BatchMatMulV2", "BiasAdd", "Conv2D", "Mean", "Sum", "RealDiv", "Softmax",
                         "AddV2+Mul"), 0)
    out["MatMul"] += 2 * n * f * d  # embedding
    out["BiasAdd"] += n * d
    for _ in range(spec.blocks):
        out["BatchMatMulV2"] += 3 * 2 * n * d * d  # x W_q, x W_k, x W_v
        out["BatchMatMulV2"] += 2 * 2 * logits * spec.head_dim  # Q K^T and A V
        out["RealDiv"] += logits
        if spec.conv:
            for height in spec.conv_heights:
                out["Conv2D"] += 2 * height * spec.partitions * logits
                out["BiasAdd"] += logits
            out["Mean"] += len(spec.conv_heights) * logits
        out["Softmax"] += 5 * logits
        out["MatMul"] += 2 * n * d * d + 2 * n * d * dff + 2 * n * dff * d  # out-projection, FFN
        out["BiasAdd"] += n * d + n * dff + n * d
        out["AddV2+Mul"] += 6 * n * d  # two residuals, two DyT (α·x, +β)
    if spec.pair_bias:
        ops = pair_bias_ops(spec)
        out["PairBias"] = ops["paper"]
        out["BatchMatMulV2"] += ops["minkowski_products"]
        out["MatMul"] += ops["embed_products"]
        out["BiasAdd"] += ops["embed_biases"]
        out["AddV2+Mul"] += spec.blocks * ops["logit_adds"]
    if spec.aggregation == "mean":
        out["Mean"] += n * d
    elif spec.aggregation == "sum":
        out["Sum"] += n * d - d
    for _ in range(spec.hidden_layers):
        out["MatMul"] += 2 * d * d
        out["BiasAdd"] += d
    out["MatMul"] += 2 * d * c
    out["BiasAdd"] += c
    if c > 1:
        out["Softmax"] += 5 * c
    return out


def flops_true(spec: ModelSpec) -> tuple[dict[str, int], int]:
    """Every arithmetic operation of the model, by part; and how many of them are in matrix
    products (matmuls, E/F projections, convolution taps: 2 per multiply-accumulate)."""
    n, f, d, dff, h, c = spec.particles, spec.features, spec.d_model, spec.d_ff, spec.heads, spec.classes
    keys = n if spec.attention == "full" else spec.partitions
    logits = h * n * keys
    parts = dict.fromkeys(("embedding", "qkv", "ef_projection", "logits", "conv", "softmax", "attend",
                           "out_projection", "residual_dyt", "ffn", "mask", "pooling", "head"), 0)
    products = 0

    def add(part: str, product: int = 0, other: int = 0) -> None:
        nonlocal products
        parts[part] += product + other
        products += product

    add("embedding", 2 * n * f * d, 2 * n * d)  # matmul; bias, relu
    for _ in range(spec.blocks):
        if spec.mask:
            add("mask", other=n * d)  # zero the padded slots the attention reads
        add("qkv", 3 * 2 * n * d * d)  # Q, K, V at full length
        if spec.attention == "linear":  # then E/F along particles; a partition touches each slot once
            add("ef_projection", 2 * 2 * n * d * (1 if spec.partitioned else spec.partitions))
        add("logits", 2 * logits * spec.head_dim, logits)  # Q K^T; scale
        if spec.conv:
            taps = sum(2 * height * spec.partitions for height in spec.conv_heights)
            heights = len(spec.conv_heights)
            add("conv", logits * taps, logits * (2 * heights))  # biases; averaging (adds, one divide)
        add("softmax", other=5 * logits)  # max, subtract, exp, sum, divide
        add("attend", 2 * logits * spec.head_dim)
        add("out_projection", 2 * n * d * d, n * d)
        add("residual_dyt", other=2 * n * d + 2 * 3 * n * d)  # two residual adds; DyT: multiply, add, tanh
        add("ffn", 2 * n * d * dff + 2 * n * dff * d, 2 * n * dff + n * d)  # matmuls; bias, relu, bias
    if spec.pair_bias:
        ops = pair_bias_ops(spec)
        parts["pair_features"] = parts["pair_embed"] = 0
        add("pair_features", ops["minkowski_products"], ops["true"])
        add("pair_embed", ops["embed_products"], ops["embed_biases"] + ops["embed_activations"])
        add("logits", other=spec.blocks * ops["logit_adds"])
    if spec.mask:
        add("mask", other=n * d)
    add("pooling", other=(n - 1) * d + (d if spec.aggregation == "mean" else 0))
    add("head", spec.hidden_layers * 2 * d * d + 2 * d * c,
        spec.hidden_layers * 2 * d + c + (5 * c if c > 1 else 3 * c))
    return parts, products


def pair_bias_ops(spec: ModelSpec) -> dict[str, int]:
    """Operations of the pairwise bias per jet, op by op as models/pairwise.py computes them.

    Per pair (N·K of them, K = N for part, p for salt_pair): Δy 1, wrapped Δφ 5, ΔR with its
    floor 5, min pT 1, ln kT 3, ln z 5, ln ΔR 1, ln m² with its floor 4, 1 more add for a
    massive key (25 or 26; 23 or 24 TF-registered: no Round, Sqrt), and the Minkowski
    product p_a·p_b as a matmul (8). Per particle: un-normalising, masking and clamping pT,
    Δη, Δφ 10, its four-momentum 13 and the floor's factor 1 (10 registered: no exp, sin,
    cos). Per key: the metric 4. Per partition: pT, rapidity, φ and m² with its resolution
    cut 20 (17 registered: no log1p, Sqrt, atan2), and the partition sums, 4 adds per
    particle beyond the first of each non-empty partition (TF's Sum: inputs minus outputs
    of the padded chunks). Embedding: a matmul, bias and GELU per pair and layer.
    """
    n, h, hidden = spec.particles, spec.heads, spec.pair_hidden
    linear = spec.attention == "linear"
    keys = spec.partitions if linear else n
    pairs = n * keys
    true = pairs * (25 + linear) + n * (10 + 13 + 1) + keys * 4
    paper = pairs * (23 + linear) + n * (10 + 9 + 1) + keys * 4
    if linear:
        filled = math.ceil(n / spec.chunk)
        true += keys * 20 + 4 * (n - filled)
        paper += keys * 17 + 4 * (spec.partitions * spec.chunk - spec.partitions)
    widths = [4, hidden, h] if hidden else [4, h]
    return {
        "true": true, "paper": paper,
        "minkowski_products": pairs * 2 * 4,
        "embed_products": pairs * sum(2 * a * b for a, b in zip(widths, widths[1:])),
        "embed_biases": pairs * sum(widths[1:]),
        "embed_activations": pairs * hidden,  # GELU, one per element
        "logit_adds": pairs * h,  # per block
    }


def model_cost(spec: ModelSpec) -> dict[str, Any]:
    """{"params", "param_bytes", "flops_paper", "flops", "flops_matmul", and both breakdowns} for one jet."""
    paper = flops_paper(spec)
    true, products = flops_true(spec)
    params = count_params(spec)
    return {
        "params": params,
        "param_bytes": 4 * params,
        "flops_paper": sum(paper.values()),
        "flops": sum(true.values()),
        "flops_matmul": products,
        "flops_paper_breakdown": paper,
        "flops_breakdown": true,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from salt.cli import DeprecatedAlias

    name = parser.add_mutually_exclusive_group(required=True)
    name.add_argument("--model", help=", ".join(MODELS))
    name.add_argument("--variant", dest="model", action=DeprecatedAlias, use="--model", help="deprecated name of --model")
    parser.add_argument("--particles", type=int, required=True, help="particles per jet N")
    parser.add_argument("--classes", type=int, required=True, help="output classes (1 = sigmoid)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--blocks", type=int, default=1)
    parser.add_argument("--features", type=int, default=3)
    parser.add_argument("--d-model", type=int, default=16)
    parser.add_argument("--d-ff", type=int, default=16)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--conv-heights", default=None, help="comma-separated, e.g. 1,3,5 (default by depth)")
    parser.add_argument("--aggregation", default="max", choices=["max", "mean", "sum"])
    parser.add_argument("--pair-hidden", type=int, default=0,
                        help="part, salt_pair: hidden width of the pairwise-bias network (0 = linear map)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def main(args: argparse.Namespace) -> int:
    spec_dict: dict[str, Any] = {
        "model": args.model, "particles": args.particles, "classes": args.classes,
        "partitions": args.partitions, "blocks": args.blocks, "features": args.features,
        "d_model": args.d_model, "d_ff": args.d_ff, "heads": args.heads, "aggregation": args.aggregation,
    }
    if args.pair_hidden:
        spec_dict["pair_hidden"] = args.pair_hidden
    if args.conv_heights is not None:
        try:
            spec_dict["conv_heights"] = [int(v) for v in args.conv_heights.split(",") if v.strip()]
        except ValueError:
            print(f"salt model-info: error: --conv-heights {args.conv_heights!r}: expected integers like 1,3,5", file=sys.stderr)
            return 2
    try:
        spec = ModelSpec.from_dict(spec_dict)
    except ValueError as err:
        print(f"salt model-info: error: {err}", file=sys.stderr)
        return 2
    cost = model_cost(spec)
    if args.json:
        print(json.dumps({"spec": spec.to_dict(), **cost}, indent=2))
    else:
        print(f"{spec.model}: N={spec.particles} p={spec.partitions} C={spec.classes} blocks={spec.blocks}")
        print(f"  params       {cost['params']:>14,}  ({cost['param_bytes'] / 1024:.2f} KiB)")
        print(f"  flops_paper  {cost['flops_paper']:>14,}  (TF-profiler convention, per jet)")
        print(f"  flops        {cost['flops']:>14,}  (every operation, per jet)")
    return 0
