"""Settings validation, dataset choice, config files and the interrupted-run offer, on the real window."""

from __future__ import annotations

import json
import os
from pathlib import Path

from PySide6.QtCore import Qt

from ddpm_studio.services import config as c
from ddpm_studio.services import config_files
from tests.gui.conftest import write_pngs

WAIT = 60_000


def test_invalid_field_disables_start_with_reason(app_handle, qtbot) -> None:
    w = app_handle.window
    start = w.run_controls.action("start")
    qtbot.waitUntil(start.isEnabled, timeout=WAIT)  # the demo dataset and defaults are valid
    editor = w.settings_panel.field_editor("optim", "batch_size")
    editor.selectAll()
    qtbot.keyClicks(editor, "0")
    assert not start.isEnabled()
    reason = w.run_controls.reason
    assert reason.isVisible() and "Batch size must be between 1 and 4096" in reason.full_text()
    assert "Batch size" in w.settings_panel.error_label.text() and w.settings_panel.error_label.isVisible()
    assert editor.styleSheet()  # the field itself is marked
    editor.selectAll()
    qtbot.keyClicks(editor, "abc")
    assert "Batch size must be a whole number" in reason.full_text()
    editor.selectAll()
    qtbot.keyClicks(editor, "16")
    qtbot.waitUntil(start.isEnabled, timeout=WAIT)
    assert not reason.isVisible()
    assert app_handle.studio.settings.cfg.optim.batch_size == 16

    # A check that needs the U-Net layout (runs off the GUI thread): base channels must be a multiple of 32.
    base = w.settings_panel.field_editor("model", "base_channels")
    qtbot.keyClicks(base, "48")
    qtbot.waitUntil(lambda: not start.isEnabled() and "multiple of 32" in reason.full_text(), timeout=WAIT)
    base.clear()
    qtbot.keyClicks(base, "64")
    qtbot.waitUntil(start.isEnabled, timeout=WAIT)
    qtbot.waitUntil(lambda: "M parameters" in w.settings_panel.estimate_label.full_text(), timeout=WAIT)  # comes second


def test_empty_folder_shows_message(app_handle, dialogs, qtbot, tmp_path: Path) -> None:
    w = app_handle.window
    empty = tmp_path / "empty"
    empty.mkdir()
    dialogs.directory = str(empty)
    w.dataset_panel.browse.click()
    qtbot.waitUntil(lambda: w.dataset_panel.summary is not None and w.dataset_panel.summary.complete, timeout=WAIT)
    status = w.dataset_panel.status
    assert status.isVisible() and "No images found" in status.text() and "empty" in status.text()
    qtbot.waitUntil(lambda: "No images found" in w.run_controls.reason.full_text(), timeout=WAIT)
    assert not w.run_controls.action("start").isEnabled()

    # A folder with only non-images says so and lists each skipped file with its reason.
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.txt").write_text("x")
    (junk / "b.png").write_bytes(b"not really a png")
    w.dataset_panel.folderChosen.emit(str(junk))  # as typing the path does
    qtbot.waitUntil(lambda: w.dataset_panel.summary is not None and w.dataset_panel.summary.root == str(junk)
                    and w.dataset_panel.summary.complete, timeout=WAIT)
    assert w.dataset_panel.skipped.count() >= 1
    # Back to the demo set: Start is possible again.
    w.dataset_panel.source.setCurrentIndex(w.dataset_panel.source.findData("demo"))
    qtbot.waitUntil(w.run_controls.action("start").isEnabled, timeout=WAIT)


def test_folder_scan_thumbnails_and_recent(app_handle, dialogs, qtbot, tmp_path: Path) -> None:
    w = app_handle.window
    folder = write_pngs(tmp_path / "imgs", 30, size=40)
    w.dataset_panel.folderChosen.emit(str(folder))
    qtbot.waitUntil(lambda: w.dataset_panel.summary is not None and w.dataset_panel.summary.complete, timeout=WAIT)
    assert "30 usable images" in w.dataset_panel.status.text()
    assert "40×40" in w.dataset_panel.stats.text() and "RGB" in w.dataset_panel.stats.text()
    model = w.dataset_panel.thumbs_model
    assert model.rowCount() == 30
    model.data(model.index(0), Qt.ItemDataRole.DecorationRole)  # as the view does for visible rows
    qtbot.waitUntil(lambda: model.loads >= 1, timeout=WAIT)
    assert str(folder) in app_handle.studio.prefs.recent_folders()
    assert w.dataset_panel.recent_menu.actions()


