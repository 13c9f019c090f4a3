"""Notifications of a run's outcome, and their webhook, against a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ddpm_studio.cli import main
from ddpm_studio.services import events as ev
from ddpm_studio.services.control import RunControl, drive
from ddpm_studio.services.notifications import Notifier, check_webhook_url
from ddpm_studio.services.training import TrainingSession
from tests.reliability.test_faults import DiskFull, train_args
from tests.reliability.test_faults import tiny_cfg as checkpointing_cfg


class Hook:
    """A webhook receiver on 127.0.0.1 that answers ``mode``: ok (200), error (500) or hang (no answer for 30 s)."""

    def __init__(self, mode: str = "ok") -> None:
        self.mode, self.received, self.arrived = mode, [], threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.received.append({"path": self.path, "type": self.headers["Content-Type"], "json": json.loads(body)})
                hook.arrived.set()
                if hook.mode == "hang":
                    time.sleep(30)
                    return
                self.send_response(500 if hook.mode == "error" else 200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/SECRET-TOKEN"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def states(self) -> list[str]:
        return [r["json"]["state"] for r in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook():
    made: list[Hook] = []

    def make(mode: str = "ok") -> Hook:
        made.append(Hook(mode))
        return made[-1]

    yield make
    for h in made:
        h.close()


def refusing_url() -> str:
    """A port on 127.0.0.1 with nothing listening."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def started(run_dir: str = "/runs/cats") -> ev.RunStarted:
    return ev.RunStarted(run_dir, 0, 100, "cpu", "test", 1, "demo", 8, 8)


def test_events_become_the_notifications_that_matter():
    n = Notifier()
    assert n.observe(started()) is None
    n.observe(ev.TrainProgress(40, 100, 0.5, 1e-3, 10.0, 1.0, 1.0))
    n.observe(ev.MetricsLogged({"step": 40, "loss": 0.25}))
    n.observe(ev.CheckpointSaved(40, "/runs/cats/checkpoints/step_00000040.pt", 10))
    assert n.observe(ev.RunPaused(41)) is None, "a pause the user asked for is no news"
    assert n.observe(ev.RunResumed(41)) is None
    # A save that fails pauses the run: told once, however often the CLI retries, until a save works again.
    failed = ev.CheckpointFailed(60, "Could not save checkpoint at step 60: Disk full. Training is paused")
    assert n.observe(failed) is None
    paused = n.observe(ev.RunPaused(60))
    assert paused is not None and paused.state == "paused" and paused.step == 60 and "Disk full" in paused.message
    n.observe(ev.RunResumed(60))
    n.observe(failed)
    assert n.observe(ev.RunPaused(60)) is None
    n.observe(ev.CheckpointSaved(60, "/runs/cats/checkpoints/step_00000060.pt", 10))
    done = n.observe(ev.RunFinished(100, "completed", "/runs/cats/checkpoints/step_00000100.pt"))
    assert done is not None and (done.run, done.state, done.step, done.loss) == ("cats", "completed", 100, 0.25)
    assert done.checkpoint.endswith("step_00000100.pt") and done.title == "cats: completed"
    assert done.message == "Run cats completed at step 100 (loss 0.25). Newest checkpoint: step_00000100.pt."
    assert Notifier().observe(ev.RunFinished(5, "stopped", None)) is None, "a stop is what the user just did"
    assert Notifier(states=("stopped",)).observe(ev.RunFinished(5, "stopped", None)).state == "stopped"

    f = Notifier()
    f.observe(started())
    f.observe(ev.CheckpointSaved(40, "/runs/cats/checkpoints/step_00000040.pt", 10))
    failure = f.observe(ev.RunFailed("The loss became NaN at step 57", step=57))
    assert failure.state == "failed" and failure.checkpoint.endswith("step_00000040.pt")
    assert failure.message == "Run cats failed at step 57: The loss became NaN at step 57. Newest checkpoint: step_00000040.pt."


