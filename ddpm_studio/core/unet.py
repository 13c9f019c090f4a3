"""The noise-prediction network ε_θ(x_t, t[, y]): the U-Net of Ho et al. 2020 (their TF code's layout,
which diffusers' ``UNet2DModel`` reproduces for the DDPM checkpoints). Its layout (:class:`UNetConfig`) and the
named size presets live torch-free in :mod:`ddpm_studio.core.unet_config` and are re-exported here.

Layout: conv_in; per level ``num_res_blocks`` residual blocks (+ self-attention where the feature map
is one of ``attention_resolutions``) and a strided-conv downsample; middle res-attn-res; per level
``num_res_blocks + 1`` residual blocks fed the concatenated skip activations, then an upsample;
GroupNorm → SiLU → conv_out. The timestep (and optional class label) enters every residual block.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ddpm_studio.core.unet_blocks import (
    Downsample,
    LevelBlock,
    MiddleBlock,
    SinusoidalEmbedding,
    conv,
    group_norm,
    linear,
)
from ddpm_studio.core.unet_config import (  # noqa: F401 - the layout and presets, re-exported for the network's users
    PRESETS,
    Preset,
    UNetConfig,
    preset_config,
    preset_description,
    preset_names,
)


class UNet(nn.Module):
    """ε_θ(x_t, t, y): predicts the noise in x_t. Output shape (and dtype) = input shape (and dtype)."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        ch, mults, n_res = config.base_channels, config.channel_mults, config.num_res_blocks
        temb_dim = 4 * ch

        self.time_proj = SinusoidalEmbedding(ch)
        self.time_embed = nn.Sequential(linear(ch, temb_dim), nn.SiLU(), linear(temb_dim, temb_dim))
        # Row ``num_classes`` is the null label: trained by label dropout, used for classifier-free guidance.
        self.class_embed = nn.Embedding(config.num_classes + 1, temb_dim) if config.num_classes > 0 else None

        self.conv_in = conv(config.in_channels, ch)
        down: list[nn.Module] = []
        skip_widths = [ch]
        width = ch
        for level, mult in enumerate(mults):
            attention = config.feature_sizes[level] in config.attention_resolutions
            for _ in range(n_res):
                down.append(LevelBlock(width, ch * mult, temb_dim, config.dropout, attention, config.num_heads))
                width = ch * mult
                skip_widths.append(width)
            if level < len(mults) - 1:
                down.append(Downsample(width))
                skip_widths.append(width)
        self.down = nn.ModuleList(down)

        self.middle = MiddleBlock(width, temb_dim, config.dropout, config.num_heads)

        up: list[nn.Module] = []
        for level in reversed(range(len(mults))):
            attention = config.feature_sizes[level] in config.attention_resolutions
            for i in range(n_res + 1):
                upsample = i == n_res and level > 0
                up.append(LevelBlock(width + skip_widths.pop(), ch * mults[level], temb_dim, config.dropout, attention,
                                     config.num_heads, upsample))
                width = ch * mults[level]
        self.up = nn.ModuleList(up)

        self.norm_out = group_norm(width)
        self.conv_out = conv(width, config.in_channels, zero=True)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """x: (B, C, H, W) noisy images; t: (B,) timesteps (int or float); y: (B,) labels, None = null label."""
        temb = self.time_embed(self.time_proj(t).to(self.conv_in.weight.dtype))
        if self.class_embed is not None:
            temb = temb + (self.class_embed.weight[-1] if y is None else self.class_embed(y))
        temb = F.silu(temb)  # every residual block applies SiLU before its projection: do it once here

        h = self.conv_in(x)
        skips = [h]
        for block in self.down:
            h = block(h, temb)
            skips.append(h)
        h = self.middle(h, temb)
        for block in self.up:
            h = block(torch.cat([h, skips.pop()], dim=1), temb)
        return self.conv_out(F.silu(self.norm_out(h))).to(x.dtype)


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters (works on meta-device models too)."""
    return sum(p.numel() for p in model.parameters())
