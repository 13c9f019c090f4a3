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
         notifier_factory: Any = None, **fake: Any) -> TrainingPresenter:
    def factory(cfg: Any, *, runs_dir: Any, resume_from: Any, control: RunControl, overrides: Any) -> FakeTrainingSession:
        options = {"steps": 10**9, "run_dir": str(tmp_path / "run"), "checkpoint_at": 3, **fake}
        session = FakeTrainingSession(control, **options)
        session.made_with = (cfg, resume_from, overrides)  # type: ignore[attr-defined]
        sessions.append(session)
        return session

    return TrainingPresenter(views["controls"], views["plot"], views["trajectory"], views["status"], views["dialogs"],
                             runs_dir=lambda: tmp_path, session_factory=factory, notifier_factory=notifier_factory)


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
    assert views["plot"].append_batch.called and controls.show_progress.called
    assert any(call.args[0] == "Device: CPU (test)" for call in views["status"].set_device.call_args_list)

    p.set_keep_last(2)  # the Checkpoints panel's box, during the run: forwarded to the session
    qtbot.waitUntil(lambda: session.keep_last == [2], timeout=WAIT)

    emit(controls.requested, "pause")
    assert p.state is RunState.PAUSING and not enabled(controls)["pause"]  # requested, not yet confirmed
    qtbot.waitUntil(lambda: p.state is RunState.PAUSED, timeout=WAIT)
    assert enabled(controls)["resume"] and last(controls.show_progress)[1].startswith("Paused at step")
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
    step_run = c.from_dict({"optim": {"total_steps": 100}})
    p.show_history(RunHistory(str(tmp_path), step_run, [{"step": 10, "loss": 0.5}], [(10, grid)], 10, 100))
    views["plot"].load_history.assert_called_once_with([{"step": 10, "loss": 0.5}])
    views["trajectory"].clear.assert_called_once()
    assert last(views["trajectory"].add_image)[0] == 10 and last(views["controls"].show_progress) == (0.1, "step 10 / 100")
    requested: list[bool] = []  # Continue… is the runs presenter's to answer: forwarded
    p.continueRequested.connect(lambda: requested.append(True))
    emit(views["controls"].requested, "continue")
    assert requested == [True]


def test_a_reopened_timed_run_shows_its_minutes_not_the_unused_step_limit(views, tmp_path: Path) -> None:
    """Stop-20 tour: a completed 10-minute run reopened in Runs read "step 857 / 20,000" (a bar at 4 %)."""
    p = make(views, tmp_path, [])
    timed = c.RunConfig()
    assert timed.optim.train_minutes == 10 and timed.optim.total_steps == 20_000
    p.show_history(RunHistory(str(tmp_path), timed, [{"step": 857, "loss": 0.06}], [], 857, 20_000, 600.01))
    assert last(views["controls"].show_progress) == (1.0, "10:00 of 10:00 min · step 857")


def bar(controls: MagicMock) -> str:
    """What the progress bar says now: the words of the last show_progress or set_message call."""
    calls = [c for c in controls.mock_calls if c[0] in ("show_progress", "set_message")]
    assert calls, "the bar was never set"
    name, args, _kwargs = calls[-1]
    return args[1] if name == "show_progress" else args[0]


def test_sample_now_and_checkpoint_now_work_while_running_and_while_paused(qtbot, views, tmp_path: Path) -> None:
    p = make(views, tmp_path, [])
    controls = views["controls"]
    assert not enabled(controls)["preview"] and not enabled(controls)["checkpoint"]  # no run: nothing to ask
    p.set_verdict(Verdict(c.RunConfig(), True))
    saved: list[int] = []
    p.checkpointSaved.connect(lambda step, _loss: saved.append(step))
    assert p.start()
    qtbot.waitUntil(lambda: p.state is RunState.RUNNING and 3 in saved, timeout=WAIT)  # (the fake's own at step 3)
    assert enabled(controls)["preview"] and enabled(controls)["checkpoint"]
    emit(controls.requested, "preview")
    qtbot.waitUntil(lambda: views["trajectory"].add_preview.called, timeout=WAIT)  # the preview reaches the trajectory
    emit(controls.requested, "checkpoint")
    qtbot.waitUntil(lambda: len(saved) == 2, timeout=WAIT)

    emit(controls.requested, "pause")
    qtbot.waitUntil(lambda: p.state is RunState.PAUSED, timeout=WAIT)
    assert enabled(controls)["preview"] and enabled(controls)["checkpoint"]
    previews = views["trajectory"].add_preview.call_count
    emit(controls.requested, "checkpoint")
    emit(controls.requested, "preview")
    qtbot.waitUntil(lambda: len(saved) == 3 and views["trajectory"].add_preview.call_count == previews + 1, timeout=WAIT)
    assert saved[-1] == p.step and p.state is RunState.PAUSED  # served at the paused step; the run stays paused
    assert last(views["trajectory"].add_preview)[0].step == p.step
    p.stop()
    qtbot.waitUntil(lambda: not p.is_running(), timeout=WAIT)
    assert not enabled(controls)["preview"] and not enabled(controls)["checkpoint"]


