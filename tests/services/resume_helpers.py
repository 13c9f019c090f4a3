"""Train a run straight through and the same run stopped half-way and resumed, for exact-resume tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ddpm_studio.core.checkpoint import load_checkpoint
from ddpm_studio.services import events as ev
from ddpm_studio.services.control import RunControl
from ddpm_studio.services.runs import RunFolder
from ddpm_studio.services.training import TrainingSession
from tests.services.test_training import collect


def straight_and_resumed(cfg: Any, runs_dir: Path, stop_at: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(last checkpoint of an uninterrupted run, last checkpoint of the run stopped after ``stop_at`` steps and resumed)."""
    collect(TrainingSession(cfg, runs_dir=runs_dir, run_name="straight"))
    straight = load_checkpoint(RunFolder(runs_dir / "straight").latest_checkpoint().path)
    control = RunControl()
    collect(TrainingSession(cfg, runs_dir=runs_dir, run_name="split", control=control),
            on_event=lambda e: control.stop() if isinstance(e, ev.TrainProgress) and e.step == stop_at else None)
    mid = RunFolder(runs_dir / "split").latest_checkpoint()
    assert mid is not None and mid.step == stop_at
    assert collect(TrainingSession(resume_from=mid.path))[-1].reason == "completed"
    return straight, load_checkpoint(RunFolder(runs_dir / "split").latest_checkpoint().path)
