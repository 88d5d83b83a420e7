"""SAL-T and its baselines: specs, modules, checkpoints and cost model.

    spec = ModelSpec.from_dict({"model": "salt", "particles": 150, "classes": 5})
    model = build_model(spec)
    logits = model(x, mask=None)          # x: (B, N, F)
"""

from salt.models.checkpoint import load_model, save_model
from salt.models.classifier import JetClassifier
from salt.models.cost import model_cost
from salt.models.registry import build_model
from salt.models.spec import MODELS, ModelSpec

__all__ = ["MODELS", "JetClassifier", "ModelSpec", "build_model", "load_model", "model_cost", "save_model"]