def test_presets_and_config_files(app_handle, dialogs, qtbot, tmp_path: Path) -> None:
    studio, w = app_handle.studio, app_handle.window
    panel = w.settings_panel
    index = panel.preset_combo.findText("Quick pipeline check (tiny model, ~1 min)")
    panel.preset_combo.activated.emit(index)
    assert studio.settings.cfg.model.preset == "tiny" and studio.settings.cfg.data.image_size == 16
    assert w.dataset_panel.data_values()["image_size"] == 16  # the two editors stay in sync
    # Tooltips explain each field (from the metadata).
    assert "AdamW learning rate" in panel.field_editor("optim", "lr").toolTip()
    dialogs.save_file = str(tmp_path / "run.toml")
    panel.save_button.click()
    text = (tmp_path / "run.toml").read_text()
    assert 'preset = "tiny"' in text
    studio.settings.set_config(c.RunConfig())
    dialogs.open_file = str(tmp_path / "run.toml")
    panel.load_button.click()
    assert studio.settings.cfg.model.preset == "tiny"
    assert panel.field_editor("model", "preset").currentText() == "tiny"


def test_settings_persist_between_launches(qtbot, dialogs, isolated: Path) -> None:
    from ddpm_studio.gui.app import create_app

    first = create_app(exec_app=False, settings_path=str(isolated / "settings.ini"))
    first.studio.settings.set_config(c.from_dict({"optim": {"batch_size": 12}, "data": {"image_size": 48}}))
    first.window.docks["log"].close()  # a layout change
    first.window.close()
    first.window.deleteLater()
    second = create_app(exec_app=False, settings_path=str(isolated / "settings.ini"))
    try:
        assert second.studio.settings.cfg.optim.batch_size == 12
        assert second.window.dataset_panel.data_values()["image_size"] == 48
        assert second.studio.prefs.get_bytes("window/geometry") is not None  # (offscreen clamps it to its screen)
        assert second.window.docks["log"].isHidden() and not second.window.docks["runs"].isHidden()
    finally:
        second.window.close()
        second.window.deleteLater()


def test_offers_to_reopen_interrupted_run(qtbot, dialogs, isolated: Path) -> None:
    from ddpm_studio.gui.app import create_app
    from ddpm_studio.services.runs import RunFolder

    run = RunFolder.create(os.environ["DDPM_STUDIO_RUNS_DIR"], "crashed")
    config_files.save_config_file(c.RunConfig(), run.config_path)
    (run.path / "run.json").write_text(json.dumps({"state": "running", "pid": 2**22 + 12345, "step": 40}))
    run.metrics_path.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s, "lr": 1e-4}) + "\n" for s in range(1, 41)))
    dialogs.answers = [1]  # "Open it"
    handle = create_app(exec_app=False, settings_path=str(isolated / "settings.ini"))
    try:
        qtbot.waitUntil(lambda: handle.studio.runs.current_run is not None, timeout=WAIT)
        assert dialogs.asked == ["Interrupted run"]
        assert handle.window.loss_plot.points == 40
        assert handle.window.runs_panel.table.rowCount() == 1
        assert handle.window.runs_panel.table.item(0, 1).text() == "interrupted"
    finally:
        handle.window.close()
        handle.window.deleteLater()


def test_drop_a_folder_or_a_file_on_the_dataset_panel(app_handle, qtbot, tmp_path: Path) -> None:
    from PySide6.QtCore import QMimeData, QPointF, QUrl
    from PySide6.QtGui import QDropEvent

    panel = app_handle.window.dataset_panel
    folder = write_pngs(tmp_path / "dropped", 5)

    def drop(path: Path) -> None:
        mime = QMimeData()
        mime.setUrls([QUrl.fromLocalFile(str(path))])
        event = QDropEvent(QPointF(5, 5), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton,
                           Qt.KeyboardModifier.NoModifier)
        panel.dropEvent(event)

    drop(folder)
    qtbot.waitUntil(lambda: panel.summary is not None and panel.summary.complete and panel.summary.usable == 5, timeout=WAIT)
    assert panel.data_values()["source"] == "folder" and panel.data_values()["data_path"] == str(folder)
    panel.source.setCurrentIndex(panel.source.findData("demo"))
    drop(folder / "img_000.png")  # a file: its folder is used
    qtbot.waitUntil(lambda: panel.summary is not None and panel.data_values()["data_path"] == str(folder), timeout=WAIT)


