"""The training presenter against mocked views (MagicMock(spec=...) of its Protocols) and a fake session on a real
worker thread: the buttons follow the confirmed state, the run's facts and live model reach the other presenters,
keep-last goes to the session, failures are messages."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock

import numpy as np
import pytest

from ddpm_studio.gui.presenters.messages import LiveModel, RunHistory, Verdict
from ddpm_studio.gui.presenters.run_state import RunState
from ddpm_studio.gui.presenters.training import TrainingPresenter
from ddpm_studio.gui.views.protocols import DialogService, LossPlotView, RunControlsView, StatusView, TrajectoryView
from ddpm_studio.services import config as c
from ddpm_studio.services import events as ev
from ddpm_studio.services.control import RunControl
from tests.gui.fakes import FakeTrainingSession, emit, last

WAIT = 20_000


@pytest.fixture
def views() -> dict[str, MagicMock]:
    return {"controls": MagicMock(spec=RunControlsView), "plot": MagicMock(spec=LossPlotView),
            "trajectory": MagicMock(spec=TrajectoryView), "status": MagicMock(spec=StatusView),
            "dialogs": MagicMock(spec=DialogService)}


def make(views: dict[str, MagicMock], tmp_path: Path, sessions: list[FakeTrainingSession],
         **fake: Any) -> TrainingPresenter:
    def factory(cfg: Any, *, runs_dir: Any, resume_from: Any, control: RunControl, overrides: Any) -> FakeTrainingSession:
        session = FakeTrainingSession(control, 10**9, run_dir=str(tmp_path / "run"), checkpoint_at=3, **fake)
        session.made_with = (cfg, resume_from, overrides)  # type: ignore[attr-defined]
        sessions.append(session)
        return session

    return TrainingPresenter(views["controls"], views["plot"], views["trajectory"], views["status"], views["dialogs"],
                             runs_dir=lambda: tmp_path, session_factory=factory)


def enabled(controls: MagicMock) -> dict[str, bool]:
    return dict(last(controls.show_state)[1])


def test_buttons_follow_the_confirmed_state_and_the_run_reaches_the_others(qtbot, views, tmp_path: Path) -> None:
    sessions: list[FakeTrainingSession] = []
    p = make(views, tmp_path, sessions)
    controls = views["controls"]
    assert enabled(controls)["start"] is False and "Checking settings" in last(controls.show_state)[2]
    p.set_verdict(Verdict(c.RunConfig(), False, ("Batch size must be between 1 and 4096",)))
    assert last(controls.show_state)[2] == "Batch size must be between 1 and 4096"
    cfg = c.from_dict({"optim": {"batch_size": 8}})
    p.set_verdict(Verdict(cfg, True))
    assert enabled(controls)["start"] and last(controls.show_state)[2] == ""

    started, live, states = [], [], []
    p.runStarted.connect(started.append)
    p.liveModelChanged.connect(live.append)
    p.stateChanged.connect(states.append)
    emit(controls.requested, "start")  # the user presses Start
    assert p.state is RunState.STARTING and not enabled(controls)["start"] and enabled(controls)["stop"]
    qtbot.waitUntil(lambda: p.state is RunState.RUNNING and p.step >= 3, timeout=WAIT)
    session = sessions[0]
    assert session.made_with == (cfg, None, None) and session.thread != threading.get_ident()  # built off the GUI thread
    assert started[0].class_names == ("a", "b")
    assert isinstance(live[0], LiveModel) and live[0].class_names == ("a", "b") and live[0].run_dir == session.run_dir
    assert live[0].snapshot().result(timeout=10)[0] == "copy at"  # the session's own, thread-safe snapshot
    assert views["plot"].append_batch.called and controls.set_progress.called
    assert any(call.args[0] == "Device: CPU (test)" for call in views["status"].set_device.call_args_list)

    p.set_keep_last(2)  # the Checkpoints panel's box, during the run: forwarded to the session
    qtbot.waitUntil(lambda: session.keep_last == [2], timeout=WAIT)

    emit(controls.requested, "pause")
    assert p.state is RunState.PAUSING and not enabled(controls)["pause"]  # requested, not yet confirmed
    qtbot.waitUntil(lambda: p.state is RunState.PAUSED, timeout=WAIT)
    assert enabled(controls)["resume"] and last(controls.set_position)[2].startswith("Paused at step")
    emit(controls.requested, "resume")
    qtbot.waitUntil(lambda: p.state is RunState.RUNNING, timeout=WAIT)

    ended: list[Any] = []
    p.runEnded.connect(ended.append)
    emit(controls.requested, "stop")
    qtbot.waitUntil(lambda: bool(ended), timeout=WAIT)
    assert p.state is RunState.FINISHED and isinstance(ended[0], ev.RunFinished) and not p.is_running()
    assert live[-1] is None  # the live model is gone with the run
    assert enabled(controls)["start"] and enabled(controls)["continue"]
    assert [s for s in states if not s.active] == [RunState.FINISHED]


def test_a_failed_run_is_a_message_and_the_last_checkpoint_is_named(qtbot, views, tmp_path: Path) -> None:
    sessions: list[FakeTrainingSession] = []
    p = make(views, tmp_path, sessions, fail_at=5)
    p.set_verdict(Verdict(c.RunConfig(), True))
    checkpoint_steps: list[int] = []
    p.checkpointSaved.connect(lambda step, loss: checkpoint_steps.append((step, loss)))
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "step_00000003.pt").write_bytes(b"x")
    assert p.start()
    qtbot.waitUntil(lambda: p.state is RunState.FAILED and not p.is_running(), timeout=WAIT)
    title, text, detail = last(views["dialogs"].show_error)
    assert title == "Training stopped" and text.startswith("Out of memory") and "step_00000003.pt" in text
    assert "RuntimeError" in detail
    assert checkpoint_steps == [(3, pytest.approx(1 / 3))]  # the loss at the checkpoint, for the Checkpoints table


def test_resuming_a_complete_run_asks_before_training_more(qtbot, views, tmp_path: Path) -> None:
    sessions: list[FakeTrainingSession] = []
    p = make(views, tmp_path, sessions)
    p.set_verdict(Verdict(c.from_dict({"optim": {"total_steps": 500}}), False, ("Still scanning",)))
    views["dialogs"].ask.return_value = 1  # "Cancel"
    assert not p.resume_from(str(tmp_path / "run" / "checkpoints" / "step_00000500.pt"))
    assert last(views["dialogs"].ask)[0] == "Run already complete" and not sessions
    views["dialogs"].ask.return_value = 0  # "Train more" (resuming needs no valid Start verdict: the run has its settings)
    assert p.resume_from(str(tmp_path / "run" / "checkpoints" / "step_00000500.pt"))
    qtbot.waitUntil(lambda: p.state is RunState.RUNNING, timeout=WAIT)
    _cfg, resume_from, overrides = sessions[0].made_with
    assert resume_from.endswith("step_00000500.pt") and overrides["optim"]["total_steps"] == 1500
    views["plot"].clear.assert_not_called()  # continuing keeps the history on the plot
    p.stop()
    qtbot.waitUntil(lambda: not p.is_running(), timeout=WAIT)


def test_an_opened_runs_history_is_shown(views, tmp_path: Path) -> None:
    p = make(views, tmp_path, [])
    grid = np.zeros((4, 4, 3), np.uint8)
    p.show_history(RunHistory(str(tmp_path), c.RunConfig(), [{"step": 10, "loss": 0.5}], [(10, grid)], 10, 100))
    views["plot"].load_history.assert_called_once_with([{"step": 10, "loss": 0.5}])
    views["trajectory"].clear.assert_called_once()
    assert last(views["trajectory"].add_image)[0] == 10 and last(views["controls"].set_progress) == (10, 100)
    requested: list[bool] = []  # Continue… is the runs presenter's to answer: forwarded
    p.continueRequested.connect(lambda: requested.append(True))
    emit(views["controls"].requested, "continue")
    assert requested == [True]
