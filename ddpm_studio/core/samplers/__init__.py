"""Sampler registry: the catalog's names (:mod:`ddpm_studio.core.sampler_catalog`) mapped to step functions,
each a generator of :class:`SampleStep` records."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from ddpm_studio.core.sampler_catalog import SAMPLER_NAMES, SPACINGS, is_deterministic, uses_steps
from ddpm_studio.core.samplers.base import Denoiser, SampleStep, model_calls, timestep_sequence
from ddpm_studio.core.samplers.ddim import ddim_steps
from ddpm_studio.core.samplers.ddpm import VARIANCES, ddpm_steps
from ddpm_studio.core.samplers.dpm_solver import dpm_solver_steps
from ddpm_studio.core.samplers.ipndm import ipndm_steps
from ddpm_studio.core.samplers.unipc import unipc_steps
from ddpm_studio.core.schedules import NoiseSchedule

__all__ = [
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
    """How to sample: which sampler and its knobs. ``num_steps`` and ``spacing`` are ignored by DDPM (always T);
    ``eta`` is DDIM's only; ``variance`` DDPM's only. What each sampler is: the catalog."""

    name: str = "ddim"
    num_steps: int = 50
    eta: float = 0.0
    spacing: str = "uniform"
    variance: str = "beta_tilde"
    clip_x0: bool = True

    @property
    def deterministic(self) -> bool:
        """True when x_T fully determines the sample (what interpolation between seeds needs)."""
        return is_deterministic(self.name, self.eta)

    def steps_for(self, num_timesteps: int) -> int:
        """How many denoiser calls this spec makes with a T-step schedule."""
        if not uses_steps(self.name):
            return num_timesteps
        return model_calls(num_timesteps, min(self.num_steps, num_timesteps), self.spacing)

    def timesteps(self, schedule: NoiseSchedule) -> list[int]:
        """The descending timesteps this spec visits on ``schedule``."""
        total = schedule.num_timesteps
        if not uses_steps(self.name):
            return list(range(total - 1, -1, -1))
        return timestep_sequence(total, min(self.num_steps, total), self.spacing, schedule.alphas_cumprod)


StepFunction = Callable[[SamplerSpec, Denoiser, NoiseSchedule, Tensor, "torch.Generator | None"], Iterator[SampleStep]]

#: Each catalog name's step function, called with the spec's knobs and the timesteps it visits.
STEP_FUNCTIONS: dict[str, StepFunction] = {
    "ddpm": lambda spec, denoise, schedule, x_T, gen: ddpm_steps(
        denoise, schedule, x_T, generator=gen, variance=spec.variance, clip_x0=spec.clip_x0),
    "ddim": lambda spec, denoise, schedule, x_T, gen: ddim_steps(
        denoise, schedule, x_T, spec.timesteps(schedule), eta=spec.eta, generator=gen, clip_x0=spec.clip_x0),
    "dpm++2m": lambda spec, denoise, schedule, x_T, gen: dpm_solver_steps(
        denoise, schedule, x_T, spec.timesteps(schedule), order=2, clip_x0=spec.clip_x0),
    "dpm++2m-sde": lambda spec, denoise, schedule, x_T, gen: dpm_solver_steps(
        denoise, schedule, x_T, spec.timesteps(schedule), order=2, clip_x0=spec.clip_x0, stochastic=True,
        generator=gen),
    "dpm++3m": lambda spec, denoise, schedule, x_T, gen: dpm_solver_steps(
        denoise, schedule, x_T, spec.timesteps(schedule), order=3, clip_x0=spec.clip_x0),
    "dpm++3m-sde": lambda spec, denoise, schedule, x_T, gen: dpm_solver_steps(
        denoise, schedule, x_T, spec.timesteps(schedule), order=3, clip_x0=spec.clip_x0, stochastic=True,
        generator=gen),
    "unipc": lambda spec, denoise, schedule, x_T, gen: unipc_steps(
        denoise, schedule, x_T, spec.timesteps(schedule), order=3, clip_x0=spec.clip_x0),
    "ipndm": lambda spec, denoise, schedule, x_T, gen: ipndm_steps(
        denoise, schedule, x_T, spec.timesteps(schedule), order=4, clip_x0=spec.clip_x0),
}


def iter_sampler(
    spec: SamplerSpec,
    denoise: Denoiser,
    schedule: NoiseSchedule,
    x_T: Tensor,
    generator: torch.Generator | None = None,
) -> Iterator[SampleStep]:
    """The step generator for ``spec``: one place that maps names to sampler functions."""
    if spec.name not in STEP_FUNCTIONS:
        raise ValueError(f"Unknown sampler {spec.name!r}; choose one of {', '.join(SAMPLER_NAMES)}")
    return STEP_FUNCTIONS[spec.name](spec, denoise, schedule, x_T, generator)