def test_error_events_show_messages_and_keep_the_app_usable(app_handle, dialogs, qtbot) -> None:
    from ddpm_studio.gui import dialogs as dlg
    from ddpm_studio.gui.presenters.run_state import RunState
    from ddpm_studio.services import events as ev

    training = app_handle.studio.training
    training._on_event(ev.CheckpointFailed(12, "Could not save checkpoint at step 12: No space left on device"))
    assert dlg.shown_errors[-1][0] == "Checkpoint not saved" and "No space left" in dlg.shown_errors[-1][1]
    training.state = RunState.RUNNING  # as if a run were going: a NaN loss ends it
    training._on_event(ev.RunFailed("The loss became NaN at step 7: training stopped and the last checkpoint is kept.",
                                    checkpoint="/runs/x/checkpoints/step_00000005.pt"))
    assert training.state is RunState.FAILED
    title, text = dlg.shown_errors[-1]
    assert title == "Training stopped" and "NaN" in text and "step_00000005.pt" in text
    assert "NaN" in app_handle.window.log_panel.plain_text()
    qtbot.waitUntil(app_handle.window.run_controls.action("start").isEnabled, timeout=WAIT)


def test_the_dataset_panel_names_broken_files_before_start(app_handle, qtbot, tmp_path: Path) -> None:
    """main: 300 good photos and three broken files showed "303 usable images", "Skipped files: none" and three
    grey thumbnails (80-real-training-dataset.png); only the Log, after Start, named them."""
    from tests.services.test_dataset_scan import photo_folder

    w = app_handle.window
    panel = w.dataset_panel
    folder = photo_folder(tmp_path / "photos", good=40)
    panel.folderChosen.emit(str(folder))
    qtbot.waitUntil(lambda: panel.summary is not None and panel.summary.complete, timeout=WAIT)
    assert panel.status.text() == "40 usable images · 3 skipped"
    assert panel.skipped_label.text() == "Skipped files (3)" and panel.skipped.isVisible()
    shown = sorted(panel.skipped.item(i).text() for i in range(panel.skipped.count()))
    assert shown == ["cut.jpg — truncated file", "empty.png — empty file", "notes.jpg — not an image"]
    assert panel.thumbs_model.rowCount() == 40  # no tile for a file training will not use
    assert w.run_controls.action("start").isEnabled()


def test_a_folder_gone_since_the_last_session_is_not_shown_as_the_dataset(qtbot, dialogs, isolated: Path) -> None:
    """main: after a relaunch the Folder field showed a path that no longer existed while the dataset had reverted
    to the demo shapes."""
    from ddpm_studio.gui.app import create_app
    from ddpm_studio.gui.preferences import Preferences, open_settings

    gone = isolated / "photos-moved-away"
    prefs = Preferences(open_settings(str(isolated / "settings.ini")))
    prefs.save_config(c.from_dict({"data": {"source": "folder", "data_path": str(gone), "image_size": 48}}))
    prefs.sync()
    handle = create_app(exec_app=False, settings_path=str(isolated / "settings.ini"))
    try:
        values = handle.window.dataset_panel.data_values()
        assert values["source"] == "demo" and values["data_path"] == "" and values["image_size"] == 48
        assert handle.studio.settings.cfg.data.data_path == ""
        assert f"{gone} no longer exists" in handle.window.status.currentMessage()
    finally:
        handle.window.close()
        handle.window.deleteLater()


def test_sizes_typed_in_settings_do_not_pile_up_in_the_dataset_panel(qtbot) -> None:
    """main: each size typed (2, 25, 250, 2500 …) stayed in the Image size list, and choosing one drew the demo there."""
    from ddpm_studio.gui.views.dataset_panel import SIZES, DatasetPanel

    panel = DatasetPanel()
    qtbot.addWidget(panel)
    for size in (2, 25, 250, 2500, 40):
        panel.set_data(c.DataConfig(image_size=size))
        assert panel.data_values()["image_size"] == size
    assert panel.size.count() == len(SIZES) + 1
    panel.set_data(c.DataConfig(image_size=64))
    assert panel.size.count() == len(SIZES)
