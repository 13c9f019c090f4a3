"""The runs presenter against mocked views and real run folders: the runs list, opening a run (its history goes
to the others), continuing one, its checkpoints with their losses, deleting one, the interrupted-run offer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock

import pytest
import torch
from PIL import Image

from ddpm_studio.gui.presenters.messages import RunHistory
from ddpm_studio.gui.presenters.runs import RunsPresenter
from ddpm_studio.gui.views.protocols import CheckpointsView, DialogService, RunsListView
from ddpm_studio.services import config as c
from ddpm_studio.services import config_files
from ddpm_studio.services import events as ev
from ddpm_studio.services.runs import RunFolder
from tests.gui.fakes import ImmediateTasks, emit, last, prefs


def make_run(runs_dir: Path, name: str, steps: tuple[int, ...] = (20, 40), state: str = "stopped") -> RunFolder:
    run = RunFolder.create(runs_dir, name)
    config_files.save_config_file(c.from_dict({"schedule": {"keep_last": 4}, "optim": {"total_steps": 100}}), run.config_path)
    run.write_status(state=state, step=max(steps, default=0), total_steps=100, pid=2**22 + 12345)
    run.metrics_path.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in range(10, 50, 10)))
    for step in steps:
        torch.save({"step": step}, run.checkpoint_path(step))  # a complete file (its contents are not read here)
    Image.new("RGB", (6, 4), "red").save(run.previews_dir / "step_00000020.png")
    return run


@pytest.fixture
def setup(qtbot, tmp_path: Path) -> dict[str, Any]:
    runs_view, checkpoints, dialogs = MagicMock(spec=RunsListView), MagicMock(spec=CheckpointsView), MagicMock(spec=DialogService)
    p = RunsPresenter(runs_view, checkpoints, dialogs, prefs(tmp_path / "runs"), ImmediateTasks())
    out: dict[str, list[Any]] = {"opened": [], "resume": [], "checkpoints": [], "keep": [], "generate": []}
    p.runOpened.connect(out["opened"].append)
    p.resumeRequested.connect(out["resume"].append)
    p.checkpointsChanged.connect(lambda run, found, best: out["checkpoints"].append((run, found, best)))
    p.keepLastChanged.connect(out["keep"].append)
    p.generateRequested.connect(out["generate"].append)
    return {"p": p, "runs": runs_view, "checkpoints": checkpoints, "dialogs": dialogs, "out": out, "dir": tmp_path / "runs"}


def test_open_a_run_then_continue_it(setup) -> None:
    p, out = setup["p"], setup["out"]
    run = make_run(setup["dir"], "old")
    p.refresh_runs()
    runs_dir, rows = last(setup["runs"].set_runs)
    assert runs_dir == str(setup["dir"])
    assert [(r.name, r.state, r.step, r.checkpoint_step) for r in rows] == [("old", "stopped", 40, 40)]

    emit(setup["runs"].requested, "open", str(run.path))  # read in the background (here: at once)
    (history,) = out["opened"]
    assert isinstance(history, RunHistory) and history.cfg.schedule.keep_last == 4 and len(history.records) == 4
    assert [(step, image.shape) for step, image in history.previews] == [(20, (4, 6, 3))] and history.step == 40
    assert last(setup["checkpoints"].set_keep_last) == (4,)
    rows, info = last(setup["checkpoints"].set_checkpoints)
    assert [(r.step, r.loss) for r in rows] == [(20, 1 / 20), (40, 1 / 40)] and info.startswith("Run old: 2 checkpoint(s)")
    assert out["checkpoints"][-1] == (str(run.path), [(20, str(run.checkpoint_path(20))), (40, str(run.checkpoint_path(40)))],
                                      None)

    emit(setup["runs"].requested, "continue", str(run.path))
    assert out["resume"] == [str(run.checkpoint_path(40))]
    emit(setup["checkpoints"].requested, "resume", str(run.checkpoint_path(20)))  # or from a chosen checkpoint
    emit(setup["checkpoints"].requested, "generate", str(run.checkpoint_path(20)))
    assert out["resume"][-1] == str(run.checkpoint_path(20)) and out["generate"] == [str(run.checkpoint_path(20))]


def test_an_opened_run_knows_the_running_time_it_used(setup) -> None:
    """run.json's train_seconds; for runs written before it was kept, the last loss record's elapsed time."""
    out = setup["out"]
    old = make_run(setup["dir"], "before")
    old.metrics_path.write_text(json.dumps({"step": 40, "loss": 0.1, "elapsed": 123.5}) + "\n")
    new = make_run(setup["dir"], "after")
    new.write_status(train_seconds=321.0)
    for run in (old, new):
        emit(setup["runs"].requested, "open", str(run.path))
    assert [h.train_seconds for h in out["opened"]] == [123.5, 321.0]


def test_continue_without_a_checkpoint_starts_the_run_again_from_step_0_saying_so(setup) -> None:
    """Issue 14 defect 5: Continue on a run that crashed before its first checkpoint did nothing useful."""
    p, dialogs, out = setup["p"], setup["dialogs"], setup["out"]
    bare = make_run(setup["dir"], "bare", steps=())
    p.continue_run(str(bare.path))
    assert out["resume"] == [str(bare.path)]  # the run folder: TrainingSession starts it again with its saved settings
    title, text = last(dialogs.show_info)
    assert title == "Starting again from step 0" and "no checkpoint yet" in text and "saved settings" in text
    dialogs.show_error.assert_not_called()


def test_continue_a_run_whose_settings_are_unusable_says_what_to_do_and_an_unreadable_run_is_a_message(setup) -> None:
    p, dialogs, out = setup["p"], setup["dialogs"], setup["out"]
    bare = make_run(setup["dir"], "bare", steps=())
    p.open_run(str(bare.path))
    bare.config_path.write_text("[optim]\nbatch_size = 0\n")  # broken after it was opened
    p.continue_run(str(bare.path))
    title, text = last(dialogs.show_error)
    assert title == "Cannot continue" and "step 0" in text and "Fix that file" in text and not out["resume"]
    broken = make_run(setup["dir"], "broken")
    broken.config_path.write_text("[optim]\nbatch_size = 'many'\n")
    p.open_run(str(broken.path))
    title, text = last(dialogs.show_error)
    assert title == "Cannot open run" and "Batch size" in text


def test_the_live_run_keep_last_and_deleting_a_checkpoint(setup) -> None:
    p, checkpoints, dialogs, out = setup["p"], setup["checkpoints"], setup["dialogs"], setup["out"]
    run = make_run(setup["dir"], "live", steps=(3,))
    p.on_run_started(ev.RunStarted(str(run.path), 0, 100, "cpu", "CPU", 10, "demo", 4, 8))
    assert last(setup["runs"].select_path) == (str(run.path),)
    run.checkpoint_path(6).write_bytes(b"x")
    p.on_checkpoint_saved(6, 0.25)  # the loss at that step, from the training presenter
    rows, _info = last(checkpoints.set_checkpoints)
    assert {r.step: r.loss for r in rows} == {3: None, 6: 0.25}

    p.set_run_active(True)
    checkpoints.set_run_active.assert_called_with(True)
    p.on_config(c.from_dict({"schedule": {"keep_last": 9}}))  # a running run keeps the box's own value
    checkpoints.set_keep_last.assert_not_called()
    emit(checkpoints.keepLastChanged, 5)
    assert out["keep"] == [5]

    dialogs.ask.return_value = 1  # "Cancel"
    emit(checkpoints.requested, "delete", str(run.checkpoint_path(3)))
    assert run.checkpoint_path(3).exists()
    dialogs.ask.return_value = 0  # "Delete"
    emit(checkpoints.requested, "delete", str(run.checkpoint_path(3)))
    assert not run.checkpoint_path(3).exists() and [r.step for r in last(checkpoints.set_checkpoints)[0]] == [6]


def test_an_interrupted_run_is_offered_once(setup) -> None:
    p, dialogs = setup["p"], setup["dialogs"]
    run = make_run(setup["dir"], "crashed", state="running")  # its pid is not alive: a crash
    dialogs.ask.return_value = 2  # "Ignore"
    p.offer_interrupted()
    assert last(dialogs.ask)[0] == "Interrupted run" and run.state() == "interrupted"
    dialogs.ask.reset_mock()
    p.offer_interrupted()
    dialogs.ask.assert_not_called()


def test_an_interrupted_run_without_a_checkpoint_is_continued_from_step_0(setup) -> None:
    p, dialogs, out = setup["p"], setup["dialogs"], setup["out"]
    run = make_run(setup["dir"], "early-crash", steps=(), state="running")  # crashed before its first checkpoint
    dialogs.ask.return_value = 0  # "Continue training"
    p.offer_interrupted()
    assert "starts it again from step 0" in last(dialogs.ask)[1]
    assert [h.run_dir for h in out["opened"]] == [str(run.path)] and out["resume"] == [str(run.path)]


def test_the_best_checkpoint_is_marked_with_its_validation_loss_and_offered_to_generate(setup) -> None:
    p, out = setup["p"], setup["out"]
    run = make_run(setup["dir"], "scored", steps=(20, 40, 60))
    run.write_status(**run.scores_record({20: 0.31, 40: 0.29, 60: 0.30}))  # as the Checkpointer records them
    p.open_run(str(run.path))
    rows, info = last(setup["checkpoints"].set_checkpoints)
    assert [(r.step, r.val_loss, r.best) for r in rows] == [(20, 0.31, False), (40, 0.29, True), (60, 0.30, False)]
    assert info.endswith("★ best: step 40")
    assert out["checkpoints"][-1][2] == str(run.checkpoint_path(40))  # Generate marks it in its model choice
