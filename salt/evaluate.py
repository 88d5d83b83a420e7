"""Evaluate a trained model on the test split: predictions and physics metrics.

The metrics file records the model's spec, size and training summary next to the
numbers, so the report can build every table from metrics files alone.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from salt.atomic import atomic_path, write_json
from salt.data.loader import load_split
from salt.data.shards import load_manifest, verify_shards
from salt.metrics import compute_metrics, json_safe
from salt.models import load_model
from salt.models.classifier import JetClassifier
from salt.provenance import provenance
from salt.training.distributed import resolve_device

log = logging.getLogger(__name__)


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, mask: torch.Tensor, batch: int = 4096) -> np.ndarray:
    """Class probabilities (n, C), or the positive-class probability (n,) for a sigmoid model."""
    out = [model.probabilities(x[i:i + batch], mask[i:i + batch]).float().cpu() for i in range(0, len(x), batch)]
    probs = torch.cat(out).numpy()
    return probs[:, 0] if probs.shape[1] == 1 else probs


BACKENDS = ("eager", "fused")


def inference_model(model: JetClassifier, backend: str, device: torch.device) -> tuple[torch.nn.Module, str]:
    """The module that computes the test predictions, and the backend it really is: the fused
    Triton kernel needs a CUDA device and a linear-attention variant; otherwise eager, with one
    logged line saying why."""
    if backend not in BACKENDS:
        raise ValueError(f"backend is {backend!r}; expected one of {BACKENDS}")
    if backend == "eager":
        return model, "eager"
    if device.type != "cuda":
        log.warning("backend fused needs a CUDA device; evaluating on %s with the eager model", device)
        return model, "eager"
    from salt.kernels.fused import FusedClassifier, fused_model

    model = fused_model(model)  # logs why when the variant is not covered
    return model, "fused" if isinstance(model, FusedClassifier) else "eager"


def evaluate(model_path: str | Path, manifest_path: str | Path, *, device: str = "cpu", threads: int = 1,
             backend: str = "eager") -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    torch.set_num_threads(threads)
    dev = resolve_device(device)
    model, extra = load_model(model_path, map_location="cpu")
    model = model.to(dev).eval()
    spec = model.spec
    runner, used = inference_model(model, backend, dev)
    manifest = load_manifest(manifest_path)
    if extra.get("classes") not in (None, manifest["classes"]):
        raise ValueError(f"{model_path} was trained on classes {extra['classes']}, "
                         f"but {manifest_path} has {manifest['classes']}")
    verify_shards(manifest, ("test",))
    test = load_split(manifest, "test").to(dev)
    scores = predict(runner, test.x, test.mask)
    labels = test.y.cpu().numpy()
    n_particles = test.n_particles.cpu().numpy()
    metrics = compute_metrics(labels, scores, manifest["classes"], n_particles=n_particles, errors=True)
    from salt.models.cost import model_cost

    result = {
        "metrics": metrics,
        "spec": spec.to_dict(),
        "cost": model_cost(spec),
        "inference_backend": used,
        "training": extra.get("summary", {}),
        "dataset": {"manifest": str(manifest_path), "sort": manifest.get("sort"),
                    "truncation": manifest.get("truncation"), "classes": manifest["classes"],
                    "features": manifest["features"], "n_particles": manifest["n_particles"],
                    "test_jets": int(len(labels))},
        "provenance": provenance(device=str(dev)),
    }
    arrays = {"labels": labels, "scores": scores, "n_particles": n_particles}
    return result, arrays


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model.pt from `salt train`")
    parser.add_argument("--manifest", required=True, help="manifest.json of the shards")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backend", default="eager", choices=BACKENDS,
                        help="eager (default) or fused: the one-kernel Triton forward (cuda; linear-attention "
                             "variants, others run eager with a logged note)")
    parser.add_argument("--metrics", required=True, help="metrics.json to write")
    parser.add_argument("--predictions", required=True, help="predictions.npz to write (labels, scores, n_particles)")


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    result, arrays = evaluate(args.model, args.manifest, device=args.device, threads=args.threads,
                              backend=args.backend)
    with atomic_path(args.predictions) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    write_json(args.metrics, json_safe(result))
    m = result["metrics"]
    print(json.dumps({"accuracy": m.get("accuracy"), "auc_macro": m.get("auc_macro")}))
    return 0
