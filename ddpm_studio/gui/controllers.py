"""The presenter between the run controls and the training service (sampling is in sampling_controller.py).

It owns a RunControl and one worker thread per run. Clicks call RunControl directly (the worker's
own thread is busy in ``run()``), and only *request* a state; the RunState moves on the worker's
confirmations, and the buttons follow the RunState.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from ddpm_studio.gui import dialogs
from ddpm_studio.gui.state import RunState, next_state
from ddpm_studio.gui.workers import TrainWorker, WorkerThread
from ddpm_studio.services import events as ev
from ddpm_studio.services.control import RunControl

log = logging.getLogger("ddpm_studio.gui")


class TrainingController(QObject):
    """Starts, pauses, resumes and stops training runs; feeds the loss plot and trajectory view."""

    stateChanged = Signal(object)  # RunState
    runStarted = Signal(object)  # RunStarted
    checkpointEvent = Signal(object)  # CheckpointSaved / CheckpointFailed
    runEnded = Signal(object)  # RunFinished / RunFailed / None (stopped during set-up)

    def __init__(self, controls: Any, plot: Any, trajectory: Any, parent_widget: Any = None) -> None:
        super().__init__()
        self.controls, self.plot, self.trajectory, self.parent_widget = controls, plot, trajectory, parent_widget
        self.state = RunState.IDLE
        self.control: RunControl | None = None
        self.thread: WorkerThread | None = None
        self.worker: TrainWorker | None = None
        self.run_dir: str | None = None
        self.step = 0
        self.total_steps = 0
        self.last_progress: ev.TrainProgress | None = None
        self._ended: Any = None
        self._can_start, self._reason, self._can_continue = False, "Checking settings…", True
        controls.pauseRequested.connect(self.pause)
        controls.resumeRequested.connect(self.resume)
        controls.stopRequested.connect(self.stop)

    # -- requests (GUI thread) ---------------------------------------------------------------------
    def start(self, cfg: Any = None, *, runs_dir: str | Path | None = None, resume_from: str | Path | None = None,
              overrides: dict[str, Any] | None = None, continue_plot: bool = False) -> bool:
        """Launch a TrainingSession on a new worker thread; False when a run is still active.

        Also False while the last run's thread is still ending (its RunFinished is in, its thread's end not yet):
        starting then would let that end be taken for the new run's, leaving the new thread running untracked.
        """
        if self.thread is not None or not self._move("start"):
            return False
        self.control = RunControl()
        control = self.control

        def factory() -> Any:  # runs on the worker thread: torch is imported there, not here
            from ddpm_studio.services.training import TrainingSession

            return TrainingSession(cfg, runs_dir=runs_dir, resume_from=resume_from, control=control, overrides=overrides)

        if not continue_plot:
            self.plot.clear()
            self.trajectory.clear()
        self.step, self.last_progress, self._ended = 0, None, None
        self.run_dir = None  # set by this run's RunStarted; until then there is no live model of it
        self.worker = TrainWorker(factory, control)
        self.worker.progress.connect(self._on_progress)
        self.worker.event.connect(self._on_event)
        self.thread = WorkerThread(self.worker, self)
        self.thread.done.connect(self._on_thread_done)
        self.controls.set_message("Starting: loading PyTorch and the images…")
        self.thread.start()
        log.info("Training %s", f"resumed from {resume_from}" if resume_from else "started")
        return True

    def pause(self) -> None:
        if self.control is not None and self._move("pause"):
            self.control.pause()

    def resume(self) -> None:
        if self.control is not None and self._move("resume"):
            self.control.resume()

    def toggle_pause(self) -> None:
        if self.state is RunState.RUNNING:
            self.pause()
        elif self.state is RunState.PAUSED:
            self.resume()

    def stop(self) -> None:
        if self.control is not None and self._move("stop"):
            self.control.stop()

    def set_can_start(self, ok: bool, reason: str = "", can_continue: bool = True) -> None:
        self._can_start, self._reason, self._can_continue = ok, reason, can_continue
        self._refresh_controls()

    def set_keep_last(self, n: int) -> None:
        if self.worker is not None and self.state.active:
            self.worker.set_keep_last(n)

    def live_snapshot(self) -> Any:
        """A Future of a copy of the live EMA model, or None when no run is active or it has no model yet."""
        if self.worker is None or not self.state.active or self.thread is None or not self.thread.is_running():
            return None  # (the thread may have ended with its done signal still queued)
        if getattr(self.worker.session, "ema", None) is None:
            return None  # still loading images (or stopped before the model was built)
        return self.worker.request_snapshot()

    def live_class_names(self) -> tuple[str, ...] | None:
        """The classes of the running run's model (empty = unconditional), or None while not known yet."""
        session = getattr(self.worker, "session", None)
        if not self.state.active or session is None or not hasattr(session, "class_names"):
            return None
        return tuple(session.class_names)

    def is_running(self) -> bool:
        """True from Start until the GUI thread has handled the worker thread's end (not just until it ended)."""
        return self.thread is not None

    def shutdown(self, timeout_ms: int = 120_000) -> bool:
        """Stop (a checkpoint is written) and wait for the thread; for quitting. True when it ended."""
        if self.control is not None:
            self.control.stop()
        if self.thread is not None and self.thread.is_running():
            return self.thread.wait(timeout_ms)
        return True

    # -- confirmations (worker → GUI thread) -------------------------------------------------------
    def _move(self, action: str) -> bool:
        new = next_state(self.state, action)
        if new is None:
            return False
        if new is not self.state:
            self.state = new
            self._refresh_controls()
            self.stateChanged.emit(new)
        return True

    def _refresh_controls(self) -> None:
        """Buttons from the state; Start and Continue also wait for the last run's thread to have ended."""
        ended = self.thread is None
        self.controls.set_state(self.state, self._can_start and ended, self._reason, self._can_continue and ended)

    def _on_progress(self, batch: Any) -> None:
        self.plot.append_batch(batch)
        if batch.last is not None:
            p = batch.last
            self.step, self.total_steps, self.last_progress = p.step, p.total_steps, p
            if self.state is not RunState.PAUSED:
                self.controls.set_progress(p.step, p.total_steps, p.images_per_sec, p.eta_seconds, p.loss)

    def _on_event(self, event: Any) -> None:
        if isinstance(event, ev.Status):
            self.controls.set_message(event.message, event.done, event.total)
        elif isinstance(event, ev.RunStarted):
            self.run_dir, self.step, self.total_steps = event.run_dir, event.step, event.total_steps
            if event.resumed_from:
                self.plot.truncate_after(event.step)
            self.controls.set_progress(event.step, event.total_steps)
            log.info("Run %s: %s images, %s parameters, %s", Path(event.run_dir).name, f"{event.num_images:,}",
                     f"{event.parameters:,}", event.device_reason)
            for warning in event.warnings:
                log.warning(warning)
            self._move("started")
            self.runStarted.emit(event)
        elif isinstance(event, ev.PreviewReady):
            self.trajectory.add_preview(event)
        elif isinstance(event, ev.CheckpointSaved | ev.CheckpointFailed):
            if isinstance(event, ev.CheckpointFailed):
                # The message says what happens next (the engine pauses the run on a full disk once
                # services/training.py does so: see docs/reliability.md), and that earlier checkpoints are intact.
                text = event.message if "intact" in event.message else event.message + "\n\nEarlier checkpoints are intact."
                dialogs.show_error(self.parent_widget, "Checkpoint not saved", text)
            else:
                log.info("Checkpoint saved at step %s (%s)", f"{event.step:,}", Path(event.path).name)
            self.checkpointEvent.emit(event)
        elif isinstance(event, ev.RunPaused):
            self.step = event.step
            self._move("paused")
            self.controls.set_message(f"Paused at step {event.step:,} / {self.total_steps:,}")
            self.controls.progress.setValue(min(event.step, self.controls.progress.maximum()))
        elif isinstance(event, ev.RunResumed):
            self._move("resumed")
        elif isinstance(event, ev.RunFinished):
            self._ended = event
            self.step = event.step
            self._move("finished")
            log.info("Run %s at step %s", event.reason, f"{event.step:,}")
            self.controls.set_message(f"Run {event.reason} at step {event.step:,} / {self.total_steps:,}")
        elif isinstance(event, ev.RunFailed):
            self._ended = event
            self._move("failed")
            if event.detail:
                log.debug(event.detail)
            kept = f"\n\nThe last good checkpoint is kept: {event.checkpoint}" if event.checkpoint else ""
            self.controls.set_message("Run failed")
            dialogs.show_error(self.parent_widget, "Training stopped", event.message + kept, event.detail)

    def _on_thread_done(self) -> None:
        ended = self._ended
        self._move("thread_ended")
        if ended is None:
            self.controls.set_message("Stopped before training began")
        self.thread = None
        self.worker = None
        self._refresh_controls()
        self.runEnded.emit(ended)
