"""What the run's progress bar says and how full it is, as plain data (Qt-free, unit-tested without a window).

Why its own module: a run ends at Total steps or at its time budget, whichever comes first, so the bar's
fraction and text depend on both (a 10-minute run of at most 20,000 steps must not show 3 % after 9 of its
10 minutes), and the same facts are said while running, paused, resumed, stopped and completed.
"""

from __future__ import annotations

from dataclasses import dataclass

from ddpm_studio.services.formatting import format_duration


@dataclass(frozen=True)
class RunPosition:
    """Where a run stands: ``step`` of ``total_steps``, and ``train_seconds`` of ``budget_s`` (0 = no time budget)."""

    step: int
    total_steps: int
    train_seconds: float = 0.0
    budget_s: float = 0.0

    @property
    def timed(self) -> bool:
        return self.budget_s > 0

    @property
    def fraction(self) -> float:
        """How far to the end: the steps' share, or the time budget's if it is further along (it ends first)."""
        by_steps = self.step / max(1, self.total_steps)
        by_time = self.train_seconds / self.budget_s if self.timed else 0.0
        return max(0.0, min(1.0, max(by_steps, by_time)))

    def time_used(self) -> str:
        """"3:12 of 10:00 min" ("1:02:03 of 2:00:00" past an hour); never more than the budget."""
        used, budget = format_duration(min(self.train_seconds, self.budget_s)), format_duration(self.budget_s)
        return f"{used} of {budget}" + (" min" if self.budget_s < 3600 else "")

    def where(self) -> str:
        """"step 1,234 / 20,000", or for a timed run "3:12 of 10:00 min · step 1,234"."""
        if self.timed:
            return f"{self.time_used()} · step {self.step:,}"
        return f"step {self.step:,} / {self.total_steps:,}"


def running_text(pos: RunPosition, loss: float | None = None, images_per_sec: float | None = None,
                 eta: float | None = None) -> str:
    parts = [pos.where()]
    if loss is not None:
        parts.append(f"loss {loss:.4f}")
    if images_per_sec:
        parts.append(f"{images_per_sec:,.0f} img/s")
    if eta is not None:
        parts.append(f"ETA {format_duration(eta)}")
    return "  ·  ".join(parts)


def paused_text(pos: RunPosition) -> str:
    return f"Paused at {pos.where()}"


def resumed_text(pos: RunPosition) -> str:
    return f"Resumed at {pos.where()}"


def ended_label(reason: str) -> str:
    """The state label of a run that ended on purpose (RunFinished.reason "completed" or "stopped")."""
    return "Stopped" if reason == "stopped" else "Completed"


def ended_text(pos: RunPosition, reason: str) -> str:
    """"Stopped at step 153 of 20,000", "Completed at step 20,000 of 20,000", or with a time budget
    "Stopped at 4:12 of 10:00 min (step 153)"."""
    where = f"{pos.time_used()} (step {pos.step:,})" if pos.timed else f"step {pos.step:,} of {pos.total_steps:,}"
    return f"{ended_label(reason)} at {where}"
