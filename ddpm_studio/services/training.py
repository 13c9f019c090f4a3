"""The training session: a generator of events that the CLI and the GUI drive alike.

``TrainingSession(cfg, ...).steps()`` sets up (data, model, optimizer, EMA), then yields a
``TrainProgress`` per optimisation step and occasional previews and checkpoints. Pause,
resume and stop arrive through a :class:`RunControl` from any thread and act between
steps; stop (or closing the generator) writes a checkpoint first. A non-finite loss or
gradient stops the run before the optimizer applies it, so the last checkpoint stays good.

Under torchrun (``distributed=True``) every process runs this same loop on its share of each
global batch, with the model in DistributedDataParallel; rank 0 alone writes the run folder
(see :mod:`ddpm_studio.services.distributed`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ddpm_studio.core.checkpoint import CheckpointError, load_checkpoint
from ddpm_studio.core.choices import TIMESTEP_BUCKETS
from ddpm_studio.core.device import DeviceChoice, choose_device
from ddpm_studio.core.ema import EMA
from ddpm_studio.core.objectives import bucket_losses, loss_weights, sample_timesteps, timestep_probs, training_losses
from ddpm_studio.core.power_ema import PowerEMA
from ddpm_studio.services import config as config_mod
from ddpm_studio.services.batch_fit import is_out_of_memory, oom_advice
from ddpm_studio.services.batches import BatchCursor, BatchStream, images_to_batch
from ddpm_studio.services.checkpointing import Checkpointer
from ddpm_studio.services.conditioning import ConditioningError, drop_labels, training_class_names
from ddpm_studio.services.control import RunControl
from ddpm_studio.services.distributed import Distributed, start
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
from ddpm_studio.services.lr_schedule import lr_at
from ddpm_studio.services.model_factory import build_model, build_schedule, parameter_count
from ddpm_studio.services.preview import Previewer
from ddpm_studio.services.run_budget import RunBudget, TrainingClock
from ddpm_studio.services.runs import RunFolder
from ddpm_studio.services.training_log import TrainingLog


def run_with_progress(message: str, work: Any, interval: float = 0.2) -> Iterator[Any]:
    """Run ``work(progress)`` in a helper thread, yielding a Status every ``interval`` seconds; return its result.

    Lets a generator report progress of a long blocking call (decoding a big folder) to the GUI.
    """
    import threading

    latest: list[tuple[int, int]] = [(0, 0)]
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = work(lambda done, total: latest.__setitem__(0, (done, total)))
        except BaseException as exc:  # re-raised in the generator's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="ddpm-load", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(interval)
        if thread.is_alive():
            yield Status(message, *latest[0])
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class TrainingError(RuntimeError):
    """The run cannot continue; the message is for the user."""


def make_ema(model: torch.nn.Module, optim: config_mod.OptimConfig) -> EMA | PowerEMA:
    """The run's average of the weights: a power-function EMA (with post-hoc snapshots) or a fixed decay."""
    if optim.ema == "power":
        return PowerEMA(model, optim.ema_length, max_snapshots=optim.ema_snapshots)
    return EMA(model, optim.ema_decay)


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
        self._healthy = True
        self.distributed = distributed
        self.dist = Distributed()
        self._stop_agreed = False  # under torchrun: the stop request as all ranks agreed on it in the last step

    # ------------------------------------------------------------------ setup
    def _load_resume(self) -> dict[str, Any]:
        assert self.resume_from is not None
        ckpt = load_checkpoint(self.resume_from)
        from ddpm_studio.services.checkpoint_check import check_checkpoint

        # Settings, step, classes and weight shapes are checked before any model is built from them: a crafted
        # file cannot make this process allocate a huge network, and a mismatch is named precisely.
        saved = check_checkpoint(ckpt, self.resume_from)
        cfg = config_mod.from_dict(self.overrides, base=saved) if self.overrides else saved
        for section in ("model", "diffusion"):
            if getattr(cfg, section) != getattr(saved, section):
                raise TrainingError(f"The [{section}] settings cannot change when resuming (the weights depend on them)")
        if (cfg.data.image_size, cfg.data.channels) != (saved.data.image_size, saved.data.channels):
            raise TrainingError("Image size and channels cannot change when resuming")
        if cfg.data.conditional != saved.data.conditional:
            raise TrainingError("Class-conditional cannot change when resuming (the model's class embedding depends on it)")
        if cfg.optim.ema != saved.optim.ema:
            raise TrainingError(f"The EMA kind cannot change when resuming (this run averages its weights with a "
                                f"{saved.optim.ema} EMA)")
        self.cfg = cfg
        return ckpt

    def _setup(self) -> Iterator[Any]:
        ckpt = self._load_resume() if self.resume_from else None
        cfg = config_mod.check(self.cfg)  # type: ignore[arg-type]
        self.cfg = cfg
        torch.manual_seed(cfg.optim.seed)
        self.device: DeviceChoice = choose_device(cfg.optim.device, cfg.optim.mixed_precision)
        if self.distributed:
            self.dist, dev = start(self.device.device)
            self.device = dataclasses.replace(self.device, device=dev)
        dev = self.device.device
        main = self.dist.is_main

        yield Status("Loading images")
        from ddpm_studio.services.data_source import load_images

        with self.dist.local_main_first():  # one process per node decodes (and caches) a folder, the others reuse it
            self.data = yield from run_with_progress(
                "Loading images", lambda progress: load_images(cfg.data, progress, cancel=lambda: self.control.stop_requested)
            )

        try:
            self.class_names = training_class_names(self.data, ckpt) if cfg.data.conditional else ()
        except ConditioningError as exc:
            raise TrainingError(str(exc)) from None
        if self.resume_from and self.resume_from.parent.name == "checkpoints":
            self.run = RunFolder(self.resume_from.parent.parent)  # continue in the run's own folder
        else:
            self.run = RunFolder(self.dist.broadcast(str(RunFolder.create(self.runs_dir, self.run_name).path) if main else None))
        if main:
            config_mod.save_config_file(cfg, self.run.config_path)
        self.checkpointer = Checkpointer(self.run, self.control, cfg.schedule.keep_last, status=self._status,
                                         pause_on_failure=not self.dist.enabled)

        self.model = build_model(cfg, num_classes=len(self.class_names)).to(dev)
        self.ema = make_ema(self.model, cfg.optim)
        self.schedule = build_schedule(cfg)
        diff, ac = cfg.diffusion, self.schedule.alphas_cumprod
        probs = timestep_probs(ac, diff.noise_levels, diff.lognormal_mean, diff.lognormal_std)
        weights = loss_weights(ac, diff.loss_weighting, diff.prediction, gamma=diff.min_snr_gamma, probs=probs)
        self.timestep_probs = None if probs is None else probs.float().to(dev)
        self.loss_weights = None if weights is None else weights.to(dev)
        fused = dev.type == "cuda"
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay,
                                           betas=(cfg.optim.adam_beta1, cfg.optim.adam_beta2),
                                           foreach=not fused, fused=fused or None)
        self.scaler = torch.amp.GradScaler(dev.type, enabled=self.device.autocast_dtype == torch.float16)
        self.generator = torch.Generator(device=dev).manual_seed(cfg.optim.seed + 1)
        self.budget = RunBudget(cfg.optim, TrainingClock())
        cursor = None
        if ckpt is not None:
            cursor = self._restore(ckpt)
        if self.dist.enabled:  # dropout masks: each rank its own stream (all else is drawn from self.generator)
            torch.manual_seed(self.dist.rank_seed(cfg.optim.seed, self.step))
        self.net = self.dist.wrap(self.model)  # the model itself, or in DDP (forward and backward go through it)
        self.batches = BatchStream(len(self.data), cfg.optim.batch_size, cfg.optim.seed, hflip=cfg.data.hflip,
                                   rank=self.dist.rank, world=self.dist.world, cursor=cursor)
        self.training_log = TrainingLog(self.run.path, self.run.metrics_path, tensorboard=cfg.schedule.tensorboard and main)
        if ckpt is not None and main:
            self.training_log.truncate_after(self.step)
        self.previewer = Previewer(cfg, self.schedule, self.device, self.data, self.run.previews_dir,
                                   num_classes=len(self.class_names)) if main else None
        self._status(state="running", pid=os.getpid(), step=self.step, total_steps=cfg.optim.total_steps)
        yield RunStarted(
            run_dir=str(self.run.path), step=self.step, total_steps=cfg.optim.total_steps, device=str(dev),
            device_reason=self.device.reason, parameters=parameter_count(self.model), dataset=self.data.description,
            num_images=len(self.data), effective_batch=cfg.optim.batch_size * self.dist.world * cfg.optim.grad_accum,
            resumed_from=str(self.resume_from) if self.resume_from else None,
            world_size=self.dist.world, batch_per_device=cfg.optim.batch_size, grad_accum=cfg.optim.grad_accum,
            time_budget_s=self.budget.budget_seconds,
        )

    def _status(self, **fields: Any) -> None:
        """Update run.json (rank 0 only: the other ranks of a torchrun job write nothing)."""
        if self.run is not None and self.dist.is_main:
            self.run.write_status(**fields)

    def _restore(self, ckpt: dict[str, Any]) -> BatchCursor:
        try:
            self.model.load_state_dict(ckpt["model"])
            self.ema.load_state_dict(ckpt["phema"] if isinstance(self.ema, PowerEMA) else ckpt["ema"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(f"Checkpoint does not match its model settings: {str(exc).splitlines()[0]}") from exc
        if "scaler" in ckpt and self.scaler.is_enabled():
            self.scaler.load_state_dict(ckpt["scaler"])
        self.step = int(ckpt["step"])
        self.budget.clock.used = float(ckpt.get("train_seconds", 0.0))  # a time budget continues where it stopped
        self.checkpointer.last_saved_step = self.step  # type: ignore[union-attr]
        rng = ckpt.get("rng", {})
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "generator" in rng and rng.get("generator_device") == self.device.device.type:
            self.generator.set_state(rng["generator"])
        if "cuda" in rng and torch.cuda.is_available() and not self.dist.enabled:  # ranks reseed theirs (see _setup)
            torch.cuda.set_rng_state_all(rng["cuda"])
        return BatchCursor.from_global_state(ckpt.get("data", {"epoch": 0, "position": 0}), self.dist.world)

    # ------------------------------------------------------------------ one step
    def _train_step(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
        """One optimisation step over ``grad_accum`` micro-batches; returns (loss, t-bucket sums, counts, lr).

        The pieces, each replaceable on its own: :meth:`_next_batch` (data), :meth:`_noise_for` (which t and ε a
        batch is trained at), :func:`training_losses` (the objective), :meth:`_apply_update` (the guarded update).
        """
        cfg, dev = self.cfg, self.device.device
        assert cfg is not None
        lr = lr_at(self.step, cfg.optim, self.budget.time_fraction())
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        total = torch.zeros((), device=dev)
        sums = counts = None
        accum = cfg.optim.grad_accum
        for micro in range(accum):
            x0, idx = self._next_batch()
            t, noise = self._noise_for(x0)
            labels = self._labels_for(idx)  # after the noise draws, so unconditional runs keep their random stream
            with self.dist.no_sync(self.net, last=micro == accum - 1):
                losses = training_losses(self.net, self.schedule, x0, t, noise, prediction=cfg.diffusion.prediction,
                                         loss_type=cfg.diffusion.loss, labels=labels, autocast=self.device.autocast)
                loss = losses.mean()  # the unweighted loss (ε or v) is what we report
                objective = loss if self.loss_weights is None else (losses * self.loss_weights[t]).mean()
                self.scaler.scale(objective / accum).backward()
            total += loss.detach() / accum
            s, c = bucket_losses(losses, t, self.schedule.num_timesteps)
            sums, counts = (s, c) if sums is None else (sums + s, counts + c)
        if self.dist.enabled:
            total, sums, counts = self._reduce_across_ranks(total, sums, counts)
        self._apply_update(total)
        self.step += 1
        return total, sums, counts, lr  # type: ignore[return-value]

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's next micro-batch: images in [-1, 1] on the device, and their indices in the data set."""
        idx, flip = self.batches.next()
        return images_to_batch(self.data.images, idx, flip, self.device.device), idx

    def _labels_for(self, idx: torch.Tensor) -> torch.Tensor | None:
        """A conditional run's class labels for images ``idx`` (None: unconditional), dropped to the null class
        with ``label_dropout`` and drawn for the global batch, then shared out like the noise."""
        cfg, world = self.cfg, self.dist.world
        assert cfg is not None
        if not self.class_names:
            return None
        labels = self.data.labels[idx].to(self.device.device)
        if world > 1:
            labels = labels.repeat_interleave(world)  # global-batch sized; this rank's rows are its own labels
        return self.dist.share(drop_labels(labels, cfg.optim.label_dropout, len(self.class_names), self.generator))

    def _noise_for(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The timesteps t (uniform on {0..T-1}, or the run's noise-level distribution) and noise ε for a micro-batch,
        from the run's own generator (resume is exact).

        Random numbers are drawn for the global batch (world x batch) and each rank keeps its rows: see
        distributed.py, so an N-process run trains like one process with N times the batch.
        """
        dev, share = self.device.device, self.dist.share
        n = x0.shape[0] * self.dist.world
        t = share(sample_timesteps(n, self.schedule.num_timesteps, self.generator, dev, self.timestep_probs))
        noise = share(torch.randn((n, *x0.shape[1:]), generator=self.generator, device=dev))
        return t, noise

    def _apply_update(self, total: torch.Tensor) -> None:
        """Clip, then apply the gradients to the weights and the EMA, unless the loss or gradient is not finite.

        One host sync: a non-finite step is refused before the optimizer sees it, so the weights (and the last
        checkpoint) stay good. With fp16 loss scaling the scaler skips overflowing steps itself.
        """
        cfg, dev = self.cfg, self.device.device
        assert cfg is not None
        self.scaler.unscale_(self.optimizer)
        if cfg.optim.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
        else:
            norm = torch.zeros((), device=dev)
        if not self.scaler.is_enabled() and not bool(torch.isfinite(total) & torch.isfinite(norm)):
            what, value = ("loss", total) if not bool(torch.isfinite(total)) else ("gradient", norm)
            raise TrainingError(
                f"The {what} became {'NaN' if torch.isnan(value) else 'infinite'} at step {self.step + 1}: "
                "training stopped and the last checkpoint is kept. Resume from it with a lower learning rate."
            )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update(self.model)  # on every rank alike (the weights are the same on all)

    def _reduce_across_ranks(self, total: torch.Tensor, sums: torch.Tensor,
                             counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One all-reduce per step: the mean loss and quartile sums over all ranks, and whether any rank was asked to stop.

        So all ranks log the same loss, refuse a non-finite one together, and stop after the same step.
        """
        stop = torch.ones(1, device=total.device) if self.control.stop_requested else torch.zeros(1, device=total.device)
        packed = self.dist.sum(torch.cat([total.view(1).float(), stop, sums.float(), counts.float()]))
        self._stop_agreed = bool(packed[1] > 0)
        b = TIMESTEP_BUCKETS
        return packed[0] / self.dist.world, packed[2 : 2 + b], packed[2 + b : 2 + 2 * b]

    def _stop_requested(self) -> bool:
        """Under torchrun every rank must stop after the same step: use the request agreed in the last all-reduce."""
        return self._stop_agreed if self.dist.enabled else self.control.stop_requested

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint_payload(self, recent_loss: float | None) -> dict[str, Any]:
        assert self.cfg is not None
        rng: dict[str, Any] = {"torch": torch.get_rng_state(), "generator": self.generator.get_state(),
                               "generator_device": self.device.device.type}
        if torch.cuda.is_available():  # under torchrun only this rank's GPU: get_rng_state_all would touch every GPU
            rng["cuda"] = [torch.cuda.get_rng_state()] if self.dist.enabled else torch.cuda.get_rng_state_all()
        payload = {
            "config": config_mod.to_dict(self.cfg), "model": self.model.state_dict(), "ema": self._ema_payload(),
            "optimizer": self.optimizer.state_dict(), "step": self.step, "rng": rng,
            "train_seconds": self.budget.clock.seconds,
            "data": self.batches.cursor.global_state(self.dist.world), "created": time.time(),
            "metrics": {"loss": recent_loss}, "dataset": self.data.description,
            "class_names": list(self.class_names),  # empty = unconditional; sampling sizes the class embedding from it
        }
        if self.scaler.is_enabled():
            payload["scaler"] = self.scaler.state_dict()
        if isinstance(self.ema, PowerEMA):
            payload["phema"] = self.ema.state_dict()
        return payload

    def _ema_payload(self) -> dict[str, Any]:
        """The checkpoint's ``ema`` entry: the weights samples use by default (a power EMA's, rebuilt at its length)."""
        if isinstance(self.ema, PowerEMA):
            return {"model": self.ema.model.state_dict(), "num_updates": self.ema.num_updates, "length": self.ema.length}
        return self.ema.state_dict()

    def save_checkpoint(self, recent_loss: float | None = None) -> CheckpointSaved | CheckpointFailed:
        """Write the current state (see :class:`Checkpointer` for what happens when that fails)."""
        return self.checkpointer.save(self.step, self._checkpoint_payload(recent_loss))

    def _save(self, recent_loss: float | None = None) -> Iterator[Any]:
        """Save, pausing for a retry on failure; returns the last CheckpointSaved / CheckpointFailed."""
        return (yield from self.checkpointer.save_retrying(self.step, lambda: self._checkpoint_payload(recent_loss)))

    # ------------------------------------------------------------------ the loop
    def steps(self) -> Iterator[Any]:
        """Yield events until the run completes, is stopped, or fails (then the exception propagates)."""
        finished = False
        try:
            yield from self._setup()
            yield from self._loop()
            finished = True
        except GeneratorExit:
            raise
        except BaseException as exc:
            self._healthy = False
            self._status(state="failed", step=self.step)
            if isinstance(exc, Exception) and is_out_of_memory(exc) and self.cfg is not None:
                o = self.cfg.optim
                raise TrainingError(
                    f"Out of memory at step {self.step + 1} with {o.batch_size} images per micro-batch: "
                    f"{oom_advice(o.batch_size, o.grad_accum)}. The last checkpoint is kept; resume from it with those "
                    f"settings ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                ) from exc
            raise
        finally:
            if not finished and self.run is not None and self._healthy is False:
                pass  # never checkpoint a failed state: the last good checkpoint stays the newest
            elif (not finished and self.checkpointer is not None and self.step > self.checkpointer.last_saved_step
                  and hasattr(self, "batches") and self.dist.is_main):
                # Closed from outside (GeneratorExit) without a stop request: still keep the work.
                self.save_checkpoint()
                self._status(state="stopped", step=self.step)
            if hasattr(self, "training_log"):
                self.training_log.close()
            self.dist.close()

    def _loop(self) -> Iterator[Any]:
        cfg = self.cfg
        assert cfg is not None and self.run is not None
        sc, total_steps = cfg.schedule, cfg.optim.total_steps
        images_per_step = cfg.optim.batch_size * self.dist.world * cfg.optim.grad_accum
        main = self.dist.is_main  # only rank 0 logs, previews and checkpoints
        start = time.perf_counter()
        last_preview_t = last_ckpt_t = start
        step_time = None
        last_preview_step = -1
        budget = self.budget
        budget.clock.start()  # the time budget counts running time from here: steps, previews, checkpoints
        if main and self.step == 0 and sc.preview_every:
            yield self.previewer.preview(self.ema.model, self.model, self.step)
            last_preview_step = self.step
        while not budget.done(self.step):
            if self.control.paused and not self.control.stop_requested:
                budget.clock.stop()
                self._status(state="paused", step=self.step)
                yield RunPaused(self.step)
                self.control.wait_resumed()
                budget.clock.start()
                self._status(state="running", step=self.step)
                if not self.control.stop_requested:
                    yield RunResumed(self.step)
            if self._stop_requested():
                break
            t0 = time.perf_counter()
            loss_t, sums, counts, lr = self._train_step()
            loss = float(loss_t)
            dt = time.perf_counter() - t0
            step_time = dt if step_time is None else 0.9 * step_time + 0.1 * dt
            self.training_log.add_step(loss, sums, counts)
            elapsed = time.perf_counter() - start
            yield TrainProgress(self.step, total_steps, loss, lr, images_per_step / step_time,
                                budget.remaining_seconds(self.step, step_time), elapsed, budget.clock.seconds)

            if main and (self.step % sc.log_every == 0 or budget.done(self.step)):
                yield MetricsLogged(self.training_log.interval_record(self.step, lr, images_per_step / step_time, elapsed))

            now = time.perf_counter()
            if main and ((sc.preview_every and self.step % sc.preview_every == 0) or (
                sc.preview_minutes and now - last_preview_t >= sc.preview_minutes * 60
            )):
                preview = self.previewer.preview(self.ema.model, self.model, self.step)
                last_preview_t = time.perf_counter()
                last_preview_step = self.step
                if preview.val_loss is not None:
                    yield MetricsLogged(self.training_log.validation_record(self.step, preview.val_loss))
                self.training_log.preview_image(preview.image, self.step)
                yield preview
            if main and ((sc.checkpoint_every and self.step % sc.checkpoint_every == 0) or (
                sc.checkpoint_minutes and now - last_ckpt_t >= sc.checkpoint_minutes * 60
            )):
                yield from self._save(loss)
                last_ckpt_t = time.perf_counter()

        if (main and budget.timed and budget.done(self.step) and self.step != last_preview_step
                and (sc.preview_every or sc.preview_minutes)):
            yield self.previewer.preview(self.ema.model, self.model, self.step)  # a timed run ends on a preview
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
