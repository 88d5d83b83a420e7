"""The steps of one epoch, without the loop's bookkeeping around them: what the ranks agree on
before a step, the optimizer step itself, the epoch's running sums, and the validation pass."""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch

from salt.training.checkpoint import Position
from salt.training.distributed import Dist
from salt.training.feeds import MemoryFeed, StreamFeed
from salt.training.optim import loss_sum, n_correct

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]


@dataclass(frozen=True)
class StepVote:
    """What every rank must know before a step, agreed in one small all-reduce: a rank that
    stopped or saved alone would leave the others waiting in DDP's gradient exchange."""

    n_global: int      # jets in the global batch (the loss is scaled by it)
    exhausted: bool    # some rank has no batch left: the epoch ends for all
    stop: bool         # some rank received SIGTERM/SIGUSR1
    save_due: bool     # some rank's checkpoint interval has passed

    @classmethod
    def take(cls, dist: Dist, batch: Batch | None, stop: bool, save_due: bool) -> "StepVote":
        n_local = 0 if batch is None or batch[3] == 0 else len(batch[2])
        n_global, exhausted, stop, save_due = (int(v) for v in dist.sum(
            [n_local, batch is None, stop, save_due], dtype=torch.int64))
        return cls(n_global, bool(exhausted), bool(stop), bool(save_due))


def train_step(net: torch.nn.Module, opt: torch.optim.Optimizer, batch: Batch, n_global: int, world: int,
               autocast: AbstractContextManager) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on this rank's part of a global batch; returns (summed loss, logits)."""
    x, m, y, weight = batch
    with autocast:
        logits = net(x, m)
    total_loss = loss_sum(logits, y) * weight
    # DDP averages gradients over ranks: scale so the result is the mean over the global batch
    (total_loss * (world / n_global)).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return total_loss, logits


class EpochSums:
    """The epoch's loss, correct count and time so far. The sums stay on the device (no host sync
    per step) and go into the Position, which a checkpoint saves, only at a pause or the epoch end."""

    def __init__(self, pos: Position, dev: torch.device) -> None:
        self.loss = torch.tensor(pos.loss_sum, dtype=torch.float64, device=dev)
        self.correct = torch.tensor(pos.correct, dtype=torch.int64, device=dev)
        self.t0 = time.perf_counter()

    def add(self, total_loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.loss += total_loss.detach().double()
        self.correct += n_correct(logits.detach(), y)

    def store(self, pos: Position) -> None:
        """Write the sums and the time since the last store into `pos`."""
        pos.loss_sum, pos.correct = float(self.loss), int(self.correct)
        now = time.perf_counter()
        pos.epoch_s += now - self.t0
        self.t0 = now


@torch.no_grad()
def validate(model: torch.nn.Module, feed: MemoryFeed | StreamFeed, batch_size: int, dist: Dist, dev: torch.device
             ) -> tuple[float, float]:
    """Mean loss and accuracy over the whole split, summed over ranks. In fp32 even under bf16
    training: early stopping compares exact losses."""
    model.eval()
    loss_acc = torch.zeros((), dtype=torch.float64, device=dev)
    correct_acc = torch.zeros((), dtype=torch.int64, device=dev)
    for x, m, y in feed.eval_batches(batch_size, dist):
        logits = model(x, m)
        loss_acc += loss_sum(logits, y).double()
        correct_acc += n_correct(logits, y)
    loss_total, correct_total = dist.sum([float(loss_acc), float(correct_acc)])
    n = len(feed)
    return loss_total / n, correct_total / n
