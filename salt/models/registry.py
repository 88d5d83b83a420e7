"""Spec -> module: the one place that turns a ModelSpec into a torch model."""

from __future__ import annotations

from typing import Any

from salt.models.classifier import JetClassifier
from salt.models.spec import ModelSpec


def build_model(spec: ModelSpec | dict[str, Any], impl: str = "fused") -> JetClassifier:
    """A freshly initialised (Keras-default) classifier for `spec`.

    impl: "fused" (fast, default) or "straightforward" (line-by-line port of the
    reference, same function, for cross-checks and before/after benchmarks).
    """
    if isinstance(spec, dict):
        spec = ModelSpec.from_dict(spec)
    return JetClassifier(spec).set_impl(impl)
