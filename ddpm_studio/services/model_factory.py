"""From settings to torch objects: the U-Net, the noise schedule, and a denoiser for samplers."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from ddpm_studio.services.config import RunConfig, unet_config

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from ddpm_studio.core.schedules import NoiseSchedule


def build_model(cfg: RunConfig, num_classes: int = 0) -> nn.Module:
    from ddpm_studio.core.unet import UNet

    ucfg = unet_config(cfg)
    if num_classes:
        ucfg = dataclasses.replace(ucfg, num_classes=num_classes)
    return UNet(ucfg)


def build_schedule(cfg: RunConfig) -> NoiseSchedule:
    from ddpm_studio.core.schedules import NoiseSchedule

    return NoiseSchedule.create(cfg.diffusion.schedule, cfg.diffusion.timesteps)


def make_denoiser(model: nn.Module, autocast: Any, labels: Tensor | None = None, guidance_scale: float = 1.0, *,
                  prediction: str = "epsilon", schedule: NoiseSchedule | None = None) -> Any:
    """ε_θ as the plain function samplers take: inference mode, autocast, float32 out.

    A v-prediction model's output is turned into ε here (``schedule`` is needed for that), so every
    sampler works on ε alone. Guidance is affine in the output, so it may combine v's as well as ε's.

    With ``labels`` (a class-conditional model), classifier-free guidance (Ho & Salimans 2022, eq. 6
    rewritten with s = 1 + w): ε̃ = ε_θ(x, t, ∅) + s (ε_θ(x, t, y) - ε_θ(x, t, ∅)). s = 0 is the
    unconditional model and s = 1 the conditional one, each with a single forward pass; any other s
    runs both branches as one doubled batch. Without labels, ``guidance_scale`` is ignored.
    """
    import torch

    if prediction == "v":
        if schedule is None:
            raise ValueError("a v-prediction model needs its noise schedule to give ε")
        as_v = make_denoiser(model, autocast, labels, guidance_scale)
        return lambda x, t: schedule.predict_eps_from_v(x, t, as_v(x, t))
    if prediction != "epsilon":
        raise ValueError(f"Unknown prediction target {prediction!r}")

    def plain(x: Tensor, t: Tensor) -> Tensor:
        with torch.inference_mode(), autocast():
            return model(x, t).float()  # y = None: the null label on a conditional model

    if labels is None or guidance_scale == 0.0:
        return plain

    def conditional(x: Tensor, t: Tensor) -> Tensor:
        with torch.inference_mode(), autocast():
            return model(x, t, labels).float()

    if guidance_scale == 1.0:
        return conditional
    null = torch.full_like(labels, model.config.null_label)  # type: ignore[union-attr]
    both = torch.cat([labels, null])

    def guided(x: Tensor, t: Tensor) -> Tensor:
        with torch.inference_mode(), autocast():
            out = model(torch.cat([x, x]), torch.cat([t, t]), both).float()
        eps_cond, eps_uncond = out.chunk(2)
        return eps_uncond + guidance_scale * (eps_cond - eps_uncond)

    return guided


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