def test_a_finished_run_posts_its_outcome(tiny_cfg, tmp_path, hook):
    server = hook()
    notifier = Notifier(server.url)
    drive(TrainingSession(tiny_cfg(), runs_dir=tmp_path, run_name="cats").steps(), notifier.observe)
    assert notifier.close()
    assert server.arrived.wait(5) and len(server.received) == 1
    got = server.received[0]
    assert got["path"] == "/hooks/SECRET-TOKEN" and got["type"] == "application/json"
    body = got["json"]
    assert set(body) == {"run", "run_dir", "state", "step", "loss", "checkpoint", "message", "time"}
    assert (body["run"], body["state"], body["step"]) == ("cats", "completed", 10)
    assert isinstance(body["loss"], float) and Path(body["checkpoint"]).is_file()
    assert body["run_dir"] == str(tmp_path / "cats")


@pytest.mark.parametrize("mode", ["error", "hang", "refuse"])
def test_a_failing_webhook_never_stops_or_slows_training(tiny_cfg, tmp_path, hook, caplog, mode):
    url = refusing_url() if mode == "refuse" else hook(mode).url
    notifier = Notifier(url, timeout=1.0)
    slowest = [0.0]

    def sink(event: Any) -> None:
        t0 = time.perf_counter()
        notifier.observe(event)
        slowest[0] = max(slowest[0], time.perf_counter() - t0)

    events: list[Any] = []
    with caplog.at_level(logging.WARNING):
        drive(TrainingSession(tiny_cfg(), runs_dir=tmp_path, run_name="r").steps(),
              lambda e: (events.append(e), sink(e)))
        assert events[-1].reason == "completed"
        assert slowest[0] < 0.1, f"observe took {slowest[0]:.3f} s: the POST must not happen on the training thread"
        assert notifier.close(timeout=10)  # the 1 s timeout ends even a hanging POST
    failures = [r.getMessage() for r in caplog.records if "Webhook" in r.getMessage()]
    assert len(failures) == 1 and "training is not affected" in failures[0]
    assert "SECRET-TOKEN" not in failures[0], "the URL's secret path is never logged"


def test_a_full_disk_pause_is_posted_once_and_then_the_completion(tmp_path, monkeypatch, hook, capsys):
    server = hook()
    monkeypatch.setenv("DDPM_STUDIO_SAVE_RETRY_SECONDS", "0.2")
    DiskFull(monkeypatch, failing={2, 3})  # the save at step 4 fails twice, the CLI's third try works
    assert main([*train_args(tmp_path, "full", 6), "--webhook-url", server.url]) == 0
    assert server.states() == ["paused", "completed"]
    paused = server.received[0]["json"]
    assert paused["step"] == 4 and "Disk full" in paused["message"] and paused["checkpoint"].endswith("step_00000002.pt")


def test_cli_posts_a_failure_and_refuses_a_bad_url(tmp_path, hook, monkeypatch, capsys):
    server = hook()
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("DDPM_STUDIO_WEBHOOK_URL", server.url)  # the environment works like the flag
    assert main(["train", "--source", "folder", "--data-path", str(empty), "--runs-dir", str(tmp_path / "r")]) == 1
    assert server.states() == ["failed"] and "No images" in server.received[0]["json"]["message"]
    assert main(["train", "--webhook-url", "file:///etc/passwd", "--runs-dir", str(tmp_path / "r2")]) == 1
    assert "must start with http:// or https://" in capsys.readouterr().err
    assert not (tmp_path / "r2").exists(), "a bad URL stops the command before any work"


def test_webhook_url_check():
    assert check_webhook_url(" https://hooks.example.com/x ") == "https://hooks.example.com/x"
    for bad in ("hooks.example.com/x", "ftp://example.com/x", "http://", ""):
        with pytest.raises(ValueError):
            check_webhook_url(bad)


def test_a_user_stop_while_paused_on_a_full_disk_posts_only_the_pause(tmp_path, monkeypatch, hook):
    server = hook()
    DiskFull(monkeypatch, failing={2, 3, 4, 5})
    control = RunControl()
    notifier = Notifier(server.url)

    def sink(e: Any) -> None:
        notifier.observe(e)
        if isinstance(e, ev.RunPaused):
            control.stop()

    drive(TrainingSession(checkpointing_cfg(total_steps=10), runs_dir=tmp_path, run_name="r", control=control).steps(), sink)
    assert notifier.close()
    assert server.states() == ["paused"]
