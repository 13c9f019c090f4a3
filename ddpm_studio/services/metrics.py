"""The metrics log: one JSON object per line, appended and flushed, re-plottable after a crash."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ddpm_studio.core.atomic import atomic_write


class MetricsLog:
    """Append-only JSONL writer; a torn last line (crash mid-write) is skipped on reading."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fh = None

    def append(self, record: dict[str, Any]) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for appends
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        self._fh.write(json.dumps(clean) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step`` (used on resume, so a re-trained stretch is not logged twice)."""
        records = [r for r in read_metrics(self.path) if r.get("step", 0) <= step]
        if self.path.exists():
            text = "".join(json.dumps(r) + "\n" for r in records)
            atomic_write(self.path, lambda fh: fh.write(text.encode("utf-8")))


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All readable records of a metrics file, in order."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
    return records
