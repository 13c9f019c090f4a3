"""The training side of the real window on a tiny model: the Runs list follows the live step, Pause and Resume reach
the Log panel, Sample now and Checkpoint now work while paused, and the bar says where the run really stands."""

from __future__ import annotations

from pathlib import Path

import pytest

from ddpm_studio.gui.presenters.run_state import RunState
from tests.gui.conftest import tiny_config

LONG = 90_000


def test_the_window_follows_a_run_through_pause_requests_resume_and_stop(app_handle, qtbot,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from ddpm_studio.services import training as training_mod

    monkeypatch.setattr(training_mod, "STATUS_EVERY_SECONDS", 0.2)  # run.json's step, normally every ~10 s
    studio, w = app_handle.studio, app_handle.window
    controls, training = w.run_controls, studio.training
    studio.runs_timer.setInterval(300)
    studio.settings.set_config(tiny_config())
    qtbot.waitUntil(lambda: controls.action("start").isEnabled(), timeout=LONG)
    controls.action("start").trigger()
    qtbot.waitUntil(lambda: training.state is RunState.RUNNING and training.step >= 4, timeout=LONG)

    # The Runs list shows the live step (from run.json), not the 0 it read when the run started.
    qtbot.waitUntil(lambda: bool(w.runs_panel.rows) and w.runs_panel.rows[0].step >= 3, timeout=LONG)
    assert w.runs_panel.rows[0].state == "running"

    controls.action("pause").trigger()
    qtbot.waitUntil(lambda: training.state is RunState.PAUSED, timeout=LONG)
    paused = training.step
    qtbot.waitUntil(lambda: f"Paused at step {paused}" in w.log_panel.plain_text(), timeout=LONG)
    assert controls.progress.format().startswith(f"Paused at step {paused:,}")

    # Sample now and Checkpoint now while paused: served at the paused step, and the run stays paused.
    previews = w.trajectory.preview_count
    assert controls.action("preview").isEnabled() and controls.action("checkpoint").isEnabled()
    controls.action("preview").trigger()
    controls.action("checkpoint").trigger()
    checkpoint = Path(training.run.run_dir) / "checkpoints" / f"step_{paused:08d}.pt"
    qtbot.waitUntil(lambda: w.trajectory.preview_count == previews + 1 and checkpoint.is_file(), timeout=LONG)
    qtbot.waitUntil(lambda: any(r.step == paused for r in w.checkpoints_panel.rows), timeout=LONG)
    assert training.state is RunState.PAUSED and training.step == paused

    controls.action("resume").trigger()
    qtbot.waitUntil(lambda: training.state is RunState.RUNNING, timeout=LONG)
    assert not controls.progress.format().startswith("Paused")
    qtbot.waitUntil(lambda: f"Resumed at step {paused}" in w.log_panel.plain_text(), timeout=LONG)

    controls.action("stop").trigger()
    qtbot.waitUntil(lambda: not training.is_running(), timeout=LONG)
    assert controls.progress.format() == f"Stopped at step {training.step:,} of 100,000"
    assert controls.state_label.text() == "Stopped"
