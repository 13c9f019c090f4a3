"""The app's one way to work off the GUI thread: a QObject worker in its own QThread, talking back by signals.

- :class:`TrainWorker` drives a training session's event generator; per-step events are coalesced by time
  (at most one ``progress`` signal per ``interval`` seconds, lossless: every step's loss is in some batch),
  so the GUI's event queue never floods whatever the step rate. Rare events (previews, checkpoints,
  pause/resume, finish) flush the pending batch first, so the GUI sees everything in order.
- :class:`SampleWorker` drives a sampling, interpolation or evaluation session (latest progress + newest frame).
- :class:`BackgroundTasks` runs short jobs (torch warm-up, folder scans, size estimates, reading a run); a job may
  report progress and be cancelled (:meth:`BackgroundTasks.run_reporting`, the folder scan).

Errors never escape a worker: they arrive as a ``RunFailed`` event or a task's error callback. Pause / resume /
stop and the session's requests (a model snapshot, keep-last) do not go through these objects: the GUI thread
calls the shared RunControl or the session's thread-safe methods directly, because the worker's thread is busy.
Every :class:`WorkerThread` is registered until it ends, so quitting can wait for all of them
(:func:`wait_for_threads`): a QThread destroyed while running aborts the process.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PySide6.QtCore import QCoreApplication, QObject, Qt, QThread, Signal, Slot

from ddpm_studio.services import events as ev
from ddpm_studio.services.control import RunControl, drive

log = logging.getLogger("ddpm_studio.gui")
PROGRESS_INTERVAL = 0.1  # seconds between progress signals (~10 Hz)


class WorkerThread(QObject):
    """One worker in its own QThread (moveToThread wiring); ``done`` fires on the GUI thread after the thread ends."""

    done = Signal()

    def __init__(self, worker: QObject, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.worker = worker
        self.thread = QThread()
        self.thread.setObjectName(type(worker).__name__)
        worker.moveToThread(self.thread)
        self.thread.started.connect(worker.run)  # type: ignore[attr-defined]
        # When run() ends the worker moves itself back to the GUI thread (where Python will delete it), then the
        # thread quits. Direct: both run on the worker's thread at once; quit() must not wait for the GUI thread,
        # which may be blocked in wait() (shutdown), or wait() would time out with the thread alive.
        home = QCoreApplication.instance().thread()  # type: ignore[union-attr]
        worker.finished.connect(lambda: worker.moveToThread(home), Qt.ConnectionType.DirectConnection)  # type: ignore[attr-defined]
        worker.finished.connect(self.thread.quit, Qt.ConnectionType.DirectConnection)  # type: ignore[attr-defined]
        self.thread.finished.connect(self._ended)

    def start(self) -> None:
        _RUNNING.add(self)
        self.thread.start()

    def is_running(self) -> bool:
        return self.thread.isRunning()

    def wait(self, ms: int) -> bool:
        """Block until the thread ends (for shutdown only; the GUI otherwise waits for ``done``)."""
        return self.thread.wait(ms)

    def _ended(self) -> None:
        _RUNNING.discard(self)
        self.done.emit()


_RUNNING: set[WorkerThread] = set()


def running_threads() -> int:
    """Worker threads started and not yet ended (tests, shutdown)."""
    return sum(1 for t in list(_RUNNING) if t.is_running())


def wait_for_threads(timeout: float = 30.0) -> bool:
    """Wait for every worker thread to end (at quit); True when none is left running."""
    deadline = time.monotonic() + timeout
    for thread in list(_RUNNING):
        if thread.is_running():
            thread.wait(max(0, int((deadline - time.monotonic()) * 1000)))
    return running_threads() == 0


@atexit.register
def _wait_at_exit() -> None:
    """A script that quits without the app's shutdown (tests, benchmarks) must not destroy a running QThread."""
    if not wait_for_threads():
        log.error("%d worker thread(s) still running at exit", running_threads())


# -- training -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProgressBatch:
    """The steps of one coalescing window: arrays of step, loss and lr, the last TrainProgress, metric records."""

    steps: np.ndarray
    losses: np.ndarray
    lrs: np.ndarray
    last: ev.TrainProgress | None
    records: tuple[dict[str, Any], ...] = ()


