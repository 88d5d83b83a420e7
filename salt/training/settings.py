"""The `train:` settings of one training job, validated."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass
class TrainSettings:
    """The `train:` block of config.yaml for one job (its variant's schedule already chosen)."""

    schedule: list[tuple[int, int]]
    lr: float = 1e-3
    eps: float = 1e-7
    adam: str = "keras"               # keras: eps added to sqrt(v) as Keras does; torch: torch.optim.Adam
    patience: int = 40
    early_stopping: str = "phase"     # "phase": the authors' per-phase restart; "global": end on the best epoch
    eval_batch: int = 4096
    max_train_jets: int | None = None
    loader: str = "auto"              # memory | stream | auto (memory if the split fits in memory_budget_gb)
    memory_budget_gb: float = 8.0
    workers: int = 2                  # DataLoader processes per rank when streaming
    buffer_jets: int = 16384          # shuffle buffer per streaming reader
    precision: str = "fp32"           # fp32 | bf16 (autocast of the training steps; validation stays fp32)
    checkpoint_minutes: float = 10.0  # mid-epoch checkpoint interval; 0: epoch ends and signals only

    # keys that do not change the trained weights (a checkpoint stays valid when they change)
    NOT_IN_RESULT = ("checkpoint_minutes",)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainSettings":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            hint = (" (per-variant `schedules` are resolved by the train rule; pass the chosen `schedule`)"
                    if "schedules" in unknown else "")
            raise ValueError(f"train settings: unknown keys {unknown}; expected some of {sorted(known)}{hint}")
        if "schedule" not in d:
            raise ValueError("train settings: 'schedule' is missing; expected [[batch_size, max_epochs], ...]")
        s = cls(**d)
        try:
            s.schedule = [(int(b), int(e)) for b, e in s.schedule]
        except (TypeError, ValueError):
            raise ValueError(f"train settings: schedule {d['schedule']!r}; expected [[batch_size, max_epochs], ...]")
        if not s.schedule or any(b < 1 or e < 1 for b, e in s.schedule):
            raise ValueError(f"train settings: schedule {d['schedule']!r}; expected positive (batch_size, max_epochs)")
        choices = {"early_stopping": ("phase", "global"), "loader": ("memory", "stream", "auto"),
                   "precision": ("fp32", "bf16"), "adam": ("keras", "torch")}
        for key, allowed in choices.items():
            if getattr(s, key) not in allowed:
                raise ValueError(f"train settings: {key} is {getattr(s, key)!r}; expected one of {allowed}")
        for key in ("patience", "eval_batch", "buffer_jets"):
            if int(getattr(s, key)) < 1:
                raise ValueError(f"train settings: {key} is {getattr(s, key)!r}; expected a positive integer")
        if s.workers < 0:
            raise ValueError(f"train settings: workers is {s.workers!r}; expected 0 or more")
        return s

    def result_dict(self) -> dict[str, Any]:
        """The settings that change the trained weights."""
        return {k: v for k, v in asdict(self).items() if k not in self.NOT_IN_RESULT}
