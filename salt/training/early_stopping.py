"""Early stopping with Keras 2.15 semantics: restarted every phase, restoring only on a stop."""

from __future__ import annotations

import math
from typing import Any

import torch


def copy_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class EarlyStopping:
    """Keras 2.15 `EarlyStopping(monitor="val_loss", patience, restore_best_weights=True)`; one per phase.

    Its on_epoch_end, line by line: keep the first epoch's weights if nothing is stored
    yet (so a NaN first epoch still has weights to restore); count the epoch; on a
    strict improvement store value, epoch and weights and reset the count; otherwise
    stop once the count reaches `patience` (never at absolute epoch 0) and restore the
    stored weights. Finishing the phase without stopping restores nothing."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.wait = 0
        self.best = math.inf
        self.best_epoch = -1
        self.best_weights: dict[str, torch.Tensor] | None = None

    def update(self, epoch: int, value: float, model: torch.nn.Module) -> bool:
        """Record epoch `epoch` (counted over the whole run); True = stop (best weights restored)."""
        if self.best_weights is None:
            self.best_weights = copy_state(model)
        self.wait += 1
        if value < self.best:   # NaN never improves
            self.best, self.best_epoch, self.wait = value, epoch, 0
            self.best_weights = copy_state(model)
            return False
        if self.wait >= self.patience and epoch > 0:
            model.load_state_dict(self.best_weights)
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"patience": self.patience, "wait": self.wait, "best": self.best, "best_epoch": self.best_epoch,
                "best_weights": self.best_weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.patience, self.wait, self.best = state["patience"], state["wait"], state["best"]
        self.best_epoch, self.best_weights = state["best_epoch"], state["best_weights"]
