"""The training objective (Ho et al. 2020, Algorithm 1; or its v-prediction form) and its per-timestep breakdown.

ε-prediction is the paper's. v-prediction (Salimans & Ho 2022) trains the same network on a target that
is mostly noise at low t and mostly the (negated) image at high t, so a young model gets the overall
colours and layout right early: an ε-model's image estimate at high t is (x_t - √(1-ᾱ) ε̂)/√ᾱ, which
multiplies its errors by up to ~150 on the linear schedule.
Samplers always receive ε (:meth:`NoiseSchedule.predict_eps_from_v` converts), so none of them changes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ddpm_studio.core.choices import LOSS_TYPES, PREDICTIONS, TIMESTEP_BUCKETS
from ddpm_studio.core.schedules import NoiseSchedule


def sample_timesteps(batch: int, num_timesteps: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """t ~ Uniform({0, …, T-1}), drawn from the run's own generator so resume is exact."""
    return torch.randint(0, num_timesteps, (batch,), generator=generator, device=device)


def training_target(schedule: NoiseSchedule, prediction: str, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """What the network learns to output for x_t = q_sample(x0, t, noise): ε, or v."""
    if prediction == "epsilon":
        return noise
    if prediction == "v":
        return schedule.velocity(x0, t, noise)
    raise ValueError(f"Unknown prediction target {prediction!r}; choose one of {PREDICTIONS}")


def per_sample_loss(pred: Tensor, target: Tensor, loss_type: str = "mse") -> Tensor:
    """‖target - prediction‖ (ε or v) averaged over pixels, one value per sample (B,), computed in float32."""
    pred = pred.float()
    target = target.float()
    if loss_type == "mse":
        elementwise = F.mse_loss(pred, target, reduction="none")
    elif loss_type == "l1":
        elementwise = F.l1_loss(pred, target, reduction="none")
    elif loss_type == "huber":
        elementwise = F.smooth_l1_loss(pred, target, reduction="none", beta=1.0)
    else:
        raise ValueError(f"Unknown loss {loss_type!r}; choose one of {LOSS_TYPES}")
    return elementwise.flatten(1).mean(dim=1)


def training_losses(
    model: Callable[..., Tensor],
    schedule: NoiseSchedule,
    x0: Tensor,
    t: Tensor,
    noise: Tensor,
    *,
    prediction: str = "epsilon",
    loss_type: str = "mse",
    labels: Tensor | None = None,
    autocast: Callable[[], Any] = contextlib.nullcontext,
) -> Tensor:
    """The per-sample loss (B,) of Algorithm 1 (Ho et al. 2020), the one place it is written.

    x_t = q_sample(x0, t, noise) (eq. 4) → the network's output at (x_t, t, labels), under ``autocast`` →
    its distance to the target (ε, or v) in float32. Training and the validation loss both call this, so
    what the curve shows is what the optimiser minimises. Shapes: x0, noise (B, C, H, W); t, labels (B,).
    """
    x_t = schedule.q_sample(x0, t, noise)
    with autocast():
        out = model(x_t, t, labels)
    return per_sample_loss(out, training_target(schedule, prediction, x0, t, noise), loss_type)


def min_snr_weights(alphas_cumprod: Tensor, gamma: float, prediction: str = "epsilon") -> Tensor:
    """Per-timestep loss weights of Min-SNR-γ (Hang et al. 2023): min(SNR_t, γ)/SNR_t for ε, min(SNR_t, γ)/(SNR_t + 1) for v.

    SNR_t = ᾱ_t / (1 - ᾱ_t). Both give the x_0 error the weight min(SNR_t, γ): nearly clean inputs (SNR
    above γ) are weighted down, so the network's capacity goes to the noisy steps that decide an image's
    layout and colours; the paper reports ~3x faster convergence. γ <= 0 gives uniform weights.
    """
    if gamma <= 0:
        return torch.ones_like(alphas_cumprod)
    snr = alphas_cumprod.double() / (1.0 - alphas_cumprod.double())
    denominator = snr if prediction == "epsilon" else snr + 1.0
    return (snr.clamp(max=gamma) / denominator).to(alphas_cumprod.dtype)


def bucket_losses(losses: Tensor, t: Tensor, num_timesteps: int,
                  buckets: int = TIMESTEP_BUCKETS) -> tuple[Tensor, Tensor]:
    """Sum and count of the loss in each quarter of t (improved-diffusion's q0..q3 logging).

    Returned as device tensors so the caller can accumulate many steps before one host sync.
    """
    index = (t * buckets // num_timesteps).clamp_(max=buckets - 1)
    sums = torch.zeros(buckets, device=losses.device).index_add_(0, index, losses.detach().float())
    counts = torch.zeros(buckets, device=losses.device).index_add_(0, index, torch.ones_like(losses, dtype=torch.float32))
    return sums, counts
