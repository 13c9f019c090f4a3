"""Noise schedules and the closed-form tables of the forward process.

Notation (Ho et al. 2020, improved-diffusion's names):

=====================  ==========================================================
``betas``              β_t, the variance added at step t
``alphas``             α_t = 1 - β_t
``alphas_cumprod``     ᾱ_t = ∏_{s≤t} α_s
``posterior_variance`` β̃_t = β_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t), eq. (7)
=====================  ==========================================================

Tables are computed in float64 once (cumulative products lose precision in float32)
and stored as float32 tensors, because MPS has no float64.

Schedule names only ever grow: a checkpoint stores the name, and renaming or changing
one would silently change what an old model means.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


def linear_betas(timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """Ho et al. 2020: β linear from 1e-4 to 0.02 over T=1000; rescaled for other T."""
    scale = 1000.0 / timesteps
    return np.linspace(beta_start * scale, beta_end * scale, timesteps, dtype=np.float64)


def cosine_betas(timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Nichol & Dhariwal 2021, eq. (17): ᾱ_t = f(t)/f(0), f(t) = cos²((t/T + s)/(1 + s)·π/2)."""

    def alpha_bar(u: float) -> float:
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    betas = [
        min(1.0 - alpha_bar((i + 1) / timesteps) / alpha_bar(i / timesteps), max_beta)
        for i in range(timesteps)
    ]
    return np.asarray(betas, dtype=np.float64)


BETA_SCHEDULES: dict[str, Callable[..., np.ndarray]] = {
    "linear": linear_betas,
    "cosine": cosine_betas,
}


def extract(table: Tensor, t: Tensor, ndim: int) -> Tensor:
    """Gather table[t] and shape it (B, 1, 1, ...) to broadcast against a (B, C, H, W) batch."""
    out = table.to(t.device)[t]
    return out.reshape(t.shape[0], *([1] * (ndim - 1)))


