"""Numbers as people read them, the same in the terminal and in the app: durations, byte sizes, a run's position."""

from __future__ import annotations

import math
from dataclasses import dataclass


def format_duration(seconds: float | None) -> str:
    """1:02:03 / 4:05 style; ``--:--`` when unknown (None, NaN, negative or infinite)."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "--:--"
    seconds = round(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def human_bytes(n: float) -> str:
    """512 B, 1.5 KB, 3.2 GB (binary units, as file managers show them)."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


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
