"""DPM-Solver++(2M), Lu et al. 2022 ("DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
Probabilistic Models", Algorithm 2), in the data-prediction form of diffusers'
``DPMSolverMultistepScheduler`` (``solver_order=2``, ``solver_type="midpoint"``, lower-order final step).

Why: it solves the probability-flow ODE with a second-order multistep method in λ, so 10-20 model
calls give samples close to those of a 1000-step DDPM (the paper: CIFAR-10 FID 4.70 at 10 steps).

Notation (VP SDE of the DDPM schedule): α_t = √ᾱ_t, σ_t = √(1-ᾱ_t), λ_t = log(α_t/σ_t) (half the
log-SNR), h_i = λ_{t_{i+1}} - λ_{t_i} > 0 the step in λ, x̂_0 = x_θ(x_t, t) the data prediction.
After the last visited timestep the solver lands on the clean image (α = 1, σ = 0, λ = ∞).

``stochastic=True`` is SDE-DPM-Solver++(2M) (Lu et al. 2022 §5; diffusers' ``sde-dpmsolver++``): the same
data-prediction extrapolation D, but each step solves the reverse SDE instead of the ODE,
x_next = (σ_next/σ_t) e^{-h} x_t + α_next (1 - e^{-2h}) D + σ_next √(1 - e^{-2h}) z. Why both: the
ODE maps noise to image deterministically (interpolation needs that), but carries a model's errors to
the end; the injected noise lets an imperfect model correct them, as DDPM's 1000 steps do (on the demo
benchmark, docs/quality_vs_steps.md, the ODE solvers lose most of their score to off-palette colours).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor

from ddpm_studio.core.samplers.base import Denoiser, SampleStep, batch_t, draw_noise, timestep_sequence
from ddpm_studio.core.schedules import NoiseSchedule


def _alpha_sigma(schedule: NoiseSchedule, t: int) -> tuple[float, float]:
    """(α_t, σ_t) as float64 Python numbers; t = -1 is the clean image (1, 0)."""
    if t < 0:
        return 1.0, 0.0
    a_bar = float(schedule.alphas_cumprod[t].double())
    return math.sqrt(a_bar), math.sqrt(1.0 - a_bar)


def dpm_solver_steps(
    denoise: Denoiser,
    schedule: NoiseSchedule,
    x_T: Tensor,
    *,
    num_steps: int = 20,
    spacing: str = "uniform",
    order: int = 2,
    clip_x0: bool = True,
    stochastic: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[SampleStep]:
    """Yield one step per model call, from x_T to x_0. Deterministic unless ``stochastic`` (then seeded by ``generator``).

    ``order=1`` is DPM-Solver++(1), which is exactly DDIM with η = 0 (Lu et al. 2022, §4.1).
    """
    if order not in (1, 2):
        raise ValueError(f"DPM-Solver++ order must be 1 or 2 (got {order})")
    seq = timestep_sequence(schedule.num_timesteps, num_steps, spacing)
    x = x_T
    prev_x0: Tensor | None = None
    prev_lambda = 0.0
    for index, t in enumerate(seq):
        t_next = seq[index + 1] if index + 1 < len(seq) else -1
        tt = batch_t(t, x)
        eps = denoise(x, tt)
        # 1. data prediction x̂_0 = (x_t - σ_t ε̂) / α_t (Ho et al. eq. 4 inverted), clipped (the "++": thresholding works here)
        x0 = schedule.predict_x0_from_eps(x, tt, eps)
        if clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
        a_t, s_t = _alpha_sigma(schedule, t)
        lam_t = math.log(a_t / s_t)
        if t_next < 0:
            # Final step to σ = 0 (h = ∞): the first-order update reduces to x_0 = x̂_0 (diffusers'
            # lower_order_final with final_sigmas_type="zero").
            x = x0
        else:
            a_n, s_n = _alpha_sigma(schedule, t_next)
            h = math.log(a_n / s_n) - lam_t
            phi = math.expm1(-h)  # e^{-h} - 1, accurate when h is small (1000-step runs)
            if order == 1 or prev_x0 is None or t_next == 0:
                # 2. DPM-Solver++(1) (Lu et al.'s first-order update, = DDIM η = 0):
                #    x_next = (σ_next/σ_t) x_t - α_next (e^{-h} - 1) x̂_0.
                #    Also used for the step that lands on t = 0 (uniform / quadratic spacing): that is the
                #    effective last step (the call at t = 0 only returns x̂_0 ≈ x_0) and by far the largest in
                #    λ (λ_0 ≈ 4.6 for the linear schedule), where the 2M extrapolation amplifies errors; this
                #    is diffusers' lower_order_final applied to it (tests/core/test_samplers.py measures it).
                d = x0
            else:
                # 3. 2M multistep, Algorithm 2: r = h_{i-1}/h_i, D = (1 + 1/(2r)) x̂_0,i - 1/(2r) x̂_0,i-1
                r = (lam_t - prev_lambda) / h
                d = x0 + (x0 - prev_x0) / (2.0 * r)
            if stochastic:
                decay = math.exp(-h)
                spread = -math.expm1(-2.0 * h)  # 1 - e^{-2h}
                x = (s_n / s_t * decay) * x + (a_n * spread) * d + (s_n * math.sqrt(spread)) * draw_noise(x.shape, generator, x)
            else:
                x = (s_n / s_t) * x - (a_n * phi) * d
        prev_x0, prev_lambda = x0, lam_t
        yield SampleStep(index=index, total=len(seq), t=t, x_t=x, x0_pred=x0)
