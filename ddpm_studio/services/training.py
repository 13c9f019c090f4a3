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
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import time
from collections.abc import Generator, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ddpm_studio.core.accelerator_check import check_device, is_accelerator
from ddpm_studio.core.checkpoint import CheckpointError, load_checkpoint
from ddpm_studio.core.choices import TIMESTEP_BUCKETS
from ddpm_studio.core.device import DeviceChoice, attention_impl, choose_device, limit_mps_memory
from ddpm_studio.core.ema import EMA
from ddpm_studio.core.objectives import bucket_losses, loss_weights, sample_timesteps, timestep_probs, training_losses
from ddpm_studio.core.power_ema import PowerEMA
from ddpm_studio.core.unet_blocks import use_attention
from ddpm_studio.services import config as config_mod
from ddpm_studio.services.acceleration import compile_failure, resident_images
from ddpm_studio.services.batch_fit import is_out_of_memory, oom_advice
from ddpm_studio.services.batches import BatchCursor, BatchStream, images_to_batch
from ddpm_studio.services.checkpointing import Checkpointer
from ddpm_studio.services.conditioning import ConditioningError, drop_labels, training_class_names
from ddpm_studio.services.control import CHECKPOINT, PREVIEW, RunControl
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
from ddpm_studio.services.loop_timing import ActiveClock, PreviewCadence, Throughput
from ddpm_studio.services.lr_schedule import lr_at
from ddpm_studio.services.model_factory import build_model, build_schedule, parameter_count
from ddpm_studio.services.preview import Previewer
from ddpm_studio.services.run_budget import RunBudget, TrainingClock
from ddpm_studio.services.run_lock import RunLock, claim_for_training
from ddpm_studio.services.runs import RunFolder, default_run_name, plan_continue
from ddpm_studio.services.step_results import PendingSteps, RefusedSteps, non_finite_message
from ddpm_studio.services.training_log import TrainingLog

if TYPE_CHECKING:
    from ddpm_studio.services.sampling import LoadedModel

log = logging.getLogger(__name__)

#: While training, run.json's step is brought up to date this often (seconds), so the Runs list shows it.
STATUS_EVERY_SECONDS = 10.0
#: The ETA adds the share of time previews and checkpoints take once the run has gone on this long (seconds).
SIDE_WORK_MIN_SECONDS = 30.0


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


