"""DDIM sampling, Song et al. 2020, eq. (12), over any descending subsequence of timesteps.

Notation: ᾱ_t, ᾱ_prev the cumulative products at the current and next visited timestep
(ᾱ_prev = 1 after the last), σ_t = η √((1-ᾱ_prev)/(1-ᾱ_t)) √(1-ᾱ_t/ᾱ_prev), eq. (16).
η = 0 is deterministic; η = 1 over all T steps is DDPM with σ² = β̃.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from ddpm_studio.core.samplers.base import Denoiser, SampleStep, batch_t, check_timesteps, draw_noise
from ddpm_studio.core.schedules import NoiseSchedule


def ddim_steps(
    denoise: Denoiser,
    schedule: NoiseSchedule,
    x_T: Tensor,
    timesteps: Sequence[int],
    *,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    clip_x0: bool = True,
) -> Iterator[SampleStep]:
    """Yield one step per visited timestep (``timesteps``, descending), from x_T to x_0."""
    seq = check_timesteps(timesteps, schedule.num_timesteps)
    x = x_T
    for index, t in enumerate(seq):
        t_prev = seq[index + 1] if index + 1 < len(seq) else -1
        tt = batch_t(t, x)
        eps = denoise(x, tt)
        # 1. predicted x_0, clipped; ε̂ re-derived so the update stays consistent with it
        x0 = schedule.predict_x0_from_eps(x, tt, eps)
        if clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
            eps = schedule.predict_eps_from_x0(x, tt, x0)
        a_t = schedule.alpha_bar_at(torch.tensor(t)).item()
        a_prev = schedule.alpha_bar_at(torch.tensor(t_prev)).item()
        # 2. σ_t of eq. (16)
        sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)) ** 0.5
        # 3. eq. (12): x_prev = √ᾱ_prev x̂_0 + √(1-ᾱ_prev-σ²) ε̂ + σ z
        x = a_prev**0.5 * x0 + max(1 - a_prev - sigma**2, 0.0) ** 0.5 * eps
        if sigma > 0 and t_prev >= 0:
            x = x + sigma * draw_noise(x.shape, generator, x)
        yield SampleStep(index=index, total=len(seq), t=t, x_next=x, x0_pred=x0)
