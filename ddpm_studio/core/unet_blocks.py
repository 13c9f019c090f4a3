"""The layers of the DDPM U-Net (Ho et al. 2020, appendix B and their TF code).

Initialisation follows the paper's code: Xavier-uniform weights ("fan_avg"), zero biases, and a
zero last conv in every residual branch, attention output and the network head, so that a fresh
network is the identity on its skip paths and predicts ε = 0.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ddpm_studio.core.unet_config import GROUPS  # GroupNorm groups, as in the paper (the layout's rules need it too)

NORM_EPS = 1e-6  # tf.contrib.layers.group_norm's epsilon, used by the paper's code


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(GROUPS, channels, eps=NORM_EPS)


def _paper_init(layer: nn.Conv2d | nn.Linear, zero: bool) -> None:
    """The paper's init: variance scaling (fan_avg, uniform) = Xavier-uniform, zero bias; or all zeros."""
    if zero:
        nn.init.zeros_(layer.weight)
    else:
        nn.init.xavier_uniform_(layer.weight)
    nn.init.zeros_(layer.bias)


def conv(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, zero: bool = False) -> nn.Conv2d:
    """A "same" conv (3x3 or 1x1) with the paper's init; ``zero=True`` for the last layer of a residual branch."""
    layer = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2)
    _paper_init(layer, zero)
    return layer


def linear(in_features: int, out_features: int, zero: bool = False) -> nn.Linear:
    layer = nn.Linear(in_features, out_features)
    _paper_init(layer, zero)
    return layer


def sinusoidal_frequencies(dim: int, max_period: float = 10_000.0, device: torch.device | None = None) -> Tensor:
    """ω_i = max_period^(-i/(half-1)), i < dim/2: the paper's (and diffusers' DDPM) spacing, float32."""
    half = dim // 2
    exponent = torch.arange(half, dtype=torch.float32, device=device) / (half - 1)
    return torch.exp(-math.log(max_period) * exponent)


class SinusoidalEmbedding(nn.Module):
    """[sin(tω), cos(tω)] of the timestep, always in float32 (bf16 cannot resolve t·ω for t ~ 1000)."""

    freqs: Tensor

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.register_buffer("freqs", sinusoidal_frequencies(dim), persistent=False)

    def _apply(self, fn: Any, recurse: bool = True) -> SinusoidalEmbedding:
        # .half()/.bfloat16() would round the frequencies and .to_empty() (after meta init)
        # would leave garbage: recompute them exactly, in float32, wherever the buffer went.
        super()._apply(fn, recurse)
        if self.freqs.device.type != "meta":
            self.freqs = sinusoidal_frequencies(self.dim, device=self.freqs.device)
        return self

    def forward(self, t: Tensor) -> Tensor:
        args = t.float().reshape(-1, 1) * self.freqs  # elementwise ops are not autocast: stays float32
        return torch.cat([args.sin(), args.cos()], dim=1)


class ResBlock(nn.Module):
    """GN → SiLU → conv → + time → GN → SiLU → dropout → conv (zero), plus a 1x1 skip when widths differ."""

    def __init__(self, in_ch: int, out_ch: int, temb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = group_norm(in_ch)
        self.conv1 = conv(in_ch, out_ch)
        self.temb_proj = linear(temb_dim, out_ch)
        self.norm2 = group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv(out_ch, out_ch, zero=True)
        self.skip = conv(in_ch, out_ch, kernel=1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        """``temb`` is SiLU(time embedding), applied once per forward by the U-Net instead of per block."""
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(temb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the H·W positions, residual, output projection zero-initialised.

    The paper's 1x1 convs for q, k, v and the output are applied as per-position linears on (B, HW, C)
    tokens: the same maps and parameter count, but q, k, v come out with unit-stride heads, which lets
    ``scaled_dot_product_attention`` use its fused CPU/GPU kernels instead of the unfused fallback.
    """

    def __init__(self, channels: int, num_heads: int = 1) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm = group_norm(channels)
        self.qkv = linear(channels, 3 * channels)
        self.proj_out = linear(channels, channels, zero=True)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C); a view for channels_last input
        q, k, v = self.qkv(tokens).unflatten(-1, (3, self.num_heads, -1)).permute(2, 0, 3, 1, 4)  # (B, heads, HW, d)
        h = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)  # (B, HW, C)
        return x + self.proj_out(h).transpose(1, 2).unflatten(2, x.shape[2:])


class Downsample(nn.Module):
    """Strided 3x3 conv: halves H and W (learned, as in the paper)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = conv(channels, channels, stride=2)

    def forward(self, x: Tensor, temb: Tensor | None = None) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a 3x3 conv (avoids the checkerboard of transposed convs)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = conv(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class LevelBlock(nn.Module):
    """One step of a U-Net level: a residual block, then attention at the chosen sizes, then an
    optional upsample (the last block of each decoder level but the top one)."""

    def __init__(self, in_ch: int, out_ch: int, temb_dim: int, dropout: float, attention: bool, num_heads: int,
                 upsample: bool = False) -> None:
        super().__init__()
        self.res = ResBlock(in_ch, out_ch, temb_dim, dropout)
        self.attn = AttentionBlock(out_ch, num_heads) if attention else nn.Identity()
        self.upsample = Upsample(out_ch) if upsample else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        return self.upsample(self.attn(self.res(x, temb)))


class MiddleBlock(nn.Module):
    """Bottleneck: residual, attention, residual (attention here at every resolution, as in the paper)."""

    def __init__(self, channels: int, temb_dim: int, dropout: float, num_heads: int) -> None:
        super().__init__()
        self.res1 = ResBlock(channels, channels, temb_dim, dropout)
        self.attn = AttentionBlock(channels, num_heads)
        self.res2 = ResBlock(channels, channels, temb_dim, dropout)

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        return self.res2(self.attn(self.res1(x, temb)), temb)
