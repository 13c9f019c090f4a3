"""What the run's progress bar says and how full it is, as plain data (Qt-free, unit-tested without a window).

Why its own module: a run ends at Total steps or at its time budget, whichever comes first, so the bar's
fraction and text depend on both (a 10-minute run of at most 20,000 steps must not show 3 % after 9 of its
10 minutes), and the same facts are said while running, paused, resumed, stopped and completed.
"""

from __future__ import annotations

from ddpm_studio.services.formatting import RunPosition, format_duration

__all__ = ["RunPosition", "ended_label", "ended_text", "paused_text", "resumed_text", "running_text"]


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
