"""The real main window driven end to end on a tiny model (the issue's acceptance scenario)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from PySide6.QtCore import Qt

from ddpm_studio.gui.presenters.run_state import RunState
from ddpm_studio.services.config import SampleConfig
from tests.gui.conftest import tiny_config, write_pngs

LONG = 90_000


def test_train_pause_resume_stop_generate_save_reopen(app_handle, dialogs, qtbot, tmp_path: Path) -> None:
    studio, w = app_handle.studio, app_handle.window
    controls = w.run_controls

    # Choose a folder the test made, through the Browse button (the dialog is scripted).
    folder = write_pngs(tmp_path / "images", 40)
    dialogs.directory = str(folder)
    w.dataset_panel.browse.click()
    qtbot.waitUntil(lambda: w.dataset_panel.summary is not None and w.dataset_panel.summary.complete, timeout=LONG)
    assert w.dataset_panel.summary.usable == 40
    assert "40 usable images" in w.dataset_panel.status.text()
    assert any("notes.txt" in w.dataset_panel.skipped.item(i).text() for i in range(w.dataset_panel.skipped.count()))
    assert studio.settings.cfg.data.source == "folder" and studio.settings.cfg.data.data_path == str(folder)

    # Tiny-model settings (the form itself is exercised in test_validation.py).
    studio.settings.set_config(tiny_config(data={"source": "folder", "data_path": str(folder)}))
    qtbot.waitUntil(lambda: controls.action("start").isEnabled(), timeout=LONG)

    # Start: at least one plotted loss point and one trajectory preview.
    controls.action("start").trigger()
    assert not controls.action("start").isEnabled()
    assert w.settings_panel.body.isEnabled() is False  # read-only while a run is active
    qtbot.waitUntil(lambda: studio.training.state is RunState.RUNNING, timeout=LONG)
    qtbot.waitUntil(lambda: w.loss_plot.points >= 3 and w.trajectory.preview_count >= 1, timeout=LONG)
    qtbot.waitUntil(lambda: w.loss_plot.curves["raw"].getData()[0] is not None, timeout=LONG)
    assert len(w.loss_plot.curves["raw"].getData()[0]) >= 1
    assert w.trajectory.current is not None and w.trajectory.current.x_t is not None

    # Pause: the button state follows the worker's confirmation, and the step counter stops.
    controls.action("pause").trigger()
    assert studio.training.state in (RunState.PAUSING, RunState.PAUSED)
    assert (not controls.action("pause").isEnabled() and not controls.action("resume").isEnabled()) or \
        studio.training.state is RunState.PAUSED
    qtbot.waitUntil(lambda: studio.training.state is RunState.PAUSED, timeout=LONG)
    assert controls.action("resume").isEnabled() and not controls.action("pause").isEnabled()
    paused_step = studio.training.step
    points = w.loss_plot.points
    qtbot.wait(700)  # a paused run must not move, however long we look
    assert studio.training.step == paused_step
    assert studio.training._worker.session.step == paused_step  # the session itself, not only what it reported
    assert w.loss_plot.points == points

    # Resume: it advances again.
    controls.action("resume").trigger()
    qtbot.waitUntil(lambda: studio.training.state is RunState.RUNNING, timeout=LONG)
    qtbot.waitUntil(lambda: studio.training.step > paused_step + 2, timeout=LONG)

    # Stop: a checkpoint exists and the thread has ended.
    controls.action("stop").trigger()
    qtbot.waitUntil(lambda: studio.training.state is RunState.FINISHED and not studio.training.is_running(), timeout=LONG)
    run_dir = Path(studio.training.run.run_dir)
    checkpoints = sorted((run_dir / "checkpoints").glob("step_*.pt"))
    assert checkpoints, "Stop must leave a checkpoint"
    assert w.checkpoints_panel.table.rowCount() == len(checkpoints)
    assert w.settings_panel.body.isEnabled()
    assert str(run_dir).startswith(str(tmp_path))  # DDPM_STUDIO_RUNS_DIR is honoured

    # Generate K images from the newest checkpoint, through the Checkpoints panel's "Load into Generate".
    w.checkpoints_panel.table.selectRow(0)
    w.checkpoints_panel.buttons["generate"].click()
    assert w.tabs.currentWidget() is w.generate_panel
    assert w.generate_panel.source_value() == str(checkpoints[-1])
    k = 4
    w.generate_panel.set_sample_config(SampleConfig(num_images=k, sample_batch_size=k, steps=5))
    w.generate_panel.generate_button.click()
    qtbot.waitUntil(lambda: studio.generate.result is not None and not studio.generate.is_running(), timeout=LONG)
    assert w.generate_panel.results.count() == k
    assert w.generate_panel.generate_button.isEnabled()

    # Save: all, a selection, the grid and the GIF.
    dialogs.directory = str(tmp_path / "saved_all")
    w.generate_panel.save_buttons["all"].click()
    assert len(list((tmp_path / "saved_all").glob("*.png"))) == k
    w.generate_panel.results.item(1).setSelected(True)
    w.generate_panel.results.item(3).setSelected(True)
    dialogs.directory = str(tmp_path / "saved_sel")
    w.generate_panel.save_buttons["selected"].click()
    assert len(list((tmp_path / "saved_sel").glob("*.png"))) == 2
    dialogs.save_file = str(tmp_path / "grid.png")
    w.generate_panel.save_buttons["grid"].click()
    dialogs.save_file = str(tmp_path / "traj.gif")
    w.generate_panel.save_buttons["gif"].click()
    assert (tmp_path / "grid.png").stat().st_size > 0 and (tmp_path / "traj.gif").stat().st_size > 0

    # Reopen the run from the Runs panel (its loss history is re-plotted) and continue it.
    stopped_at = studio.training.step
    w.loss_plot.clear()
    studio.runs.current_run = None
    studio.runs.refresh_runs()
    assert w.runs_panel.table.rowCount() == 1
    w.runs_panel.table.selectRow(0)
    w.runs_panel.buttons["open"].click()
    qtbot.waitUntil(lambda: studio.runs.current_run is not None and w.loss_plot.points > 0, timeout=LONG)
    w.runs_panel.buttons["continue"].click()
    qtbot.waitUntil(lambda: studio.training.state is RunState.RUNNING, timeout=LONG)
    qtbot.waitUntil(lambda: studio.training.step > stopped_at, timeout=LONG)
    assert Path(studio.training.run.run_dir) == run_dir  # continued in its own folder
    controls.action("stop").trigger()
    qtbot.waitUntil(lambda: not studio.training.is_running(), timeout=LONG)
    assert not [e for e in dialogs_errors() if e[0] != "Checkpoint not saved"]


def dialogs_errors() -> list[tuple[str, str]]:
    from ddpm_studio.gui import dialogs as dlg

    return list(dlg.shown_errors)


def test_close_during_training_stops_with_checkpoint(app_handle, dialogs, qtbot) -> None:
    studio, w = app_handle.studio, app_handle.window
    studio.settings.set_config(tiny_config(data={"source": "demo"}))
    qtbot.waitUntil(lambda: w.run_controls.action("start").isEnabled(), timeout=LONG)
    w.run_controls.action("start").trigger()
    qtbot.waitUntil(lambda: studio.training.step >= 3, timeout=LONG)
    thread = studio.training._thread.thread
    dialogs.answers = [0]  # "Stop and quit"
    w.close()
    assert dialogs.asked == ["Training is running"]
    qtbot.waitUntil(lambda: not w.isVisible(), timeout=LONG)
    assert not thread.isRunning()
    assert not studio.training.is_running()
    run_dir = Path(studio.training.run.run_dir)
    assert list((run_dir / "checkpoints").glob("step_*.pt"))


def test_keyboard_shortcut_pauses(app_handle, dialogs, qtbot) -> None:
    studio, w = app_handle.studio, app_handle.window
    studio.settings.set_config(tiny_config(data={"source": "demo"}, schedule={"preview_every": 0}))
    qtbot.waitUntil(lambda: w.run_controls.action("start").isEnabled(), timeout=LONG)
    w.activateWindow()
    qtbot.keyClick(w, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: studio.training.state is RunState.RUNNING, timeout=LONG)
    qtbot.keyClick(w, Qt.Key.Key_P, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: studio.training.state is RunState.PAUSED, timeout=LONG)
    qtbot.keyClick(w, Qt.Key.Key_Period, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: studio.training.state is RunState.FINISHED, timeout=LONG)


_ = dataclasses


def test_run_failure_shows_message_and_app_stays_usable(app_handle, dialogs, qtbot, tmp_path: Path) -> None:
    import shutil

    studio, w = app_handle.studio, app_handle.window
    folder = write_pngs(tmp_path / "vanishing", 10)
    studio.settings.set_config(tiny_config(data={"source": "folder", "data_path": str(folder)}))
    qtbot.waitUntil(lambda: w.run_controls.action("start").isEnabled(), timeout=LONG)
    for png in folder.glob("*.png"):  # the folder loses its images between the check and the start
        png.unlink()
    w.run_controls.action("start").trigger()
    qtbot.waitUntil(lambda: studio.training.state is RunState.FAILED and not studio.training.is_running(), timeout=LONG)
    title, text = dialogs_errors()[-1]
    assert title == "Training stopped" and "No images found" in text
    assert w.settings_panel.body.isEnabled()  # usable again: settings editable, Start possible with valid data
    shutil.rmtree(folder)
    w.dataset_panel.source.setCurrentIndex(w.dataset_panel.source.findData("demo"))
    qtbot.waitUntil(lambda: w.run_controls.action("start").isEnabled(), timeout=LONG)


def test_generate_from_live_model_while_training(app_handle, dialogs, qtbot) -> None:
    from ddpm_studio.gui.presenters.model_sources import LIVE

    studio, w = app_handle.studio, app_handle.window
    studio.settings.set_config(tiny_config(data={"source": "demo"}, schedule={"preview_every": 0}))
    qtbot.waitUntil(lambda: w.run_controls.action("start").isEnabled(), timeout=LONG)
    w.run_controls.action("start").trigger()
    qtbot.waitUntil(lambda: studio.training.state is RunState.RUNNING and studio.training.step >= 2, timeout=LONG)
    assert w.generate_panel.source.findData(LIVE) >= 0
    w.generate_panel.source.setCurrentIndex(w.generate_panel.source.findData(LIVE))
    w.generate_panel.set_sample_config(SampleConfig(num_images=3, sample_batch_size=3, steps=4))
    w.generate_panel.generate_button.click()
    qtbot.waitUntil(lambda: studio.generate.result is not None and not studio.generate.is_running(), timeout=LONG)
    assert w.generate_panel.results.count() == 3
    assert studio.training.state is RunState.RUNNING  # training went on meanwhile
    assert "/samples/live-" in studio.generate.result.paths[0]
    w.run_controls.action("stop").trigger()
    qtbot.waitUntil(lambda: not studio.training.is_running(), timeout=LONG)


def test_keep_last_changed_during_a_run_is_followed(app_handle, dialogs, qtbot) -> None:
    """The Checkpoints panel's box during a run: the next save keeps only that many (main's app replaced the
    session's config, which the checkpoint policy never read again: all five stayed)."""
    studio, w = app_handle.studio, app_handle.window
    studio.settings.set_config(tiny_config(data={"source": "demo"},
                                           schedule={"preview_every": 0, "checkpoint_every": 1, "keep_last": 5}))
    qtbot.waitUntil(lambda: w.run_controls.action("start").isEnabled(), timeout=LONG)
    w.run_controls.action("start").trigger()
    qtbot.waitUntil(lambda: w.checkpoints_panel.table.rowCount() == 5, timeout=LONG)
    w.checkpoints_panel.keep_last.setValue(2)
    saved_at = studio.training.step
    qtbot.waitUntil(lambda: w.checkpoints_panel.rows and w.checkpoints_panel.rows[0].step > saved_at + 1, timeout=LONG)
    assert w.checkpoints_panel.table.rowCount() == 2
    run = Path(studio.training.run.run_dir)
    assert len(list((run / "checkpoints").glob("step_*.pt"))) == 2
    w.run_controls.action("stop").trigger()
    qtbot.waitUntil(lambda: not studio.training.is_running(), timeout=LONG)
    assert len(list((run / "checkpoints").glob("step_*.pt"))) == 2
    assert studio.settings.cfg.schedule.keep_last == 5  # the locked settings are the run's; the run kept the new value
