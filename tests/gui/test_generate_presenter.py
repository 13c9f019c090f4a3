"""The Generate tab's presenters against a mocked view and fake sampling sessions on a real worker thread: the models
offered, the Steps field for a sampler that ignores it, progress that names what really runs, the live model's
copy asked for off the GUI thread, output folders, saving, and each part against its own view Protocol."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest.mock import MagicMock

import numpy as np
import pytest

from ddpm_studio.gui.presenters import model_sources
from ddpm_studio.gui.presenters.generate import EMA_RAW_REASON, GeneratePresenter
from ddpm_studio.gui.presenters.messages import LiveModel, ModelInfo
from ddpm_studio.gui.presenters.model_sources import EMA_NO_MODEL_REASON, LIVE, NO_GUIDE_REASON, ModelSourcesPresenter
from ddpm_studio.gui.presenters.nearest import NearestPresenter
from ddpm_studio.gui.presenters.save_results import SaveResultsPresenter
from ddpm_studio.gui.views.protocols import (
    DialogService,
    GenerateView,
    ModelSourcesView,
    NearestView,
    SamplingView,
    SaveResultsView,
)
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

    settings = prefs(tmp_path / "runs")
    models = ModelSourcesPresenter(view, dialogs, settings, ImmediateTasks())
    p = GeneratePresenter(view, dialogs, settings, session_factory=factory)
    saving = SaveResultsPresenter(view, dialogs)
    models.modelChanged.connect(p.set_model_info)  # as studio.py wires them
    p.resultsChanged.connect(saving.set_results)
    run = RunFolder.create(tmp_path / "runs", "r")
    return {"p": p, "models": models, "saving": saving, "view": view, "dialogs": dialogs, "made": made, "run": run}


def test_the_models_offered_live_first_then_the_runs_checkpoints_then_browsed_files(setup, tmp_path: Path) -> None:
    models, view, run = setup["models"], setup["view"], setup["run"]
    models.set_run_checkpoints(str(run.path), [(20, str(run.checkpoint_path(20))), (40, str(run.checkpoint_path(40)))],
                               str(run.checkpoint_path(20)))
    models.set_live_model(LiveModel(str(run.path), ("cat", "dog"), lambda: Future()))
    sources, _select = last(view.set_sources)
    assert [v for _, v in sources] == [LIVE, str(run.checkpoint_path(40)), str(run.checkpoint_path(20))]
    assert sources[0][0] == "Live model (r, EMA weights now)" and sources[1][0] == "r · step 40"
    assert sources[2][0] == "r · step 20 · ★ best"  # the lowest validation loss
    view.source_value.return_value = LIVE
    emit(view.sourceChanged, LIVE)
    assert last(view.set_model_classes) == (("cat", "dog"),)  # the live run's classes, from its RunStarted
    revealed: list[bool] = []
    models.revealRequested.connect(lambda: revealed.append(True))
    elsewhere = tmp_path / "elsewhere.pt"
    elsewhere.write_bytes(b"a checkpoint outside any run")
    models.add_model(str(elsewhere))  # Browse…
    models.add_model(str(run.path))  # a run folder: its newest checkpoint
    sources, select = last(view.set_sources)
    assert sources[-2:] == [("r (newest)", str(run.path)), ("elsewhere.pt", str(elsewhere))]
    assert select == str(run.path) and revealed
    models.set_live_model(None)  # the run ended
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
    assert job["out_dir"].name.endswith("-ddpm-ag1-seed0")  # DDPM is named without a step count
    view.show_results.assert_called_once()
    view.set_busy.assert_called_with(False)


def test_the_live_models_copy_is_asked_for_on_the_worker_thread(setup, qtbot) -> None:
    p, models, view, made, run = setup["p"], setup["models"], setup["view"], setup["made"], setup["run"]
    asked_on: list[int] = []

    def snapshot() -> Future[Any]:
        asked_on.append(threading.get_ident())
        done: Future[Any] = Future()
        done.set_result("a copy of the EMA model")
        return done

    models.set_run_checkpoints(str(run.path), [])
    live = LiveModel(str(run.path), (), snapshot)
    for presenter in (models, p):  # the presenters that hear the training presenter's liveModelChanged
        presenter.set_live_model(live)
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
    emit(view.saveRequested, "selected")
    assert sorted(f.name for f in (tmp_path / "saved").iterdir()) == ["sample_00001.png"]
    emit(view.saveRequested, "all")
    assert len(list((tmp_path / "saved").iterdir())) == 2


def neighbours(asked: list[str]) -> Any:
    """A stand-in for services.nearest.nearest_of_sample: records the model asked about; sample #7 is copied."""
    found = SimpleNamespace(images=np.ones((2, 4, 4, 3), np.uint8), indices=np.array([7, 3]),
                            distances=np.array([0.0, 0.25]), mirrored=np.array([False, True]), copy=True,
                            verdict="Copy: this sample is 0.000 RMS from training image #7")
    return lambda sample, model, **_kwargs: (asked.append(model), found)[1]


