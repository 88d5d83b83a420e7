"""Save and load a model with its spec, in a file `torch.load(weights_only=True)` can read.

The file holds only plain containers, numbers, strings and tensors: the spec as a
dict, the state dict, and the caller's `extra` (training history, config, metrics,
optimizer state). Loading never unpickles arbitrary objects.
"""

from __future__ import annotations

import os
import zipfile
from typing import Any

import torch

from salt.atomic import atomic_path
from salt.models.classifier import JetClassifier
from salt.models.registry import build_model
from salt.models.spec import ModelSpec

FORMAT = "salt-model/1"
_PLAIN = (str, int, float, bool, type(None), torch.Tensor)


def save_model(path: str | os.PathLike[str], model: JetClassifier, extra: dict[str, Any] | None = None) -> None:
    """Write model + spec + extra atomically (a killed job leaves no half-written file)."""
    extra = {} if extra is None else extra
    _check_plain(extra, "extra")
    payload = {
        "format": FORMAT,
        "spec": model.spec.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_model(path: str | os.PathLike[str], map_location: str | torch.device = "cpu",
               impl: str = "fused") -> tuple[JetClassifier, dict[str, Any]]:
    """The model (in eval mode) and the `extra` dict saved with it."""
    if os.path.isfile(path) and not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a model file written by salt train (not a torch.save zip archive)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file
        raise ValueError(f"{path}: not a model file written by salt train (torch.load failed: "
                         f"{type(err).__name__}: {err})") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path}: format is {found!r}; expected {FORMAT!r}")
    try:
        spec = ModelSpec.from_dict(payload["spec"])
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
    model = build_model(spec, impl=impl)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise ValueError(f"{path}: weights do not fit the stored spec: {err}") from err
    model.to(map_location).eval()
    return model, payload.get("extra", {})


def _check_plain(obj: Any, where: str) -> None:
    """Reject values weights_only loading could not read back, naming where they are."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where}: key {key!r} is a {type(key).__name__}; expected str or int")
            _check_plain(value, f"{where}[{key!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _check_plain(value, f"{where}[{i}]")
    elif not isinstance(obj, _PLAIN):
        raise TypeError(f"{where} is a {type(obj).__name__}; only dicts, lists, numbers, strings, "
                        "None and tensors can be saved with a model")
