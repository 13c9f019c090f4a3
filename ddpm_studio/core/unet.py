"""The noise-prediction network ε_θ(x_t, t[, y]): the U-Net of Ho et al. 2020 (their TF code's layout,
which diffusers' ``UNet2DModel`` reproduces for the DDPM checkpoints), plus named size presets.

Layout: conv_in; per level ``num_res_blocks`` residual blocks (+ self-attention where the feature map
is one of ``attention_resolutions``) and a strided-conv downsample; middle res-attn-res; per level
``num_res_blocks + 1`` residual blocks fed the concatenated skip activations, then an upsample;
GroupNorm → SiLU → conv_out. The timestep (and optional class label) enters every residual block.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ddpm_studio.core.choices import DOWNSAMPLE_PADDINGS
from ddpm_studio.core.unet_blocks import (
    GROUPS,
    Downsample,
    LevelBlock,
    MiddleBlock,
    SinusoidalEmbedding,
    conv,
    group_norm,
    linear,
)


@dataclass(frozen=True)
class UNetConfig:
    """Everything that fixes the architecture (and so the checkpoint's shapes). Raises ValueError if impossible."""

    image_size: int = 32
    in_channels: int = 3  # 1 (grey) or 3 (RGB); the output (predicted noise) has the same
    base_channels: int = 64  # width of the first level; also the sinusoidal embedding's size
    channel_mults: tuple[int, ...] = (1, 2, 2)  # width of each level / base_channels; one level per entry
    num_res_blocks: int = 2  # per encoder level (the decoder has one more, for the extra skip)
    attention_resolutions: tuple[int, ...] = (16,)  # feature-map sizes that get self-attention
    dropout: float = 0.1
    num_heads: int = 1
    num_classes: int = 0  # 0 = unconditional; else a class embedding with a "null" row for classifier-free guidance
    downsample_padding: str = "symmetric"  # or "tf": right/bottom only, as the paper's TF code (google/ddpm-* weights)

    def __post_init__(self) -> None:
        # Accept lists (from JSON/TOML) but store tuples, so configs stay hashable and comparable.
        object.__setattr__(self, "channel_mults", tuple(self.channel_mults))
        object.__setattr__(self, "attention_resolutions", tuple(self.attention_resolutions))
        errors = self.errors()
        if errors:
            raise ValueError("Invalid U-Net configuration: " + "; ".join(errors))

    @property
    def feature_sizes(self) -> tuple[int, ...]:
        """Spatial size of the feature maps at each level, e.g. (32, 16, 8, 4) for CIFAR-10."""
        return tuple(self.image_size >> level for level in range(len(self.channel_mults)))

    @property
    def null_label(self) -> int:
        """The label meaning "no class" (classifier-free guidance's unconditional branch)."""
        return self.num_classes

    def errors(self) -> list[str]:
        """Every reason this layout cannot be built, as sentences for the user (empty if fine)."""
        errs: list[str] = []
        if self.in_channels not in (1, 3):
            errs.append(f"image channels must be 1 (greyscale) or 3 (RGB) (got {self.in_channels})")
        if self.base_channels < GROUPS or self.base_channels % GROUPS:
            errs.append(f"base channels must be a positive multiple of {GROUPS} because GroupNorm uses {GROUPS} groups "
                        f"(got {self.base_channels})")
        if not self.channel_mults or any(not isinstance(m, int) or m < 1 for m in self.channel_mults):
            errs.append(f"channel multipliers must be one or more positive integers (got {self.channel_mults})")
        if self.num_res_blocks < 1:
            errs.append(f"residual blocks per level must be at least 1 (got {self.num_res_blocks})")
        if not 0.0 <= self.dropout < 1.0:
            errs.append(f"dropout must be in [0, 1) (got {self.dropout})")
        if self.num_heads < 1:
            errs.append(f"attention heads must be at least 1 (got {self.num_heads})")
        if self.num_classes < 0:
            errs.append(f"number of classes must be 0 (unconditional) or more (got {self.num_classes})")
        if self.downsample_padding not in DOWNSAMPLE_PADDINGS:
            errs.append(f"downsample padding must be one of {', '.join(DOWNSAMPLE_PADDINGS)} (got {self.downsample_padding!r})")
        if errs or not self.channel_mults:
            return errs
        factor = 2 ** (len(self.channel_mults) - 1)
        if self.image_size < factor or self.image_size % factor:
            ok = sorted({max(factor, self.image_size // factor * factor), (self.image_size // factor + 1) * factor})
            errs.append(f"image size {self.image_size} must be divisible by {factor}: the U-Net halves it "
                        f"{len(self.channel_mults) - 1} times ({len(self.channel_mults)} channel multipliers); "
                        f"use size {' or '.join(map(str, ok))}, or fewer levels")
            return errs
        for res in self.attention_resolutions:
            if res not in self.feature_sizes:
                errs.append(f"attention resolution {res} is not a feature-map size of this U-Net "
                            f"({', '.join(map(str, self.feature_sizes))})")
        for level, res in enumerate(self.feature_sizes):
            width = self.base_channels * self.channel_mults[level]
            if (res in self.attention_resolutions or level == len(self.feature_sizes) - 1) and width % self.num_heads:
                errs.append(f"{width} channels at size {res} cannot be split into {self.num_heads} attention heads")
        return errs


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
                down.append(Downsample(width, config.downsample_padding))
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


# -- presets ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Preset:
    """A named layout at its native image size, and a line saying what it is for."""

    config: UNetConfig
    description: str


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        UNetConfig(image_size=16, base_channels=32, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(8,)),
        "16x16, 0.7M parameters: for tests and quick checks of the pipeline, not for good samples.",
    ),
    "laptop": Preset(
        # Three levels, one residual block each, attention only at 8x8: on a 2-core CPU (bf16) it trains at
        # ~99 img/s against ~43 for the four-level, two-block layout of 6.1M parameters, and on the demo shapes
        # the number of steps in ten minutes matters more than the width (docs/samples).
        UNetConfig(image_size=32, base_channels=32, channel_mults=(1, 2, 4), num_res_blocks=1,
                   attention_resolutions=(8,)),
        "32x32, 2.7M parameters: small enough to train usefully on a laptop CPU (demo shapes in ~10 minutes).",
    ),
    "cifar10": Preset(
        UNetConfig(image_size=32, base_channels=128, channel_mults=(1, 2, 2, 2), num_res_blocks=2,
                   attention_resolutions=(16,)),
        "32x32, 35.7M parameters: the paper's CIFAR-10 model (FID 3.17); needs a GPU.",
    ),
    "ddpm-64": Preset(
        UNetConfig(image_size=64, base_channels=128, channel_mults=(1, 2, 2, 2), num_res_blocks=2,
                   attention_resolutions=(16,)),
        "64x64, 35.7M parameters: the CIFAR-10 layout at 64x64 (attention at 16x16), e.g. faces; needs a GPU.",
    ),
    "ddpm-128": Preset(
        UNetConfig(image_size=128, base_channels=128, channel_mults=(1, 1, 2, 3, 4), num_res_blocks=2,
                   attention_resolutions=(16,)),
        "128x128, 85.6M parameters: five levels with attention at 16x16; needs a large GPU.",
    ),
    "ddpm-256": Preset(
        UNetConfig(image_size=256, base_channels=128, channel_mults=(1, 1, 2, 2, 4, 4), num_res_blocks=2,
                   attention_resolutions=(16,)),
        "256x256, 114M parameters: the paper's LSUN / CelebA-HQ model; needs a large GPU and days.",
    ),
}


def preset_names() -> list[str]:
    return list(PRESETS)


def _preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"Unknown model preset {name!r}; choose one of {', '.join(PRESETS)}") from None


def preset_description(name: str) -> str:
    return _preset(name).description


def preset_config(name: str, image_size: int | None = None, in_channels: int = 3, **overrides: Any) -> UNetConfig:
    """The preset's config at ``image_size`` (default: its native size) with fields overridden.

    At another image size, attention stays at the same U-Net depth (e.g. "tiny" at 28x28 attends at
    14x14 where it attends at 8x8 on 16x16), unless ``attention_resolutions`` is overridden.
    Raises ValueError when the layout does not fit (e.g. 4 levels need a size divisible by 8).
    """
    base = _preset(name).config
    fields = {f.name for f in dataclasses.fields(UNetConfig)} - {"image_size", "in_channels"}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"Unknown U-Net setting(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
    size = base.image_size if image_size is None else int(image_size)
    if "attention_resolutions" not in overrides:
        levels = len(overrides.get("channel_mults", base.channel_mults))
        depths = [round(math.log2(base.image_size / res)) for res in base.attention_resolutions]
        overrides["attention_resolutions"] = tuple(size >> d for d in depths if d < levels)
    return dataclasses.replace(base, image_size=size, in_channels=in_channels, **overrides)
