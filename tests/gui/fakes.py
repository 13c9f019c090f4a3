"""Stand-ins for presenter tests: mocked views are ``MagicMock(spec=TheViewProtocol)``; these help drive them."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any
from unittest.mock import MagicMock

import numpy as np
from PySide6.QtCore import SignalInstance

from ddpm_studio.gui.workers import TaskHandle
from ddpm_studio.services import events as ev
from ddpm_studio.services.control import CHECKPOINT, PREVIEW, RunControl


def emit(signal: Any, *args: Any) -> None:
    """What a mocked view's signal does when the user acts: call every slot a presenter connected to it."""
    for call in signal.connect.call_args_list:
        slot = call.args[0]
        if isinstance(slot, SignalInstance):  # a presenter may forward a view's signal as its own
            slot.emit(*args)
        else:
            slot(*args)


def last(method: MagicMock) -> tuple[Any, ...]:
    """The positional arguments of the last call of a mocked view method."""
    assert method.called, f"{method} was never called"
    return method.call_args.args


class ImmediateTasks:
    """BackgroundTasks that run each job at once, on the calling thread (presenter tests need no threads)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def run(self, job: Callable[[], Any], on_done: Callable[[Any], None] | None = None,
            on_error: Callable[[BaseException], None] | None = None, name: str = "job") -> TaskHandle:
        self.names.append(name)
        handle = TaskHandle()
        try:
            value = job()
        except Exception as exc:
            if on_error is None:
                raise
            on_error(exc)
            return handle
        if on_done is not None:
            on_done(value)
        return handle

    def run_reporting(self, job: Callable[[TaskHandle], Any], on_progress: Callable[[Any], None],
                      on_done: Callable[[Any], None] | None = None,
                      on_error: Callable[[BaseException], None] | None = None, name: str = "job") -> TaskHandle:
        handle = TaskHandle()
        handle._emit = on_progress  # reports arrive at once (as queued signals would, in order)
        self.names.append(name)
        try:
            value = job(handle)
        except Exception as exc:
            if on_error is None:
                raise
            on_error(exc)
            return handle
        if on_done is not None and not handle.cancelled():
            on_done(value)
        return handle

    def running(self) -> int:
        return 0


def prefs(runs_dir: Any, recent: list[str] | None = None) -> MagicMock:
    """The app's preferences as the presenters use them, remembering nothing."""
    p = MagicMock()
    p.runs_dir.return_value = runs_dir
    p.recent_folders.return_value = list(recent or [])
    p.add_recent_folder.side_effect = lambda folder: [folder]
    p.get_str.return_value = ""
    return p


def progress(step: int, total: int = 10_000, train_seconds: float = 0.0) -> ev.TrainProgress:
    return ev.TrainProgress(step, total, 1.0 / step, 1e-4, 100.0, 1.0, 0.1, train_seconds)


class FakeTrainingSession:
    """Yields like TrainingSession (RunStarted, a step at a time, pause / stop honoured between steps, Sample now /
    Checkpoint now served there and while paused) and has its public API (snapshot, set_keep_last); ``fail_at``
    raises, ``gate`` holds each step, ``started`` adds RunStarted fields, ``seconds_per_step`` is its training clock."""

    def __init__(self, control: RunControl, steps: int = 2000, fail_at: int | None = None,
                 gate: threading.Event | None = None, run_dir: str = "/tmp/no-such-run", checkpoint_at: int = 0,
                 started: dict[str, Any] | None = None, seconds_per_step: float = 0.0, disk_full_at: int = 0) -> None:
        self.control, self.total, self.fail_at, self.gate = control, steps, fail_at, gate
        self.run_dir, self.checkpoint_at = run_dir, checkpoint_at
        self.started, self.seconds_per_step = dict(started or {}), seconds_per_step
        self.disk_full_at = disk_full_at  # the save at this step fails and the run pauses, as TrainingSession does
        self.step = 0
        self.closed = False
        self.keep_last: list[int] = []
        self.thread: int | None = None

    def steps(self) -> Iterator[Any]:
        self.thread = threading.get_ident()
        try:
            yield ev.RunStarted(self.run_dir, 0, self.total, "cpu", "CPU (test)", 1234, "fake", 8, 8, class_names=("a", "b"),
                                **self.started)
            while self.step < self.total:
                if self.control.paused and not self.control.stop_requested:
                    yield ev.RunPaused(self.step)
                    while self.control.paused and not self.control.stop_requested:
                        self.control.wait_while_paused()
                        yield from self._serve_requests()
                    if not self.control.stop_requested:
                        yield ev.RunResumed(self.step)
                if self.control.stop_requested:
                    break
                if self.gate is not None:
                    self.gate.wait()
                self.step += 1
                if self.step == self.fail_at:
                    raise RuntimeError("out of memory (simulated)")
                yield progress(self.step, self.total, self.step * self.seconds_per_step)
                if self.step % 100 == 0:
                    yield ev.MetricsLogged({"step": self.step, "loss": 0.5})
                if self.step == self.checkpoint_at:
                    yield ev.CheckpointSaved(self.step, f"{self.run_dir}/checkpoints/step_{self.step:08d}.pt", 10)
                if self.step == self.disk_full_at:
                    yield ev.CheckpointFailed(self.step, "Disk full: the checkpoint was not written")
                    self.control.pause()
                self.control.run_pending()
                if self.control.has_requests:  # (a lock-free look: no lock taken per step when none is asked for)
                    yield from self._serve_requests()
            yield ev.RunFinished(self.step, "stopped" if self.step < self.total else "completed", None)
        finally:
            self.closed = True

    def _serve_requests(self) -> Iterator[Any]:
        requests = self.control.take_requests()
        if PREVIEW in requests:
            frames = np.zeros((1, 1, 4, 4, 3), np.uint8)
            yield ev.PreviewReady(self.step, (0,), frames, frames, frames[0, 0], f"{self.run_dir}/preview.png")
        if CHECKPOINT in requests:
            yield ev.CheckpointSaved(self.step, f"{self.run_dir}/checkpoints/step_{self.step:08d}.pt", 10)

    def snapshot(self) -> Future[Any]:
        return self.control.submit(lambda: ("copy at", self.step))

    def set_keep_last(self, n: int) -> None:
        self.control.submit(lambda: self.keep_last.append(n))
