"""SIGTERM/SIGUSR1 (SLURM preemption, time limit, `--signal`) become a clean stop between steps.

The trainer finishes the current step, saves checkpoint.pt and exits with EXIT_PREEMPTED (75,
EX_TEMPFAIL). Under Snakemake's SLURM executor the job's exit status is the inner Snakemake's
(1) and the profile's `retries:` resubmits it; a plain `sbatch` of `salt train` passes 75 on,
which a site can list in slurm.conf's RequeueExit to have SLURM requeue it.

Test hook: SALT_TRAIN_SIGNAL_AT_STEP=N[:USR1] makes rank 0 send itself SIGTERM (or SIGUSR1)
right after global step N, so tests can interrupt a run at an exact point.
"""

from __future__ import annotations

import os
import signal
from typing import Any

EXIT_PREEMPTED = 75   # EX_TEMPFAIL: stopped by a signal after saving checkpoint.pt; run the same command again
SIGNAL_HOOK_ENV = "SALT_TRAIN_SIGNAL_AT_STEP"


class Preempted(Exception):
    """A stop signal arrived; the checkpoint is saved and the process should exit EXIT_PREEMPTED."""

    def __init__(self, signum: int | None) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}" if signum else "stopped with the other ranks")
        self.signum = signum


class StopSignals:
    """Turns SIGTERM/SIGUSR1 into a flag the training loop checks between steps."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        if _in_main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.received is None:   # no logging here: the handler may interrupt a logging call
            self.received = signum

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            # after a stop, ignore more: a second signal (torchrun stopping the other ranks, SLURM
            # repeating itself) must not kill the process while it exits with EXIT_PREEMPTED
            # (SIG_IGN also survives interpreter shutdown, which resets Python-level handlers)
            signal.signal(sig, handler if exc_type is None else signal.SIG_IGN)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def signal_hook() -> tuple[int, int] | None:
    """(global step, signal) from SALT_TRAIN_SIGNAL_AT_STEP, or None."""
    value = os.environ.get(SIGNAL_HOOK_ENV)
    if not value:
        return None
    step, _, name = value.partition(":")
    return int(step), getattr(signal, f"SIG{name or 'TERM'}")
