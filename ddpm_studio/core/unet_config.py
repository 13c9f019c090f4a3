"""The U-Net's layout without torch: :class:`UNetConfig`, its divisibility rules, and the named presets.

Why apart from :mod:`ddpm_studio.core.unet`: settings are checked (``services/config.py``) and shown (the app's
form, before torch has loaded) from the layout alone; only building the network needs torch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ddpm_studio.core.choices import DOWNSAMPLE_PADDINGS
from ddpm_studio.core.registry import lookup

GROUPS = 32  # GroupNorm groups, as in the paper: every width must be a multiple of it


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
    "fast": Preset(
        # 32 channels at every level (the small preset's middle and deepest levels halved): 0.4M parameters, ~1.6x
        # the small preset's images/s on a float32 CPU (72-78 against 46 img/s in ten-minute runs at 2 threads),
        # and on the demo shapes about the same score per image seen, so ten CPU minutes score about twice as much
        # (0.79-0.83 with autoguidance against 0.41-0.42, docs/quality_per_compute.md). No dropout, as for small.
        UNetConfig(image_size=32, base_channels=32, channel_mults=(1, 1, 1), num_res_blocks=1,
                   attention_resolutions=(8,), dropout=0.0),
        "32x32, 0.4M parameters: the most learned per CPU minute on simple images (shapes, icons, a small folder).",
    ),
    "small": Preset(
        # The laptop layout with the deepest level as wide as the middle one (64 channels, not 128): 1.1M parameters,
        # ~1.4x the laptop's images/s on a float32 CPU (66.9 against 47.9 img/s, a bare step at 2 threads), and on
        # the demo shapes a better score at equal images seen (docs/quality_per_compute.md): a small data set of
        # simple images is learned faster by the smaller network. No dropout: in a run of minutes (a few passes
        # over the images) it only slows learning (0.285 against 0.230 after 29,312 demo images at batch 16).
        UNetConfig(image_size=32, base_channels=32, channel_mults=(1, 2, 2), num_res_blocks=1,
                   attention_resolutions=(8,), dropout=0.0),
        "32x32, 1.1M parameters: a wider middle and deepest level than fast, for more varied images or longer runs on a CPU.",
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
    return lookup(PRESETS, name, "model preset")


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
