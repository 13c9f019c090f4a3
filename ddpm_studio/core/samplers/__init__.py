"""Sampler registry: every sampler is chosen by name and yields :class:`SampleStep` records."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from ddpm_studio.core.choices import DETERMINISTIC_SAMPLERS, SAMPLER_NAMES
from ddpm_studio.core.samplers.base import SPACINGS, Denoiser, SampleStep, timestep_sequence
from ddpm_studio.core.samplers.ddim import ddim_steps
from ddpm_studio.core.samplers.ddpm import VARIANCES, ddpm_steps
from ddpm_studio.core.samplers.dpm_solver import dpm_solver_steps
from ddpm_studio.core.schedules import NoiseSchedule

__all__ = [
    "DETERMINISTIC_SAMPLERS",
    "SAMPLER_NAMES",
    "SPACINGS",
    "VARIANCES",
    "Denoiser",
    "SampleStep",
    "SamplerSpec",
    "iter_sampler",
    "timestep_sequence",
]


@dataclass(frozen=True)
class SamplerSpec:
    """How to sample: which sampler and its knobs. ``num_steps`` is ignored by DDPM (always T);
    ``eta`` is DDIM's only; DPM-Solver++ ignores ``eta`` and ``variance`` (dpm++2m solves the ODE,
    deterministically; dpm++2m-sde the SDE, with fresh noise every step)."""

    name: str = "ddim"
    num_steps: int = 50
    eta: float = 0.0
    spacing: str = "uniform"
    variance: str = "beta_tilde"
    clip_x0: bool = True

    @property
    def deterministic(self) -> bool:
        """True when x_T fully determines the sample (what interpolation between seeds needs)."""
        return self.name in DETERMINISTIC_SAMPLERS and (self.name != "ddim" or self.eta == 0)

    def steps_for(self, num_timesteps: int) -> int:
        """How many denoiser calls this spec makes with a T-step schedule."""
        return num_timesteps if self.name == "ddpm" else len(
            timestep_sequence(num_timesteps, min(self.num_steps, num_timesteps), self.spacing)
        )


def iter_sampler(
    spec: SamplerSpec,
    denoise: Denoiser,
    schedule: NoiseSchedule,
    x_T: Tensor,
    generator: torch.Generator | None = None,
) -> Iterator[SampleStep]:
    """The step generator for ``spec``: one place that maps names to sampler functions."""
    if spec.name == "ddpm":
        return ddpm_steps(denoise, schedule, x_T, generator=generator, variance=spec.variance, clip_x0=spec.clip_x0)
    if spec.name == "ddim":
        return ddim_steps(
            denoise,
            schedule,
            x_T,
            num_steps=min(spec.num_steps, schedule.num_timesteps),
            eta=spec.eta,
            spacing=spec.spacing,
            generator=generator,
            clip_x0=spec.clip_x0,
        )
    if spec.name in ("dpm++2m", "dpm++2m-sde"):
        return dpm_solver_steps(
            denoise,
            schedule,
            x_T,
            num_steps=min(spec.num_steps, schedule.num_timesteps),
            spacing=spec.spacing,
            clip_x0=spec.clip_x0,
            stochastic=spec.name == "dpm++2m-sde",
            generator=generator,
        )
    raise ValueError(f"Unknown sampler {spec.name!r}; choose one of {SAMPLER_NAMES}")