def test_the_bar_says_resumed_after_resume_and_stopped_for_a_run_stopped_early(qtbot, views, tmp_path: Path) -> None:
    gate = threading.Event()
    gate.set()
    p = make(views, tmp_path, [], gate=gate)
    controls = views["controls"]
    p.set_verdict(Verdict(c.RunConfig(), True))
    assert p.start()
    qtbot.waitUntil(lambda: p.state is RunState.RUNNING and p.step >= 3, timeout=WAIT)
    p.pause()
    qtbot.waitUntil(lambda: p.state is RunState.PAUSED, timeout=WAIT)
    assert bar(controls) == f"Paused at step {p.step:,} / 1,000,000,000"
    gate.clear()  # after Resume no step completes for a while (a slow step, a preview): the bar must not stay stale
    p.resume()
    qtbot.waitUntil(lambda: p.state is RunState.RUNNING, timeout=WAIT)
    assert bar(controls) == f"Resumed at step {p.step:,} / 1,000,000,000"
    gate.set()
    p.stop()
    qtbot.waitUntil(lambda: not p.is_running(), timeout=WAIT)
    assert bar(controls) == f"Stopped at step {p.step:,} of 1,000,000,000"
    assert last(controls.show_state)[0] == "Stopped"  # not "Finished"
    assert "Stopped" in [call.args[0] for call in views["status"].show_message.call_args_list]


def test_a_completed_run_says_completed(qtbot, views, tmp_path: Path) -> None:
    p = make(views, tmp_path, [], steps=5)
    p.set_verdict(Verdict(c.RunConfig(), True))
    assert p.start()
    qtbot.waitUntil(lambda: not p.is_running(), timeout=WAIT)
    assert bar(views["controls"]) == "Completed at step 5 of 5" and last(views["controls"].show_state)[0] == "Completed"
    assert last(views["controls"].show_progress)[0] == 1.0


def test_a_timed_run_shows_its_time_budget_and_the_bar_follows_it(qtbot, views, tmp_path: Path) -> None:
    """10 minutes of at most 10**9 steps: the bar is the share of the ten minutes, not of the steps."""
    p = make(views, tmp_path, [], started={"time_budget_s": 600.0}, seconds_per_step=15.0)
    controls = views["controls"]
    p.set_verdict(Verdict(c.RunConfig(), True))
    assert p.start()
    qtbot.waitUntil(lambda: p.state is RunState.RUNNING and p.step >= 3, timeout=WAIT)
    fraction, words = last(controls.show_progress)
    shown = p.last_progress
    assert words.startswith(f"{text_clock(min(600, shown.step * 15))} of 10:00 min · step {shown.step:,}")
    assert fraction == pytest.approx(min(1.0, shown.step * 15 / 600))
    p.pause()
    qtbot.waitUntil(lambda: p.state is RunState.PAUSED, timeout=WAIT)
    assert bar(controls) == f"Paused at {text_clock(min(600, p.step * 15))} of 10:00 min · step {p.step:,}"
    p.stop()
    qtbot.waitUntil(lambda: not p.is_running(), timeout=WAIT)
    assert bar(controls) == f"Stopped at {text_clock(min(600, p.step * 15))} of 10:00 min (step {p.step:,})"


def text_clock(seconds: float) -> str:
    from ddpm_studio.services.formatting import format_duration

    return format_duration(seconds)


def test_the_time_budget_box_edits_the_settings_and_is_locked_during_a_run(qtbot, views, tmp_path: Path) -> None:
    p = make(views, tmp_path, [])
    controls = views["controls"]
    edits: list[tuple[str, dict[str, Any]]] = []
    p.settingsEdited.connect(lambda section, values: edits.append((section, values)))
    p.set_verdict(Verdict(c.from_dict({"optim": {"train_minutes": 10}}), True))
    assert last(controls.set_budget) == (10.0, True)
    emit(controls.budgetEdited, 5.0)
    assert edits == [("optim", {"train_minutes": 5.0})]  # the settings presenter owns the value
    assert p.start()
    assert last(controls.set_budget) == (10.0, False)  # locked while the run is active
    p.stop()
    qtbot.waitUntil(lambda: not p.is_running(), timeout=WAIT)
    assert last(controls.set_budget) == (10.0, True)


