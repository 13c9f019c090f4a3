"""The Generate panel's class choice, interpolation strip and evaluation, on tiny demo-trained checkpoints."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from ddpm_studio.services.config import InterpolationConfig, SampleConfig
from tests.gui.conftest import tiny_config

WAIT = 60_000


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: Any) -> dict[str, Path]:
    """One-step tiny runs on the 16x16 demo shapes: an unconditional and a class-conditional checkpoint."""
    from ddpm_studio.services.control import drive
    from ddpm_studio.services.runs import RunFolder
    from ddpm_studio.services.training import TrainingSession

    base = tmp_path_factory.mktemp("ckpts")
    made = {}
    for name, conditional in (("plain", False), ("cond", True)):
        cfg = tiny_config(data={"source": "demo", "conditional": conditional},
                          optim={"total_steps": 1}, schedule={"preview_every": 0})
        drive(TrainingSession(cfg, runs_dir=base, run_name=name).steps(), lambda _e: None)
        made[name] = RunFolder(base / name).latest_checkpoint().path
    return made


def choose(studio: Any, path: Path) -> None:
    studio.models.add_model(str(path))
    assert studio.w.generate_panel.source_value() == str(path)


def test_class_field_lists_a_conditional_models_classes_and_is_off_for_unconditional(app_handle, qtbot, checkpoints) -> None:
    studio, panel = app_handle.studio, app_handle.window.generate_panel
    classes, guidance = panel.class_choice, panel.form.editors["guidance_scale"]

    choose(studio, checkpoints["cond"])
    qtbot.waitUntil(lambda: panel.class_choice.classes is not None, timeout=WAIT)
    assert [classes.itemText(i) for i in range(classes.count())] == ["all (one row per class)", "circle", "square", "triangle"]
    assert classes.isEnabled() and guidance.isEnabled()
    classes.setCurrentIndex(classes.findText("square"))
    assert panel.sample_config()[0].class_label == "square"

    choose(studio, checkpoints["plain"])
    qtbot.waitUntil(lambda: panel.class_choice.classes == (), timeout=WAIT)
    assert not classes.isEnabled() and not guidance.isEnabled()
    assert "without classes" in classes.toolTip() and "without classes" in guidance.toolTip()
    assert classes.count() == 1 and panel.sample_config()[0].class_label == "all"

    choose(studio, checkpoints["cond"])  # read once, then cached; the earlier choice comes back
    qtbot.waitUntil(lambda: classes.isEnabled() and guidance.isEnabled(), timeout=WAIT)
    assert classes.count() == 4 and classes.currentText() == "square"


def test_interpolate_shows_a_strip_of_frames_that_saves(app_handle, dialogs, qtbot, checkpoints, tmp_path: Path) -> None:
    studio, panel = app_handle.studio, app_handle.window.generate_panel
    assert panel.interpolate_box.interp_config() == (InterpolationConfig(), [])  # the defaults are shown
    choose(studio, checkpoints["plain"])
    panel.set_sample_config(SampleConfig(sampler="dpm++2m", steps=3, sample_batch_size=8))
    frames = 5
    panel.interpolate_box.set_interp_config(InterpolationConfig(seed_from=2, seed_to=7, frames=frames))
    panel.interpolate_box.button.click()
    assert panel.cancel_button.isEnabled() and not panel.evaluate_box.button.isEnabled()
    qtbot.waitUntil(lambda: studio.generate.result is not None and not studio.generate.is_running(), timeout=WAIT)
    result = studio.generate.result
    assert result.images.shape[0] == frames and panel.results.count() == frames
    strip = Path(result.grid_path)
    assert strip.name == "interp_seed2-7.png" and Image.open(strip).size[0] > frames * 16
    assert "-interp2-7-" in strip.parent.name and not panel.live.pixmap().isNull()

    dialogs.directory = str(tmp_path / "all")
    panel.save_buttons["all"].click()
    assert len(list((tmp_path / "all").glob("interp_seed2-7_*.png"))) == frames and (tmp_path / "all" / strip.name).exists()
    panel.results.item(0).setSelected(True)
    panel.results.item(4).setSelected(True)
    dialogs.directory = str(tmp_path / "sel")
    panel.save_buttons["selected"].click()
    assert sorted(p.name for p in (tmp_path / "sel").iterdir()) == ["interp_seed2-7_00000.png", "interp_seed2-7_00004.png"]
    panel.results.clearSelection()
    dialogs.save_file = str(tmp_path / "strip.png")
    panel.save_buttons["grid"].click()
    assert Image.open(tmp_path / "strip.png").size == Image.open(strip).size  # one row of frames, like the strip
    assert not panel.save_buttons["gif"].isEnabled()

    # A random sampler cannot interpolate: the session's message is shown, and nothing is made.
    panel.set_sample_config(SampleConfig(sampler="ddpm"))
    panel.interpolate_box.button.click()
    qtbot.waitUntil(lambda: not studio.generate.is_running(), timeout=WAIT)
    assert studio.generate.result is None
    title, text = dialogs_errors()[-1]
    assert title == "Interpolation failed" and "deterministic sampler" in text
    assert "deterministic sampler" in panel.error_label.text()


def test_evaluate_shows_the_demo_score_and_the_report(app_handle, qtbot, checkpoints, monkeypatch, tmp_path: Path) -> None:
    import torch

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "no-hub"))  # no Inception weights: FID says why
    studio, panel = app_handle.studio, app_handle.window.generate_panel
    choose(studio, checkpoints["plain"])
    panel.evaluate_box.images.setValue(4)
    panel.evaluate_box.button.click()
    qtbot.waitUntil(lambda: studio.generate.report is not None and not studio.generate.is_running(), timeout=WAIT)
    text = panel.report.toPlainText()
    assert panel.report.isVisible()
    assert "Evaluated step 1 with 4 images (dpm++2m-sde 20 steps" in text
    assert "Demo shape score:" in text and "FID/KID skipped" in text
    report_path = Path(studio.generate.report.path)
    assert f"Report written to {report_path}" in text
    assert json.loads(report_path.read_text())["num_images"] == 4
    assert panel.generate_button.isEnabled() and panel.evaluate_box.button.isEnabled()


def test_steps_is_off_for_ddpm_and_progress_says_what_runs(app_handle, qtbot, checkpoints, monkeypatch) -> None:
    """DDPM always takes all T steps: the Steps field says so instead of being ignored (it showed Steps 50 and then
    ran "step 219 / 1,000"), and the progress names the steps that really run."""
    studio, panel = app_handle.studio, app_handle.window.generate_panel
    choose(studio, checkpoints["plain"])
    panel.set_sample_config(SampleConfig(num_images=1, sample_batch_size=1, steps=7))
    sampler, steps = panel.form.editors["sampler"], panel.form.editors["steps"]
    sampler.setCurrentIndex(sampler.findText("ddpm"))  # as the user picks it
    assert not steps.isEnabled() and "always takes all T steps" in steps.toolTip()
    shown: list[str] = []
    real = panel.show_progress
    monkeypatch.setattr(panel, "show_progress", lambda text, *rest: (shown.append(text), real(text, *rest)))
    panel.generate_button.click()
    qtbot.waitUntil(lambda: studio.generate.result is not None and not studio.generate.is_running(), timeout=WAIT)
    assert shown and shown[-1].startswith("ddpm, 50 steps · step 50 / 50")  # the tiny runs have T = 50, not Steps = 7
    sampler.setCurrentIndex(sampler.findText("ddim"))
    assert steps.isEnabled() and "always takes" not in steps.toolTip()


def test_evaluate_can_be_cancelled(app_handle, qtbot, checkpoints) -> None:
    studio, panel = app_handle.studio, app_handle.window.generate_panel
    choose(studio, checkpoints["plain"])
    panel.evaluate_box.images.setValue(100_000)
    panel.evaluate_box.button.click()
    qtbot.waitUntil(lambda: panel.progress.value() > 0, timeout=WAIT)
    panel.cancel_button.click()
    qtbot.waitUntil(lambda: not studio.generate.is_running(), timeout=WAIT)
    assert studio.generate.report is None and panel.progress.format() == "Cancelled"
    assert not panel.report.isVisible() and panel.evaluate_box.button.isEnabled()


def dialogs_errors() -> list[tuple[str, str]]:
    from ddpm_studio.gui import dialogs as dlg

    return list(dlg.shown_errors)


def test_the_ema_length_shows_no_number_while_the_model_has_none(qtbot) -> None:
    """Stop-20 tour: for a fixed-EMA run the off control read "0.030", as if that were the run's length."""
    from ddpm_studio.gui.views.generate_tools import NO_EMA_LENGTH, EmaLengthChoice

    choice = EmaLengthChoice()
    qtbot.addWidget(choice)
    chosen: list[bool] = []
    choice.chosen.connect(lambda: chosen.append(True))
    for own, reason in ((None, "fixed EMA"), (0.05, ""), (None, "fixed EMA")):
        choice.set_own(own, reason)
        if own is None:
            assert not choice.isEnabled() and choice.text() == NO_EMA_LENGTH and choice.toolTip() == reason
            assert choice.value_for_sampling() == 0.0
        else:
            assert choice.isEnabled() and choice.text() == "0.050" and choice.minimum() == 0.01
    choice.set_own(0.05)
    choice.setValue(0.01)  # the shortest offered length is a number, not "n/a"
    assert choice.text() == "0.010" and choice.value_for_sampling() == 0.01 and chosen == [True]


def test_a_run_of_the_default_ema_length_samples_with_its_own_weights(qtbot) -> None:
    """The default EMA length became 0.02, under the 0.03 the control offered: it showed "0.030" and sampled a
    rebuilt 0.03 average instead of the run's own. Every length a run can be trained with is shown as it is."""
    from ddpm_studio.gui.views.generate_tools import EmaLengthChoice
    from ddpm_studio.services.config import OptimConfig

    choice = EmaLengthChoice()
    qtbot.addWidget(choice)
    meta = next(f.metadata for f in dataclasses.fields(OptimConfig) if f.name == "ema_length")
    low, high = meta["min"], meta["max"]
    for own in (OptimConfig().ema_length, low, high):
        choice.set_own(own)
        assert choice.value() == own and choice.value_for_sampling() == 0.0, own
