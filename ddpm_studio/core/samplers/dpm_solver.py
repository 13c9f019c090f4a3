"""Multistep DPM-Solver++ of order 1-3, Lu et al. 2022 ("DPM-Solver++: Fast Solver for Guided Sampling of
Diffusion Probabilistic Models", Algorithm 2 for 2M; the 3M form of their code and of diffusers'
``DPMSolverMultistepScheduler(solver_order=3)``), on the probability-flow ODE or on the reverse SDE.

Why: it solves the diffusion ODE with an exponential integrator in λ, exact for the linear part, and a
polynomial through the last data predictions for the rest, so 10-20 model calls come close to a
1000-step DDPM (the paper: CIFAR-10 FID 4.70 at 10 steps).

Notation (see :mod:`.base`): α, σ, λ at the current visited timestep t and the next one, h = λ_next - λ_t > 0,
x̂_0 = x_θ(x_t, t) the data prediction. The exact solution from t to next is
x_next = c_x x_t + α_next ∫_0^h κ e^{-κ(h-u)} x_θ(λ_t + u) du  (+ σ_next √(1 - e^{-2h}) z for the SDE),
with κ = 1, c_x = σ_next/σ_t for the ODE and κ = 2, c_x = (σ_next/σ_t) e^{-h} for the SDE (Lu et al. §5).
Writing x_θ(λ_t + u) ≈ D0 + (u/h) D1 + (u/h)² D2 (a polynomial through the last 1-3 predictions) gives
x_next = c_x x_t + α_next (c0 D0 + c1 D1 + c2 D2) with
c0 = 1 - e^{-κh}, c1 = 1 - (1 - e^{-κh})/(κh), c2 = 1 - 2/(κh) + 2 (1 - e^{-κh})/(κh)².

``stochastic=True`` is SDE-DPM-Solver++ (diffusers' ``sde-dpmsolver++``). Why both: the ODE maps noise to image
deterministically (interpolation needs that), but carries a model's errors to the end; the injected noise lets an
imperfect model correct them, as DDPM's 1000 steps do (on the demo benchmark, docs/quality_vs_steps.md, the ODE
solvers lose most of their score to off-palette colours).

On the third-order coefficient: the reference code (LuChengTHU/dpm-solver, diffusers, k-diffusion's
``dpmpp_3m_sde``) multiplies D2 by (e^{-h} - 1 + h)/h² - 1/2, half of c2 here for the ODE; with D2 defined as
below that leaves an O(h³) local error, so the step is only second-order accurate. tests/core/test_samplers.py
measures the order on an exact Gaussian denoiser over 16-128 steps: 4.0 with c2 (DDIM 1.0, 2M 2.0), 2.3 and
falling towards 2 with the halved coefficient.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from ddpm_studio.core.samplers.base import (
    Denoiser,
    SampleStep,
    alpha_sigma,
    check_timesteps,
    draw_noise,
    effective_order,
    predict_x0,
    steps_in_lambda,
)
from ddpm_studio.core.schedules import NoiseSchedule


def _phi(h: float, kappa: float) -> tuple[float, float, float]:
    """(c0, c1, c2) of the module docstring for a step h in λ; kappa = 1 (ODE) or 2 (SDE)."""
    kh = kappa * h
    c0 = -math.expm1(-kh)  # 1 - e^{-κh}, accurate for small steps (1000-step runs)
    return c0, 1.0 - c0 / kh, 1.0 - 2.0 / kh + 2.0 * c0 / kh**2


def dpm_solver_steps(
    denoise: Denoiser,
    schedule: NoiseSchedule,
    x_T: Tensor,
    timesteps: Sequence[int],
    *,
    order: int = 2,
    clip_x0: bool = True,
    stochastic: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[SampleStep]:
    """Yield one step per model call, from x_T to x_0. Deterministic unless ``stochastic`` (then seeded by
    ``generator``).

    ``order=1`` is DPM-Solver++(1), which is exactly DDIM with η = 0 (Lu et al. 2022, §4.1); with
    ``stochastic`` it is DDIM with η = 1.
    """
    if order not in (1, 2, 3):
        raise ValueError(f"DPM-Solver++ order must be 1, 2 or 3 (got {order})")
    seq = check_timesteps(timesteps, schedule.num_timesteps)
    hs = steps_in_lambda(schedule, seq)  # h_i, the steps in λ
    kappa = 2.0 if stochastic else 1.0
    x = x_T
    history: list[Tensor] = []  # the last data predictions, newest last
    for index, t in enumerate(seq):
        # 1. data prediction x̂_0 (clipped: thresholding works on x̂_0, the "++" of the paper)
        x0 = predict_x0(denoise, schedule, x, t, clip_x0)
        history = [*history[-2:], x0]
        if index + 1 == len(seq):
            # 2. The last step goes to σ = 0 (h = ∞): the first-order update is x_0 = x̂_0 (diffusers'
            #    lower_order_final with final_sigmas_type="zero"), for the ODE and the SDE alike.
            x = x0
        else:
            s_t = alpha_sigma(schedule, t)[1]
            a_n, s_n = alpha_sigma(schedule, seq[index + 1])
            h = hs[index]
            c0, c1, c2 = _phi(h, kappa)
            k = effective_order(order, index, len(seq), hs)
            if k == 1:
                # 3a. DPM-Solver++(1): x_next = c_x x_t + α_next c0 x̂_0
                update = c0 * x0
            elif k == 2:
                # 3b. 2M, Algorithm 2 ("midpoint" form): r = h_{i-1}/h_i, D = x̂_0,i + (x̂_0,i - x̂_0,i-1)/(2r)
                r0 = hs[index - 1] / h
                update = c0 * (x0 + (x0 - history[-2]) / (2.0 * r0))
            else:
                # 3c. 3M: divided differences through three predictions, D1 ≈ h x_θ', D2 ≈ h² x_θ''/2
                r0, r1 = hs[index - 1] / h, hs[index - 2] / h
                d1_0 = (x0 - history[-2]) / r0
                d1_1 = (history[-2] - history[-3]) / r1
                d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                update = c0 * x0 + c1 * d1 + c2 * d2
            if stochastic:
                # 4. SDE: x_next = (σ_n/σ_t) e^{-h} x_t + α_n (...) + σ_n √(1 - e^{-2h}) z
                noise = draw_noise(x.shape, generator, x)
                x = (s_n / s_t * math.exp(-h)) * x + a_n * update + (s_n * math.sqrt(c0)) * noise
            else:
                # 4. ODE: x_next = (σ_n/σ_t) x_t + α_n (...)
                x = (s_n / s_t) * x + a_n * update
        yield SampleStep(index=index, total=len(seq), t=t, x_next=x, x0_pred=x0)