@dataclass
class Coalescer:
    """Qt-free batching of TrainProgress / MetricsLogged by time; ``clock`` is injectable for tests."""

    interval: float = PROGRESS_INTERVAL
    clock: Callable[[], float] = time.monotonic
    _progress: list[ev.TrainProgress] = field(default_factory=list)
    _records: list[dict[str, Any]] = field(default_factory=list)
    _last_emit: float = -1e9

    def add(self, event: Any) -> list[Any]:
        """Take one event; return what to emit now (ProgressBatch and/or the event itself), in order."""
        if isinstance(event, ev.TrainProgress):
            self._progress.append(event)
        elif isinstance(event, ev.MetricsLogged):
            self._records.append(event.record)
        else:
            out = self.flush()
            out.append(event)
            return out
        if self.clock() - self._last_emit >= self.interval:
            return self.flush()
        return []

    def flush(self) -> list[Any]:
        """The pending batch (if any) as a one-item list; resets the window."""
        if not self._progress and not self._records:
            return []
        items = self._progress
        batch = ProgressBatch(
            steps=np.fromiter((p.step for p in items), np.int64, len(items)),
            losses=np.fromiter((p.loss for p in items), np.float64, len(items)),
            lrs=np.fromiter((p.lr for p in items), np.float64, len(items)),
            last=items[-1] if items else None,
            records=tuple(self._records),
        )
        self._progress, self._records = [], []
        self._last_emit = self.clock()
        return [batch]


class TrainWorker(QObject):
    """Runs ``factory()`` (a TrainingSession, built in this thread so torch loads off the GUI thread).

    ``session`` is set once the factory returns (before the first event); the GUI uses only its thread-safe
    public methods (``snapshot``, ``set_keep_last``). A ``notifier`` (services.notifications.Notifier) sees every
    event here, on this thread, so its webhook POSTs never wait on the GUI; what it makes is sent as ``notified``.
    """

    progress = Signal(object)  # ProgressBatch
    event = Signal(object)  # every other event, in order; RunFailed on errors
    notified = Signal(object)  # a Notification (completed, failed, paused on a failed save)
    finished = Signal()

    def __init__(self, factory: Callable[[], Any], interval: float = PROGRESS_INTERVAL, notifier: Any = None) -> None:
        super().__init__()
        self._factory = factory
        self._notifier = notifier
        self._coalescer = Coalescer(interval)
        self.session: Any = None
        self._run_dir: str | None = None  # from RunStarted: where a failed run's last good checkpoint is
        self._step: int | None = None

    @Slot()
    def run(self) -> None:
        try:
            self.session = self._factory()
            drive(self.session.steps(), self._sink)
        except Exception as exc:  # never let an exception escape a slot in a thread
            self._emit_all(self._coalescer.flush())
            failed = ev.RunFailed.from_exception(exc, self._step, self._last_checkpoint())
            self.event.emit(failed)
            self._notify(failed)
        finally:
            self._emit_all(self._coalescer.flush())
            self.finished.emit()

    def _sink(self, event: Any) -> None:
        if isinstance(event, ev.RunStarted):
            self._run_dir, self._step = event.run_dir, event.step
        elif isinstance(event, ev.TrainProgress):
            self._step = event.step
        self._emit_all(self._coalescer.add(event))
        self._notify(event)

    def _notify(self, event: Any) -> None:
        if self._notifier is None:
            return
        try:
            note = self._notifier.observe(event)
        except Exception:  # a notification is never worth a run
            log.warning("Notifications failed; training goes on", exc_info=True)
            return
        if note is not None:
            self.notified.emit(note)

    def _last_checkpoint(self) -> str | None:
        if self._run_dir is None:
            return None
        from ddpm_studio.services.runs import RunFolder

        latest = RunFolder(self._run_dir).latest_checkpoint()
        return str(latest.path) if latest is not None else None

    def _emit_all(self, items: list[Any]) -> None:
        for item in items:
            if isinstance(item, ProgressBatch):
                self.progress.emit(item)
            else:
                self.event.emit(item)


# -- sampling -------------------------------------------------------------------------------------------
class SampleWorker(QObject):
    """Runs ``factory()`` (a sampling, interpolation or evaluation session); progress is coalesced to the
    latest step plus the newest frame."""

    progress = Signal(object)  # SamplingProgress
    event = Signal(object)  # Status, SamplesReady, EvaluationReady, RunFailed
    finished = Signal()

    def __init__(self, factory: Callable[[], Any], control: RunControl, interval: float = PROGRESS_INTERVAL) -> None:
        super().__init__()
        self._factory, self.control, self.interval = factory, control, interval
        self._pending: ev.SamplingProgress | None = None
        self._frame: np.ndarray | None = None
        self._last_emit = -1e9

    @Slot()
    def run(self) -> None:
        try:
            session = self._factory()
            drive(session.steps(), self._sink)
        except Exception as exc:
            if not self.control.stop_requested:
                self.event.emit(ev.RunFailed.from_exception(exc))
        finally:
            self._flush()
            self.finished.emit()

    def _sink(self, event: Any) -> None:
        if isinstance(event, ev.SamplingProgress):
            if event.frame is not None:
                self._frame = event.frame
            self._pending = event
            if time.monotonic() - self._last_emit >= self.interval or event.done == event.total:
                self._flush()
            return
        self._flush()
        self.event.emit(event)

    def _flush(self) -> None:
        if self._pending is None:
            return
        self.progress.emit(dataclasses.replace(self._pending, frame=self._frame))
        self._pending, self._frame = None, None
        self._last_emit = time.monotonic()


