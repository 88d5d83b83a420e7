"""Evaluate a trained model on the test split: predictions, physics metrics and attention maps.

The metrics file records the run it belongs to (dataset, variant, sort, seed), the model's
spec, size and training summary next to the numbers, so the report can build every table from
metrics files alone; the attention file holds what the attention figure draws, so the report
never loads a model or a shard.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from salt.atomic import atomic_path, write_json
from salt.attention import AttentionMaps, write_attention
from salt.data.loader import load_split
from salt.data.shards import load_manifest, verify_shards
from salt.identity import RunIdentity
from salt.metrics import compute_metrics, json_safe
from salt.models import load_model
from salt.models.classifier import JetClassifier
from salt.numerics import fp32_convolutions
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


# The first test jets of each class, in file order: enough for a smooth mean, cheap beside the evaluation.
JETS_PER_CLASS = 200


def first_of_each_class(labels: np.ndarray, n_classes: int, per_class: int) -> np.ndarray:
    """Indices of the first `per_class` jets of every class, in their original order."""
    keep = np.zeros(len(labels), dtype=bool)
    for k in range(n_classes):
        keep[np.flatnonzero(labels == k)[:per_class]] = True
    return np.flatnonzero(keep)


def class_mean_attention(model: JetClassifier, x: torch.Tensor, mask: torch.Tensor, labels: np.ndarray,
                         n_classes: int, per_class: int = JETS_PER_CLASS, batch: int = 256
                         ) -> tuple[np.ndarray, np.ndarray]:
    """(maps (C, H, N, K), jets (C,)) of the first block over the first `per_class` jets of each class.

    In batches, since a full-attention map is N x N per head and jet."""
    chosen = first_of_each_class(labels, n_classes, per_class)
    sums: np.ndarray | None = None
    counts = np.zeros((n_classes, x.shape[1]))
    with torch.no_grad():
        for start in range(0, len(chosen), batch):
            idx = torch.from_numpy(chosen[start:start + batch]).to(x.device)
            first = model.attention_maps(x[idx], mask[idx])[0].float().cpu().numpy()
            real = mask[idx].cpu().numpy().astype(np.float64)
            y = labels[chosen[start:start + batch]]
            if sums is None:
                sums = np.zeros((n_classes, *first.shape[1:]))
            for k in np.unique(y):
                sel = y == k
                sums[k] += (first[sel] * real[sel][:, None, :, None]).sum(axis=0)
                counts[k] += real[sel].sum(axis=0)
    if sums is None:
        raise ValueError("no test jets to average attention maps over")
    weight = counts[:, None, :, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        maps = np.where(weight > 0, sums / np.maximum(weight, 1), np.nan)
    jets = np.bincount(labels[chosen], minlength=n_classes)
    return maps.astype(np.float32), jets.astype(np.int64)


def attention_maps(model: JetClassifier, x: torch.Tensor, mask: torch.Tensor, labels: np.ndarray,
                   classes: Sequence[str], identity: RunIdentity, per_class: int = JETS_PER_CLASS
                   ) -> AttentionMaps:
    """The attention file's content for one evaluated run (the model's own weights, not a fused kernel's)."""
    maps, jets = class_mean_attention(model, x, mask, labels, len(classes), per_class)
    spec = model.spec
    return AttentionMaps(identity=identity, spec=spec.to_dict(), classes=[str(c) for c in classes], maps=maps,
                         jets=jets, key_axis="particle" if spec.attention == "full" else "partition",
                         blocks=spec.blocks, jets_per_class=per_class)


def check_identity(identity: RunIdentity, model_path: str | Path, manifest_path: str | Path,
                   manifest: dict[str, Any], extra: dict[str, Any]) -> None:
    """The run named by the workflow must be the one the files hold: the shards' sort and the seed
    the model was trained with, where they record them."""
    if manifest.get("sort") not in (None, identity.sort):
        raise ValueError(f"--sort {identity.sort}: {manifest_path} holds shards sorted by {manifest['sort']!r}")
    seed = (extra.get("summary") or {}).get("seed")
    if seed is not None and int(seed) != identity.seed:
        raise ValueError(f"--seed {identity.seed}: {model_path} was trained with seed {seed}")


def evaluate(model_path: str | Path, manifest_path: str | Path, *, identity: RunIdentity, device: str = "cpu",
             threads: int = 1, backend: str = "eager", attention_jets: int = JETS_PER_CLASS
             ) -> tuple[dict[str, Any], dict[str, np.ndarray], AttentionMaps]:
    """The metrics document, the prediction arrays and the per-class attention maps of one run."""
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
    check_identity(identity, model_path, manifest_path, manifest, extra)
    verify_shards(manifest, ("test",))
    test = load_split(manifest, "test").to(dev)
    labels = test.y.cpu().numpy()
    with fp32_convolutions():  # on a GPU, fp32 all through (cuDNN would run the logit convolution in TF32)
        scores = predict(runner, test.x, test.mask)
        attention = attention_maps(model, test.x, test.mask, labels, manifest["classes"], identity, attention_jets)
    n_particles = test.n_particles.cpu().numpy()
    metrics = compute_metrics(labels, scores, manifest["classes"], n_particles=n_particles, errors=True)
    from salt.models.cost import model_cost

    result = {
        "identity": identity.to_dict(),
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
    return result, arrays, attention


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model.pt from `salt train`")
    parser.add_argument("--manifest", required=True, help="manifest.json of the shards")
    parser.add_argument("--dataset", required=True, help="the run's dataset, recorded in the files written")
    parser.add_argument("--variant", required=True, help="the run's variant (its name in config.yaml's variants)")
    parser.add_argument("--sort", required=True, help="the run's particle ordering (checked against the manifest)")
    parser.add_argument("--seed", required=True, type=int, help="the run's seed (checked against the model's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backend", default="eager", choices=BACKENDS,
                        help="eager (default) or fused: the one-kernel Triton forward (cuda; linear-attention "
                             "variants, others run eager with a logged note)")
    parser.add_argument("--metrics", required=True, help="metrics.json to write")
    parser.add_argument("--predictions", required=True, help="predictions.npz to write (labels, scores, n_particles)")
    parser.add_argument("--attention", required=True,
                        help="attention.npz to write: the first block's mean attention maps per class")


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    identity = RunIdentity(dataset=args.dataset, variant=args.variant, sort=args.sort, seed=args.seed)
    result, arrays, attention = evaluate(args.model, args.manifest, identity=identity, device=args.device,
                                         threads=args.threads, backend=args.backend)
    with atomic_path(args.predictions) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    write_attention(args.attention, attention)
    write_json(args.metrics, json_safe(result))
    m = result["metrics"]
    print(json.dumps({"accuracy": m.get("accuracy"), "auc_macro": m.get("auc_macro")}))
    return 0
