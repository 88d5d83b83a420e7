"""Check our models against the authors' own Keras outputs (fixtures/reference_models).

Each case is an `index.json` entry plus `CASE.npz` with inputs, the Keras model's
probabilities and its weights under role names (`w.<role>`, see the fixture README).
We build the matching spec, copy every weight in, run the model and compare.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from salt.models.classifier import JetClassifier
from salt.models.registry import build_model
from salt.models.spec import ModelSpec

TOLERANCE = 1e-5


def spec_from_reference(name: str, entry: dict[str, Any]) -> ModelSpec:
    """The ModelSpec of one index.json entry."""
    try:
        if entry["model"] == "transformer":
            family = "transformer"
        elif entry["model"] == "salt-family":
            family = {(True, True): "salt", (True, False): "salt_noconv",
                       (False, True): "salt_nopartition", (False, False): "linformer"}[
                (bool(entry["partitioned"]), bool(entry["conv"]))]
        else:
            raise ValueError(f"index.json[{name!r}]: model is {entry['model']!r}; expected 'salt-family' or 'transformer'")
        if entry["output"] != ("sigmoid" if entry["classes"] == 1 else "softmax"):
            raise ValueError(f"index.json[{name!r}]: output {entry['output']!r} does not fit {entry['classes']} classes")
        return ModelSpec(
            model=family, particles=entry["particles"], classes=entry["classes"], features=entry["features"],
            d_model=entry["d_model"], d_ff=entry["d_ff"], heads=entry["heads"],
            partitions=entry["partitions"] if family != "transformer" else 4,
            conv_heights=tuple(entry["conv_heights"]), blocks=entry["blocks"],
        )
    except KeyError as err:
        raise ValueError(f"index.json[{name!r}]: missing key {err.args[0]!r}") from None


def load_reference_weights(model: JetClassifier, arrays: dict[str, np.ndarray], source: str = "weights") -> None:
    """Copy role-named Keras weights into `model`; every role must be used and every parameter set."""
    params = dict(model.named_parameters())
    target: dict[str, torch.Tensor] = {}

    def put(role: str, name: str, transpose: bool = False) -> None:
        key = f"w.{role}"
        if key not in arrays:
            raise ValueError(f"{source}: missing weight {key!r} for parameter {name!r}")
        value = torch.from_numpy(np.asarray(arrays[key], dtype=np.float32))
        value = value.t() if transpose else value
        if name not in params:
            raise ValueError(f"{source}: weight {key!r} has no parameter {name!r} in the model")
        if value.shape != params[name].shape:
            raise ValueError(f"{source}: weight {key!r} has shape {tuple(arrays[key].shape)}; "
                             f"parameter {name!r} needs {tuple(params[name].shape)}")
        target[name] = value
        used.add(key)

    used: set[str] = set()
    put("embed.kernel", "embed.weight", transpose=True)
    put("embed.bias", "embed.bias")
    for b, block in enumerate(model.blocks):
        for w in ("wq", "wk", "wv"):
            put(f"block{b}.attn.{w}", f"blocks.{b}.attn.{w[1]}.weight", transpose=True)
        put(f"block{b}.attn.out.kernel", f"blocks.{b}.attn.out.weight", transpose=True)
        put(f"block{b}.attn.out.bias", f"blocks.{b}.attn.out.bias")
        if model.spec.attention == "linear":
            kind = "partitioned" if model.spec.partitioned else "dense"
            put(f"block{b}.attn.E_{kind}", f"blocks.{b}.attn.E")
            put(f"block{b}.attn.F_{kind}", f"blocks.{b}.attn.F")
        if getattr(block.attn, "conv", None) is not None:
            biases = []
            for i, h in enumerate(model.spec.conv_heights):
                put(f"block{b}.attn.conv_h{h}.kernel", f"blocks.{b}.attn.conv.kernels.{i}")
                key = f"w.block{b}.attn.conv_h{h}.bias"
                if key not in arrays:
                    raise ValueError(f"{source}: missing weight {key!r}")
                biases.append(float(np.asarray(arrays[key]).reshape(-1)[0]))
                used.add(key)
            target[f"blocks.{b}.attn.conv.bias"] = torch.tensor(biases)
        for i in (1, 2):
            put(f"block{b}.ffn{i}.kernel", f"blocks.{b}.ffn{i}.weight", transpose=True)
            put(f"block{b}.ffn{i}.bias", f"blocks.{b}.ffn{i}.bias")
            put(f"block{b}.dyt{i}.alpha", f"blocks.{b}.dyt{i}.alpha")
            put(f"block{b}.dyt{i}.beta", f"blocks.{b}.dyt{i}.beta")
    for i in range(len(model.hidden)):
        put(f"head.hidden{i}.kernel", f"hidden.{i}.weight", transpose=True)
        put(f"head.hidden{i}.bias", f"hidden.{i}.bias")
    put("head.out.kernel", "out.weight", transpose=True)
    put("head.out.bias", "out.bias")

    unused = sorted(k for k in arrays if k.startswith("w.") and k not in used)
    if unused:
        raise ValueError(f"{source}: weights {unused} have no place in a {model.spec.model} model")
    missing = sorted(set(params) - set(target))
    if missing:
        raise ValueError(f"{source}: parameters {missing} were not set by any weight")
    with torch.no_grad():
        for name, value in target.items():
            params[name].copy_(value)


def check_case(directory: Path, name: str, entry: dict[str, Any], impl: str = "fused") -> dict[str, Any]:
    """Load one case and compare probabilities; returns {case, model, params, max_abs_diff, ...}."""
    path = directory / f"{name}.npz"
    if not path.is_file():
        raise ValueError(f"{directory / 'index.json'}: case {name!r} has no file {path.name}")
    spec = spec_from_reference(name, entry)
    model = build_model(spec, impl=impl).eval()
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    for key in ("inputs", "probabilities"):
        if key not in arrays:
            raise ValueError(f"{path}: missing array {key!r}")
    load_reference_weights(model, arrays, source=str(path))
    params = sum(p.numel() for p in model.parameters())
    probs = model.probabilities(torch.from_numpy(arrays["inputs"].astype(np.float32))).numpy()
    expected = arrays["probabilities"]
    if probs.shape != expected.shape:
        raise ValueError(f"{path}: model gives probabilities of shape {probs.shape}; fixture has {expected.shape}")
    return {
        "case": name, "model": spec.model, "particles": spec.particles, "partitions": spec.partitions,
        "classes": spec.classes, "blocks": spec.blocks, "impl": impl,
        "params": params, "params_expected": entry.get("params"),
        "max_abs_diff": float(np.abs(probs - expected).max()),
    }


def check_directory(directory: str | Path, impls: tuple[str, ...] = ("fused",)) -> list[dict[str, Any]]:
    directory = Path(directory)
    index_path = directory / "index.json"
    if not index_path.is_file():
        raise ValueError(f"{directory}: no index.json (expected a reference_models fixture directory)")
    try:
        index = json.loads(index_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{index_path}: not valid JSON ({err})") from err
    if not isinstance(index, dict) or not index:
        raise ValueError(f"{index_path}: expected a non-empty mapping of case name -> description")
    return [check_case(directory, name, entry, impl) for name, entry in index.items() for impl in impls]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", help="fixture directory with index.json and CASE.npz files")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE, help="largest allowed max |diff| (default 1e-5)")
    parser.add_argument("--impl", default="fused", choices=["fused", "straightforward", "both"],
                        help="which forward path to check (default fused)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")


def main(args: argparse.Namespace) -> int:
    torch.set_num_threads(1)
    impls = ("fused", "straightforward") if args.impl == "both" else (args.impl,)
    try:
        results = check_directory(args.directory, impls)
    except ValueError as err:
        print(f"salt reference-check: error: {err}", file=sys.stderr)
        return 2
    failed = []
    for r in results:
        r["ok"] = r["max_abs_diff"] < args.tolerance and r["params"] == r["params_expected"]
        if not r["ok"]:
            failed.append(r["case"])
    if args.json:
        print(json.dumps({"tolerance": args.tolerance, "cases": results, "failed": failed}, indent=2))
    else:
        print(f"{'case':28s} {'model':17s} {'impl':15s} {'params':>7s} {'max|diff|':>10s}")
        for r in results:
            flag = "ok" if r["ok"] else "FAIL"
            params = f"{r['params']}" + ("" if r["params"] == r["params_expected"] else f"!={r['params_expected']}")
            print(f"{r['case']:28s} {r['model']:17s} {r['impl']:15s} {params:>7s} {r['max_abs_diff']:10.2e} {flag}")
        print(f"{len(results) - len(failed)}/{len(results)} within {args.tolerance:g}")
    return 1 if failed else 0
