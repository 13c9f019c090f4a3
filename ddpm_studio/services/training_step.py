"""One optimisation step of a training run: a batch, its noise, the objective, and the guarded update.

Apart from :class:`~ddpm_studio.services.training.TrainingSession` (which owns the run: its folder, clock, previews,
checkpoints and the pause / stop requests) because this is the part a reader looking for "what does one step
do" wants on one screen, and the part a new recipe changes: which noise levels a batch is trained at, how their
losses are weighted, how the update is applied. Each piece is its own method: :meth:`TrainingStep.next_batch`
(data), :meth:`TrainingStep.noise_for` (t and ε), :func:`~ddpm_studio.core.objectives.training_losses` (the
objective), :meth:`TrainingStep.apply_update` (clip, refuse a non-finite step, optimizer, EMA).
"""

from __future__ import annotations

from typing import Any

import torch

from ddpm_studio.core.autoguidance import EarlyWeights
from ddpm_studio.core.choices import TIMESTEP_BUCKETS
from ddpm_studio.core.device import DeviceChoice
from ddpm_studio.core.ema import EMA
from ddpm_studio.core.objectives import bucket_losses, loss_weights, sample_timesteps, timestep_probs, training_losses
from ddpm_studio.core.power_ema import PowerEMA
from ddpm_studio.core.schedules import NoiseSchedule
from ddpm_studio.services import config as config_mod
from ddpm_studio.services.acceleration import compile_failure, resident_images
from ddpm_studio.services.batch_fit import is_out_of_memory, oom_advice
from ddpm_studio.services.batches import BatchStream, images_to_batch
from ddpm_studio.services.conditioning import drop_labels
from ddpm_studio.services.control import RunControl
from ddpm_studio.services.distributed import Distributed
from ddpm_studio.services.step_results import RefusedSteps, non_finite_message


class TrainingError(RuntimeError):
    """The run cannot continue; the message is for the user (raised here for a non-finite step, by the session for
    the rest, some of them worded by :func:`user_failure`)."""


