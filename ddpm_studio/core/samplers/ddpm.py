"""Ancestral DDPM sampling, Ho et al. 2020, Algorithm 2.

Notation: x_t current sample, ε̂ = ε_θ(x_t, t), x̂_0 predicted clean image,
μ̃_t(x_t, x̂_0) the posterior mean of eq. (7), σ_t² ∈ {β_t, β̃_t} (the paper found both
work; β̃_t is the posterior variance and the better choice for small T).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from ddpm_studio.core.choices import VARIANCES
from ddpm_studio.core.samplers.base import Denoiser, SampleStep, batch_t, draw_noise
from ddpm_studio.core.schedules import NoiseSchedule, extract


def ddpm_steps(
    denoise: Denoiser,
    schedule: NoiseSchedule,
    x_T: Tensor,
    *,
    generator: torch.Generator | None = None,
    variance: str = "beta_tilde",
    clip_x0: bool = True,
) -> Iterator[SampleStep]:
    """Yield every one of the T reverse steps from x_T ~ N(0, I) to x_0."""
    if variance not in VARIANCES:
        raise ValueError(f"Unknown DDPM variance {variance!r}; choose one of {VARIANCES}")
    table = schedule.posterior_variance if variance == "beta_tilde" else schedule.betas
    total = schedule.num_timesteps
    x = x_T
    for index, t in enumerate(range(total - 1, -1, -1)):
        tt = batch_t(t, x)
        eps = denoise(x, tt)
        # 1. predicted x_0 from ε̂ (eq. 4 inverted), optionally clipped to the data range
        x0 = schedule.predict_x0_from_eps(x, tt, eps)
        if clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
        # 2. posterior mean μ̃_t(x_t, x̂_0), eq. (7)
        mean, _, _ = schedule.q_posterior(x0, x, tt)
        # 3. x_{t-1} = μ̃ + σ_t z, with no noise at the last step (t = 0)
        if t > 0:
            sigma = extract(table, tt, x.ndim).sqrt()
            x = mean + sigma * draw_noise(x.shape, generator, x)
        else:
            x = mean
        yield SampleStep(index=index, total=total, t=t, x_next=x, x0_pred=x0)
