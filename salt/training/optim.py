"""Loss, accuracy and the optimizer of the authors' protocol (Keras 2.15 Adam)."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from salt.training.settings import TrainSettings


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def loss_sum(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed cross entropy for several classes, binary cross entropy for one sigmoid output."""
    logits = logits.float()
    if logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0], y.float(), reduction="sum")
    return F.cross_entropy(logits, y, reduction="sum")


def n_correct(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    pred = (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)
    return (pred == y).sum()


class KerasAdam(torch.optim.Optimizer):
    """Adam as Keras 2.15 computes it (the authors' `Adam()`), not as torch.optim.Adam does.

    Keras: p -= lr·sqrt(1-β2^t)/(1-β1^t) · m / (sqrt(v) + ε). torch adds ε to the bias-corrected
    sqrt(v̂), which equals Keras with ε·sqrt(1-β2^t): at ε = 1e-7 torch's effective ε is 32x
    smaller in the first step and the two converge only after a few thousand steps."""

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-7) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            states = [self.state[p] for p in params]
            for p, state in zip(params, states):
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["v"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            grads, ms, vs = [p.grad for p in params], [s["m"] for s in states], [s["v"] for s in states]
            beta1, beta2 = group["betas"]
            t = states[0]["step"] + 1
            torch._foreach_lerp_(ms, grads, 1 - beta1)                  # m += (g - m)(1 - β1)
            torch._foreach_mul_(vs, beta2)
            torch._foreach_addcmul_(vs, grads, grads, value=1 - beta2)  # v += (g² - v)(1 - β2)
            denom = torch._foreach_sqrt(vs)
            torch._foreach_add_(denom, group["eps"])
            alpha = group["lr"] * math.sqrt(1 - beta2**t) / (1 - beta1**t)
            torch._foreach_addcdiv_(params, ms, denom, value=-alpha)
            for state in states:
                state["step"] = t


def make_optimizer(params: Any, settings: TrainSettings) -> torch.optim.Optimizer:
    if settings.adam == "keras":
        return KerasAdam(params, lr=settings.lr, eps=settings.eps)
    return torch.optim.Adam(params, lr=settings.lr, eps=settings.eps)
