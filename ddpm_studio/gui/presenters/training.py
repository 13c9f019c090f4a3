"""The training presenter: Start / Pause / Resume / Stop, Sample now / Checkpoint now, the progress bar, the loss
plot, the trajectory, and the device self-check's offer to train on the CPU.

It owns the app's one run state: a RunState that moves only on what the worker confirms (see
run_state.py), and the facts of the live run from its RunStarted event. Every other view derives from
what it emits (``stateChanged``, ``runStarted``, ``liveModelChanged``, ...); nothing else keeps a copy
of a run's state. Clicks call the run's RunControl directly (the worker's thread is busy in ``run()``)
and only *request* a state (or a preview / checkpoint, which arrive as the usual events); the session's
own thread-safe methods carry keep-last and model snapshots. Settings are the settings presenter's: the
toolbar's time budget and "Train on the CPU instead" ask it to change them (``settingsEdited``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Signal

from ddpm_studio.gui.presenters import progress_text as text
from ddpm_studio.gui.presenters.messages import LiveModel, RunHistory, Verdict
from ddpm_studio.gui.presenters.progress_text import RunPosition
from ddpm_studio.gui.presenters.run_state import RunState, buttons_for, next_state
from ddpm_studio.gui.views.protocols import DialogService, LossPlotView, RunControlsView, StatusView, TrajectoryView
from ddpm_studio.gui.workers import ProgressBatch, TrainWorker, WorkerThread
from ddpm_studio.services import config as config_mod
from ddpm_studio.services import events as ev
from ddpm_studio.services.control import RunControl
from ddpm_studio.services.runs import CHECKPOINT_RE

log = logging.getLogger("ddpm_studio.gui")
NOTIFIER_FLUSH_S = 3.0  # at quit: how long the last notification's webhook POST may still take


def new_session(cfg: config_mod.RunConfig | None, *, runs_dir: str | Path, resume_from: str | None, control: RunControl,
                overrides: dict[str, Any] | None) -> Any:
    """A TrainingSession (imports torch: called on the worker thread)."""
    from ddpm_studio.services.training import TrainingSession

    return TrainingSession(cfg, runs_dir=runs_dir, resume_from=resume_from, control=control, overrides=overrides)


class TrainingPresenter(QObject):
    """Starts, pauses, resumes and stops training runs; feeds the loss plot and the trajectory viewer."""

    stateChanged = Signal(object)  # RunState
    runStarted = Signal(object)  # RunStarted of the live run
    liveModelChanged = Signal(object)  # LiveModel, or None when no run's model can be sampled
    checkpointSaved = Signal(int, object)  # step, the loss at that step (None when unknown)
    runEnded = Signal(object)  # RunFinished / RunFailed / None (stopped while loading), once its thread has ended
    continueRequested = Signal()  # the Continue… button: which run is the runs presenter's business
    settingsEdited = Signal(str, dict)  # (section, {field: value}) to change: the time budget box, Train on the CPU
    notified = Signal(object)  # a services.notifications.Notification: the run completed, failed or paused (disk full)

    def __init__(self, controls: RunControlsView, plot: LossPlotView, trajectory: TrajectoryView, status: StatusView,
                 dialogs: DialogService, *, runs_dir: Callable[[], Path],
                 session_factory: Callable[..., Any] = new_session,
                 notifier_factory: Callable[[], Any] | None = None) -> None:
        """``notifier_factory`` makes each run's Notifier (its ``observe`` runs on the worker thread)."""
        super().__init__()
        self.controls, self.plot, self.trajectory, self.status, self.dialogs = controls, plot, trajectory, status, dialogs
        self._runs_dir, self._session_factory, self._notifier_factory = runs_dir, session_factory, notifier_factory
        self.state = RunState.IDLE
        self.run: ev.RunStarted | None = None  # the current (or last) run's facts, from its RunStarted
        self.step = 0
        self.total_steps = 0
        self.last_progress: ev.TrainProgress | None = None
        self.verdict = Verdict(config_mod.RunConfig(), False, ("Checking settings…",))
        self._control: RunControl | None = None
        self._thread: WorkerThread | None = None
        self._worker: TrainWorker | None = None
        self._ended: Any = None
        self._last_loss: float | None = None
        self._notifier: Any = None  # the last run's Notifier (its webhook POSTs run on threads of their own)
        self._cpu_restart: str | None = None  # after this run's end: start again on the CPU ("" new, else this checkpoint)
        self._requests: dict[str, Callable[[], Any]] = {
            "start": self.start, "pause": self.pause, "resume": self.resume, "stop": self.stop,
            "continue": self.continueRequested.emit, "preview": self.sample_now, "checkpoint": self.checkpoint_now,
            "use_cpu": self.train_on_cpu}
        self._handlers: dict[type, Callable[[Any], None]] = {
            ev.Status: self._on_status, ev.RunStarted: self._on_run_started, ev.PreviewReady: trajectory.add_preview,
            ev.CheckpointSaved: self._on_checkpoint_saved, ev.CheckpointFailed: self._on_checkpoint_failed,
            ev.RunPaused: self._on_paused, ev.RunResumed: self._on_resumed, ev.RunFinished: self._on_finished,
            ev.RunFailed: self._on_failed}
        controls.requested.connect(lambda action: self._requests[action]())
        controls.budgetEdited.connect(lambda minutes: self.settingsEdited.emit("optim", {"train_minutes": minutes}))
        plot.diverged.connect(lambda step: log.warning("The loss became NaN or infinite at step %d", step))
        self._refresh_controls()

    # -- requests (GUI thread) ---------------------------------------------------------------------
    def set_verdict(self, verdict: Verdict) -> None:
        """The settings changed: what Start would use, and whether it may."""
        self.verdict = verdict
        self._refresh_controls()

    def start(self) -> bool:
        """A new run with the current settings; False when they are not valid or a run is active."""
        if not self.verdict.ok:
            return False
        return self._launch(self.verdict.cfg, None, None, continue_plot=False)

    def resume_from(self, checkpoint: str) -> bool:
        """Continue from ``checkpoint`` with the current optimisation and schedule settings (asks to train
        more when the run already reached its total steps)."""
        if self.is_running():
            return False
        cfg = self.verdict.cfg
        sections = config_mod.to_dict(cfg)
        overrides = {"optim": sections["optim"], "schedule": sections["schedule"]}
        match = CHECKPOINT_RE.match(Path(checkpoint).name)
        step = int(match.group(1)) if match else 0
        if step >= cfg.optim.total_steps:
            more = max(1000, cfg.optim.total_steps)
            choice = self.dialogs.ask("Run already complete",
                                      f"This checkpoint is at step {step:,}, and Total steps is {cfg.optim.total_steps:,}.\n"
                                      f"Train {more:,} more steps (to {step + more:,})?", ("Train more", "Cancel"))
            if choice != 0:
                return False
            overrides["optim"]["total_steps"] = step + more
        if not self._launch(None, checkpoint, overrides, continue_plot=True):
            return False
        log.info("Continuing from %s", checkpoint)
        return True

    def pause(self) -> None:
        if self._control is not None and self._move("pause"):
            self._control.pause()

    def resume(self) -> None:
        if self._control is not None and self._move("resume"):
            self._control.resume()

    def toggle_pause(self) -> None:
        if self.state is RunState.RUNNING:
            self.pause()
        elif self.state is RunState.PAUSED:
            self.resume()

    def stop(self) -> None:
        if self._control is not None and self._move("stop"):
            self._control.stop()

    def sample_now(self) -> None:
        """A preview now: made between steps, or at once while paused (the run stays paused); it arrives as a
        PreviewReady like any other."""
        if self._control is not None and buttons_for(self.state)["preview"]:
            self._control.request_preview()
            self.status.show_message("Preview asked for: it appears in the trajectory in a moment", 5000)

    def checkpoint_now(self) -> None:
        """A checkpoint now (between steps, or at once while paused); it arrives as a CheckpointSaved."""
        if self._control is not None and buttons_for(self.state)["checkpoint"]:
            self._control.request_checkpoint()
            self.status.show_message("Checkpoint asked for: it is saved between two steps", 5000)

    def train_on_cpu(self) -> None:
        """The device failed its self-check: stop this run and start it again on the CPU, with Device: cpu in the
        settings. A new run starts over; a continued run continues from the checkpoint it began at, not from one
        written on the faulty device since."""
        if self.run is None or not self.state.active:
            return
        self._cpu_restart = self.run.resumed_from or ""
        self.controls.show_device_warning("")
        log.warning("Stopping the run on %s to train on the CPU instead", self.run.device)
        self.stop()

    def set_keep_last(self, n: int) -> None:
        """Keep-last for the running run (the session applies it at its next save)."""
        session = self._worker.session if self._worker is not None else None
        if session is not None and self.state.active:
            session.set_keep_last(n)

    def show_history(self, history: RunHistory) -> None:
        """An earlier run opened in Runs: its loss history, preview grids and where it stopped."""
        self.plot.load_history(history.records)
        self.trajectory.clear()
        for step, image in history.previews:
            self.trajectory.add_image(step, image)
        position = RunPosition(history.step, history.total_steps, history.train_seconds,
                               history.cfg.optim.train_minutes * 60.0)
        self._show(position.where(), position)

    def is_running(self) -> bool:
        """True from Start until the GUI thread has handled the worker thread's end (not just until it ended)."""
        return self._thread is not None

    def shutdown(self, timeout_ms: int = 120_000) -> bool:
        """Stop (a checkpoint is written) and wait for the thread; for quitting. True when it ended. The last run's
        webhook POST, if one is still on its way, gets a moment (its threads are daemons: quitting would cut it)."""
        if self._control is not None:
            self._control.stop()
        ended = True
        if self._thread is not None and self._thread.is_running():
            ended = self._thread.wait(timeout_ms)
        if ended and self._notifier is not None:
            self._notifier.close(NOTIFIER_FLUSH_S)
        return ended

    def _launch(self, cfg: config_mod.RunConfig | None, resume_from: str | None, overrides: dict[str, Any] | None,
                continue_plot: bool) -> bool:
        """A session on a new worker thread. Refused while the last run's thread is still ending (its RunFinished
        is in, its end not yet): its end would be taken for the new run's, leaving the new thread untracked."""
        if self._thread is not None or not self._move("start"):
            return False
        control = self._control = RunControl()
        runs_dir, make = self._runs_dir(), self._session_factory

        def factory() -> Any:  # on the worker thread: torch is imported there, not here
            return make(cfg, runs_dir=runs_dir, resume_from=resume_from, control=control, overrides=overrides)

        if not continue_plot:
            self.plot.clear()
            self.trajectory.clear()
        self.run, self.step, self.last_progress, self._ended, self._last_loss = None, 0, None, None, None
        self.controls.show_device_warning("")
        self._notifier = self._notifier_factory() if self._notifier_factory else None
        self._worker = TrainWorker(factory, notifier=self._notifier)
        self._worker.progress.connect(self._on_progress)
        self._worker.event.connect(self._on_event)
        self._worker.notified.connect(self.notified)
        self._thread = WorkerThread(self._worker, self)
        self._thread.done.connect(self._on_thread_done)
        self.controls.set_message("Starting: loading PyTorch and the images…")
        self._thread.start()
        log.info("Training %s", f"resumed from {resume_from}" if resume_from else "started")
        return True

    # -- the one run state ---------------------------------------------------------------------------
    def _move(self, action: str) -> bool:
        new = next_state(self.state, action)
        if new is None:
            return False
        if new is not self.state:
            was_active = self.state.active
            self.state = new
            self._refresh_controls()
            self.status.show_message(self.label, 5000)
            if was_active and not new.active:
                self.liveModelChanged.emit(None)
            self.stateChanged.emit(new)
        return True

    def _refresh_controls(self) -> None:
        """Buttons from the state; Start and Continue also wait for the last run's thread to have ended."""
        ended = self._thread is None
        enabled = buttons_for(self.state, self.verdict.ok and ended, ended)
        reason = ""
        if not self.state.active and not self.verdict.ok and self.verdict.reasons:
            reason = self.verdict.reasons[0]
        self.controls.show_state(self.label, enabled, reason)
        self.controls.set_budget(self.verdict.cfg.optim.train_minutes, not self.state.active)

    @property
    def label(self) -> str:
        """The state's name as the toolbar shows it; a run that ended on purpose says whether it completed or was
        stopped."""
        if self.state is RunState.FINISHED and isinstance(self._ended, ev.RunFinished):
            return text.ended_label(self._ended.reason)
        return self.state.label

    def _position(self) -> RunPosition:
        """Where the live run stands: its step and, for a timed run, the training time used of its budget."""
        used = self.last_progress.train_seconds if self.last_progress is not None else 0.0
        budget = self.run.time_budget_s if self.run is not None else 0.0
        return RunPosition(self.step, self.total_steps, used, budget)

    def _show(self, words: str, position: RunPosition) -> None:
        self.controls.show_progress(position.fraction, words)

    # -- confirmations (worker → GUI thread) -----------------------------------------------------------
    def _on_progress(self, batch: ProgressBatch) -> None:
        self.plot.append_batch(batch)
        finite = batch.losses[np.isfinite(batch.losses)]
        if len(finite):
            self._last_loss = float(finite[-1])
        if batch.last is not None:
            p = batch.last
            self.step, self.total_steps, self.last_progress = p.step, p.total_steps, p
            if self.state is not RunState.PAUSED:
                position = self._position()
                self._show(text.running_text(position, p.loss, p.images_per_sec, p.eta_seconds), position)

    def _on_event(self, event: Any) -> None:
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def _on_status(self, event: ev.Status) -> None:
        self.controls.set_message(event.message, event.done, event.total)

    def _on_run_started(self, event: ev.RunStarted) -> None:
        self.run, self.step, self.total_steps = event, event.step, event.total_steps
        if event.resumed_from:
            self.plot.truncate_after(event.step)
        position = self._position()
        self._show(text.running_text(position), position)
        self.status.set_device(f"Device: {event.device_reason}")
        check = event.device_check
        self.controls.show_device_warning((check.warning or "") if check is not None and check.suggest_cpu else "")
        log.info("Run %s: %s images, %s parameters, %s", Path(event.run_dir).name, f"{event.num_images:,}",
                 f"{event.parameters:,}", event.device_reason)
        for warning in event.warnings:
            log.warning(warning)
        self._move("started")
        self.runStarted.emit(event)
        session = self._worker.session if self._worker is not None else None
        if session is not None and self.state.active:
            self.liveModelChanged.emit(LiveModel(event.run_dir, tuple(event.class_names), session.snapshot))

    def _on_checkpoint_saved(self, event: ev.CheckpointSaved) -> None:
        log.info("Checkpoint saved at step %s (%s)", f"{event.step:,}", Path(event.path).name)
        self.checkpointSaved.emit(event.step, self._last_loss)

    def _on_checkpoint_failed(self, event: ev.CheckpointFailed) -> None:
        # The message says what happens next (the run pauses until there is room, then retries the save).
        text = event.message if "intact" in event.message else event.message + "\n\nEarlier checkpoints are intact."
        self.dialogs.show_error("Checkpoint not saved", text)

    def _on_paused(self, event: ev.RunPaused) -> None:
        self.step = event.step
        self._move("paused")
        position = self._position()
        self._show(text.paused_text(position), position)

    def _on_resumed(self, event: ev.RunResumed) -> None:
        self.step = event.step
        self._move("resumed")
        position = self._position()  # until the next step's progress: never the stale "Paused at"
        self._show(text.resumed_text(position), position)

    def _on_finished(self, event: ev.RunFinished) -> None:
        self._ended, self.step = event, event.step
        self._move("finished")
        position = self._position()
        log.info("%s", text.ended_text(position, event.reason))
        self._show(text.ended_text(position, event.reason), position)

    def _on_failed(self, event: ev.RunFailed) -> None:
        self._ended = event
        self._move("failed")
        if event.detail:
            log.debug(event.detail)
        kept = f"\n\nThe last good checkpoint is kept: {event.checkpoint}" if event.checkpoint else ""
        self.controls.set_message("Run failed")
        self.dialogs.show_error("Training stopped", event.message + kept, event.detail)

    def _on_thread_done(self) -> None:
        ended = self._ended
        self._move("thread_ended")
        if ended is None:
            self.controls.set_message("Stopped before training began")
        self._thread = None
        self._worker = None
        self._control = None
        self.controls.show_device_warning("")
        self._refresh_controls()
        self.runEnded.emit(ended)
        self._restart_on_cpu()

    def _restart_on_cpu(self) -> None:
        """After "Train on the CPU instead": the settings get Device: cpu, and the run starts again with it."""
        restart, self._cpu_restart = self._cpu_restart, None
        if restart is None:
            return
        self.settingsEdited.emit("optim", {"device": "cpu"})
        if restart and not Path(restart).is_file():
            self.dialogs.show_error("Cannot train on the CPU", f"The checkpoint this run continued from is gone: {restart}"
                                    "\n\nContinue the run from the Runs panel, or start a new one.")
        elif restart:
            self.resume_from(restart)
        else:  # the settings the run started with (locked while it ran), on the CPU; the scan need not finish again
            cfg = self.verdict.cfg
            self._launch(dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, device="cpu")), None, None,
                         continue_plot=False)
