"""The generate presenter against a mocked view and fake sampling sessions on a real worker thread: the models
offered, the Steps field for a sampler that ignores it, progress that names what really runs, the live model's
copy asked for off the GUI thread, output folders, saving."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock

import numpy as np
import pytest

from ddpm_studio.gui.presenters.generate import LIVE, GeneratePresenter
from ddpm_studio.gui.presenters.messages import LiveModel
from ddpm_studio.gui.views.protocols import DialogService, GenerateView
from ddpm_studio.services import events as ev
from ddpm_studio.services.config import InterpolationConfig, SampleConfig
from ddpm_studio.services.runs import RunFolder
from tests.gui.fakes import ImmediateTasks, emit, last, prefs

WAIT = 20_000


class FakeSampling:
    """Yields like SamplingSession: one progress per denoising step of one batch, then the images."""

    def __init__(self, out_dir: Path, steps: int) -> None:
        self.out_dir, self.steps_per_batch = out_dir, steps

    def steps(self) -> Iterator[Any]:
        for i in range(1, self.steps_per_batch + 1):
            yield ev.SamplingProgress(i, self.steps_per_batch, 1, 1, 0.5, None)
        self.out_dir.mkdir(parents=True)
        paths = []
        for k in range(2):
            paths.append(self.out_dir / f"sample_{k:05d}.png")
            paths[-1].write_bytes(b"png")
        yield ev.SamplesReady(np.zeros((2, 4, 4, 3), np.uint8), tuple(map(str, paths)), None)


@pytest.fixture
def setup(qtbot, tmp_path: Path) -> dict[str, Any]:
    view, dialogs = MagicMock(spec=GenerateView), MagicMock(spec=DialogService)
    view.sample_config.return_value = (SampleConfig(sampler="ddim", steps=7), [])
    view.interp_config.return_value = (InterpolationConfig(seed_from=2, seed_to=5), [])
    made: list[dict[str, Any]] = []

    def factory(kind: str, model: Any, sample: SampleConfig, out_dir: Path, control: Any, extra: Any = None) -> FakeSampling:
        made.append({"kind": kind, "model": model, "sample": sample, "out_dir": out_dir, "extra": extra,
                     "thread": threading.get_ident()})
        return FakeSampling(out_dir, 1000 if sample.sampler == "ddpm" else sample.steps)

    p = GeneratePresenter(view, dialogs, prefs(tmp_path / "runs"), ImmediateTasks(), session_factory=factory)
    run = RunFolder.create(tmp_path / "runs", "r")
    return {"p": p, "view": view, "dialogs": dialogs, "made": made, "run": run}


def test_the_models_offered_live_first_then_the_runs_checkpoints_then_browsed_files(setup, tmp_path: Path) -> None:
    p, view, run = setup["p"], setup["view"], setup["run"]
    p.set_run_checkpoints(str(run.path), [(20, str(run.checkpoint_path(20))), (40, str(run.checkpoint_path(40)))],
                          str(run.checkpoint_path(20)))
    p.set_live_model(LiveModel(str(run.path), ("cat", "dog"), lambda: Future()))
    sources, _select = last(view.set_sources)
    assert [v for _, v in sources] == [LIVE, str(run.checkpoint_path(40)), str(run.checkpoint_path(20))]
    assert sources[0][0] == "Live model (r, EMA weights now)" and sources[1][0] == "r · step 40"
    assert sources[2][0] == "r · step 20 · ★ best"  # the lowest validation loss
    view.source_value.return_value = LIVE
    emit(view.sourceChanged, LIVE)
    assert last(view.set_model_classes) == (("cat", "dog"),)  # the live run's classes, from its RunStarted
    revealed: list[bool] = []
    p.revealRequested.connect(lambda: revealed.append(True))
    elsewhere = tmp_path / "elsewhere.pt"
    elsewhere.write_bytes(b"a checkpoint outside any run")
    p.add_model(str(elsewhere))  # Browse…
    p.add_model(str(run.path))  # a run folder: its newest checkpoint
    sources, select = last(view.set_sources)
    assert sources[-2:] == [("r (newest)", str(run.path)), ("elsewhere.pt", str(elsewhere))]
    assert select == str(run.path) and revealed
    p.set_live_model(None)  # the run ended
    assert LIVE not in [v for _, v in last(view.set_sources)[0]]


def test_steps_is_off_for_ddpm_with_the_reason_and_progress_names_the_steps_that_run(setup, qtbot) -> None:
    p, view, made, run = setup["p"], setup["view"], setup["made"], setup["run"]
    view.sample_config.return_value = (SampleConfig(sampler="ddpm", steps=50), [])
    emit(view.settingsChanged)  # the user picked DDPM
    enabled, reason = last(view.set_steps_enabled)
    assert enabled is False and "always takes all T steps" in reason and "Steps does not apply" in reason
    view.sample_config.return_value = (SampleConfig(sampler="ddim", steps=50), [])
    emit(view.settingsChanged)
    assert last(view.set_steps_enabled) == (True, "")

    view.sample_config.return_value = (SampleConfig(sampler="ddpm", steps=50), [])
    view.source_value.return_value = str(run.checkpoint_path(40))
    emit(view.requested, "generate")
    qtbot.waitUntil(lambda: p.result is not None and not p.is_running(), timeout=WAIT)
    text, done, total, _frame = last(view.show_progress)
    assert text.startswith("ddpm, 1,000 steps · step 1,000 / 1,000") and done == total == 1000  # not "Steps 50"
    (job,) = made
    assert job["kind"] == "generate" and job["model"] == str(run.checkpoint_path(40))
    assert job["out_dir"].parent == run.samples_dir and job["out_dir"].name.startswith("step_00000040-")
    assert job["out_dir"].name.endswith("-ddpm-seed0")  # DDPM is named without a step count
    view.show_results.assert_called_once()
    view.set_busy.assert_called_with(False)


def test_the_live_models_copy_is_asked_for_on_the_worker_thread(setup, qtbot) -> None:
    p, view, made, run = setup["p"], setup["view"], setup["made"], setup["run"]
    asked_on: list[int] = []

    def snapshot() -> Future[Any]:
        asked_on.append(threading.get_ident())
        done: Future[Any] = Future()
        done.set_result("a copy of the EMA model")
        return done

    p.set_run_checkpoints(str(run.path), [])
    p.set_live_model(LiveModel(str(run.path), (), snapshot))
    view.source_value.return_value = LIVE
    emit(view.requested, "interpolate")
    qtbot.waitUntil(lambda: p.result is not None and not p.is_running(), timeout=WAIT)
    (job,) = made
    assert job["model"] == "a copy of the EMA model" and asked_on == [job["thread"]] != [threading.get_ident()]
    assert job["kind"] == "interpolate" and job["extra"] == InterpolationConfig(seed_from=2, seed_to=5)
    assert job["out_dir"].parent == run.samples_dir and job["out_dir"].name.startswith("live-")
    assert "-interp2-5-ddim7" in job["out_dir"].name


def test_no_model_is_a_message_and_results_save_where_asked(setup, qtbot, tmp_path: Path) -> None:
    p, view, dialogs, run = setup["p"], setup["view"], setup["dialogs"], setup["run"]
    view.source_value.return_value = ""
    assert not p.generate()
    assert last(dialogs.show_error)[0] == "No model"
    view.source_value.return_value = LIVE  # offered a moment ago, but the run has ended
    assert not p.generate() and last(dialogs.show_error)[0] == "No live model"

    view.source_value.return_value = str(run.checkpoint_path(40))
    assert p.generate()
    qtbot.waitUntil(lambda: p.result is not None and not p.is_running(), timeout=WAIT)
    dialogs.choose_directory.return_value = str(tmp_path / "saved")
    view.selected_indices.return_value = [1]
    emit(view.requested, "save_selected")
    assert sorted(f.name for f in (tmp_path / "saved").iterdir()) == ["sample_00001.png"]
    emit(view.requested, "save_all")
    assert len(list((tmp_path / "saved").iterdir())) == 2