def step_policy(device: torch.device, distributed: bool) -> tuple[bool, bool]:
    """(read results in batches, fused AdamW) for a run on ``device``.

    On one CUDA GPU the host reads the steps' results every few steps and a bad step is refused on the device,
    through the fused optimizer's ``found_inf``; a CPU reads every step for free (and keeps its foreach AdamW:
    results unchanged), and torchrun's ranks already agree on stopping every step.
    """
    deferred = device.type == "cuda" and not distributed
    return deferred, device.type == "cuda" or deferred


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
        self._stop_agreed = False  # under torchrun: the stop request as all ranks agreed on it in the last step
        self.clock = time.perf_counter  # the loop's time source (tests give it a fake one)
        self._pending = PendingSteps(deferred=False, clock=self._now)  # steps run but not yet read by the host (see _setup)
        self._refused: RefusedSteps | None = None  # on a GPU: the device-side record of a refused step
        self._resident_images: torch.Tensor | bool | None = None  # the data set on the GPU (False: it does not fit)
        self._last_loss: float | None = None
        self._last_lr = 0.0
        self._restart: RunFolder | None = None  # resume_from is a run folder with no checkpoint: start it again

    # ------------------------------------------------------------------ setup
    def _load_resume(self) -> dict[str, Any] | None:
        """The checkpoint to resume from, checked; None when a run folder without one starts again from step 0."""
        assert self.resume_from is not None
        if self.resume_from.is_dir():  # a run folder: its newest checkpoint, or its saved settings from step 0
            try:
                plan = plan_continue(self.resume_from)
            except ValueError as exc:
                raise TrainingError(str(exc)) from None
            if plan.from_scratch:
                self._restart = plan.run
                self.cfg = config_mod.from_dict(self.overrides, base=plan.settings) if self.overrides else plan.settings
                return None
            self.resume_from = plan.checkpoint
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
        resumed_run = None
        if self._restart is not None:
            resumed_run = self._restart.path
        elif ckpt is not None and self.resume_from.parent.name == "checkpoints":  # type: ignore[union-attr]
            resumed_run = self.resume_from.parent.parent  # type: ignore[union-attr]  # continue in the run's own folder
        if resumed_run is not None:
            self._claim(resumed_run)  # locked before the (maybe long) device check and image load
        warnings: list[str] = []
        mps_note = limit_mps_memory(cfg.optim.mps_memory_fraction) if dev.type == "mps" else None
        attention = attention_impl(cfg.optim.attention, dev)
        if dev.type == "cuda" and not torch.are_deterministic_algorithms_enabled():
            torch.backends.cudnn.benchmark = True  # a step's shapes never change: let cuDNN time its convolutions once
        self.device_check = None
        if is_accelerator(dev):  # one forward + backward against the CPU: a wrong kernel trains garbage silently
            yield Status(f"Checking the {dev.type} device against the CPU")
            self.device_check = check_device(dev, attention)
            if self.device_check.warning:
                warnings.append(self.device_check.warning)

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
        if self._restart is not None:
            self.run = self._restart  # a run with no checkpoint starts again in its own folder
            message = f"Run {self.run.name} has no checkpoint yet: starting it again from step 0 with its saved settings"
            log.info(message)
            yield Status(message)
        elif resumed_run is not None:
            self.run = RunFolder(resumed_run)
        else:
            name = self.run_name or default_run_name(cfg.data.source, cfg.data.data_path)
            self.run = RunFolder(self.dist.broadcast(str(RunFolder.create(self.runs_dir, name).path) if main else None))
            self._claim(self.run.path)
        if main:
            config_mod.save_config_file(cfg, self.run.config_path)
        self.checkpointer = Checkpointer(self.run, self.control, cfg.schedule.keep_last, status=self._status,
                                         pause_on_failure=not self.dist.enabled)

        self.model = build_model(cfg, num_classes=len(self.class_names)).to(dev)
        use_attention(self.model, attention)
        if cfg.optim.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.ema = make_ema(self.model, cfg.optim)
        self.schedule = build_schedule(cfg)
        self._step_schedule = self.schedule.to(dev)  # the step gathers from its tables on the device, without a copy
        diff, ac = cfg.diffusion, self.schedule.alphas_cumprod
        probs = timestep_probs(ac, diff.noise_levels, diff.lognormal_mean, diff.lognormal_std)
        weights = loss_weights(ac, diff.loss_weighting, diff.prediction, gamma=diff.min_snr_gamma, probs=probs)
        self.timestep_probs = None if probs is None else probs.float().to(dev)
        self.loss_weights = None if weights is None else weights.to(dev)
        deferred, fused = step_policy(dev, self.dist.enabled)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay,
                                           betas=(cfg.optim.adam_beta1, cfg.optim.adam_beta2),
                                           foreach=not fused, fused=fused or None)
        self.scaler = torch.amp.GradScaler(dev.type, enabled=self.device.autocast_dtype == torch.float16)
        self._pending = PendingSteps(deferred=deferred, clock=self._now)
        self._refused = RefusedSteps(dev) if deferred and not self.scaler.is_enabled() else None
        self.generator = torch.Generator(device=dev).manual_seed(cfg.optim.seed + 1)
        self.budget = RunBudget(cfg.optim, TrainingClock())
        cursor = None
        if ckpt is not None:
            cursor = self._restore(ckpt)
        if self.dist.enabled:  # dropout masks: each rank its own stream (all else is drawn from self.generator)
            torch.manual_seed(self.dist.rank_seed(cfg.optim.seed, self.step))
        self.net = self.dist.wrap(self.model)  # the model itself, or in DDP (forward and backward go through it)
        if cfg.optim.compile != "off":  # compiles at the first step (previews and EMA use the eager model)
            self.net = torch.compile(self.net, mode=cfg.optim.compile)
        self.batches = BatchStream(len(self.data), cfg.optim.batch_size, cfg.optim.seed, hflip=cfg.data.hflip,
                                   rank=self.dist.rank, world=self.dist.world, cursor=cursor)
        self.training_log = TrainingLog(self.run.path, self.run.metrics_path, tensorboard=cfg.schedule.tensorboard and main,
                                        wandb=cfg.schedule.wandb and main, config=config_mod.to_dict(cfg))
        if (ckpt is not None or self._restart is not None) and main:
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
            warnings=tuple(warnings), device_check=self.device_check,
            time_budget_s=self.budget.budget_seconds,
        )
        if mps_note:
            log.info(mps_note)

    def _claim(self, run_path: Path) -> None:
        """One trainer per run folder: rank 0 locks it for the group (a second trainer is refused, naming this one),
        and under torchrun notes the job in run.json, so that a group torchrun restarts finds it (services/elastic.py)."""
        self.run_lock = claim_for_training(run_path, self.dist)
        if self.dist.is_main:
            from ddpm_studio.services.elastic import record_job

            record_job(RunFolder(run_path))

    def _status(self, **fields: Any) -> None:
        """Update run.json (rank 0 only: the other ranks of a torchrun job write nothing)."""
        if self.run is not None and self.dist.is_main:
            if "step" in fields and getattr(self, "budget", None) is not None:
                fields.setdefault("train_seconds", round(self.budget.clock.seconds, 3))  # a reopened timed run's bar
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
                losses = training_losses(self.net, self._step_schedule, x0, t, noise, prediction=cfg.diffusion.prediction,
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
        """This rank's next micro-batch: images in [-1, 1] on the device, and their indices in the data set.

        On a GPU a data set that fits is copied there once (uint8) and each batch is gathered there: no
        per-step copy of pixels from the host, only of the batch's indices.
        """
        idx, flip = self.batches.next()
        dev = self.device.device
        if self._resident_images is None:
            self._resident_images = resident_images(self.data.images, dev)
        if self._resident_images is False:
            return images_to_batch(self.data.images, idx, flip, dev), idx
        on_device = idx.to(dev, non_blocking=True), flip.to(dev, non_blocking=True)
        return images_to_batch(self._resident_images, *on_device, dev), idx  # type: ignore[arg-type]

    def _labels_for(self, idx: torch.Tensor) -> torch.Tensor | None:
        """A conditional run's class labels for images ``idx`` (None: unconditional), dropped to the null class
        with ``label_dropout`` and drawn for the global batch, then shared out like the noise."""
        cfg, world = self.cfg, self.dist.world
        assert cfg is not None
        if not self.class_names:
            return None
        labels = self.data.labels[idx].to(self.device.device, non_blocking=True)  # a blocking copy waits for the GPU
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

        A non-finite step is refused before the optimizer applies it, so the weights (and the last checkpoint)
        stay good: here with a host sync (CPU, MPS, torchrun), or on one CUDA GPU on the device, where the fused
        optimizer and the EMA skip the update and the host raises at its next read (:meth:`_read_pending`).
        With fp16 loss scaling the scaler skips overflowing steps itself.
        """
        cfg, dev = self.cfg, self.device.device
        assert cfg is not None
        self.scaler.unscale_(self.optimizer)
        if cfg.optim.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
        else:
            norm = torch.zeros((), device=dev)
        gate = None
        if self._refused is not None:
            refused = self._refused.record(self.step + 1, total, norm)
            self.optimizer.found_inf = refused  # type: ignore[attr-defined]  # fused AdamW skips where this is 1
            try:
                self.optimizer.step()
            finally:
                del self.optimizer.found_inf  # type: ignore[attr-defined]
            gate = 1.0 - refused
        else:
            if not self.scaler.is_enabled() and not bool(torch.isfinite(total) & torch.isfinite(norm)):
                raise TrainingError(non_finite_message(self.step + 1, float(total), float(norm)))
            self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update(self.model, gate)  # on every rank alike (the weights are the same on all)

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
    def _checkpoint_payload(self, recent_loss: float | None, val_loss: float | None = None) -> dict[str, Any]:
        assert self.cfg is not None
        refused = self._refused.first_refused() if self._refused is not None else None
        if refused is not None:  # never save a state after a refused step (the weights are frozen before it)
            raise TrainingError(non_finite_message(*refused))
        rng: dict[str, Any] = {"torch": torch.get_rng_state(), "generator": self.generator.get_state(),
                               "generator_device": self.device.device.type}
        if torch.cuda.is_available():  # under torchrun only this rank's GPU: get_rng_state_all would touch every GPU
            rng["cuda"] = [torch.cuda.get_rng_state()] if self.dist.enabled else torch.cuda.get_rng_state_all()
        payload = {
            "config": config_mod.to_dict(self.cfg), "model": self.model.state_dict(), "ema": self._ema_payload(),
            "optimizer": self.optimizer.state_dict(), "step": self.step, "rng": rng,
            "train_seconds": self.budget.clock.seconds,
            "data": self.batches.cursor.global_state(self.dist.world), "created": time.time(),
            "metrics": {"loss": recent_loss, "val_loss": val_loss}, "dataset": self.data.description,
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
        from ddpm_studio.services.sampling import LoadedModel

        if getattr(self, "ema", None) is None or self.run is None or self.cfg is None:
            raise RuntimeError("The run has no model yet (it is still loading images)")
        model = copy.deepcopy(self.ema.model).eval().requires_grad_(False)
        return LoadedModel(model, self.cfg, self.schedule, self.step, self.run.path, tuple(self.class_names))

    def _apply_keep_last(self, n: int) -> None:
        if self.cfg is not None:
            self.cfg = dataclasses.replace(self.cfg, schedule=dataclasses.replace(self.cfg.schedule, keep_last=n))
        if self.checkpointer is not None:
            self.checkpointer.keep_last = n

    def _serving_requests(self, events: Generator[Any, None, None]) -> Iterator[Any]:
        """``events``, running the requests of :meth:`snapshot` / :meth:`set_keep_last` after each one: the
        loop is then suspended between two steps, so nothing races the weights or the checkpoint policy."""
        try:
            for event in events:
                yield event
                self.control.run_pending()
        finally:
            events.close()

    # ------------------------------------------------------------------ the loop
    def steps(self) -> Iterator[Any]:
        """Yield events until the run completes, is stopped, or fails (then the exception propagates)."""
        finished = False
        try:
            yield from self._setup()
            yield from self._serving_requests(self._loop())
            finished = True
        except GeneratorExit:
            raise
        except BaseException as exc:
            self._healthy = False
            self._status(state="failed", step=self.step)
            failure = compile_failure(exc) if self.cfg is not None and self.cfg.optim.compile != "off" else None
            if failure:
                raise TrainingError(failure) from exc
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
                  and hasattr(self, "batches") and self.dist.is_main
                  and (self._refused is None or self._refused.first_refused() is None)):
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
        refused = self._refused.first_refused() if self._refused is not None and results else None
        total_steps = cfg.optim.total_steps
        speed = self._speed
        for result in results:
            if refused is not None and result.step >= refused[0]:
                raise TrainingError(non_finite_message(*refused))
            speed.add(seconds / len(results))
            self.training_log.add_step(result.loss, result.bucket_sums, result.bucket_counts)
            self._last_loss, self._last_lr = result.loss, result.lr
            now = self._active()
            eta = speed.eta(total_steps - result.step, _side_work_share(now - self._warm_up_done, speed))
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
        while True:
            self.control.wait_while_paused()
            if self.control.has_requests and not self.control.stop_requested:
                yield from self._serve_requests(loss)
            if not self.control.paused or self.control.stop_requested:
                break
        self._active.pause_ended()
        self.budget.clock.start()
        self._status(state="running", step=self.step)
        if not self.control.stop_requested:
            log.info("Resumed at step %d", self.step)
            self._cadence.resumed(self._active())
            yield RunResumed(self.step)


def _side_work_share(active_seconds: float, speed: Throughput) -> float:
    """The share of the run's active time not spent in training steps (previews, validation, checkpoints,
    logging), once there is enough of a run to tell; the ETA adds it to the training time still to come."""
    if active_seconds < SIDE_WORK_MIN_SECONDS or active_seconds <= 0:
        return 0.0
    return max(0.0, 1.0 - speed.train_seconds / active_seconds)
