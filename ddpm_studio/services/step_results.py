"""A training step's results as the host sees them: read every step on a CPU, in batches on a GPU.

Why: reading a number computed on a GPU (``float(loss)``) waits until everything queued before it has run,
so the host cannot queue step n + 1 while the GPU runs step n, and the GPU idles while Python launches the
next step's hundreds of kernels. On a GPU the loop therefore keeps each step's loss and per-quarter sums
on the device (:class:`PendingSteps`) and copies them all to the host in one transfer every few steps or
before anything that needs them (a log line, a preview, a checkpoint, pause, stop, the end).

What must not change with that: a non-finite step is never applied. :class:`RefusedSteps` decides it on the
device, gates the optimizer (fused AdamW skips its update where ``found_inf`` is 1, the mechanism GradScaler
uses) and the EMA with it, and stays set, so no later step is applied either; the host learns of it at the
next read and raises the same error, naming the step it happened at. On a CPU a read costs nothing and the
loop reads (and checks) every step, as it always did.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

#: On a GPU: read at least this often (seconds), so a progress bar still moves several times a second ...
READ_EVERY_SECONDS = 0.25
#: ... and at least every this many steps (bounds what a refused step costs: the steps queued after it are wasted).
READ_EVERY_STEPS = 100


def non_finite_message(step: int, loss: float, grad_norm: float) -> str:
    """What the user reads when step ``step`` had a NaN / infinite loss (or, the loss finite, gradient)."""
    what, value = ("loss", loss) if not math.isfinite(loss) else ("gradient", grad_norm)
    return (f"The {what} became {'NaN' if math.isnan(value) else 'infinite'} at step {step}: training stopped and the "
            "last checkpoint is kept. Resume from it with a lower learning rate.")


class RefusedSteps:
    """The device-side record of the first step whose loss or gradient norm was not finite.

    ``record`` runs every step without a host sync and returns the flag that gates that step's update:
    1.0 from the first refused step on (sticky), so the weights and the EMA stay those before it.
    """

    def __init__(self, device: torch.device) -> None:
        self.flag = torch.zeros((), device=device)  # float32 0/1: the dtype fused AdamW takes as found_inf
        self._step = torch.zeros((), dtype=torch.int64, device=device)
        self._values = torch.zeros(2, device=device)  # loss and gradient norm of that step (for the message)

    def record(self, step: int, loss: Tensor, grad_norm: Tensor) -> Tensor:
        """Note step ``step``'s loss and gradient norm; returns the gate flag (1.0 = refuse this update)."""
        values = torch.stack([loss.detach().float().reshape(()), grad_norm.detach().float().reshape(())])
        bad = torch.isfinite(values).all().logical_not()
        first = bad & (self.flag == 0)
        self._step = torch.where(first, step, self._step)
        self._values = torch.where(first, values, self._values)
        self.flag = torch.maximum(self.flag, bad.float())
        return self.flag

    def first_refused(self) -> tuple[int, float, float] | None:
        """(step, loss, gradient norm) of the first refused step, or None. Reads the device: a host sync."""
        if not bool(self.flag):
            return None
        loss, grad_norm = self._values.tolist()
        return int(self._step), loss, grad_norm


@dataclass(frozen=True)
class StepResult:
    """One step's results on the host: its loss, the per-quarter loss sums and counts, and its learning rate."""

    step: int
    loss: float
    bucket_sums: Tensor
    bucket_counts: Tensor
    lr: float


class PendingSteps:
    """Steps run but not yet read by the host; ``deferred=False`` makes every step due at once (the CPU's way)."""

    def __init__(self, *, deferred: bool, every_seconds: float | None = None, every_steps: int | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.deferred = deferred
        self.clock = clock  # the training loop's time source (its tests give it a fake one)
        self.every_seconds = READ_EVERY_SECONDS if every_seconds is None else every_seconds
        self.every_steps = READ_EVERY_STEPS if every_steps is None else every_steps
        self._steps: list[tuple[int, Tensor, Tensor, Tensor, float]] = []
        self.started: float | None = None  # clock time when the first of the pending steps began

    def __len__(self) -> int:
        return len(self._steps)

    def begin_step(self) -> None:
        """Call before running a step: the time the steps of the next read began."""
        if self.started is None:
            self.started = self.clock()

    def add(self, step: int, loss: Tensor, bucket_sums: Tensor, bucket_counts: Tensor, lr: float) -> None:
        self._steps.append((step, loss, bucket_sums, bucket_counts, lr))

    def due(self) -> bool:
        """Whether the host should read now for pace's sake (events that need the results read regardless)."""
        if not self.deferred or len(self._steps) >= self.every_steps:
            return True
        return self.started is not None and self.clock() - self.started >= self.every_seconds

    def read(self) -> tuple[list[StepResult], float]:
        """Every pending step's results (one device-to-host copy) and the wall time they took since ``begin_step``."""
        if not self._steps:
            return [], 0.0
        packed = torch.cat([torch.cat([loss.detach().float().reshape(1), sums.float(), counts.float()])
                            for _, loss, sums, counts, _ in self._steps]).cpu()
        width = packed.numel() // len(self._steps)
        rows = packed.view(len(self._steps), width)
        buckets = (width - 1) // 2
        results = [StepResult(step, float(row[0]), row[1 : 1 + buckets], row[1 + buckets :], lr)
                   for (step, *_rest, lr), row in zip(self._steps, rows, strict=True)]
        seconds = self.clock() - (self.started if self.started is not None else self.clock())
        self._steps, self.started = [], None
        return results, seconds
