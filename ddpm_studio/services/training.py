"""The training session: a generator of events that the CLI and the GUI drive alike.

``TrainingSession(cfg, ...).steps()`` sets up (data, model, optimizer, EMA), then yields a
``TrainProgress`` per optimisation step and occasional previews and checkpoints. Pause,
resume and stop arrive through a :class:`RunControl` from any thread and act between
steps, as do "sample now" and "checkpoint now" (served at once while paused, the run staying
paused); stop (or closing the generator) writes a checkpoint first. Previews are kept to a
share of the run's time (see :mod:`loop_timing`), and every checkpoint is scored by its EMA
weights' validation loss, which picks the run's best checkpoint. A non-finite loss or
gradient stops the run before the optimizer applies it, so the last checkpoint stays good.
On a single CUDA GPU the host reads the steps' results in batches instead of after every
step, and a non-finite step is refused on the device (see :mod:`ddpm_studio.services.step_results`).

Under torchrun (``distributed=True``) every process runs this same loop on its share of each
global batch, with the model in DistributedDataParallel; rank 0 alone writes the run folder
(see :mod:`ddpm_studio.services.distributed`).

This module is the run: the order of its setup, the loop and its cadences, requests, pause. What setup builds (the
device checked, the run folder claimed, the images, the model with its EMA and optimizer) is :mod:`training_setup`;
what one optimisation step does (batch, noise levels, weighted objective, guarded update) and how its failures read
to the user is :mod:`training_step`; what a checkpoint keeps and how a resume gets it back is :mod:`training_state`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ddpm_studio.services import config as config_mod
from ddpm_studio.services import config_files
from ddpm_studio.services.checkpointing import Checkpointer
from ddpm_studio.services.control import CHECKPOINT, PREVIEW, RunControl
from ddpm_studio.services.distributed import Distributed
from ddpm_studio.services.events import (
    CheckpointFailed,
    CheckpointSaved,
    MetricsLogged,
    RunFinished,
    RunPaused,
    RunResumed,
    RunStarted,
    Status,
    TrainProgress,
)
from ddpm_studio.services.loop_timing import ActiveClock, PreviewCadence, Throughput
from ddpm_studio.services.lr_schedule import lr_at
from ddpm_studio.services.model_factory import parameter_count
from ddpm_studio.services.preview import Previewer
from ddpm_studio.services.run_budget import RunBudget, TrainingClock
from ddpm_studio.services.run_lock import RunLock
from ddpm_studio.services.runs import RunFolder, default_run_name
from ddpm_studio.services.step_results import PendingSteps, non_finite_message
from ddpm_studio.services.training_log import TrainingLog
from ddpm_studio.services.training_setup import build_trainer, claim_run_folder, load_training_data, ready_device, training_device
from ddpm_studio.services.training_state import checkpoint_payload, load_resume_point
from ddpm_studio.services.training_step import TrainingError, TrainingStep, step_policy, user_failure

if TYPE_CHECKING:
    from ddpm_studio.services.sampling import LoadedModel

log = logging.getLogger(__name__)

#: While training, run.json's step is brought up to date this often (seconds), so the Runs list shows it.
STATUS_EVERY_SECONDS = 10.0


class TrainingSession:
    """One training run, new or resumed. Construct cheaply; all work happens in :meth:`steps`."""

    def __init__(
        self,
        cfg: config_mod.RunConfig | None = None,
        *,
        runs_dir: str | Path | None = None,
        run_name: str | None = None,
        resume_from: str | Path | None = None,
        control: RunControl | None = None,
        overrides: dict[str, dict[str, Any]] | None = None,
        distributed: bool = False,
    ) -> None:
        """``distributed``: join torchrun's process group when this process was launched by it (the CLI's train)."""
        if cfg is None and resume_from is None:
            raise ValueError("Give a config for a new run or a checkpoint to resume")
        self.cfg = cfg
        self.runs_dir, self.run_name = runs_dir, run_name
        self.resume_from = Path(resume_from) if resume_from else None
        self.overrides = overrides or {}
        self.control = control or RunControl()
        self.run: RunFolder | None = None
        self.step = 0
        self.checkpointer: Checkpointer | None = None  # once the run folder exists
        self.run_lock: RunLock | None = None  # rank 0's lock on the run folder while training it (services/run_lock.py)
        self._healthy = True
        self.distributed = distributed
        self.dist = Distributed()
        self.clock = time.perf_counter  # the loop's time source (tests give it a fake one)
        self._pending = PendingSteps(deferred=False, clock=self._now)  # steps run but not yet read by the host (see _setup)
        self.training_step: TrainingStep | None = None  # the step's machinery, once the model exists (see _setup)
        self._last_loss: float | None = None
        self._last_lr = 0.0

    # ------------------------------------------------------------------ setup
    def _setup(self) -> Iterator[Any]:
        resume = load_resume_point(self.resume_from, self.overrides) if self.resume_from else None
        if resume is not None:
            self.cfg, self.resume_from = resume.cfg, resume.path
        ckpt = resume.checkpoint if resume is not None else None
        restart = resume.restart if resume is not None else None  # a run folder with no checkpoint: start it again
        cfg = config_mod.check(self.cfg)  # type: ignore[arg-type]
        self.cfg = cfg
        torch.manual_seed(cfg.optim.seed)
        self.device, self.dist = training_device(cfg.optim, self.distributed)
        dev = self.device.device
        main = self.dist.is_main
        resumed_run = resume.run_dir if resume is not None else None  # continue in the run's own folder
        if resumed_run is not None:
            self.run_lock = claim_run_folder(resumed_run, self.dist)  # locked before the (maybe long) device check and image load
        ready = yield from ready_device(dev, cfg.optim)
        self.data, self.class_names = yield from load_training_data(cfg.data, self.dist, self.control, ckpt)
        if restart is not None:
            self.run = restart  # a run with no checkpoint starts again in its own folder
            message = f"Run {self.run.name} has no checkpoint yet: starting it again from step 0 with its saved settings"
            log.info(message)
            yield Status(message)
        elif resumed_run is not None:
            self.run = RunFolder(resumed_run)
        else:
            name = self.run_name or default_run_name(cfg.data.source, cfg.data.data_path)
            self.run = RunFolder(self.dist.broadcast(str(RunFolder.create(self.runs_dir, name).path) if main else None))
            self.run_lock = claim_run_folder(self.run.path, self.dist)
        if main:
            config_files.save_config_file(cfg, self.run.config_path)
        self.checkpointer = Checkpointer(self.run, self.control, cfg.schedule.keep_last, status=self._status,
                                         pause_on_failure=not self.dist.enabled)

        self._build_trainer(cfg, ready.attention, ckpt)
        self.training_log = TrainingLog(self.run.path, self.run.metrics_path, tensorboard=cfg.schedule.tensorboard and main,
                                        wandb=cfg.schedule.wandb and main, config=config_mod.to_dict(cfg))
        if (ckpt is not None or restart is not None) and main:
            self.training_log.truncate_after(self.step)  # a re-trained stretch is not logged twice
        self.previewer = Previewer(cfg, self.schedule, self.device, self.data, self.run.previews_dir,
                                   num_classes=len(self.class_names)) if main else None
        self._status(state="running", pid=os.getpid(), step=self.step, total_steps=cfg.optim.total_steps)
        yield RunStarted(
            run_dir=str(self.run.path), step=self.step, total_steps=cfg.optim.total_steps, device=str(dev),
            device_reason=self.device.reason, parameters=parameter_count(self.model), dataset=self.data.description,
            num_images=len(self.data), effective_batch=cfg.optim.batch_size * self.dist.world * cfg.optim.grad_accum,
            resumed_from=str(self.resume_from) if ckpt is not None else None,
            world_size=self.dist.world, batch_per_device=cfg.optim.batch_size, grad_accum=cfg.optim.grad_accum,
            class_names=tuple(self.class_names), precision=self.device.precision_name,
            warnings=ready.warnings, device_check=ready.check, time_budget_s=self.budget.budget_seconds,
        )
        if ready.mps_note:
            log.info(ready.mps_note)

    def _build_trainer(self, cfg: config_mod.RunConfig, attention: str, ckpt: dict[str, Any] | None) -> None:
        """The step's machinery (see :func:`build_trainer`), how the loop reads its results, and the time budget:
        all continuing from ``ckpt`` when resuming."""
        deferred, fused = step_policy(self.device.device, self.dist.enabled)
        self._pending = PendingSteps(deferred=deferred, clock=self._now)
        self.budget = RunBudget(cfg.optim, TrainingClock())
        self.training_step, restored = build_trainer(
            cfg, self.device, self.dist, self.control, data=self.data, num_classes=len(self.class_names),
            attention=attention, fused=fused, refuse_on_device=deferred, ckpt=ckpt)
        trainer = self.training_step
        self.model, self.ema, self.schedule = trainer.model, trainer.ema, trainer.schedule
        self.optimizer, self.scaler = trainer.optimizer, trainer.scaler
        if restored is not None:
            self.step = restored.step
            self.budget.clock.used = restored.train_seconds  # a time budget continues where it stopped
            self.checkpointer.last_saved_step = self.step  # type: ignore[union-attr]

    def _status(self, **fields: Any) -> None:
        """Update run.json (rank 0 only: the other ranks of a torchrun job write nothing)."""
        if self.run is not None and self.dist.is_main:
            if "step" in fields and getattr(self, "budget", None) is not None:
                fields.setdefault("train_seconds", round(self.budget.clock.seconds, 3))  # a reopened timed run's bar
            self.run.write_status(**fields)

    # ------------------------------------------------------------------ one step
    def _train_step(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
        """One optimisation step (see :class:`TrainingStep`) at the learning rate the run's schedule gives it now;
        returns (loss, t-bucket sums, counts, lr)."""
        assert self.cfg is not None and self.training_step is not None
        lr = lr_at(self.step, self.cfg.optim, self.budget.time_fraction())
        total, sums, counts = self.training_step.run(self.step, lr)
        self.step += 1
        return total, sums, counts, lr

    def _stop_requested(self) -> bool:
        """Under torchrun every rank must stop after the same step: use the request agreed in the last all-reduce."""
        return self.training_step.stop_agreed if self.dist.enabled else self.control.stop_requested  # type: ignore[union-attr]

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint_payload(self, recent_loss: float | None, val_loss: float | None = None) -> dict[str, Any]:
        return checkpoint_payload(self.cfg, self.training_step, step=self.step,  # type: ignore[arg-type]
                                  train_seconds=self.budget.clock.seconds, class_names=self.class_names,
                                  recent_loss=recent_loss, val_loss=val_loss)

    def save_checkpoint(self, recent_loss: float | None = None) -> CheckpointSaved | CheckpointFailed:
        """Write the current state (see :class:`Checkpointer` for what happens when that fails)."""
        val_loss = self._checkpoint_val_loss()
        return self.checkpointer.save(self.step, self._checkpoint_payload(recent_loss, val_loss), val_loss=val_loss)

    def _save(self, recent_loss: float | None = None) -> Iterator[Any]:
        """Save, pausing for a retry on failure; returns the last CheckpointSaved / CheckpointFailed."""
        val_loss = self._checkpoint_val_loss()
        event = yield from self.checkpointer.save_retrying(
            self.step, lambda: self._checkpoint_payload(recent_loss, val_loss), val_loss=val_loss)
        if hasattr(self, "_active"):
            self._last_ckpt_at = self._active()
        return event

    def _checkpoint_val_loss(self) -> float | None:
        """The validation loss of the EMA weights (those samples come from) on the preview's fixed held-out batch:
        one forward pass, so every checkpoint is scored, whatever the preview cadence; it picks the best one."""
        if getattr(self, "previewer", None) is None:
            return None
        t0 = self.clock()
        value = self.previewer.validation_loss(self.ema.model)  # type: ignore[union-attr]
        if hasattr(self, "_cadence"):
            self._cadence.spent(self.clock() - t0, self._active(), preview=False)
        return value if math.isfinite(value) else None

    # ------------------------------------------------------------------ requests from other threads
    def snapshot(self) -> Future[LoadedModel]:
        """A Future of a sampling-ready copy of the EMA model (its own weights: training goes on).

        Thread-safe. The copy is made on the thread running :meth:`steps`, between two steps or while paused,
        so it never races an update; once the run has ended it is made on the calling thread.
        """
        return self.control.submit(self._ema_copy)

    def set_keep_last(self, n: int) -> None:
        """Keep only the newest ``n`` checkpoints from the next save on (thread-safe; recorded in later checkpoints)."""
        if n < 1:
            raise ValueError(f"Keep last N checkpoints must be at least 1 (got {n})")
        self.control.submit(lambda: self._apply_keep_last(n))

    def _ema_copy(self) -> LoadedModel:
        from ddpm_studio.services.sampling import training_snapshot  # when asked: a run that never samples loads no sampler

        if getattr(self, "ema", None) is None or self.training_step is None or self.run is None or self.cfg is None:
            raise RuntimeError("The run has no model yet (it is still loading images)")
        return training_snapshot(self.ema.model, self.training_step.early, self.step, self.cfg, self.schedule,
                                 self.run.path, tuple(self.class_names))

    def _apply_keep_last(self, n: int) -> None:
        if self.cfg is not None:
            self.cfg = dataclasses.replace(self.cfg, schedule=dataclasses.replace(self.cfg.schedule, keep_last=n))
        if self.checkpointer is not None:
            self.checkpointer.keep_last = n

    # ------------------------------------------------------------------ the loop
    def steps(self) -> Iterator[Any]:
        """Yield events until the run completes, is stopped, or fails (then the exception propagates)."""
        finished = False
        try:
            yield from self._setup()
            yield from self.control.serving(self._loop())  # snapshot() and set_keep_last() act between steps
            finished = True
        except GeneratorExit:
            raise
        except BaseException as exc:
            self._healthy = False
            self._status(state="failed", step=self.step)
            error = user_failure(exc, self.cfg.optim, self.step + 1) if self.cfg is not None else None
            if error is not None:
                raise error from exc
            raise
        finally:
            if not finished and self.run is not None and self._healthy is False:
                pass  # never checkpoint a failed state: the last good checkpoint stays the newest
            elif (not finished and self.checkpointer is not None and self.step > self.checkpointer.last_saved_step
                  and self.dist.is_main and self.training_step is not None and self.training_step.first_refused() is None):
                # Closed from outside (GeneratorExit) without a stop request: still keep the work.
                self.save_checkpoint()
                self._status(state="stopped", step=self.step)
            if hasattr(self, "training_log"):
                self.training_log.close()
            if self.run_lock is not None:  # after the last write to the run folder
                self.run_lock.release()
            self.dist.close()
            self.control.close()  # requests still pending are served now; later ones on their caller's thread

    def _now(self) -> float:
        return self.clock()

    def _read_pending(self) -> Iterator[Any]:
        """Read the steps run since the last read (one host sync) and yield a TrainProgress for each.

        On the CPU that is every step; on a GPU a batch of steps, whose wall time is shared among them.
        Raises TrainingError at a step the device refused (see :class:`RefusedSteps`), after reporting the
        good steps before it, as the step-by-step check does.
        """
        cfg = self.cfg
        assert cfg is not None
        results, seconds = self._pending.read()
        refused = self.training_step.first_refused() if results else None  # type: ignore[union-attr]
        total_steps = cfg.optim.total_steps
        speed = self._speed
        for result in results:
            if refused is not None and result.step >= refused[0]:
                raise TrainingError(non_finite_message(*refused))
            speed.add(seconds / len(results))
            self.training_log.add_step(result.loss, result.bucket_sums, result.bucket_counts)
            self._last_loss, self._last_lr = result.loss, result.lr
            now = self._active()
            eta = speed.eta(total_steps - result.step, speed.side_work_share(now - self._warm_up_done))
            if self.budget.timed:  # the time budget may end the run first
                eta = min(eta, max(0.0, self.budget.budget_seconds - self.budget.clock.seconds))
            yield TrainProgress(result.step, total_steps, result.loss, result.lr, speed.images_per_sec, eta, now,
                                self.budget.clock.seconds)

    def _loop(self) -> Iterator[Any]:
        """Train to ``total_steps`` or the time budget, serving pause / resume / stop and the sample-now / checkpoint-now requests
        between steps, with previews and checkpoints on their cadence (see :mod:`loop_timing`)."""
        cfg = self.cfg
        assert cfg is not None and self.run is not None
        sc = cfg.schedule
        images_per_step = cfg.optim.batch_size * self.dist.world * cfg.optim.grad_accum
        main = self.dist.is_main  # only rank 0 logs, previews and checkpoints
        self._active = clock = ActiveClock(self.clock)
        self._cadence = PreviewCadence(sc.preview_every, sc.preview_minutes * 60, sc.preview_budget)
        self._speed = speed = Throughput(images_per_step)
        self._last_ckpt_at = last_status_at = clock()
        self._last_preview_step = -1
        budget = self.budget
        budget.clock.start()  # the time budget counts running time from here: steps, previews, checkpoints
        if main and self.step == 0 and sc.preview_every:
            yield from self._preview()
        self._warm_up_done = clock()  # the step-0 preview is a one-off, not part of the run's steady side work
        while not budget.done(self.step):
            if self.control.has_requests:
                yield from self._read_pending()  # a preview or checkpoint shows the steps run so far
                yield from self._serve_requests(self._last_loss)
            if self.control.paused and not self.control.stop_requested:
                yield from self._read_pending()
                yield from self._while_paused(self._last_loss)
            if self._stop_requested():
                break
            self._pending.begin_step()
            self._pending.add(self.step + 1, *self._train_step())
            now = clock()
            log_due = main and (self.step % sc.log_every == 0 or budget.done(self.step))
            status_due = main and now - last_status_at >= STATUS_EVERY_SECONDS  # the Runs list shows the real step
            preview_due = main and self._cadence.due(self.step, now)
            checkpoint_due = main and bool((sc.checkpoint_every and self.step % sc.checkpoint_every == 0) or (
                sc.checkpoint_minutes and now - self._last_ckpt_at >= sc.checkpoint_minutes * 60))
            if not (log_due or status_due or preview_due or checkpoint_due or self._pending.due()
                    or budget.done(self.step) or self.control.paused or self.control.stop_requested
                    or self.control.has_requests):
                continue  # on a GPU: queue the next step while this one runs; a later read reports both
            yield from self._read_pending()
            loss, lr = self._last_loss, self._last_lr
            if log_due:
                yield MetricsLogged(self.training_log.interval_record(self.step, lr, speed.images_per_sec, clock()))
            if status_due:
                self._status(step=self.step)
                last_status_at = now
            if preview_due:
                yield from self._preview()
            if checkpoint_due:
                yield from self._save(loss)

        yield from self._read_pending()  # stopped between reads: report (and check) the last steps before saving
        if (main and budget.timed and budget.done(self.step) and self.step != self._last_preview_step
                and (sc.preview_every or sc.preview_minutes)):
            yield from self._preview()  # a timed run ends on a preview
        checkpoint = None
        if main and self.step > self.checkpointer.last_saved_step:  # type: ignore[union-attr]
            event = yield from self._save()
            checkpoint = event.path if isinstance(event, CheckpointSaved) else None
        elif main:
            latest = self.run.latest_checkpoint()
            checkpoint = str(latest.path) if latest else None
        budget.clock.stop()
        reason = budget.reason(self.step)
        self._status(state=reason, step=self.step)
        self.dist.barrier()  # every rank finishes after rank 0's last checkpoint is on disk
        yield RunFinished(self.step, reason, checkpoint)

    def _preview(self) -> Iterator[Any]:
        """A preview of the EMA model with the validation loss; its cost is charged to the preview budget."""
        t0 = self.clock()
        preview = self.previewer.preview(self.ema.model, self.model, self.step)  # type: ignore[union-attr]
        self.training_log.preview_image(preview.image, self.step)
        self._cadence.spent(self.clock() - t0, self._active())
        self._last_preview_step = self.step
        if preview.val_loss is not None:
            yield MetricsLogged(self.training_log.validation_record(self.step, preview.val_loss))
        yield preview

    def _serve_requests(self, loss: float | None) -> Iterator[Any]:
        """Serve "sample now" / "checkpoint now" (from the GUI's buttons or the CLI's signals) between steps."""
        requests = self.control.take_requests()
        if not self.dist.is_main:  # under torchrun rank 0 alone previews and saves
            return
        if PREVIEW in requests:
            log.info("Preview at step %d, as asked", self.step)
            yield from self._preview()
        if CHECKPOINT in requests:
            log.info("Checkpoint at step %d, as asked", self.step)
            yield from self._save(loss)

    def _while_paused(self, loss: float | None) -> Iterator[Any]:
        """Wait for resume or stop; requests made meanwhile are served at once, and the run stays paused."""
        self._status(state="paused", step=self.step)
        log.info("Paused at step %d", self.step)
        self._active.pause_started()
        self.budget.clock.stop()  # a time budget counts running time only
        yield RunPaused(self.step)
        yield from self.control.serve_while_paused(lambda: self._serve_requests(loss))
        self._active.pause_ended()
        self.budget.clock.start()
        self._status(state="running", step=self.step)
        if not self.control.stop_requested:
            log.info("Resumed at step %d", self.step)
            self._cadence.resumed(self._active())
            yield RunResumed(self.step)

