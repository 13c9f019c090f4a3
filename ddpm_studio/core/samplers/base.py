"""What every sampler shares: the step record, the denoiser contract and the timesteps a sampler visits.

A sampler is a generator: it yields one :class:`SampleStep` per reverse step, so the
trajectory viewer, the CLI progress bar and the tests all consume the same thing, and
stopping a sampler is just ``close()``. Its state lives inside the generator, never on a
shared object. A sampler never sees an ``nn.Module``: it receives ``denoise(x_t, t) -> ε``.

Notation shared by the solvers (the VP process of the DDPM schedule, Kingma et al. 2021; Lu et al. 2022):
α_t = √ᾱ_t, σ_t = √(1-ᾱ_t), λ_t = log(α_t/σ_t) (half the log-SNR), and the EDM noise level
σ̃_t = σ_t/α_t = e^{-λ_t} (Karras et al. 2022 write x/α = x_0 + σ̃ ε). After the last visited timestep every
sampler lands on the clean image (α = 1, σ = 0, λ = ∞), written t = -1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import torch
from torch import Tensor

from ddpm_studio.core.sampler_catalog import NOISE_LEVEL_SPACINGS, SPACINGS
from ddpm_studio.core.schedules import NoiseSchedule

Denoiser = Callable[[Tensor, Tensor], Tensor]
"""ε_θ(x_t, t): takes a float32 batch and a (B,) long tensor of timesteps, returns float32 ε."""

#: The noisiest level the noise-level spacings start from, in σ̃ = √((1-ᾱ)/ᾱ): EDM's σ_max (Karras et al. 2022,
#: §5). Beyond it x_t is noise to within 1% of the data's scale (0.5/80), and the cosine schedule's last steps reach
#: σ̃ ≈ 20,000, where a ρ = 7 spacing would spend half of a 10-step budget on pure noise.
SIGMA_MAX = 80.0
#: Karras et al. 2022, eq. (5): ρ = 7 shortens the steps near the data, where the image forms.
KARRAS_RHO = 7.0


@dataclass(frozen=True)
class SampleStep:
    """One reverse step: the timestep it denoised, the sample after the step and the predicted clean image."""

    index: int  # 0-based position in the sampler's step sequence
    total: int  # number of steps this sampler will yield
    t: int  # model timestep this step evaluated
    x_next: Tensor
    """The sample after this step: x at the next timestep the sampler visits (x_{t-1} for DDPM; diffusers calls
    it ``prev_sample``), and the final image after the last step."""
    x0_pred: Tensor


def timestep_sequence(
    num_timesteps: int, num_steps: int, spacing: str = "uniform", alphas_cumprod: Tensor | None = None
) -> list[int]:
    """Descending model timesteps to visit, e.g. T=1000, 10 steps → [999, …, 99] (trailing).

    ``uniform`` is DDIM's "leading" spacing (0, k, 2k, …); ``trailing`` always starts at T-1,
    which Lin et al. 2023 show matters for few steps; ``quadratic`` is DDIM's quadratic choice.
    ``karras`` and ``logsnr`` space noise levels, not timesteps, so they need the schedule's ``alphas_cumprod``
    (see :func:`noise_level_sequence`); they always give exactly ``num_steps`` distinct timesteps.
    """
    if not 1 <= num_steps <= num_timesteps:
        raise ValueError(f"Steps must be between 1 and {num_timesteps} (got {num_steps})")
    if spacing in NOISE_LEVEL_SPACINGS:
        if alphas_cumprod is None:
            raise ValueError(f"The {spacing!r} spacing needs the noise schedule (alphas_cumprod)")
        return noise_level_sequence(alphas_cumprod, num_steps, spacing)
    if spacing == "uniform":
        seq = np.arange(0, num_timesteps, num_timesteps / num_steps).round()
    elif spacing == "trailing":
        seq = np.round(np.arange(num_timesteps, 0, -num_timesteps / num_steps))[::-1] - 1
    elif spacing == "quadratic":
        seq = np.linspace(0, np.sqrt(num_timesteps * 0.8), num_steps) ** 2
    else:
        raise ValueError(f"Unknown timestep spacing {spacing!r}; choose one of {', '.join(SPACINGS)}")
    steps = sorted({int(s) for s in seq}, reverse=True)
    return steps


def model_calls(num_timesteps: int, num_steps: int, spacing: str) -> int:
    """How many timesteps :func:`timestep_sequence` visits, without the schedule (the noise-level spacings visit
    exactly ``num_steps``; the others can merge rounded duplicates)."""
    if spacing in NOISE_LEVEL_SPACINGS:
        if not 1 <= num_steps <= num_timesteps:
            raise ValueError(f"Steps must be between 1 and {num_timesteps} (got {num_steps})")
        return num_steps
    return len(timestep_sequence(num_timesteps, num_steps, spacing))


def noise_level_sequence(alphas_cumprod: Tensor, num_steps: int, spacing: str) -> list[int]:
    """Timesteps whose noise levels follow ``spacing`` from min(σ̃_{T-1}, :data:`SIGMA_MAX`) down to σ̃_0.

    1. Target levels. ``karras``: Karras et al. 2022, eq. (5), σ̃_i = (σ̃_max^{1/ρ} + i/(N-1) (σ̃_min^{1/ρ} -
       σ̃_max^{1/ρ}))^ρ with ρ = 7. ``logsnr``: λ = -log σ̃ uniform (DPM-Solver's "logSNR" steps, Lu et al. 2022,
       recommended there for small images).
    2. Each target is rounded to the trained timestep nearest to it in λ. Why round rather than evaluate the
       network at fractional t: the denoiser contract is a long t, and the model was trained only on integer t
       (the U-Net would accept a float t, but its accuracy between trained t is untested). The solvers then use
       the exact ᾱ of the rounded t, so the step coefficients match the noise level the network is told: the
       steps are slightly off the ideal spacing (by at most half a timestep), never inconsistent.
    3. Neighbours that round to the same t are pushed apart (the smallest levels crowd near t = 0), so the
       sequence is exactly N distinct descending timesteps, ending at t = 0 and starting at the noisiest t with
       σ̃ ≤ σ̃_max.
    """
    a = alphas_cumprod.detach().double().cpu().numpy()
    lam = 0.5 * (np.log(a) - np.log1p(-a))  # λ_t = log(α/σ), decreasing in t
    total = lam.shape[0]
    if not 1 <= num_steps <= total:
        raise ValueError(f"Steps must be between 1 and {total} (got {num_steps})")
    start = int(np.nonzero(lam >= -math.log(SIGMA_MAX))[0].max()) if lam[0] >= -math.log(SIGMA_MAX) else total - 1
    start = max(start, num_steps - 1)
    lam_hi, lam_lo = lam[0], lam[start]
    frac = np.linspace(0.0, 1.0, num_steps)
    if spacing == "karras":
        inv_rho = 1.0 / KARRAS_RHO
        s_max, s_min = math.exp(-lam_lo), math.exp(-lam_hi)
        sigmas = (s_max**inv_rho + frac * (s_min**inv_rho - s_max**inv_rho)) ** KARRAS_RHO
        targets = -np.log(sigmas)
    elif spacing == "logsnr":
        targets = lam_lo + frac * (lam_hi - lam_lo)
    else:
        raise ValueError(f"Unknown noise-level spacing {spacing!r}; choose one of {', '.join(NOISE_LEVEL_SPACINGS)}")
    t = np.abs(lam[None, :start + 1] - targets[:, None]).argmin(axis=1)  # descending (targets ascend in λ)
    for i in range(num_steps - 2, -1, -1):  # 3. from the clean end up: strictly decreasing in i
        t[i] = max(t[i], t[i + 1] + 1)
    for i in range(num_steps):  # … without passing the start
        t[i] = min(t[i], start - i)
    return [int(v) for v in t]


def alpha_sigma(schedule: NoiseSchedule, t: int) -> tuple[float, float]:
    """(α_t, σ_t) as float64 Python numbers; t = -1 is the clean image (1, 0)."""
    if t < 0:
        return 1.0, 0.0
    a_bar = float(schedule.alphas_cumprod[t].double())
    return math.sqrt(a_bar), math.sqrt(1.0 - a_bar)


def log_snr(schedule: NoiseSchedule, t: int) -> float:
    """λ_t = log(α_t/σ_t); t must be a trained timestep (λ = ∞ at the clean image)."""
    a_t, s_t = alpha_sigma(schedule, t)
    return math.log(a_t / s_t)


def steps_in_lambda(schedule: NoiseSchedule, timesteps: Sequence[int]) -> list[float]:
    """h_i = λ_{t_{i+1}} - λ_{t_i} for each visited timestep; the last step, to the clean image, is ∞."""
    lams = [log_snr(schedule, t) for t in timesteps]
    return [b - a for a, b in pairwise(lams)] + [math.inf]


#: A multistep extrapolation is dropped to first order when the step is this many times longer (in λ) than the
#: one before: the polynomial through the previous predictions would be extrapolated far beyond them.
MAX_STEP_GROWTH = 2.0


def effective_order(order: int, index: int, total: int, steps_in_lambda: Sequence[float]) -> int:
    """The order a multistep solver in λ can use at step ``index`` of ``total``: warm-up (index + 1 predictions so
    far), lower order at the end (diffusers' ``lower_order_final``: the last steps use at most ``total - index``),
    and first order when the step grows more than :data:`MAX_STEP_GROWTH`-fold over the previous one (uniform
    spacing's last step to t = 0, from λ ≈ 1 to 4.6 at 10 steps, where extrapolating amplifies a model's errors)."""
    k = min(order, index + 1, total - index)
    if k > 1 and steps_in_lambda[index] > MAX_STEP_GROWTH * steps_in_lambda[index - 1]:
        return 1
    return k


def predict_x0(denoise: Denoiser, schedule: NoiseSchedule, x: Tensor, t: int, clip_x0: bool) -> Tensor:
    """The data prediction x̂_0 = (x_t - σ_t ε̂)/α_t (Ho et al. eq. 4 inverted), clipped to [-1, 1] if asked.

    The solvers here work on x̂_0 (the "++" form of Lu et al. 2022), where clipping keeps an imperfect model's
    predictions in the data range.
    """
    tt = batch_t(t, x)
    x0 = schedule.predict_x0_from_eps(x, tt, denoise(x, tt))
    return x0.clamp(-1.0, 1.0) if clip_x0 else x0


def check_timesteps(timesteps: Sequence[int], num_timesteps: int) -> list[int]:
    """``timesteps`` as a list, after checking it is a non-empty, strictly descending run of trained timesteps."""
    seq = [int(t) for t in timesteps]
    if not seq or any(b >= a for a, b in pairwise(seq)) or seq[-1] < 0 or seq[0] >= num_timesteps:
        raise ValueError(f"Timesteps must descend strictly within [0, {num_timesteps}) (got {seq[:5]}…)")
    return seq


def draw_noise(shape: torch.Size | tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Gaussian noise from ``generator`` (on its own device), moved to ``like``'s device and dtype."""
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=device).to(like.device, like.dtype)


def batch_t(t: int, like: Tensor) -> Tensor:
    """A (B,) long tensor filled with t on ``like``'s device."""
    return torch.full((like.shape[0],), t, device=like.device, dtype=torch.long)
