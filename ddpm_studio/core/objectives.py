"""The training objective (Ho et al. 2020, Algorithm 1; or its v-prediction form), which noise levels it visits,
how it weights them, and its per-timestep breakdown.

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

from ddpm_studio.core.choices import LOSS_TYPES, LOSS_WEIGHTINGS, NOISE_LEVELS, PREDICTIONS, TIMESTEP_BUCKETS
from ddpm_studio.core.schedules import NoiseSchedule

#: EDM's log-normal noise levels, ln σ ~ N(-1.2, 1.2²), and the data's standard deviation its weighting assumes
#: (Karras et al. 2022, Table 1, for images in [-1, 1]).
EDM_LOG_SIGMA_MEAN = -1.2
EDM_LOG_SIGMA_STD = 1.2
EDM_SIGMA_DATA = 0.5


def sample_timesteps(batch: int, num_timesteps: int, generator: torch.Generator, device: torch.device,
                     probs: Tensor | None = None) -> Tensor:
    """t ~ Uniform({0, …, T-1}), or t ~ ``probs`` (T,) when given, drawn from the run's own generator so resume is exact."""
    if probs is None:
        return torch.randint(0, num_timesteps, (batch,), generator=generator, device=device)
    return torch.multinomial(probs.to(device=device, dtype=torch.float32), batch, replacement=True, generator=generator)


def noise_sigmas(alphas_cumprod: Tensor) -> Tensor:
    """σ_t = √((1 - ᾱ_t) / ᾱ_t) in float64: the noise level of step t in EDM's terms (x_t / √ᾱ_t = x_0 + σ_t ε)."""
    ac = alphas_cumprod.double()
    return ((1.0 - ac) / ac).sqrt()


def lognormal_timestep_probs(alphas_cumprod: Tensor, mean: float = EDM_LOG_SIGMA_MEAN,
                             std: float = EDM_LOG_SIGMA_STD) -> Tensor:
    """P(t) (T,) float64 of EDM's noise levels, ln σ ~ N(mean, std²), on a discrete schedule.

    Each t takes the probability of the ln σ interval closest to its own ln σ_t: the boundaries are the
    midpoints between consecutive ln σ_t, and the two tails go to t = 0 and t = T-1. The network keeps its
    integer t, so every sampler works unchanged; with T = 1000 the steps are far finer than the distribution.
    """
    if std <= 0:
        raise ValueError(f"the log-normal's standard deviation must be positive (got {std})")
    log_sigma = noise_sigmas(alphas_cumprod).log()
    boundaries = (log_sigma[1:] + log_sigma[:-1]) / 2
    cdf = torch.special.ndtr((boundaries - mean) / std)
    edges = torch.cat([cdf.new_zeros(1), cdf, cdf.new_ones(1)])
    return edges.diff()


def timestep_probs(alphas_cumprod: Tensor, noise_levels: str, mean: float = EDM_LOG_SIGMA_MEAN,
                   std: float = EDM_LOG_SIGMA_STD) -> Tensor | None:
    """The distribution training draws t from: None for uniform (``torch.randint``), else (T,) probabilities."""
    if noise_levels == "uniform":
        return None
    if noise_levels == "lognormal":
        return lognormal_timestep_probs(alphas_cumprod, mean, std)
    raise ValueError(f"Unknown noise levels {noise_levels!r}; choose one of {NOISE_LEVELS}")


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


def edm_weights(alphas_cumprod: Tensor, prediction: str = "epsilon", sigma_data: float = EDM_SIGMA_DATA) -> Tensor:
    """EDM's loss weight λ(σ) = (σ² + σ_d²) / (σ σ_d)² (Karras et al. 2022, eq. 8 and Table 1), per t, for our targets.

    λ weights the error of the image estimate x̂_0. An ε-model's x̂_0 error is σ_t times its ε error, a v-model's
    σ_t / √(1 + σ_t²) times its v error, so the weight on the ε loss is λσ² = 1 + σ²/σ_d² and on the v loss
    λσ²/(1 + σ²) = (σ² + σ_d²) / (σ_d² (1 + σ²)) (between 1 and 1/σ_d²). Not normalised: see :func:`loss_weights`.
    """
    sigma2 = noise_sigmas(alphas_cumprod) ** 2
    x0_weight_times_sigma2 = (sigma2 + sigma_data**2) / sigma_data**2  # λ σ²
    if prediction == "epsilon":
        weights = x0_weight_times_sigma2
    elif prediction == "v":
        weights = x0_weight_times_sigma2 / (1.0 + sigma2)
    else:
        raise ValueError(f"Unknown prediction target {prediction!r}; choose one of {PREDICTIONS}")
    return weights.to(alphas_cumprod.dtype)


def loss_weights(alphas_cumprod: Tensor, weighting: str, prediction: str, *, gamma: float = 5.0,
                 probs: Tensor | None = None) -> Tensor | None:
    """Per-t weights (T,) of the training loss, or None for the unweighted loss.

    ``min-snr``: :func:`min_snr_weights` as they are (γ = ``gamma``). ``edm``: :func:`edm_weights` scaled so that
    their mean under the distribution t is drawn from (``probs``, None = uniform) is 1, which keeps the loss, and
    so the gradient norm that clipping sees, on the scale of the unweighted loss.
    """
    if weighting == "uniform":
        return None
    if weighting == "min-snr":
        return min_snr_weights(alphas_cumprod, gamma, prediction)
    if weighting == "edm":
        weights = edm_weights(alphas_cumprod, prediction).double()
        p = torch.full_like(weights, 1.0 / len(weights)) if probs is None else probs.double()
        return (weights / (weights * p).sum()).to(alphas_cumprod.dtype)
    raise ValueError(f"Unknown loss weighting {weighting!r}; choose one of {LOSS_WEIGHTINGS}")


def bucket_losses(losses: Tensor, t: Tensor, num_timesteps: int,
                  buckets: int = TIMESTEP_BUCKETS) -> tuple[Tensor, Tensor]:
    """Sum and count of the loss in each quarter of t (improved-diffusion's q0..q3 logging).

    Returned as device tensors so the caller can accumulate many steps before one host sync.
    """
    index = (t * buckets // num_timesteps).clamp_(max=buckets - 1)
    sums = torch.zeros(buckets, device=losses.device).index_add_(0, index, losses.detach().float())
    counts = torch.zeros(buckets, device=losses.device).index_add_(0, index, torch.ones_like(losses, dtype=torch.float32))
    return sums, counts