def failing_check() -> Any:
    from ddpm_studio.core.accelerator_check import DeviceCheck, GroupResult

    return DeviceCheck("mps", False, GroupResult("network", float("inf"), False),
                       (GroupResult("GroupNorm", float("inf"), False), GroupResult("SiLU", 1e-7, True)), 0.2)


def settings_stand_in(p: TrainingPresenter, cfg: c.RunConfig) -> list[tuple[str, dict[str, Any]]]:
    """What the settings presenter does with settingsEdited: change the section and publish a new verdict."""
    import dataclasses

    edits: list[tuple[str, dict[str, Any]]] = []
    p.set_verdict(Verdict(cfg, True))

    def edit(section: str, values: dict[str, Any]) -> None:
        edits.append((section, values))
        current = p.verdict.cfg
        changed = dataclasses.replace(getattr(current, section), **values)
        p.set_verdict(Verdict(dataclasses.replace(current, **{section: changed}), True))

    p.settingsEdited.connect(edit)
    return edits


def test_a_failed_device_check_offers_the_cpu_and_one_click_restarts_there(qtbot, views, tmp_path: Path) -> None:
    sessions: list[FakeTrainingSession] = []
    p = make(views, tmp_path, sessions, started={"device_check": failing_check()})
    controls = views["controls"]
    edits = settings_stand_in(p, c.from_dict({"optim": {"device": "auto", "batch_size": 8}}))
    assert p.start()
    qtbot.waitUntil(lambda: p.state is RunState.RUNNING, timeout=WAIT)
    warning = last(controls.show_device_warning)[0]
    assert "GroupNorm" in warning and "CPU" in warning
    emit(controls.requested, "use_cpu")
    assert last(controls.show_device_warning)[0] == ""
    qtbot.waitUntil(lambda: len(sessions) == 2 and p.state is RunState.RUNNING, timeout=WAIT)
    assert edits == [("optim", {"device": "cpu"})]  # the settings say so
    cfg, resume_from, _overrides = sessions[1].made_with
    assert cfg.optim.device == "cpu" and cfg.optim.batch_size == 8 and resume_from is None
    assert sessions[0].closed  # the first run was stopped
    p.stop()
    qtbot.waitUntil(lambda: not p.is_running(), timeout=WAIT)


def test_a_continued_run_goes_on_the_cpu_from_the_checkpoint_it_began_at(qtbot, views, tmp_path: Path) -> None:
    checkpoint = tmp_path / "run" / "checkpoints" / "step_00000100.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"x")
    sessions: list[FakeTrainingSession] = []
    p = make(views, tmp_path, sessions, started={"device_check": failing_check(), "resumed_from": str(checkpoint)})
    settings_stand_in(p, c.from_dict({"optim": {"total_steps": 5000}}))
    assert p.resume_from(str(checkpoint))
    qtbot.waitUntil(lambda: p.state is RunState.RUNNING, timeout=WAIT)
    emit(views["controls"].requested, "use_cpu")
    qtbot.waitUntil(lambda: len(sessions) == 2 and p.state is RunState.RUNNING, timeout=WAIT)
    _cfg, resume_from, overrides = sessions[1].made_with
    assert resume_from == str(checkpoint) and overrides["optim"]["device"] == "cpu"
    p.stop()
    qtbot.waitUntil(lambda: not p.is_running(), timeout=WAIT)


def test_a_passing_device_check_offers_nothing(qtbot, views, tmp_path: Path) -> None:
    from ddpm_studio.core.accelerator_check import DeviceCheck, GroupResult

    ok = DeviceCheck("cuda:0", True, GroupResult("network", 1e-6, True), (), 0.1)
    p = make(views, tmp_path, [], started={"device_check": ok})
    p.set_verdict(Verdict(c.RunConfig(), True))
    assert p.start()
    qtbot.waitUntil(lambda: p.state is RunState.RUNNING, timeout=WAIT)
    assert all(call.args == ("",) for call in views["controls"].show_device_warning.call_args_list)
    p.stop()
    qtbot.waitUntil(lambda: not p.is_running(), timeout=WAIT)
