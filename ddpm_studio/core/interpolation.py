"""Spherical interpolation of Gaussian noise, for walking between two seeds' samples.

Why slerp and not a straight line: x_T ~ N(0, I) in d dimensions lies near the sphere of radius
√d; the midpoint of a straight line between two such points has norm ≈ √(d/2), which the model
never saw, and decodes to a washed-out image. Slerp (Shoemake 1985) stays on the sphere; Song et
al. 2020 (DDIM, §5.3) use it with a deterministic sampler to get smooth image interpolations.
"""

from __future__ import annotations

import torch
from torch import Tensor


def slerp(z0: Tensor, z1: Tensor, alpha: float) -> Tensor:
    """slerp(z0, z1; α) = sin((1-α)θ)/sin θ · z0 + sin(αθ)/sin θ · z1, θ = angle(z0, z1), per batch row.

    α = 0 and α = 1 return ``z0`` and ``z1`` exactly (so strip ends equal the seeds' samples);
    nearly parallel rows fall back to linear interpolation, where slerp's formula is 0/0.
    """
    if alpha == 0.0:
        return z0.clone()
    if alpha == 1.0:
        return z1.clone()
    a, b = z0.flatten(1).double(), z1.flatten(1).double()
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
    theta = torch.arccos(cos.clamp(-1.0, 1.0))[:, None]
    sin = torch.sin(theta)
    linear = sin.abs() < 1e-6
    w0 = torch.where(linear, 1.0 - alpha, torch.sin((1.0 - alpha) * theta) / torch.where(linear, 1.0, sin))
    w1 = torch.where(linear, alpha, torch.sin(alpha * theta) / torch.where(linear, 1.0, sin))
    return (w0 * a + w1 * b).reshape(z0.shape).to(z0.dtype)


def slerp_path(z0: Tensor, z1: Tensor, frames: int) -> Tensor:
    """``frames`` points from z0 to z1 (both included), stacked along a new first axis."""
    if frames < 2:
        raise ValueError(f"An interpolation needs at least 2 frames (got {frames})")
    return torch.stack([slerp(z0, z1, i / (frames - 1)) for i in range(frames)])
