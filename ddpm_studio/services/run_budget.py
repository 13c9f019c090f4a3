"""How long a run goes on: a number of steps, a time budget, or both (whichever ends first).

The time budget counts the seconds the run spends running — steps, previews and checkpoints — but not
paused time or the setup before the first step, and it carries over a resume: each checkpoint stores the
seconds used so far, so a 10-minute run stopped at minute 4 gets 6 more minutes when resumed.

Determinism: with a time budget the learning rate of each step depends on the clock (the schedule follows the
fraction of the budget used), so two runs with the same seed make a different number of steps and differ in
their weights; everything else (data order, noise, dropout) still follows the seed, and resume restores the
exact state saved. For bit-exact reproduction train a fixed number of steps (``total_steps`` without
``train_minutes``), e.g. the step count a time-budgeted run reached (its checkpoint names and run.json say).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ddpm_studio.services.config import OptimConfig


class TrainingClock:
    """Seconds of running time across resumes: ``start`` / ``stop`` around every stretch of running."""

    def __init__(self, used: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.used = float(used)
        self._clock = clock
        self._since: float | None = None

    def start(self) -> None:
        if self._since is None:
            self._since = self._clock()

    def stop(self) -> None:
        if self._since is not None:
            self.used += self._clock() - self._since
            self._since = None

    @property
    def seconds(self) -> float:
        return self.used + (self._clock() - self._since if self._since is not None else 0.0)


class RunBudget:
    """When a run ends and how far along it is, from ``total_steps`` and ``train_minutes`` (0 = no time limit)."""

    def __init__(self, optim: OptimConfig, clock: TrainingClock | None = None) -> None:
        self.total_steps = optim.total_steps
        self.budget_seconds = optim.train_minutes * 60.0
        self.clock = clock or TrainingClock()

    @property
    def timed(self) -> bool:
        return self.budget_seconds > 0

    def time_fraction(self) -> float:
        """The share of the time budget used (0 without one); the learning-rate schedule follows it."""
        return min(1.0, self.clock.seconds / self.budget_seconds) if self.timed else 0.0

    def done(self, step: int) -> bool:
        return step >= self.total_steps or (self.timed and self.clock.seconds >= self.budget_seconds)

    def remaining_seconds(self, step: int, seconds_per_step: float) -> float:
        """The time left: the budget's, or the steps' at ``seconds_per_step`` if they end first."""
        by_steps = max(0, self.total_steps - step) * seconds_per_step
        if not self.timed:
            return by_steps
        return min(by_steps, max(0.0, self.budget_seconds - self.clock.seconds))

    def reason(self, step: int) -> str:
        """Why a finished run ended: "completed" (its steps or its time were used up) or "stopped"."""
        return "completed" if self.done(step) else "stopped"
