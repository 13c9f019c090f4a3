"""Numbers as people read them, the same in the terminal and in the app: durations and byte sizes."""

from __future__ import annotations

import math


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
