"""Our U-Net and schedules in diffusers' terms: ``UNet2DModel`` / ``DDPMScheduler`` configs and weight names.

Pure translation, no files: :mod:`ddpm_studio.services.diffusers_interop` reads and writes the folders.

Our U-Net is the paper's layout, which diffusers' ``UNet2DModel`` reproduces for the google/ddpm-* weights:
the same modules in the same order, so the weights map one to one. Where the two differ, a diffusers config
is refused with every reason at once, never approximated:

* time embedding: ours is the paper's [sin, cos] with ω_i = 10000^(-i/(d/2-1)), i.e. ``flip_sin_to_cos=false``,
  ``freq_shift=1`` (diffusers' defaults, ``true`` / ``0``, give another embedding);
* GroupNorm: 32 groups, ε = 1e-6 (diffusers' default ε is 1e-5);
* attention: one head at every attention level and in the middle (``attention_head_dim=null``; diffusers'
  default of 8 channels per head makes many heads, a different function of the same weights);
* no class embedding: our class-conditional models keep a "no class" row for classifier-free guidance that
  ``DDPMPipeline`` has no way to use, and a diffusers class embedding has no such row;
* the downsample padding of the paper's TF code (``downsample_padding=0``) is our ``tf`` padding.

Weight names: our ``down.K.res.conv1`` is diffusers' ``down_blocks.LEVEL.resnets.I.conv1`` and so on (see
:func:`module_pairs`); our attention's fused ``qkv`` linear is diffusers' ``to_q``, ``to_k``, ``to_v`` stacked.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ddpm_studio.core.checkpoint import CheckpointError
from ddpm_studio.core.schedules import cosine_betas, linear_betas
from ddpm_studio.core.unet import UNetConfig
from ddpm_studio.core.unet_blocks import GROUPS, NORM_EPS

#: The diffusers release the folders were written and tested with (the format has been stable since 0.x).
DIFFUSERS_VERSION = "0.42.1"

#: ``UNet2DModel.__init__``'s defaults: a key a config leaves out takes this value (tests check the table
#: against the installed diffusers).
UNET_DEFAULTS: dict[str, Any] = {
    "sample_size": None, "in_channels": 3, "out_channels": 3, "center_input_sample": False,
    "time_embedding_type": "positional", "time_embedding_dim": None, "freq_shift": 0, "flip_sin_to_cos": True,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
    "mid_block_type": "UNetMidBlock2D", "up_block_types": ["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [224, 448, 672, 896], "layers_per_block": 2, "mid_block_scale_factor": 1,
    "downsample_padding": 1, "downsample_type": "conv", "upsample_type": "conv", "dropout": 0.0, "act_fn": "silu",
    "attention_head_dim": 8, "norm_num_groups": 32, "attn_norm_num_groups": None, "norm_eps": 1e-5,
    "resnet_time_scale_shift": "default", "add_attention": True, "class_embed_type": None, "num_class_embeds": None,
    "num_train_timesteps": None,
}

#: ``DDPMScheduler.__init__``'s defaults (the other schedulers below share these fields).
SCHEDULER_DEFAULTS: dict[str, Any] = {
    "num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
    "trained_betas": None, "variance_type": "fixed_small", "clip_sample": True, "prediction_type": "epsilon",
    "thresholding": False, "dynamic_thresholding_ratio": 0.995, "clip_sample_range": 1.0, "sample_max_value": 1.0,
    "timestep_spacing": "leading", "steps_offset": 0, "rescale_betas_zero_snr": False,
}

#: Schedulers whose config describes the β schedule with DDPMScheduler's fields; only that part is imported
#: (which sampler to use is chosen in DDPM Studio).
SCHEDULER_CLASSES = ("DDPMScheduler", "DDIMScheduler", "PNDMScheduler", "DPMSolverMultistepScheduler",
                     "EulerDiscreteScheduler")

PREDICTION_TO_DIFFUSERS = {"epsilon": "epsilon", "v": "v_prediction"}
SCHEDULE_TO_DIFFUSERS = {"linear": "linear", "cosine": "squaredcos_cap_v2"}
_RES_NAMES = (("norm1", "norm1"), ("conv1", "conv1"), ("temb_proj", "time_emb_proj"), ("norm2", "norm2"),
              ("conv2", "conv2"), ("skip", "conv_shortcut"))
#: Attention parameter names of diffusers before 0.14 (the google/ddpm-* uploads still use them).
_OLD_ATTENTION = re.compile(r"^(.*\.attentions\.\d+)\.(query|key|value|proj_attn)\.(weight|bias)$")
_NEW_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


class DiffusersFormatError(CheckpointError):
    """A model that cannot cross between DDPM Studio and diffusers; the message says every reason why."""


@dataclass(frozen=True)
class DiffusionSettings:
    """What a diffusers scheduler config means for our [diffusion] settings, and what it could not carry."""

    timesteps: int
    schedule: str
    prediction: str
    notes: tuple[str, ...] = field(default=())


# -- the U-Net config ---------------------------------------------------------------------------------
def attention_levels(c: UNetConfig) -> list[bool]:
    return [size in c.attention_resolutions for size in c.feature_sizes]


def unet_to_diffusers(c: UNetConfig) -> dict[str, Any]:
    """The ``UNet2DModel`` config of our U-Net ``c``; DiffusersFormatError where diffusers has no equivalent."""
    problems = []
    if c.num_classes:
        problems.append("it is class-conditional: its class embedding has a 'no class' row for classifier-free "
                        "guidance, which diffusers' DDPMPipeline cannot use (it never passes a class)")
    if c.num_heads != 1:
        problems.append(f"its attention has {c.num_heads} heads at every level, while UNet2DModel fixes the channels "
                        "per head (more heads at wider levels): the same weights would compute something else")
    if problems:
        raise DiffusersFormatError("This model cannot be written as a diffusers UNet2DModel: " + "; ".join(problems))
    attn = attention_levels(c)
    return {
        "_class_name": "UNet2DModel", "_diffusers_version": DIFFUSERS_VERSION,
        "sample_size": c.image_size, "in_channels": c.in_channels, "out_channels": c.in_channels,
        "center_input_sample": False, "time_embedding_type": "positional", "flip_sin_to_cos": False, "freq_shift": 1,
        "down_block_types": ["AttnDownBlock2D" if a else "DownBlock2D" for a in attn],
        "mid_block_type": "UNetMidBlock2D",
        "up_block_types": ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)],
        "block_out_channels": [c.base_channels * m for m in c.channel_mults], "layers_per_block": c.num_res_blocks,
        "mid_block_scale_factor": 1, "downsample_padding": 0 if c.downsample_padding == "tf" else 1,
        "downsample_type": "conv", "upsample_type": "conv", "dropout": c.dropout, "act_fn": "silu",
        "attention_head_dim": None, "norm_num_groups": GROUPS, "attn_norm_num_groups": None, "norm_eps": NORM_EPS,
        "resnet_time_scale_shift": "default", "add_attention": True, "class_embed_type": None, "num_class_embeds": None,
    }


class _Reader:
    """Typed reads from an untrusted JSON config with defaults; every problem is collected, none raised."""

    def __init__(self, config: dict[str, Any], defaults: dict[str, Any]) -> None:
        self.config, self.defaults, self.problems = config, defaults, []

    def get(self, key: str, kinds: tuple[type, ...], what: str) -> Any:
        value = self.config.get(key, self.defaults.get(key))
        if isinstance(value, bool) and bool not in kinds:
            value = None
        if not isinstance(value, kinds):
            self.problems.append(f"{key} is {value!r}, not {what}")
            return None
        return value

    def expect(self, key: str, wanted: Any, why: str) -> None:
        value = self.config.get(key, self.defaults.get(key))
        same = math.isclose(value, wanted, rel_tol=1e-6) if isinstance(value, float) and isinstance(wanted, float) \
            else value == wanted
        if not same:
            self.problems.append(f"{key} is {json_text(value)} but DDPM Studio's U-Net needs {json_text(wanted)} ({why})")


def json_text(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else repr(value)


def unet_from_diffusers(config: dict[str, Any]) -> UNetConfig:
    """Our U-Net for a ``UNet2DModel`` config; DiffusersFormatError lists everything that does not match."""
    r = _Reader(config, UNET_DEFAULTS)
    known = set(UNET_DEFAULTS)
    unknown = sorted(k for k in config if k not in known and not k.startswith("_"))
    if unknown:
        r.problems.append(f"it has settings this version does not know ({', '.join(unknown)}), so it cannot be "
                          "checked to match")
    if config.get("_class_name", "UNet2DModel") != "UNet2DModel":
        r.problems.append(f"its model is a {config.get('_class_name')}, not a UNet2DModel")
    r.expect("center_input_sample", False, "inputs already in [-1, 1]")
    r.expect("time_embedding_type", "positional", "sinusoidal time embedding")
    r.expect("flip_sin_to_cos", False, "the paper's [sin, cos] order")
    r.expect("freq_shift", 1, "the paper's frequencies 10000^(-i/(d/2-1))")
    r.expect("mid_block_type", "UNetMidBlock2D", "a residual-attention-residual middle")
    r.expect("add_attention", True, "attention in the middle block")
    r.expect("mid_block_scale_factor", 1, "unscaled residuals")
    r.expect("downsample_type", "conv", "strided-conv downsampling")
    r.expect("upsample_type", "conv", "nearest upsampling then a conv")
    r.expect("act_fn", "silu", "SiLU activations")
    r.expect("norm_num_groups", GROUPS, "GroupNorm with 32 groups")
    r.expect("norm_eps", NORM_EPS, "the paper's GroupNorm epsilon")
    r.expect("resnet_time_scale_shift", "default", "the time embedding added, not scale-shift")
    r.expect("class_embed_type", None, "no class embedding")
    r.expect("num_class_embeds", None, "unconditional: a diffusers class embedding has no 'no class' row")
    if config.get("attn_norm_num_groups") not in (None, GROUPS):
        r.problems.append(f"attn_norm_num_groups is {config.get('attn_norm_num_groups')!r}, not 32")

    channels = r.get("block_out_channels", (list, tuple), "a list of channel widths") or []
    down = r.get("down_block_types", (list, tuple), "a list of block types") or []
    up = r.get("up_block_types", (list, tuple), "a list of block types") or []
    layers = r.get("layers_per_block", (int,), "a whole number")
    size = r.get("sample_size", (int, list, tuple), "an image size")
    in_ch = r.get("in_channels", (int,), "a whole number")
    out_ch = r.get("out_channels", (int,), "a whole number")
    dropout = r.get("dropout", (int, float), "a number")
    padding = r.get("downsample_padding", (int,), "0 or 1")
    head_dim = r.get("attention_head_dim", (int, list, tuple, type(None)), "a number of channels or null")
    temb_dim = r.get("time_embedding_dim", (int, type(None)), "a number of channels or null")

    if isinstance(size, list | tuple):
        if len(size) != 2 or size[0] != size[1] or not all(isinstance(s, int) for s in size):
            r.problems.append(f"sample_size {size!r} is not square: DDPM Studio trains square images")
        size = size[0] if size else None
    if in_ch is not None and out_ch is not None and in_ch != out_ch:
        r.problems.append(f"it maps {in_ch} channels to {out_ch} (a learned variance or another output): DDPM Studio "
                          "predicts the noise (or v) with the image's own channels")
    if not channels or not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in channels):
        r.problems.append(f"block_out_channels {channels!r} is not a list of positive widths")
        channels = []
    elif any(w % channels[0] for w in channels):
        r.problems.append(f"block_out_channels {channels!r} are not all multiples of the first, which DDPM Studio "
                          "needs (each level is base channels x a whole multiplier)")
    if len(down) != len(channels) or len(up) != len(channels):
        r.problems.append(f"{len(channels)} levels of channels but {len(down)} down and {len(up)} up blocks")
    down_attn = [_attention_block(b, "Down", r) for b in down]
    up_attn = [_attention_block(b, "Up", r) for b in up]
    if down_attn and list(reversed(up_attn)) != down_attn:
        r.problems.append("its up blocks do not mirror its down blocks' attention, as DDPM Studio's U-Net does")
    if padding not in (None, 0, 1):
        r.problems.append(f"downsample_padding is {padding!r}, not 0 or 1")
    if channels and temb_dim not in (None, 4 * channels[0]):
        r.problems.append(f"time_embedding_dim is {temb_dim}, not 4 x the first width ({4 * channels[0]})")
    if channels and down_attn:
        _check_one_head(head_dim, channels, down_attn, r)
    if r.problems:
        raise DiffusersFormatError("This diffusers UNet2DModel does not match DDPM Studio's U-Net: "
                                   + "; ".join(r.problems))
    assert size is not None and layers is not None and in_ch is not None and dropout is not None
    feature_sizes = [size >> level for level in range(len(channels))]
    try:
        return UNetConfig(
            image_size=size, in_channels=in_ch, base_channels=channels[0],
            channel_mults=tuple(w // channels[0] for w in channels), num_res_blocks=layers,
            attention_resolutions=tuple(s for s, a in zip(feature_sizes, down_attn, strict=True) if a),
            dropout=float(dropout), num_heads=1, downsample_padding="tf" if padding == 0 else "symmetric",
        )
    except ValueError as exc:
        raise DiffusersFormatError(f"This diffusers UNet2DModel does not fit DDPM Studio's U-Net: {exc}") from None


def _attention_block(kind: Any, direction: str, r: _Reader) -> bool:
    plain, attn = f"{direction}Block2D", f"Attn{direction}Block2D"
    if kind not in (plain, attn):
        r.problems.append(f"it has a {kind!r} block; DDPM Studio's U-Net is built of {plain} and {attn} only")
    return kind == attn


def _check_one_head(head_dim: Any, channels: list[int], attn: list[bool], r: _Reader) -> None:
    """Our attention has one head; diffusers' gives each block width / attention_head_dim heads."""
    if head_dim is None:
        return
    dims = list(head_dim) if isinstance(head_dim, list | tuple) else [head_dim] * len(channels)
    if len(dims) != len(channels) or not all(isinstance(d, int) and d > 0 for d in dims):
        r.problems.append(f"attention_head_dim {head_dim!r} does not give one width per level")
        return
    # The middle block uses the last level's width and, for a list, the last entry.
    widths = [(w, d) for w, d, a in zip(channels, dims, attn, strict=True) if a] + [(channels[-1], dims[-1])]
    heads = sorted({w // d for w, d in widths})
    if heads != [1]:
        r.problems.append(f"attention_head_dim {head_dim!r} splits attention into {'/'.join(map(str, heads))} heads; "
                          "DDPM Studio's attention has one head (attention_head_dim null or equal to each width)")


# -- the schedule -------------------------------------------------------------------------------------
def scheduler_to_diffusers(schedule: str, timesteps: int, prediction: str) -> dict[str, Any]:
    """The ``DDPMScheduler`` config of our [diffusion] settings: the same β_t, prediction, β̃ variance and x̂_0 clip."""
    if schedule not in SCHEDULE_TO_DIFFUSERS:
        raise DiffusersFormatError(f"The {schedule!r} noise schedule has no diffusers equivalent")
    if prediction not in PREDICTION_TO_DIFFUSERS:
        raise DiffusersFormatError(f"Prediction target {prediction!r} has no diffusers equivalent")
    betas = linear_betas(timesteps)  # diffusers takes linear β's end points as given: pass ours, scaled for T
    return {
        "_class_name": "DDPMScheduler", "_diffusers_version": DIFFUSERS_VERSION,
        "num_train_timesteps": timesteps, "beta_schedule": SCHEDULE_TO_DIFFUSERS[schedule],
        "beta_start": float(betas[0]), "beta_end": float(betas[-1]), "trained_betas": None,
        "variance_type": "fixed_small",  # σ² = β̃_t, our samplers' default
        "clip_sample": True, "clip_sample_range": 1.0,  # our samplers clip x̂_0 to [-1, 1]
        "prediction_type": PREDICTION_TO_DIFFUSERS[prediction], "thresholding": False,
        "timestep_spacing": "leading", "steps_offset": 0, "rescale_betas_zero_snr": False,
    }


def diffusion_from_diffusers(config: dict[str, Any]) -> DiffusionSettings:
    """Our [diffusion] settings for a diffusers scheduler config; DiffusersFormatError lists what does not match."""
    r = _Reader(config, SCHEDULER_DEFAULTS)
    notes: list[str] = []
    cls = config.get("_class_name", "DDPMScheduler")
    if cls not in SCHEDULER_CLASSES:
        r.problems.append(f"its scheduler is a {cls}, not one with DDPM's β schedule ({', '.join(SCHEDULER_CLASSES)})")
    elif cls != "DDPMScheduler":
        notes.append(f"its {cls} sampler is not carried over: pick a sampler in DDPM Studio (the β schedule is)")
    steps = r.get("num_train_timesteps", (int,), "a whole number")
    if steps is not None and not 10 <= steps <= 4000:
        r.problems.append(f"num_train_timesteps is {steps}; DDPM Studio supports 10 to 4000")
        steps = None
    name = _schedule_name(config, steps, r)
    prediction = {"epsilon": "epsilon", "v_prediction": "v"}.get(config.get("prediction_type", "epsilon"))
    if prediction is None:
        r.problems.append(f"prediction_type is {config.get('prediction_type')!r}; DDPM Studio's models predict the "
                          "noise (epsilon) or v (v_prediction)")
    variance = config.get("variance_type", "fixed_small")
    if variance in ("learned", "learned_range"):
        r.problems.append(f"variance_type is {variance!r}: the model learns its variance, DDPM Studio's have it fixed")
    elif variance in ("fixed_large", "fixed_large_log"):
        notes.append("it samples with σ² = β_t (variance_type fixed_large): choose DDPM variance 'beta' to match")
    elif variance not in ("fixed_small", "fixed_small_log", None):
        r.problems.append(f"variance_type {variance!r} is unknown")
    if config.get("rescale_betas_zero_snr", False):
        r.problems.append("rescale_betas_zero_snr is on: DDPM Studio's schedules keep ᾱ_T > 0")
    if not config.get("clip_sample", True) or config.get("thresholding", False):
        notes.append("its sampler does not clip x̂_0 to [-1, 1] (clip_sample off or thresholding on); DDPM Studio's "
                     "samplers always do, so samples can differ slightly from diffusers' pipeline")
    elif config.get("clip_sample_range", 1.0) != 1.0:
        notes.append(f"it clips x̂_0 to ±{config.get('clip_sample_range')}; DDPM Studio's samplers clip to ±1")
    if r.problems:
        raise DiffusersFormatError("This diffusers scheduler does not match a DDPM Studio noise schedule: "
                                   + "; ".join(r.problems))
    assert steps is not None and name is not None and prediction is not None
    return DiffusionSettings(steps, name, prediction, tuple(notes))


def _schedule_name(config: dict[str, Any], steps: int | None, r: _Reader) -> str | None:
    """'linear' or 'cosine' when the config's β_t are ours (to float32 precision), else a problem and None."""
    if steps is None:
        return None
    trained = config.get("trained_betas")
    if trained is not None:
        try:
            given = np.asarray(trained, dtype=np.float64)
        except (TypeError, ValueError):
            given = np.zeros(0)
        for name, betas in (("linear", linear_betas(steps)), ("cosine", cosine_betas(steps))):
            if given.shape == betas.shape and np.allclose(given, betas, rtol=1e-5, atol=1e-9):
                return name
        r.problems.append("trained_betas lists β_t that are neither DDPM Studio's linear nor its cosine schedule")
        return None
    kind = config.get("beta_schedule", "linear")
    if kind == "squaredcos_cap_v2":
        return "cosine"  # Nichol & Dhariwal's, with max β 0.999 in both libraries
    if kind != "linear":
        r.problems.append(f"beta_schedule is {kind!r}; DDPM Studio has linear and cosine (squaredcos_cap_v2)")
        return None
    start, end = r.get("beta_start", (int, float), "a number"), r.get("beta_end", (int, float), "a number")
    ours = linear_betas(steps)
    if start is None or end is None:
        return None
    if not (math.isclose(start, ours[0], rel_tol=1e-5) and math.isclose(end, ours[-1], rel_tol=1e-5)):
        r.problems.append(f"its linear β runs from {start:g} to {end:g} over {steps} steps; DDPM Studio's linear "
                          f"schedule is 1e-4 to 0.02 scaled by 1000/T, here {ours[0]:g} to {ours[-1]:g}")
        return None
    return "linear"


# -- the weights --------------------------------------------------------------------------------------
def module_pairs(c: UNetConfig) -> list[tuple[str, str, str]]:
    """(our module, diffusers' module, kind) for every module with weights; kind is plain, res or attn."""
    pairs = [("time_embed.0", "time_embedding.linear_1", "plain"), ("time_embed.2", "time_embedding.linear_2", "plain"),
             ("conv_in", "conv_in", "plain")]
    attn, levels, n = attention_levels(c), len(c.channel_mults), c.num_res_blocks
    k = 0
    for level in range(levels):
        for i in range(n):
            pairs.append((f"down.{k}.res", f"down_blocks.{level}.resnets.{i}", "res"))
            if attn[level]:
                pairs.append((f"down.{k}.attn", f"down_blocks.{level}.attentions.{i}", "attn"))
            k += 1
        if level < levels - 1:
            pairs.append((f"down.{k}.conv", f"down_blocks.{level}.downsamplers.0.conv", "plain"))
            k += 1
    pairs += [("middle.res1", "mid_block.resnets.0", "res"), ("middle.attn", "mid_block.attentions.0", "attn"),
              ("middle.res2", "mid_block.resnets.1", "res")]
    k = 0
    for j, level in enumerate(reversed(range(levels))):
        for i in range(n + 1):
            pairs.append((f"up.{k}.res", f"up_blocks.{j}.resnets.{i}", "res"))
            if attn[level]:
                pairs.append((f"up.{k}.attn", f"up_blocks.{j}.attentions.{i}", "attn"))
            if i == n and level > 0:
                pairs.append((f"up.{k}.upsample.conv", f"up_blocks.{j}.upsamplers.0.conv", "plain"))
            k += 1
    pairs += [("norm_out", "conv_norm_out", "plain"), ("conv_out", "conv_out", "plain")]
    return pairs


def _leaf_pairs(ours: str, theirs: str, kind: str) -> list[tuple[str, str]]:
    """(our name, diffusers' name) of each parameter of one module pair, the attention's qkv left out."""
    names = {"plain": [("", "")], "res": [(f".{a}", f".{b}") for a, b in _RES_NAMES],
             "attn": [(".norm", ".group_norm"), (".proj_out", ".to_out.0")]}[kind]
    return [(f"{ours}{a}.{p}", f"{theirs}{b}.{p}") for a, b in names for p in ("weight", "bias")]


def to_diffusers_weights(state: dict[str, torch.Tensor], c: UNetConfig) -> dict[str, torch.Tensor]:
    """Our state dict under diffusers' names, each tensor its own contiguous float32 copy (safetensors needs that)."""
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for ours, theirs, kind in module_pairs(c):
        for a, b in _leaf_pairs(ours, theirs, kind):
            if a in state:
                out[b] = state[a]
                used.add(a)
        if kind == "attn":
            for p in ("weight", "bias"):
                q, k, v = state[f"{ours}.qkv.{p}"].chunk(3, dim=0)
                out.update({f"{theirs}.to_q.{p}": q, f"{theirs}.to_k.{p}": k, f"{theirs}.to_v.{p}": v})
                used.add(f"{ours}.qkv.{p}")
    left = sorted(set(state) - used)
    if left:
        raise DiffusersFormatError(f"These weights have no diffusers name: {', '.join(left[:5])}")
    return {k: v.detach().to(torch.float32).contiguous().clone() for k, v in out.items()}


def from_diffusers_weights(state: dict[str, Any], c: UNetConfig) -> dict[str, torch.Tensor]:
    """A ``UNet2DModel`` state dict under our names (old attention names and 1x1-conv attention weights accepted).

    Every tensor must be used and every one of ours found, else DiffusersFormatError names the first misfit.
    """
    theirs = {}
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise DiffusersFormatError("The weights file is not a table of named tensors")
        match = _OLD_ATTENTION.match(key)
        if match:
            key = f"{match.group(1)}.{_NEW_ATTENTION[match.group(2)]}.{match.group(3)}"
        theirs[key] = value
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(name: str) -> torch.Tensor:
        if name not in theirs:
            raise DiffusersFormatError(f"The diffusers weights lack {name}, which this UNet2DModel config implies")
        used.add(name)
        value = theirs[name]
        if name.split(".")[-2] in ("to_q", "to_k", "to_v", "0") and value.ndim == 4 and value.shape[2:] == (1, 1):
            value = value[:, :, 0, 0]  # attention projections stored as 1x1 convs by some conversions
        return value.to(torch.float32)

    for ours, dname, kind in module_pairs(c):
        for a, b in _leaf_pairs(ours, dname, kind):
            if kind != "res" or not a.startswith(f"{ours}.skip.") or b in theirs:
                out[a] = take(b)
        if kind == "attn":
            for p in ("weight", "bias"):
                out[f"{ours}.qkv.{p}"] = torch.cat([take(f"{dname}.{n}.{p}") for n in ("to_q", "to_k", "to_v")])
    left = sorted(set(theirs) - used)
    if left:
        raise DiffusersFormatError(f"The diffusers weights hold {len(left)} tensors this config does not use "
                                   f"(first: {left[0]}): the config and the weights do not belong together")
    return out
