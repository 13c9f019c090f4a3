"""Previews during training: a fixed-seed trajectory from the EMA model, and a validation loss.

The same x_T every time, so a film strip of previews shows the model improving, not the
noise changing. The validation loss uses fixed images, fixed t (spread over [0, T)) and
fixed noise, so its curve is smooth enough to tell whether the model still learns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ddpm_studio.core.device import DeviceChoice
from ddpm_studio.core.objectives import training_losses
from ddpm_studio.core.samplers import SamplerSpec, iter_sampler
from ddpm_studio.core.schedules import NoiseSchedule
from ddpm_studio.services.config import RunConfig
from ddpm_studio.services.events import PreviewReady
from ddpm_studio.services.imaging import make_grid, pick_frames, save_png, to_uint8
from ddpm_studio.services.model_factory import make_denoiser

PREVIEW_FRAMES = 10
VALIDATION_IMAGES = 64


class Previewer:
    """Holds the fixed noise and validation batch; makes :class:`PreviewReady` events."""

    def __init__(self, cfg: RunConfig, schedule: NoiseSchedule, device: DeviceChoice, data: object, out_dir: Path,
                 num_classes: int = 0) -> None:
        self.cfg, self.schedule, self.device, self.out_dir = cfg, schedule, device, out_dir
        dev = device.device
        size, ch = cfg.data.image_size, cfg.data.channels
        g = torch.Generator().manual_seed(cfg.optim.seed + 12_345)
        self.x_T = torch.randn((cfg.schedule.preview_images, ch, size, size), generator=g).to(dev)
        images = data.images  # type: ignore[attr-defined]
        n = min(VALIDATION_IMAGES, images.shape[0])
        idx = torch.randperm(images.shape[0], generator=g)[:n]
        self.val_x0 = (images[idx].float() / 127.5 - 1.0).to(dev)
        self.val_t = torch.linspace(0, schedule.num_timesteps - 1, n).round().long().to(dev)
        self.val_noise = torch.randn(self.val_x0.shape, generator=g).to(dev)
        self.spec = SamplerSpec(name=cfg.schedule.preview_sampler, num_steps=cfg.schedule.preview_steps)
        # Conditional runs: previews cycle through the classes (plain conditional model, s = 1) and the
        # validation loss uses the true labels, like most training steps.
        self.labels = self.val_y = None
        if num_classes:
            self.labels = (torch.arange(cfg.schedule.preview_images) % num_classes).to(dev)
            self.val_y = data.labels[idx].to(dev)  # type: ignore[attr-defined]

    @torch.inference_mode()
    def validation_loss(self, model: nn.Module) -> float:
        was_training = model.training
        model.eval()
        losses = training_losses(model, self.schedule, self.val_x0, self.val_t, self.val_noise,
                                 prediction=self.cfg.diffusion.prediction, loss_type=self.cfg.diffusion.loss,
                                 labels=self.val_y, autocast=self.device.autocast)
        model.train(was_training)
        return float(losses.mean())

    def preview(self, ema_model: nn.Module, model: nn.Module, step: int) -> PreviewReady:
        """Sample the fixed noise with the EMA weights, keep ~10 frames, save the final grid as PNG."""
        denoise = make_denoiser(ema_model, self.device.autocast, self.labels, prediction=self.cfg.diffusion.prediction,
                                schedule=self.schedule)
        gen = torch.Generator(device=self.device.device).manual_seed(self.cfg.optim.seed + 54_321)
        keep = set(pick_frames(self.spec.steps_for(self.schedule.num_timesteps), PREVIEW_FRAMES))
        x_t, x0, timesteps = [], [], []
        for s in iter_sampler(self.spec, denoise, self.schedule, self.x_T.clone(), gen):
            if s.index in keep:  # stream: a 1000-step DDPM preview must not hold every frame
                x_t.append(to_uint8(s.x_next))
                x0.append(to_uint8(s.x0_pred))
                timesteps.append(s.t)
        final = x_t[-1]
        grid = make_grid(final)
        path = save_png(grid, self.out_dir / f"step_{step:08d}.png")
        return PreviewReady(
            step=step, timesteps=tuple(timesteps), x_t=np.stack(x_t), x0_pred=np.stack(x0),
            image=grid, path=str(path), val_loss=self.validation_loss(model),
        )