# -- short jobs -----------------------------------------------------------------------------------------
class TaskHandle:
    """A background job's line to the GUI thread (``report``, from the job's thread) and its stop request.

    Once ``cancel()`` is called (on the GUI thread) nothing more of the job reaches its callbacks, and a job
    that polls ``cancelled()`` can stop early.
    """

    def __init__(self) -> None:
        self._cancelled = threading.Event()
        self._emit: Callable[[Any], None] = lambda _value: None

    def report(self, value: Any) -> None:
        if not self._cancelled.is_set():
            self._emit(value)

    def cancel(self) -> None:
        self._cancelled.set()

    def cancelled(self) -> bool:
        return self._cancelled.is_set()


class _JobWorker(QObject):
    result = Signal(object, object)  # (value, None) or (None, exception)
    progress = Signal(object)  # what the job reported
    finished = Signal()

    def __init__(self, job: Callable[[], Any]) -> None:
        super().__init__()
        self._job = job

    @Slot()
    def run(self) -> None:
        try:
            value = self._job()
        except Exception as exc:
            self.result.emit(None, exc)
        else:
            self.result.emit(value, None)
        finally:
            self.finished.emit()


class _Job(QObject):
    """Lives on the GUI thread: receives its worker's result (a queued signal) and calls back there. It has no Qt
    parent and stays in ``_JOBS`` until its thread has ended, so nothing deletes it while its answer is on the way."""

    def __init__(self, job: Callable[[], Any], on_done: Callable[[Any], None] | None,
                 on_error: Callable[[BaseException], None] | None, name: str,
                 on_progress: Callable[[Any], None] | None = None, handle: TaskHandle | None = None) -> None:
        super().__init__()
        self.name, self._on_done, self._on_error, self._on_progress = name, on_done, on_error, on_progress
        self.handle = handle or TaskHandle()
        self.worker = _JobWorker(job)
        self.handle._emit = self.worker.progress.emit
        self.worker.result.connect(self._deliver)
        self.worker.progress.connect(self._deliver_progress)
        self.thread = WorkerThread(self.worker, self)
        self.thread.thread.setObjectName(name)
        self.thread.done.connect(self._ended)

    @Slot(object)
    def _deliver_progress(self, value: Any) -> None:
        if self._on_progress is not None and not self.handle.cancelled():
            self._on_progress(value)

    @Slot(object, object)
    def _deliver(self, value: Any, error: BaseException | None) -> None:
        if self.handle.cancelled():
            return
        try:
            if error is None:
                if self._on_done is not None:
                    self._on_done(value)
            elif self._on_error is not None:
                self._on_error(error)
            else:
                log.error("Background job %s failed: %s", self.name, error, exc_info=error)
        except RuntimeError as exc:  # the widget it was for is gone (the window closed meanwhile)
            if "already deleted" not in str(exc):
                raise

    @Slot()
    def _ended(self) -> None:
        _JOBS.discard(self)  # its result was delivered before (both queued, in order): it may go now


_JOBS: set[_Job] = set()


class BackgroundTasks(QObject):
    """Runs short jobs off the GUI thread, each on its own QThread; their result or error comes back as a call
    on the GUI thread. Create it on the GUI thread."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._jobs: set[_Job] = set()

    def run(self, job: Callable[[], Any], on_done: Callable[[Any], None] | None = None,
            on_error: Callable[[BaseException], None] | None = None, name: str = "ddpm-job") -> TaskHandle:
        """Run ``job()``; its value or exception comes back to ``on_done`` / ``on_error`` unless cancelled first."""
        return self._start(_Job(job, on_done, on_error, name))

    def run_reporting(self, job: Callable[[TaskHandle], Any], on_progress: Callable[[Any], None],
                      on_done: Callable[[Any], None] | None = None,
                      on_error: Callable[[BaseException], None] | None = None, name: str = "ddpm-job") -> TaskHandle:
        """Run ``job(handle)``: what it passes to ``handle.report`` reaches ``on_progress`` on the GUI thread, and
        it may poll ``handle.cancelled()`` to stop early (the caller's ``handle.cancel()``)."""
        handle = TaskHandle()
        return self._start(_Job(lambda: job(handle), on_done, on_error, name, on_progress, handle))

    def _start(self, job: _Job) -> TaskHandle:
        _JOBS.add(job)
        self._jobs.add(job)
        job.thread.start()
        return job.handle

    def running(self) -> int:
        """This runner's jobs whose answer has not been fully delivered yet."""
        self._jobs &= _JOBS
        return len(self._jobs)


def warm_up() -> dict[str, str]:
    """Import torch and the services that need it, and pick the device; runs after the window shows."""
    from ddpm_studio.core.device import choose_device
    from ddpm_studio.services import sampling, training  # noqa: F401 - imported for their side effect (warm cache)

    choice = choose_device()
    return {"device": str(choice.device), "reason": choice.reason}