def test_each_part_needs_only_its_own_view_and_they_meet_through_each_other(qtbot, tmp_path: Path, monkeypatch) -> None:
    """The Generate panel is one widget but a view per presenter: here each presenter gets a mock of its own
    Protocol only (a call outside it fails). They meet only through signals, wired as studio.py wires them: the
    chosen model's info sets the sampler form's EMA length, nearest images and saving use the images a job made."""
    dialogs = MagicMock(spec=DialogService)
    model_view, sampling_view = MagicMock(spec=ModelSourcesView), MagicMock(spec=SamplingView)
    nearest_view, save_view = MagicMock(spec=NearestView), MagicMock(spec=SaveResultsView)
    model_view.source_value.return_value = ""
    sampling_view.sample_config.return_value = (SampleConfig(sampler="ddim", steps=3), [])
    made: list[Any] = []

    def factory(kind: str, model: Any, sample: SampleConfig, out_dir: Path, control: Any, extra: Any = None) -> FakeSampling:
        made.append(model)
        return FakeSampling(out_dir, sample.steps)

    settings = prefs(tmp_path / "runs")
    models = ModelSourcesPresenter(model_view, dialogs, settings, ImmediateTasks())
    jobs = GeneratePresenter(sampling_view, dialogs, settings, session_factory=factory)
    near = NearestPresenter(nearest_view, dialogs, ImmediateTasks())
    saving = SaveResultsPresenter(save_view, dialogs)
    models.modelChanged.connect(jobs.set_model_info)  # as studio.py wires them
    jobs.resultsChanged.connect(near.set_results)
    jobs.resultsChanged.connect(saving.set_results)

    monkeypatch.setattr(model_sources, "read_model_info", lambda _source: ModelInfo(("cat", "dog"), 0.1))
    models.torch_ready()  # no model chosen yet
    assert last(sampling_view.set_ema_length) == (None, EMA_NO_MODEL_REASON)
    run = RunFolder.create(tmp_path / "runs", "r")
    checkpoint = str(run.checkpoint_path(40))
    models.set_run_checkpoints(str(run.path), [(40, checkpoint)])
    model_view.source_value.return_value = sampling_view.source_value.return_value = checkpoint  # (one combo box)
    emit(model_view.sourceChanged, checkpoint)
    assert last(model_view.set_model_classes) == (("cat", "dog"),)
    assert last(sampling_view.set_ema_length) == (0.1, "")  # a power EMA: other lengths can be rebuilt
    assert last(sampling_view.set_autoguidance_enabled) == (True, "")  # it keeps a guide
    jobs.set_model_info(ModelInfo(("cat", "dog"), 0.1, guide_reason=NO_GUIDE_REASON))  # as for an older checkpoint
    assert last(sampling_view.set_autoguidance_enabled) == (False, NO_GUIDE_REASON)
    sampling_view.sample_config.return_value = (SampleConfig(sampler="ddim", steps=3, use_ema=False), [])
    emit(sampling_view.settingsChanged)
    assert last(sampling_view.set_ema_length) == (None, EMA_RAW_REASON)

    sampling_view.sample_config.return_value = (SampleConfig(sampler="ddim", steps=3), [])
    emit(sampling_view.requested, "generate")
    qtbot.waitUntil(lambda: jobs.result is not None and not jobs.is_running(), timeout=WAIT)
    assert made == [checkpoint]

    asked: list[str] = []
    monkeypatch.setattr("ddpm_studio.services.nearest.nearest_of_sample", neighbours(asked))
    nearest_view.selected_indices.return_value = [1]
    emit(nearest_view.nearestRequested)
    assert asked == [checkpoint]
    index, sample, _images, captions, verdict, copy = last(nearest_view.show_neighbours)
    assert index == 1 and np.array_equal(sample, jobs.result.images[1]) and near.shown.result is jobs.result
    assert captions == ["#7 · 0.000", "#3 · 0.250 (mirrored)"] and verdict.startswith("Copy: ") and copy
    assert last(nearest_view.end_task) == ("Copy of a training image",)

    dialogs.choose_save_file.return_value = str(tmp_path / "grid.png")
    save_view.selected_indices.return_value = []
    emit(save_view.saveRequested, "grid")
    assert (tmp_path / "grid.png").is_file()

    emit(sampling_view.requested, "generate")  # another job: until it shows its images, none to check or save
    assert near.shown is None and saving.result is None
    qtbot.waitUntil(lambda: not jobs.is_running(), timeout=WAIT)


def test_nearest_images_ask_about_the_model_the_shown_images_came_from(setup, qtbot, monkeypatch) -> None:
    """Generated images only (an interpolation's frames are not checked); the live model's are its run's."""
    p, view, run = setup["p"], setup["view"], setup["run"]
    near = NearestPresenter(view, setup["dialogs"], ImmediateTasks())
    p.resultsChanged.connect(near.set_results)
    asked: list[str] = []
    monkeypatch.setattr("ddpm_studio.services.nearest.nearest_of_sample", neighbours(asked))
    snapshot: Future[Any] = Future()
    snapshot.set_result("a copy of the EMA model")
    live = LiveModel(str(run.path), (), lambda: snapshot)
    for presenter in (p, near):  # (both hear the training presenter's liveModelChanged)
        presenter.set_live_model(live)
    view.source_value.return_value = LIVE
    view.selected_indices.return_value = [0]
    emit(view.requested, "interpolate")
    qtbot.waitUntil(lambda: p.result is not None and not p.is_running(), timeout=WAIT)
    emit(view.nearestRequested)
    assert asked == [] and not view.show_task.called

    emit(view.requested, "generate")
    qtbot.waitUntil(lambda: p.result is not None and not p.is_running(), timeout=WAIT)
    emit(view.nearestRequested)
    assert asked == [str(run.path)] and last(view.end_task) == ("Copy of a training image",)
    emit(view.nearestRequested)  # a finished search leaves the button free, even when it finished at once
    assert asked == [str(run.path)] * 2


def test_model_info_says_when_a_checkpoint_keeps_no_guide(monkeypatch):
    from ddpm_studio.services import sampling

    monkeypatch.setattr(sampling, "checkpoint_offer", lambda _s: sampling.CheckpointOffer((), None, None))
    assert model_sources.read_model_info("old.pt").guide_reason == NO_GUIDE_REASON
    monkeypatch.setattr(sampling, "checkpoint_offer", lambda _s: sampling.CheckpointOffer((), None, 512))
    assert model_sources.read_model_info("new.pt").guide_reason == ""
