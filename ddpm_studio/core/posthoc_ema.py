"""The mathematics of power-function EMA and of rebuilding any EMA length after training (post-hoc EMA).

Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion Models" (EDM2), section 3
and appendix C. A *power-function* EMA of the weights θ_1 … θ_t averages them with the profile

    p_t(τ) = (γ + 1) τ^γ / t^(γ+1),   0 < τ ≤ t,

so its averaging window grows with the run: its length, the relative standard deviation σ_rel of τ/t under
p_t, stays a fixed fraction of the run so far (σ_rel = 0.05: roughly the last 15 % of the run). Tracking it
needs one update per step, θ_avg ← β_t θ_avg + (1 - β_t) θ_t with β_t = (1 - 1/t)^(γ+1) (its eq. 127 with
one step per time unit), and unlike a fixed decay it has no warm-up bias and no run length baked in.

Post-hoc EMA: averages taken with a few known profiles (two lengths, at a few moments of the run) are
linear combinations of the same θ's, so a profile of *any* other length at time t is approximated by the
combination of them whose profile is closest in L2 — a small least-squares problem in the profiles' inner
products (EDM2's Algorithm 3), which have a closed form. This module is that math, in float64 and numpy, with
no torch: :mod:`ddpm_studio.core.power_ema` applies it to network weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: σ_rel of a uniform average over the whole run (γ = 0); a power-function profile cannot be longer.
MAX_SIGMA_REL = math.sqrt(1 / 12)


def sigma_rel_to_exponent(sigma_rel: float) -> float:
    """γ of the power-function profile whose relative standard deviation is ``sigma_rel``.

    σ_rel² = (γ + 1) / ((γ + 2)² (γ + 3)) (EDM2 eq. 123) is a cubic in γ: γ³ + 7γ² + (16 - σ⁻²)γ + (12 - σ⁻²) = 0,
    whose largest real root is the exponent (Algorithm 2).
    """
    if not 0.0 < sigma_rel < MAX_SIGMA_REL:
        raise ValueError(f"EMA length (σ_rel) must be between 0 and {MAX_SIGMA_REL:.3f} (got {sigma_rel})")
    s = float(sigma_rel) ** -2
    return float(np.roots([1.0, 7.0, 16.0 - s, 12.0 - s]).real.max())


def exponent_to_sigma_rel(gamma: float) -> float:
    """σ_rel = √((γ + 1) / ((γ + 2)² (γ + 3))), the inverse of :func:`sigma_rel_to_exponent`."""
    return math.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)))


def ema_beta(gamma: float, step: int) -> float:
    """The decay β of the update after ``step`` steps (step ≥ 1): (1 - 1/step)^(γ+1); β = 0 at step 1."""
    if step < 1:
        raise ValueError("the first update is step 1")
    return (1.0 - 1.0 / step) ** (gamma + 1.0)


def profile_inner_product(t_a: np.ndarray, gamma_a: np.ndarray, t_b: np.ndarray, gamma_b: np.ndarray) -> np.ndarray:
    """∫ p_a(τ) p_b(τ) dτ of two power-function profiles taken at times t_a and t_b (broadcasting).

    With t_a ≤ t_b: (γ_a + 1)(γ_b + 1) / (γ_a + γ_b + 1) · (t_a / t_b)^γ_b / t_b (EDM2 eq. 151).
    """
    t_a, gamma_a, t_b, gamma_b = (np.asarray(v, dtype=np.float64) for v in (t_a, gamma_a, t_b, gamma_b))
    a_first = t_a <= t_b
    t_lo, t_hi = np.where(a_first, t_a, t_b), np.where(a_first, t_b, t_a)
    g_hi = np.where(a_first, gamma_b, gamma_a)
    return (gamma_a + 1) * (gamma_b + 1) / (gamma_a + gamma_b + 1) * (t_lo / t_hi) ** g_hi / t_hi


def solve_coefficients(times: Sequence[float], sigma_rels: Sequence[float], target_time: float,
                       target_sigma_rel: float) -> np.ndarray:
    """Weights x (one per stored average) such that Σ x_i θ̄_i best approximates the target average.

    ``times[i]`` and ``sigma_rels[i]`` describe stored average i (the step it was taken at and its profile's
    length). Solves the normal equations A x = b of min ‖Σ x_i p_i - p_target‖² (A: the stored profiles' inner
    products, b: their inner products with the target), then rescales x to sum to 1, as EDM2 does, so a constant
    weight is reproduced exactly. A target equal to a stored profile gives that profile back (x one-hot).
    """
    t = np.asarray(times, dtype=np.float64)
    g = np.array([sigma_rel_to_exponent(s) for s in sigma_rels])
    if t.ndim != 1 or t.shape != g.shape or not len(t):
        raise ValueError("need one time per stored average, and at least one")
    if (t <= 0).any() or target_time <= 0:
        raise ValueError("averages are taken after at least one step")
    g_target = sigma_rel_to_exponent(target_sigma_rel)
    a = profile_inner_product(t[:, None], g[:, None], t[None, :], g[None, :])
    b = profile_inner_product(t, g, np.float64(target_time), np.float64(g_target))
    x = np.linalg.lstsq(a, b, rcond=None)[0]  # lstsq: duplicate stored averages make A singular
    return x / x.sum()


def reconstruction_error(times: Sequence[float], sigma_rels: Sequence[float], target_time: float,
                         target_sigma_rel: float) -> float:
    """‖Σ x_i p_i - p_target‖ / ‖p_target‖ for the coefficients of :func:`solve_coefficients` (0 = exact)."""
    x = solve_coefficients(times, sigma_rels, target_time, target_sigma_rel)
    t = np.asarray(times, dtype=np.float64)
    g = np.array([sigma_rel_to_exponent(s) for s in sigma_rels])
    g_target = sigma_rel_to_exponent(target_sigma_rel)
    a = profile_inner_product(t[:, None], g[:, None], t[None, :], g[None, :])
    b = profile_inner_product(t, g, np.float64(target_time), np.float64(g_target))
    c = float(profile_inner_product(target_time, g_target, target_time, g_target))
    return math.sqrt(max(float(x @ a @ x - 2 * x @ b + c), 0.0) / c)
