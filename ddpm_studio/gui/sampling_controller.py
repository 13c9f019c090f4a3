"""Presenter of the Generate panel's jobs: generate images, interpolate between two seeds, evaluate a model.

All three are sessions from the services run on a SampleWorker thread (built there, so torch loads off
the GUI thread), and share the panel's progress bar and Cancel; one job at a time. Results stay here
so the panel's Save buttons can write them where the user asks.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from ddpm_studio.gui import dialogs
from ddpm_studio.gui.workers import SampleWorker, WorkerThread
from ddpm_studio.services import events as ev
from ddpm_studio.services.control import RunControl

log = logging.getLogger("ddpm_studio.gui")

FAILED_TITLES = {"generate": "Generation failed", "interpolate": "Interpolation failed", "evaluate": "Evaluation failed"}


class SamplingController(QObject):
    """Runs one sampling job at a time in a worker thread; saves the results where the user asks."""

    busyChanged = Signal(bool)
    samplesReady = Signal(object)  # SamplesReady (images, or an interpolation strip's frames)
    evaluationReady = Signal(object)  # EvaluationReady

    def __init__(self, panel: Any, parent_widget: Any = None) -> None:
        super().__init__()
        self.panel, self.parent_widget = panel, parent_widget
        self.control: RunControl | None = None
        self.thread: WorkerThread | None = None
        self.kind = "generate"
        self.result: ev.SamplesReady | None = None
        self.report: ev.EvaluationReady | None = None
        self.failure: ev.RunFailed | None = None
        panel.cancelRequested.connect(self.cancel)

    # -- jobs (GUI thread) ---------------------------------------------------------------------------
    def generate(self, source: Any, sample_cfg: Any, out_dir: str | Path, snapshot: Any = None) -> bool:
        """Sample from ``source`` (a checkpoint path or run folder) or ``snapshot`` (a Future of a live model copy)."""

        def make(model: Any, control: RunControl) -> Any:
            from ddpm_studio.services.sampling import SamplingSession

            return SamplingSession(model, sample_cfg, out_dir, control=control, save_trajectory=True)

        return self._start("generate", source, snapshot, make)

    def interpolate(self, source: Any, sample_cfg: Any, interp_cfg: Any, out_dir: str | Path, snapshot: Any = None) -> bool:
        """A strip of ``interp_cfg.frames`` images between two seeds (needs a deterministic sampler: the session says so)."""

        def make(model: Any, control: RunControl) -> Any:
            from ddpm_studio.services.interpolation import InterpolationSession

            return InterpolationSession(model, sample_cfg, interp_cfg, out_dir, control=control)

        return self._start("interpolate", source, snapshot, make)

    def evaluate(self, source: Any, overrides: dict[str, Any], out_dir: str | Path, snapshot: Any = None,
                 reference_images: int = 1000) -> bool:
        """Score generated images against the training data; ``overrides`` change evaluation_sample_config()."""

        def make(model: Any, control: RunControl) -> Any:
            from ddpm_studio.services.evaluation import EvaluationSession, evaluation_sample_config

            return EvaluationSession(model, evaluation_sample_config(**overrides), out_dir, fid="auto",
                                     reference_images=reference_images, control=control)

        return self._start("evaluate", source, snapshot, make)

    def _start(self, kind: str, source: Any, snapshot: Any, make: Callable[[Any, RunControl], Any]) -> bool:
        if self.is_running():
            return False
        self.control = control = RunControl()
        self.kind, self.result, self.report, self.failure = kind, None, None, None

        def factory() -> Any:  # on the worker thread
            model = source if snapshot is None else _wait_for_snapshot(snapshot, control)
            return make(model, control)

        worker = SampleWorker(factory, control)
        worker.progress.connect(self.panel.show_progress)
        worker.event.connect(self._on_event)
        self.thread = WorkerThread(worker, self)
        self.thread.done.connect(self._on_done)
        self.panel.set_busy(True)
        self.panel.set_message("Loading the model…")
        self.busyChanged.emit(True)
        self.thread.start()
        return True

    def cancel(self) -> None:
        if self.control is not None and self.thread is not None:
            self.control.stop()
            self.panel.set_message("Cancelling…")

    def is_running(self) -> bool:
        """True from the click until the GUI thread has handled the worker thread's end."""
        return self.thread is not None

    def shutdown(self, timeout_ms: int = 60_000) -> bool:
        self.cancel()
        if self.thread is not None and self.thread.is_running():
            return self.thread.wait(timeout_ms)
        return True

    # -- worker events (GUI thread) ------------------------------------------------------------------
    def _on_event(self, event: Any) -> None:
        if isinstance(event, ev.Status):
            self.panel.set_message(event.message)
        elif isinstance(event, ev.SamplesReady):
            self.result = event
            if self.kind == "interpolate":
                self.panel.show_strip(event.images, event.grid_path, int(event.extra.get("frames", len(event.images))))
                log.info("Interpolation strip of %d images: %s", len(event.images), event.grid_path)
            else:
                self.panel.show_results(event.images, event.paths, event.trajectory_path is not None)
                log.info("Generated %d images in %s", len(event.images), Path(event.paths[0]).parent if event.paths else "?")
            self.samplesReady.emit(event)
        elif isinstance(event, ev.EvaluationReady):
            self.report = event
            self.panel.show_report(event.lines, event.path, event.report.get("grid"))
            for line in event.lines:
                log.info("%s", line)
            self.evaluationReady.emit(event)
        elif isinstance(event, ev.RunFailed):
            self.failure = event
            title = FAILED_TITLES[self.kind]
            self.panel.show_failure(title, event.message)
            dialogs.show_error(self.parent_widget, title, event.message, event.detail)

    def _on_done(self) -> None:
        cancelled = self.control is not None and self.control.stop_requested
        self.thread = None
        self.panel.set_busy(False)
        if cancelled:
            self.panel.set_message("Cancelled")
        self.busyChanged.emit(False)

    # -- saving ---------------------------------------------------------------------------------------
    def _is_strip(self) -> bool:
        """An interpolation result: its images are the frames of the strip file(s) in ``paths``."""
        return self.result is not None and len(self.result.paths) != len(self.result.images)

    def save_images(self, indices: list[int] | None, folder: str | Path) -> list[Path]:
        """Write the chosen (or all) images into ``folder`` as PNGs (plus the strip itself for all of a strip)."""
        from ddpm_studio.services.imaging import save_png

        res = self.result
        if res is None:
            return []
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        chosen = range(len(res.images)) if indices is None else indices
        written = []
        strip = self._is_strip()
        stem = Path(res.paths[0]).stem if res.paths else "image"
        for i in chosen:
            if strip:
                written.append(save_png(res.images[i], folder / f"{stem}_{i:05d}.png"))
            else:
                written.append(_copy(res.paths[i], folder))
        if strip and indices is None:
            written += [_copy(p, folder) for p in res.paths]
        return written

    def save_grid(self, path: str | Path, indices: list[int] | None = None) -> Path:
        """The chosen (or all) images tiled in one PNG; a whole strip keeps its rows of ``frames`` images."""
        from ddpm_studio.services.imaging import make_grid, save_png

        assert self.result is not None
        images = self.result.images if not indices else self.result.images[indices]
        ncols = int(self.result.extra.get("frames", 0)) or None if self._is_strip() and not indices else None
        return save_png(make_grid(images, ncols), Path(path))

    def save_gif(self, path: str | Path) -> Path | None:
        if self.result is None or not self.result.trajectory_path:
            return None
        shutil.copyfile(self.result.trajectory_path, path)
        return Path(path)


def _wait_for_snapshot(snapshot: Any, control: RunControl, timeout: float = 600.0) -> Any:
    """The live model copy, waiting for the training thread's next step; Cancel (or quitting) stops the wait."""
    import concurrent.futures
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            return snapshot.result(timeout=0.2)
        except concurrent.futures.TimeoutError:
            if control.stop_requested:
                raise RuntimeError("Cancelled while waiting for the live model") from None
            if time.monotonic() > deadline:
                raise RuntimeError("The training run did not hand over its live model in time") from None


def _copy(src: str | Path, folder: Path) -> Path:
    src = Path(src)
    dst = folder / src.name
    if dst.resolve() != src.resolve():
        shutil.copyfile(src, dst)
    return dst