def user_failure(exc: BaseException, optim: config_mod.OptimConfig, step: int) -> TrainingError | None:
    """The TrainingError to raise instead of ``exc`` when the user can act on it, or None (``exc`` goes on as it is).

    Two failures of a step come from the machine rather than the code, and each has a setting that avoids it:
    torch.compile failing here (train with compile off), and running out of memory in step ``step`` (a smaller
    micro-batch with more accumulation, the same images per step). Both say to resume from the last checkpoint.
    """
    failure = compile_failure(exc) if optim.compile != "off" else None
    if failure:
        return TrainingError(failure)
    if isinstance(exc, Exception) and is_out_of_memory(exc):
        return TrainingError(
            f"Out of memory at step {step} with {optim.batch_size} images per micro-batch: "
            f"{oom_advice(optim.batch_size, optim.grad_accum)}. The last checkpoint is kept; resume from it with those "
            f"settings ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        )
    return None


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


def make_optimizer(model: torch.nn.Module, optim: config_mod.OptimConfig, fused: bool) -> torch.optim.AdamW:
    """AdamW over the model's weights; its learning rate is set before every step (see :func:`lr_at`)."""
    return torch.optim.AdamW(model.parameters(), lr=optim.lr, weight_decay=optim.weight_decay,
                             betas=(optim.adam_beta1, optim.adam_beta2), foreach=not fused, fused=fused or None)


class TrainingStep:
    """The step's machinery, built once a run's model, data and optimizer exist; :meth:`run` makes one step.

    ``net`` is what forward and backward go through (the model itself, or it in DistributedDataParallel and/or
    compiled); ``model`` is the plain module the EMA and gradient clipping read. ``refuse_on_device``: on one
    CUDA GPU a non-finite step is refused on the device (no host sync per step), see :class:`RefusedSteps`.
    """

    def __init__(self, cfg: config_mod.RunConfig, device: DeviceChoice, dist: Distributed, control: RunControl, *,
                 model: torch.nn.Module, net: Any, ema: EMA | PowerEMA, early: EarlyWeights, optimizer: torch.optim.Optimizer,
                 scaler: torch.amp.GradScaler, schedule: NoiseSchedule, data: Any, num_classes: int,
                 batches: BatchStream, generator: torch.Generator, refuse_on_device: bool) -> None:
        self.cfg, self.device, self.dist, self.control = cfg, device, dist, control
        self.model, self.net, self.ema, self.optimizer, self.scaler = model, net, ema, optimizer, scaler
        self.early = early  # earlier EMA weights, each checkpoint's autoguidance guide
        self.schedule, self.data, self.num_classes = schedule, data, num_classes
        self.batches, self.generator = batches, generator
        dev = device.device
        self.step_schedule = schedule.to(dev)  # the step gathers from its tables on the device, without a copy
        diff, ac = cfg.diffusion, schedule.alphas_cumprod
        probs = timestep_probs(ac, diff.noise_levels, diff.lognormal_mean, diff.lognormal_std)
        weights = loss_weights(ac, diff.loss_weighting, diff.prediction, gamma=diff.min_snr_gamma, probs=probs)
        self.timestep_probs = None if probs is None else probs.float().to(dev)
        self.loss_weights = None if weights is None else weights.to(dev)
        #: On a GPU: the device-side record of a refused step (None: each step is checked on the host).
        self.refused = RefusedSteps(dev) if refuse_on_device and not scaler.is_enabled() else None
        self.last_step = 0  # the last step the EMA's update count includes (applied, or gated off on the device)
        self.resident_images: torch.Tensor | bool | None = None  # the data set on the GPU (False: it does not fit)
        self.stop_agreed = False  # under torchrun: the stop request as all ranks agreed on it in the last step

    def run(self, step: int, lr: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Step ``step + 1`` over ``grad_accum`` micro-batches at learning rate ``lr``: (loss, t-bucket sums, counts),
        still on the device (reading them is the caller's host sync)."""
        cfg, dev = self.cfg, self.device.device
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        total = torch.zeros((), device=dev)
        sums = counts = None
        accum = cfg.optim.grad_accum
        for micro in range(accum):
            x0, idx = self.next_batch()
            t, noise = self.noise_for(x0)
            labels = self.labels_for(idx)  # after the noise draws, so unconditional runs keep their random stream
            with self.dist.no_sync(self.net, last=micro == accum - 1):
                losses = training_losses(self.net, self.step_schedule, x0, t, noise, prediction=cfg.diffusion.prediction,
                                         loss_type=cfg.diffusion.loss, labels=labels, autocast=self.device.autocast)
                loss = losses.mean()  # the unweighted loss (ε or v) is what we report
                objective = loss if self.loss_weights is None else (losses * self.loss_weights[t]).mean()
                self.scaler.scale(objective / accum).backward()
            total += loss.detach() / accum
            s, c = bucket_losses(losses, t, self.schedule.num_timesteps)
            sums, counts = (s, c) if sums is None else (sums + s, counts + c)
        if self.dist.enabled:
            total, sums, counts = self.reduce_across_ranks(total, sums, counts)  # type: ignore[arg-type]
        self.apply_update(step + 1, total)
        return total, sums, counts  # type: ignore[return-value]

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's next micro-batch: images in [-1, 1] on the device, and their indices in the data set.

        On a GPU a data set that fits is copied there once (uint8) and each batch is gathered there: no
        per-step copy of pixels from the host, only of the batch's indices.
        """
        idx, flip = self.batches.next()
        dev = self.device.device
        if self.resident_images is None:
            self.resident_images = resident_images(self.data.images, dev)
        if self.resident_images is False:
            return images_to_batch(self.data.images, idx, flip, dev), idx
        on_device = idx.to(dev, non_blocking=True), flip.to(dev, non_blocking=True)
        return images_to_batch(self.resident_images, *on_device, dev), idx  # type: ignore[arg-type]

    def labels_for(self, idx: torch.Tensor) -> torch.Tensor | None:
        """A conditional run's class labels for images ``idx`` (None: unconditional), dropped to the null class
        with ``label_dropout`` and drawn for the global batch, then shared out like the noise."""
        if not self.num_classes:
            return None
        labels = self.data.labels[idx].to(self.device.device, non_blocking=True)  # a blocking copy waits for the GPU
        if self.dist.world > 1:
            labels = labels.repeat_interleave(self.dist.world)  # global-batch sized; this rank's rows are its own labels
        return self.dist.share(drop_labels(labels, self.cfg.optim.label_dropout, self.num_classes, self.generator))

    def noise_for(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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

    def apply_update(self, step: int, total: torch.Tensor) -> None:
        """Clip, then apply the gradients of step ``step`` to the weights and the EMA, unless the loss or gradient
        is not finite.

        A non-finite step is refused before the optimizer applies it, so the weights (and the last checkpoint)
        stay good: here with a host sync (CPU, MPS, torchrun: raises :class:`TrainingError`), or on one CUDA GPU on
        the device, where the fused optimizer and the EMA skip the update and the host raises at its next read.
        With fp16 loss scaling the scaler skips overflowing steps itself.
        """
        self.scaler.unscale_(self.optimizer)
        if self.cfg.optim.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        else:
            norm = torch.zeros((), device=self.device.device)
        gate = None
        if self.refused is not None:
            refused = self.refused.record(step, total, norm)
            self.optimizer.found_inf = refused  # type: ignore[attr-defined]  # fused AdamW skips where this is 1
            try:
                self.optimizer.step()
            finally:
                del self.optimizer.found_inf  # type: ignore[attr-defined]
            gate = 1.0 - refused
        else:
            if not self.scaler.is_enabled() and not bool(torch.isfinite(total) & torch.isfinite(norm)):
                raise TrainingError(non_finite_message(step, float(total), float(norm)))
            self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update(self.model, gate)  # on every rank alike (the weights are the same on all)
        self.last_step = step
        if self.early.due(step):  # only then: a power EMA rebuilds its average to give .model
            self.early.update(step, self.ema.model)

    def reduce_across_ranks(self, total: torch.Tensor, sums: torch.Tensor,
                            counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One all-reduce per step: the mean loss and quartile sums over all ranks, and whether any rank was asked to stop.

        So all ranks log the same loss, refuse a non-finite one together, and stop after the same step.
        """
        stop = torch.ones(1, device=total.device) if self.control.stop_requested else torch.zeros(1, device=total.device)
        packed = self.dist.sum(torch.cat([total.view(1).float(), stop, sums.float(), counts.float()]))
        self.stop_agreed = bool(packed[1] > 0)
        b = TIMESTEP_BUCKETS
        return packed[0] / self.dist.world, packed[2 : 2 + b], packed[2 + b : 2 + 2 * b]

    def first_refused(self) -> tuple[int, float, float] | None:
        """(step, loss, gradient norm) of the first step the device refused, or None (none, or checked on the host).

        Once one is found the EMA's update count is wound back to before it: the device gated off that update and
        every one after it, so the averages are as they were, but their count went on (a power EMA's rebuilt
        average depends on it)."""
        found = self.refused.first_refused() if self.refused is not None else None
        if found is not None and self.last_step >= found[0]:  # (a second call finds nothing left to take back)
            self.ema.discard_updates(self.last_step - found[0] + 1)
            self.last_step = found[0] - 1
        return found
