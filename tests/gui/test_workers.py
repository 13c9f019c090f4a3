"""Workers with fake sessions: coalescing, order, pause/resume/stop through RunControl, errors as signals;
short background jobs answering on the GUI thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from ddpm_studio.gui.workers import Coalescer, ProgressBatch, SampleWorker, TrainWorker, WorkerThread
from ddpm_studio.services import events as ev
from ddpm_studio.services.control import RunControl
from tests.gui.fakes import FakeTrainingSession, progress


def test_coalescer_batches_by_time_and_flushes_before_rare_events() -> None:
    now = [0.0]
    co = Coalescer(interval=0.1, clock=lambda: now[0])
    out = co.add(progress(1))
    assert len(out) == 1 and isinstance(out[0], ProgressBatch)  # the first one goes at once
    for s in range(2, 50):
        now[0] += 0.001
        assert co.add(progress(s)) == []  # within the window: held back
    co.add(ev.MetricsLogged({"step": 49, "loss_q0": 0.3}))
    now[0] += 0.2
    (batch,) = co.add(progress(50))
    assert list(batch.steps) == list(range(2, 51)) and batch.records == ({"step": 49, "loss_q0": 0.3},)
    assert batch.last.step == 50
    co.add(progress(51))
    flushed = co.add(ev.RunPaused(51))
    assert isinstance(flushed[0], ProgressBatch) and list(flushed[0].steps) == [51]
    assert isinstance(flushed[1], ev.RunPaused)
    assert co.flush() == []


def run_worker(qtbot: Any, worker: Any) -> tuple[WorkerThread, list[Any], list[Any]]:
    batches: list[Any] = []
    events: list[Any] = []
    worker.progress.connect(batches.append)
    worker.event.connect(events.append)
    thread = WorkerThread(worker)
    return thread, batches, events


def test_train_worker_coalesces_and_loses_nothing(qtbot) -> None:
    control = RunControl()
    session = FakeTrainingSession(control, steps=3000)
    worker = TrainWorker(lambda: session, interval=0.05)
    thread, batches, events = run_worker(qtbot, worker)
    with qtbot.waitSignal(thread.done, timeout=30_000):
        thread.start()
    steps = np.concatenate([b.steps for b in batches])
    assert list(steps) == list(range(1, 3001))  # every step's loss arrives, in order
    assert len(batches) < 300, len(batches)  # far fewer signals than steps
    assert sum(len(b.records) for b in batches) == 30
    assert isinstance(events[0], ev.RunStarted) and isinstance(events[-1], ev.RunFinished)
    assert session.closed
    with qtbot.assertNotEmitted(worker.progress, wait=200):
        pass  # nothing arrives after the end


def test_train_worker_pause_resume_stop(qtbot) -> None:
    control = RunControl()
    session = FakeTrainingSession(control, steps=10**9)
    worker = TrainWorker(lambda: session)
    thread, batches, events = run_worker(qtbot, worker)
    thread.start()
    qtbot.waitUntil(lambda: len(batches) >= 2, timeout=10_000)
    with qtbot.waitSignal(worker.event, check_params_cb=lambda e: isinstance(e, ev.RunPaused), timeout=10_000):
        control.pause()
    paused_at = session.step
    qtbot.wait(200)
    assert session.step == paused_at
    with qtbot.waitSignal(worker.event, check_params_cb=lambda e: isinstance(e, ev.RunResumed), timeout=10_000):
        control.resume()
    qtbot.waitUntil(lambda: session.step > paused_at, timeout=10_000)
    control.pause()
    qtbot.waitUntil(lambda: any(isinstance(e, ev.RunPaused) for e in events[-1:]), timeout=10_000)
    with qtbot.waitSignal(thread.done, timeout=10_000):
        control.stop()  # stop wakes a paused run
    assert isinstance(events[-1], ev.RunFinished) and events[-1].reason == "stopped"
    assert not thread.is_running()


def test_train_worker_reports_failure_as_event(qtbot) -> None:
    control = RunControl()
    worker = TrainWorker(lambda: FakeTrainingSession(control, steps=100, fail_at=7))
    thread, batches, events = run_worker(qtbot, worker)
    with qtbot.waitSignal(thread.done, timeout=10_000):
        thread.start()
    failed = [e for e in events if isinstance(e, ev.RunFailed)]
    assert len(failed) == 1 and failed[0].message.startswith("Out of memory")
    assert "RuntimeError" in failed[0].detail
    assert max(np.concatenate([b.steps for b in batches])) == 6  # progress before the failure still arrived


def test_train_worker_factory_error_is_reported(qtbot) -> None:
    def factory() -> Any:
        raise ValueError("Choose a data folder")

    worker = TrainWorker(factory)
    thread, _batches, events = run_worker(qtbot, worker)
    with qtbot.waitSignal(thread.done, timeout=10_000):
        thread.start()
    assert isinstance(events[-1], ev.RunFailed) and events[-1].message == "Choose a data folder"


def test_sample_worker_keeps_latest_progress_and_frame(qtbot) -> None:
    control = RunControl()
    frame = np.zeros((4, 4, 3), np.uint8)

    class FakeSampling:
        def steps(self) -> Iterator[Any]:
            for i in range(1, 501):
                yield ev.SamplingProgress(i, 500, 1, 1, 0.0, frame if i == 3 else None)
            yield ev.SamplesReady(np.zeros((2, 4, 4, 3), np.uint8), ("a.png", "b.png"), "grid.png")

    worker = SampleWorker(lambda: FakeSampling(), control, interval=10.0)
    got: list[Any] = []
    worker.progress.connect(got.append)
    events: list[Any] = []
    worker.event.connect(events.append)
    thread = WorkerThread(worker)
    with qtbot.waitSignal(thread.done, timeout=10_000):
        thread.start()
    assert got[0].done == 1 and got[-1].done == 500 and len(got) <= 3
    assert any(p.frame is not None for p in got)
    assert isinstance(events[-1], ev.SamplesReady)


def test_background_jobs_answer_on_the_gui_thread_and_errors_come_back_as_calls(qtbot) -> None:
    from ddpm_studio.gui.workers import BackgroundTasks

    tasks = BackgroundTasks()
    gui_thread = threading.get_ident()
    got: list[Any] = []
    tasks.run(lambda: threading.get_ident(), lambda worker_thread: got.append(("done", worker_thread, threading.get_ident())))
    tasks.run(lambda: 1 / 0, lambda _v: got.append("not this"), lambda exc: got.append(("error", type(exc).__name__,
                                                                                          threading.get_ident())))
    qtbot.waitUntil(lambda: len(got) == 2, timeout=10_000)
    done = next(g for g in got if g[0] == "done")
    assert done[1] != gui_thread and done[2] == gui_thread  # ran off the GUI thread, answered on it
    assert ("error", "ZeroDivisionError", gui_thread) in got
    qtbot.waitUntil(lambda: tasks.running() == 0, timeout=10_000)
