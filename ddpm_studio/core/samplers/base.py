"""What every sampler shares: the step record, the denoiser contract and timestep spacing.

A sampler is a generator: it yields one :class:`SampleStep` per reverse step, so the
trajectory viewer, the CLI progress bar and the tests all consume the same thing, and
stopping a sampler is just ``close()``. Its state lives inside the generator, never on a
shared object. A sampler never sees an ``nn.Module``: it receives ``denoise(x_t, t) -> ε``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ddpm_studio.core.choices import SPACINGS

Denoiser = Callable[[Tensor, Tensor], Tensor]
"""ε_θ(x_t, t): takes a float32 batch and a (B,) long tensor of timesteps, returns float32 ε."""



@dataclass(frozen=True)
class SampleStep:
    """One reverse step: the timestep just denoised, the new x_{t-1} ("x_t") and the predicted x_0."""

    index: int  # 0-based position in the sampler's step sequence
    total: int  # number of steps this sampler will yield
    t: int  # model timestep this step evaluated
    x_t: Tensor
    x0_pred: Tensor


def timestep_sequence(num_timesteps: int, num_steps: int, spacing: str = "uniform") -> list[int]:
    """Descending model timesteps to visit, e.g. T=1000, 10 steps → [999, …, 0] (trailing).

    ``uniform`` is DDIM's "leading" spacing (0, k, 2k, …); ``trailing`` always starts at T-1,
    which Lin et al. 2023 show matters for few steps; ``quadratic`` is DDIM's quadratic choice.
    """
    if not 1 <= num_steps <= num_timesteps:
        raise ValueError(f"Steps must be between 1 and {num_timesteps} (got {num_steps})")
    if spacing == "uniform":
        seq = np.arange(0, num_timesteps, num_timesteps / num_steps).round()
    elif spacing == "trailing":
        seq = np.round(np.arange(num_timesteps, 0, -num_timesteps / num_steps))[::-1] - 1
    elif spacing == "quadratic":
        seq = np.linspace(0, np.sqrt(num_timesteps * 0.8), num_steps) ** 2
    else:
        raise ValueError(f"Unknown timestep spacing {spacing!r}; choose one of {SPACINGS}")
    steps = sorted({int(s) for s in seq}, reverse=True)
    return steps


def draw_noise(shape: torch.Size | tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Gaussian noise from ``generator`` (on its own device), moved to ``like``'s device and dtype."""
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=device).to(like.device, like.dtype)


def batch_t(t: int, like: Tensor) -> Tensor:
    """A (B,) long tensor filled with t on ``like``'s device."""
    return torch.full((like.shape[0],), t, device=like.device, dtype=torch.long)
