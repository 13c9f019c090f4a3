"""QThread-hosted workers that drive the services' event generators and talk to the GUI by signals.

Why this shape: the sessions are plain generators, so a worker only pulls events and forwards them.
Per-step events are coalesced by time (at most one ``progress`` signal per ``interval`` seconds,
lossless: every step's loss is in some batch), so the GUI's event queue never floods whatever the
step rate. Rare events (previews, checkpoints, pause/resume, finish) flush the pending batch first,
so the GUI sees everything in order. Pause/resume/stop never go through these objects: the GUI
thread calls the shared RunControl directly, because this thread is busy inside ``run()``.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot

from ddpm_studio.services import events as ev
from ddpm_studio.services.control import RunControl, drive

PROGRESS_INTERVAL = 0.1  # seconds between progress signals (~10 Hz)


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
    """Runs ``factory()`` (a TrainingSession, built in this thread so torch loads off the GUI thread)."""

    progress = Signal(object)  # ProgressBatch
    event = Signal(object)  # every other event, in order; RunFailed on errors
    finished = Signal()

    def __init__(self, factory: Callable[[], Any], control: RunControl, interval: float = PROGRESS_INTERVAL) -> None:
        super().__init__()
        self._factory, self.control = factory, control
        self._coalescer = Coalescer(interval)
        self.session: Any = None
        self._lock = threading.Lock()  # held while copying the model, so a resume waits for the copy
        self._paused = False
        self._done = False  # run() has returned: no step will come to serve a request
        self._snapshot_requests: list[Future[Any]] = []
        self._keep_last: int | None = None

    # -- called from other threads ---------------------------------------------------------------
    def request_snapshot(self) -> Future[Any]:
        """A Future of a LoadedModel copy of the EMA weights, made between steps (or now, when paused)."""
        fut: Future[Any] = Future()
        with self._lock:
            if (self._paused or self._done) and self.session is not None:
                self._serve(fut)  # nothing is changing the model: copy it now
            elif self._done:
                fut.set_exception(RuntimeError("The run has ended before its model was built"))
            else:
                self._snapshot_requests.append(fut)
        return fut

    def set_keep_last(self, n: int) -> None:
        """Change the run's keep-last-N; applied between steps (the session's config is frozen otherwise)."""
        self._keep_last = n

    # -- the thread -------------------------------------------------------------------------------
    @Slot()
    def run(self) -> None:
        try:
            self.session = self._factory()
            drive(self.session.steps(), self._sink)
        except Exception as exc:  # never let an exception escape a slot in a thread
            self._emit_all(self._coalescer.flush())
            checkpoint = None
            run = getattr(self.session, "run", None)
            latest = run.latest_checkpoint() if run is not None else None
            if latest is not None:
                checkpoint = str(latest.path)
            self.event.emit(ev.RunFailed.from_exception(exc, getattr(self.session, "step", None), checkpoint))
        finally:
            self._emit_all(self._coalescer.flush())
            with self._lock:
                # A request made from now on (the thread is still "running" until the GUI handles its end)
                # is served at once by request_snapshot, never left waiting for a step that will not come.
                self._done = True
                pending, self._snapshot_requests = self._snapshot_requests, []
                for fut in pending:
                    self._serve(fut)
            self.finished.emit()

    def _sink(self, event: Any) -> None:
        if self._snapshot_requests or self._keep_last is not None:
            self._between_steps()
        if isinstance(event, ev.RunPaused):
            with self._lock:
                self._paused = True
        elif isinstance(event, ev.RunResumed):
            with self._lock:  # waits for a snapshot being copied while paused
                self._paused = False
        self._emit_all(self._coalescer.add(event))

    def _between_steps(self) -> None:
        """Work that must not race a training step: the session is suspended at a yield here."""
        if self._keep_last is not None and self.session is not None and getattr(self.session, "cfg", None) is not None:
            import dataclasses

            cfg = self.session.cfg
            self.session.cfg = dataclasses.replace(cfg, schedule=dataclasses.replace(cfg.schedule, keep_last=self._keep_last))
            self._keep_last = None
        with self._lock:
            pending, self._snapshot_requests = self._snapshot_requests, []
            for fut in pending:
                self._serve(fut)

    def _serve(self, fut: Future[Any]) -> None:
        try:
            fut.set_result(snapshot_model(self.session))
        except Exception as exc:
            fut.set_exception(exc)

    def _emit_all(self, items: list[Any]) -> None:
        for item in items:
            if isinstance(item, ProgressBatch):
                self.progress.emit(item)
            else:
                self.event.emit(item)


def snapshot_model(session: Any) -> Any:
    """A LoadedModel holding a private copy of the session's EMA network (safe to sample while training goes on)."""
    from ddpm_studio.services.sampling import LoadedModel

    ema = getattr(session, "ema", None)
    if ema is None:
        raise RuntimeError("The run has no model yet (it is still loading images)")
    model = copy.deepcopy(ema.model).eval().requires_grad_(False)
    classes = tuple(getattr(session, "class_names", ()))  # a conditional run's live model needs its classes
    return LoadedModel(model, session.cfg, session.schedule, int(session.step), Path(session.run.path), classes)


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
        import dataclasses

        self.progress.emit(dataclasses.replace(self._pending, frame=self._frame))
        self._pending, self._frame = None, None
        self._last_emit = time.monotonic()


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
        # Direct: quit() is thread-safe and must not wait for the GUI thread, which may be blocked in wait()
        # (shutdown); a queued quit would then never run, and wait() would time out with the thread alive.
        worker.finished.connect(self.thread.quit, Qt.ConnectionType.DirectConnection)  # type: ignore[attr-defined]
        self.thread.finished.connect(self.done)

    def start(self) -> None:
        self.thread.start()

    def is_running(self) -> bool:
        return self.thread.isRunning()

    def wait(self, ms: int) -> bool:
        """Block until the thread ends (for shutdown only; the GUI otherwise waits for ``done``)."""
        return self.thread.wait(ms)
