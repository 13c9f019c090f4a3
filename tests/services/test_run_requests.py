"""Sample now / checkpoint now (issue 15 item 5): served between steps while running and at once while paused,
through RunControl from any thread; the CLI's SIGUSR1 / SIGUSR2."""

import os
import signal
import threading

import pytest

from ddpm_studio.services import events as ev
from ddpm_studio.services.control import CHECKPOINT, PREVIEW, RunControl, drive
from ddpm_studio.services.runs import RunFolder
from ddpm_studio.services.training import TrainingSession


def test_requests_are_taken_once_and_wake_a_paused_wait():
    control = RunControl()
    control.request_preview()
    control.request_preview()
    control.request_checkpoint()
    assert control.has_requests and control.take_requests() == {PREVIEW, CHECKPOINT}
    assert not control.has_requests and control.take_requests() == frozenset()
    control.pause()
    assert control.wait_while_paused(timeout=0.01) is False  # nothing asked: still waiting
    threading.Timer(0.05, control.request_checkpoint).start()
    assert control.wait_while_paused(timeout=10) is True and control.paused  # woken, still paused
    assert control.wait_resumed(timeout=0.01) is False  # a plain wait for resume ignores requests
    control.resume()
    assert control.wait_resumed(timeout=1)


def test_sample_now_and_checkpoint_now_while_running(tmp_path, tiny_cfg):
    session = TrainingSession(tiny_cfg(optim={"total_steps": 6}), runs_dir=tmp_path, run_name="r")
    events = []

    def sink(event):
        events.append(event)
        if isinstance(event, ev.TrainProgress) and event.step == 3:
            session.control.request_preview()
            session.control.request_checkpoint()

    drive(session.steps(), sink)
    kinds = [(type(e).__name__, getattr(e, "step", None)) for e in events
             if isinstance(e, ev.TrainProgress | ev.PreviewReady | ev.CheckpointSaved)]
    at3 = kinds.index(("TrainProgress", 3))
    assert kinds[at3 + 1 : at3 + 4] == [("PreviewReady", 3), ("CheckpointSaved", 3), ("TrainProgress", 4)]
    assert (RunFolder(tmp_path / "r").previews_dir / "step_00000003.png").exists()
    assert [c.step for c in RunFolder(tmp_path / "r").checkpoints()] == [3, 6]


def test_requests_while_paused_are_served_and_the_run_stays_paused(tmp_path, tiny_cfg):
    """A paused run waits in wait_while_paused: a request wakes it, is served, and it waits again (no RunResumed)."""
    session = TrainingSession(tiny_cfg(optim={"total_steps": 5}), runs_dir=tmp_path, run_name="r")
    control = session.control
    events, served, states = [], threading.Event(), []

    def user():  # another thread (the GUI's), while the run is paused
        control.request_preview()
        control.request_checkpoint()
        assert served.wait(120)
        states.append(RunFolder(tmp_path / "r").read_status()["state"])
        control.resume()

    def sink(event):
        events.append(event)
        if isinstance(event, ev.TrainProgress) and event.step == 2:
            control.pause()
        elif isinstance(event, ev.RunPaused):
            threading.Thread(target=user, daemon=True).start()
        elif isinstance(event, ev.CheckpointSaved) and event.step == 2:
            served.set()

    drive(session.steps(), sink)
    kinds = [type(e).__name__ for e in events]
    paused = kinds.index("RunPaused")
    assert kinds[paused + 1 : paused + 5] == ["MetricsLogged", "PreviewReady", "CheckpointSaved", "RunResumed"]
    assert [e.record["step"] if isinstance(e, ev.MetricsLogged) else e.step
            for e in events[paused + 1 : paused + 5]] == [2, 2, 2, 2]
    assert kinds.count("RunResumed") == 1 and states == ["paused"]
    assert events[-1].reason == "completed"


def test_a_request_does_not_resume_a_run_that_is_stopped_while_paused(tmp_path, tiny_cfg):
    session = TrainingSession(tiny_cfg(optim={"total_steps": 5}), runs_dir=tmp_path, run_name="r")

    def sink(event):
        if isinstance(event, ev.TrainProgress) and event.step == 1:
            session.control.pause()
        elif isinstance(event, ev.RunPaused):
            session.control.request_preview()
            session.control.stop()

    events = []
    drive(session.steps(), lambda e: (events.append(e), sink(e)))
    assert events[-1].reason == "stopped" and events[-1].step == 1
    assert not any(isinstance(e, ev.RunResumed) for e in events)


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="POSIX signals")
def test_cli_sigusr1_saves_a_checkpoint_and_sigusr2_makes_a_preview(tmp_path, capsys, monkeypatch):
    from ddpm_studio import cli
    from ddpm_studio.cli_progress import EventPrinter

    original = EventPrinter.__call__

    def printer(self, event):  # the user sends the signals while step 2 is on screen
        original(self, event)
        if isinstance(event, ev.TrainProgress) and event.step == 2:
            os.kill(os.getpid(), signal.SIGUSR1)
            os.kill(os.getpid(), signal.SIGUSR2)

    monkeypatch.setattr(EventPrinter, "__call__", printer)
    before = signal.getsignal(signal.SIGUSR1), signal.getsignal(signal.SIGUSR2)
    code = cli.main(["train", "--preset", "tiny", "--image-size", "16", "--timesteps", "50", "--total-steps", "4",
                     "--batch-size", "4", "--preview-every", "0", "--preview-steps", "3", "--checkpoint-every", "0",
                     "--device", "cpu", "--runs-dir", str(tmp_path), "--name", "sig"])
    assert code == 0
    err = capsys.readouterr().err
    assert "step_00000002.pt" in err and "Preview at step 2" in err
    assert f"kill -USR1 {os.getpid()}" in err
    assert [c.step for c in RunFolder(tmp_path / "sig").checkpoints()] == [2, 4]
    assert (signal.getsignal(signal.SIGUSR1), signal.getsignal(signal.SIGUSR2)) == before  # handlers restored


def test_train_help_documents_the_signals(capsys):
    from ddpm_studio import cli

    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    assert "kill -USR1" in out and "kill -USR2" in out