@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """The forward-process tables for one β schedule, and the pure formulas built on them."""

    name: str
    betas: Tensor
    alphas_cumprod: Tensor
    alphas_cumprod_prev: Tensor
    sqrt_alphas_cumprod: Tensor
    sqrt_one_minus_alphas_cumprod: Tensor
    sqrt_recip_alphas_cumprod: Tensor
    sqrt_recipm1_alphas_cumprod: Tensor
    posterior_variance: Tensor
    posterior_log_variance_clipped: Tensor
    posterior_mean_coef1: Tensor
    posterior_mean_coef2: Tensor

    @classmethod
    def create(cls, name: str = "linear", timesteps: int = 1000, **kwargs: float) -> NoiseSchedule:
        """Build the tables for a named schedule (see ``BETA_SCHEDULES``)."""
        if name not in BETA_SCHEDULES:
            raise ValueError(f"Unknown noise schedule {name!r}; choose one of {sorted(BETA_SCHEDULES)}")
        if timesteps < 2:
            raise ValueError("A noise schedule needs at least 2 timesteps")
        return cls.from_betas(name, BETA_SCHEDULES[name](timesteps, **kwargs))

    @classmethod
    def from_betas(cls, name: str, betas: np.ndarray) -> NoiseSchedule:
        """Derive every table from β in float64, then store float32."""
        betas = np.asarray(betas, dtype=np.float64)
        if not ((betas > 0).all() and (betas <= 1).all()):
            raise ValueError("betas must lie in (0, 1]")
        alphas = 1.0 - betas
        ac = np.cumprod(alphas)
        ac_prev = np.append(1.0, ac[:-1])
        post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
        # β̃_0 = 0; log is clipped to β̃_1 as in improved-diffusion.
        post_logvar = np.log(np.append(post_var[1], post_var[1:]))

        def f32(a: np.ndarray) -> Tensor:
            return torch.from_numpy(a.astype(np.float32))

        return cls(
            name=name,
            betas=f32(betas),
            alphas_cumprod=f32(ac),
            alphas_cumprod_prev=f32(ac_prev),
            sqrt_alphas_cumprod=f32(np.sqrt(ac)),
            sqrt_one_minus_alphas_cumprod=f32(np.sqrt(1.0 - ac)),
            sqrt_recip_alphas_cumprod=f32(np.sqrt(1.0 / ac)),
            sqrt_recipm1_alphas_cumprod=f32(np.sqrt(1.0 / ac - 1.0)),
            posterior_variance=f32(post_var),
            posterior_log_variance_clipped=f32(post_logvar),
            posterior_mean_coef1=f32(betas * np.sqrt(ac_prev) / (1.0 - ac)),
            posterior_mean_coef2=f32((1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac)),
        )

    @property
    def num_timesteps(self) -> int:
        return int(self.betas.shape[0])

    def to(self, device: torch.device | str) -> NoiseSchedule:
        """The same schedule with its tables on ``device``: then :func:`extract` gathers there without a copy
        from the host (a blocking copy to a GPU also waits for all the work queued on it)."""
        tables = {f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self) if f.name != "name"}
        return dataclasses.replace(self, **tables)

    # -- forward process -------------------------------------------------------------
    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε, eq. (4)."""
        return (
            extract(self.sqrt_alphas_cumprod, t, x0.ndim) * x0
            + extract(self.sqrt_one_minus_alphas_cumprod, t, x0.ndim) * noise
        )

    def velocity(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """v = √ᾱ_t ε - √(1-ᾱ_t) x_0, the v-prediction target (Salimans & Ho 2022, eq. 11)."""
        return (
            extract(self.sqrt_alphas_cumprod, t, x0.ndim) * noise
            - extract(self.sqrt_one_minus_alphas_cumprod, t, x0.ndim) * x0
        )

    # -- reverse-process helpers -----------------------------------------------------
    def predict_eps_from_v(self, x_t: Tensor, t: Tensor, v: Tensor) -> Tensor:
        """ε = √ᾱ_t v + √(1-ᾱ_t) x_t (substitute x_t = √ᾱ x_0 + √(1-ᾱ) ε into v's definition)."""
        return (
            extract(self.sqrt_alphas_cumprod, t, x_t.ndim) * v
            + extract(self.sqrt_one_minus_alphas_cumprod, t, x_t.ndim) * x_t
        )

    def predict_x0_from_eps(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x̂_0 = (x_t - √(1-ᾱ_t) ε) / √ᾱ_t, inverting eq. (4)."""
        return (
            extract(self.sqrt_recip_alphas_cumprod, t, x_t.ndim) * x_t
            - extract(self.sqrt_recipm1_alphas_cumprod, t, x_t.ndim) * eps
        )

    def predict_eps_from_x0(self, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        """ε = (x_t/√ᾱ_t - x̂_0) / √(1/ᾱ_t - 1); used after clipping x̂_0."""
        return (
            extract(self.sqrt_recip_alphas_cumprod, t, x_t.ndim) * x_t - x0
        ) / extract(self.sqrt_recipm1_alphas_cumprod, t, x_t.ndim)

    def q_posterior(self, x0: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0), eqs. (6)-(7)."""
        mean = (
            extract(self.posterior_mean_coef1, t, x_t.ndim) * x0
            + extract(self.posterior_mean_coef2, t, x_t.ndim) * x_t
        )
        var = extract(self.posterior_variance, t, x_t.ndim)
        logvar = extract(self.posterior_log_variance_clipped, t, x_t.ndim)
        return mean, var, logvar

    def alpha_bar_at(self, t: Tensor) -> Tensor:
        """ᾱ_t for integer t ≥ 0 and 1.0 for t = -1 (the clean image), as DDIM needs."""
        padded = torch.cat([torch.ones(1), self.alphas_cumprod])
        return padded.to(t.device)[t + 1]
