"""The Generate panel's model choice on real tiny checkpoints: the EMA length control of power-EMA runs (issue 17),
the best checkpoint marked in Checkpoints and Generate (issue 15), a diffusers folder imported by Browse… and the
nearest training images of a sample with the copy verdict (issue 15)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ddpm_studio.gui.presenters.model_sources import EMA_FIXED_REASON, EMA_LIVE_REASON
from ddpm_studio.services.config import SampleConfig
from ddpm_studio.services.runs import RunFolder
from tests.gui.conftest import tiny_config

WAIT = 60_000


@pytest.fixture(scope="module")
def runs(tmp_path_factory: Any) -> dict[str, RunFolder]:
    """Tiny demo runs of 4 steps: one with a power EMA (other lengths can be rebuilt), one with a fixed EMA."""
    from ddpm_studio.services.control import drive
    from ddpm_studio.services.training import TrainingSession

    base = tmp_path_factory.mktemp("models")
    made = {}
    for name, ema in (("power", {"ema": "power", "ema_length": 0.1}), ("fixed", {"ema": "fixed"})):
        cfg = tiny_config(data={"source": "demo"}, optim={"total_steps": 4, **ema},
                          schedule={"preview_every": 0, "checkpoint_every": 2, "keep_last": 5})
        drive(TrainingSession(cfg, runs_dir=base, run_name=name).steps(), lambda _e: None)
        made[name] = RunFolder(base / name)
    return made


def choose(studio: Any, path: Path | str) -> None:
    studio.models.add_model(str(path))
    assert studio.w.generate_panel.source_value() == str(path)


def generate(studio: Any, qtbot: Any) -> np.ndarray:
    studio.w.generate_panel.generate_button.click()
    qtbot.waitUntil(lambda: studio.generate.result is not None and not studio.generate.is_running(), timeout=WAIT)
    return studio.generate.result.images


def new_result(studio: Any, shown: Any) -> bool:
    result = studio.generate.result
    return result is not None and result is not shown and not studio.generate.is_running()


def test_the_ema_length_control_rebuilds_a_power_ema_and_is_off_with_the_reason_otherwise(
        app_handle, qtbot, runs, monkeypatch) -> None:
    studio, panel = app_handle.studio, app_handle.window.generate_panel
    control = panel.ema_length
    panel.set_sample_config(SampleConfig(sampler="ddim", steps=3, num_images=2, sample_batch_size=2))

    choose(studio, runs["fixed"].latest_checkpoint().path)
    qtbot.waitUntil(lambda: control.toolTip() == EMA_FIXED_REASON, timeout=WAIT)
    assert not control.isEnabled() and panel.sample_config()[0].ema_length == 0.0

    choose(studio, runs["power"].latest_checkpoint().path)
    qtbot.waitUntil(control.isEnabled, timeout=WAIT)
    assert control.value() == pytest.approx(0.1) and (control.minimum(), control.maximum()) == (0.01, 0.28)
    assert "It starts at the run's own (0.1)" in control.toolTip() and "noisy" in control.toolTip()
    assert panel.sample_config()[0].ema_length == 0.0  # the run's own: its stored EMA weights, not a rebuild
    own = generate(studio, qtbot)

    jobs: list[float] = []
    real = studio.generate._session_factory
    monkeypatch.setattr(studio.generate, "_session_factory",
                        lambda kind, model, sample, *rest: (jobs.append(sample.ema_length), real(kind, model, sample, *rest))[1])
    shown = studio.generate.result
    control.setValue(0.2)  # as an arrow step does: the same seeds are sampled again with the rebuilt average
    qtbot.waitUntil(lambda: new_result(studio, shown), timeout=WAIT)
    assert jobs == [0.2] and studio.generate.result.images.shape == own.shape
    assert not np.array_equal(studio.generate.result.images, own)  # another average of the weights, other images

    panel.form.editors["use_ema"].setChecked(False)  # the raw weights have no EMA length
    assert not control.isEnabled() and "tick Use EMA weights" in control.toolTip()
    panel.form.editors["use_ema"].setChecked(True)
    assert control.isEnabled()


def test_the_live_model_has_no_ema_length_choice(app_handle, qtbot, runs) -> None:
    from concurrent.futures import Future

    from ddpm_studio.gui.presenters.messages import LiveModel

    studio, panel = app_handle.studio, app_handle.window.generate_panel
    run = runs["power"]
    studio.models.set_run_checkpoints(str(run.path), [(c.step, str(c.path)) for c in run.checkpoints()])
    studio.models.set_live_model(LiveModel(str(run.path), (), lambda: Future()))
    panel.source.setCurrentIndex(0)
    assert panel.source_value() == "live"
    assert not panel.ema_length.isEnabled() and panel.ema_length.toolTip() == EMA_LIVE_REASON


def test_the_best_checkpoint_is_marked_in_checkpoints_and_offered_in_generate(app_handle, qtbot, runs, tmp_path: Path) -> None:
    import shutil

    studio, w = app_handle.studio, app_handle.window
    run = RunFolder(tmp_path / "scored")
    shutil.copytree(runs["fixed"].path, run.path)
    run.write_status(**run.scores_record({2: 0.41, 4: 0.43}))  # as training records them: step 2 is the best
    studio.runs.open_run(str(run.path))
    qtbot.waitUntil(lambda: w.checkpoints_panel.table.rowCount() == 2, timeout=WAIT)
    table = w.checkpoints_panel.table
    assert [table.horizontalHeaderItem(i).text() for i in range(table.columnCount())][:3] == ["Step", "Loss", "Val. loss"]
    assert [(table.item(r, 0).text(), table.item(r, 2).text()) for r in range(2)] == [("4", "0.4300"), ("★ best 2", "0.4100")]
    assert "proxy" in table.horizontalHeaderItem(2).toolTip()
    combo = w.generate_panel.source
    labels = [combo.itemText(i) for i in range(combo.count())]
    assert labels[:2] == ["scored · step 4", "scored · step 2 · ★ best"]


def test_browse_on_a_diffusers_folder_imports_it_as_a_run_and_a_refusal_says_why(
        app_handle, dialogs, qtbot, runs, tmp_path: Path) -> None:
    import json

    from ddpm_studio.services.diffusers_interop import export_diffusers

    studio, w = app_handle.studio, app_handle.window
    folder = export_diffusers(runs["fixed"].path, tmp_path / "ddpm-tiny").out_dir  # what diffusers' save_pretrained writes
    dialogs.open_file = str(folder / "model_index.json")
    w.generate_panel.browse.click()
    qtbot.waitUntil(lambda: w.generate_panel.source_value().endswith(".pt"), timeout=WAIT)
    chosen = Path(w.generate_panel.source_value())
    run = RunFolder(chosen.parent.parent)
    assert run.path.parent == Path(studio.prefs.runs_dir()) and run.config_path.exists()  # a run like any other
    assert chosen == run.latest_checkpoint().path and run.read_status()["imported_from"] == str(folder)
    assert w.generate_panel.progress.format() == f"Imported as run {run.name}" and w.generate_panel.browse.isEnabled()
    qtbot.waitUntil(lambda: str(run.path) in w.runs_panel.table.paths, timeout=WAIT)
    assert generate(studio, qtbot).shape[0] == studio.generate.job_sample.num_images  # and it samples
    assert not dialogs_errors()

    broken = tmp_path / "no-weights"
    (broken / "unet").mkdir(parents=True)
    (broken / "scheduler").mkdir()
    (broken / "unet" / "config.json").write_text((folder / "unet" / "config.json").read_text())
    (broken / "scheduler" / "scheduler_config.json").write_text((folder / "scheduler" / "scheduler_config.json").read_text())
    (broken / "model_index.json").write_text(json.dumps({"_class_name": "DDPMPipeline"}))
    dialogs.open_file = str(broken / "model_index.json")
    w.generate_panel.browse.click()
    qtbot.waitUntil(lambda: bool(dialogs_errors()), timeout=WAIT)
    title, text = dialogs_errors()[-1]
    assert title == "Cannot import the diffusers model" and "holds no weights file" in text
    assert w.generate_panel.source_value() == str(chosen) and w.generate_panel.browse.isEnabled()


def dialogs_errors() -> list[tuple[str, str]]:
    from ddpm_studio.gui import dialogs as dlg

    return list(dlg.shown_errors)


def test_nearest_training_images_of_a_sample_with_distances_and_the_copy_verdict(
        app_handle, dialogs, qtbot, runs, monkeypatch) -> None:
    """A sample planted as an exact copy of a training image is called a copy, at distance 0 from it; a generated
    sample of a 4-step model is not; a run whose training folder is gone says so."""
    from ddpm_studio.core.demo_data import demo_image_set

    studio, panel = app_handle.studio, app_handle.window.generate_panel
    panel.set_sample_config(SampleConfig(sampler="ddim", steps=3, num_images=3, sample_batch_size=3))
    choose(studio, runs["fixed"].latest_checkpoint().path)
    generate(studio, qtbot)
    training = demo_image_set(image_size=16, channels=3).images
    studio.generate.result.images[1] = training[7].permute(1, 2, 0).numpy()  # a copy, planted
    assert not panel.nearest_button.isEnabled()  # nothing selected
    panel.results.item(1).setSelected(True)
    panel.nearest_button.click()
    box = panel.neighbours
    qtbot.waitUntil(box.isVisible, timeout=WAIT)
    assert box.images.count() == 5 and box.images.item(0).text() == "sample #2"
    assert box.images.item(1).text() == "#7 · 0.000"
    assert box.verdict.text().startswith("Copy: this sample is 0.000 RMS from training image #7")
    assert f"compared with all {len(training):,} training images" in box.verdict.text()
    assert panel.progress.format() == "Copy of a training image" and panel.progress.maximum() == 1

    panel.results.clearSelection()
    panel.results.item(0).setSelected(True)
    panel.nearest_button.click()
    qtbot.waitUntil(lambda: box.images.item(0).text() == "sample #1", timeout=WAIT)
    assert box.verdict.text().startswith("Not a copy: the nearest training image is ")
    distances = [float(box.images.item(i).text().split("· ")[1].split()[0]) for i in range(1, 5)]
    assert distances == sorted(distances) and distances[0] > 0.05

    import ddpm_studio.services.nearest as nearest

    gone = tiny_config(data={"source": "folder", "data_path": "/no/such/images"})
    monkeypatch.setattr(nearest, "run_settings", lambda _source: gone)  # as if trained on a folder since deleted
    panel.nearest_button.click()
    qtbot.waitUntil(lambda: bool(dialogs_errors()), timeout=WAIT)
    title, text = dialogs_errors()[-1]
    assert title == "Nearest training images" and "/no/such/images, which is not on this computer" in text
