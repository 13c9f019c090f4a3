"""One source of truth for every hyperparameter.

Each setting is a dataclass field whose metadata (label, help, range, choices) generates the
CLI flags and the GUI form, and validates input with messages a person understands. A run's
config is saved with it as TOML (hand-editable; config_files.py reads and writes the files) and
inside every checkpoint as a plain dict.
Field names are unique across sections, so ``--batch-size`` needs no section prefix.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ddpm_studio.core.choices import (
    ATTENTION_CHOICES,
    BETA_SCHEDULE_NAMES,
    COMPILE_CHOICES,
    DEVICE_CHOICES,
    DOWNSAMPLE_PADDINGS,
    LOSS_TYPES,
    LOSS_WEIGHTINGS,
    NOISE_LEVELS,
    PRECISION_CHOICES,
    PREDICTIONS,
    SAMPLER_NAMES,
    SPACINGS,
    VARIANCES,
)
from ddpm_studio.core.sampler_catalog import sampler_help, spacing_help, uses_steps
from ddpm_studio.core.unet_config import UNetConfig, preset_config

DATA_SOURCES = ("demo", "folder", "mnist", "fashion_mnist", "cifar10")
MODEL_PRESETS = ("tiny", "fast", "small", "laptop", "cifar10", "ddpm-64", "ddpm-128", "ddpm-256")
SCHEDULES = BETA_SCHEDULE_NAMES
LR_SCHEDULES = ("constant", "cosine", "linear", "wsd")
EMA_KINDS = ("power", "fixed")


class ConfigError(ValueError):
    """Invalid settings; ``errors`` lists one human sentence per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def setting(default: Any, label: str, help: str, *, min: float | None = None, max: float | None = None,
            choices: tuple[str, ...] | None = None, optional: bool = False, aliases: tuple[str, ...] = ()) -> Any:
    """A dataclass field carrying the metadata the CLI, the GUI form and validation share.

    ``aliases``: extra CLI spellings of the flag (e.g. ``--minutes`` for ``--train-minutes``).
    """
    meta = {"label": label, "help": help, "min": min, "max": max, "choices": choices, "optional": optional,
            "aliases": aliases}
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class DataConfig:
    """What to train on and how images are prepared."""

    source: str = setting("demo", "Dataset", "Built-in demo shapes, an image folder, or MNIST / FashionMNIST / CIFAR-10 files already on disk.", choices=DATA_SOURCES)
    data_path: str = setting("", "Data folder", "Folder of images (searched recursively; one subfolder per class is allowed), or the root of the standard dataset files.")
    image_size: int = setting(32, "Image size", "Images are resized and centre-cropped to this square size (pixels).", min=16, max=256)
    channels: int = setting(3, "Channels", "3 for RGB, 1 for grayscale.", min=1, max=3)
    hflip: bool = setting(True, "Random horizontal flip", "Flip half of the training images left-right (doubles the data for symmetric subjects).")
    cache: bool = setting(True, "Cache decoded images", "Keep decoded, resized images in the user cache folder so the next run starts instantly.")
    conditional: bool = setting(False, "Class-conditional", "Train with the class labels (one subfolder per class, the demo shapes, MNIST, CIFAR-10) so you can pick the class when generating. Cannot change when resuming.")


@dataclass(frozen=True)
class ModelConfig:
    """The U-Net: a named preset, optionally overridden field by field."""

    preset: str = setting("fast", "Model preset", "fast: 0.4M parameters, 32 channels at every level: the most learned per CPU minute (about 1.6x the small preset's images/s with about the same score per image on the demo shapes, so ten minutes score about twice as much: docs/quality_per_compute.md); small: 1.1M, wider middle and deepest levels; laptop: 2.7M, wider still, for more varied images or longer runs; cifar10: the paper's 35.7M model (GPU); tiny: for tests.", choices=MODEL_PRESETS)
    base_channels: int | None = setting(None, "Base channels", "Width of the first U-Net level (multiple of 32). Empty = preset's value.", min=32, max=512, optional=True)
    channel_mults: tuple[int, ...] | None = setting(None, "Channel multipliers", "Width of each level as a multiple of base channels, e.g. 1,2,2,2. Empty = preset's value.", optional=True)
    num_res_blocks: int | None = setting(None, "Residual blocks per level", "Empty = preset's value.", min=1, max=8, optional=True)
    attention_resolutions: tuple[int, ...] | None = setting(None, "Attention resolutions", "Feature-map sizes that get self-attention, e.g. 16. Empty = preset's value.", optional=True)
    dropout: float | None = setting(None, "Dropout", "Dropout in residual blocks. Empty = the preset's value: 0 for fast and small (in a run of minutes dropout only slows learning), 0.1 for the others (the paper's on CIFAR-10: it curbs overfitting in long runs).", min=0.0, max=0.9, optional=True)
    downsample_padding: str = setting("symmetric", "Downsample padding", "How each downsampling conv pads its input: symmetric (a pixel on every side, DDPM Studio's own models) or tf (right and bottom only, as the paper's TensorFlow code did: ddpm-studio import sets it for the google/ddpm-* weights). The weights depend on it: cannot change when resuming.", choices=DOWNSAMPLE_PADDINGS)


@dataclass(frozen=True)
class DiffusionConfig:
    """The forward process and the loss."""

    timesteps: int = setting(1000, "Timesteps T", "Number of diffusion steps (paper: 1000).", min=10, max=4000)
    schedule: str = setting("cosine", "Noise schedule", "cosine: Nichol & Dhariwal, better for small images (with v-prediction, the crispest demo shapes after 1,200 steps); linear: β from 1e-4 to 0.02, the paper's (Ho et al.).", choices=SCHEDULES)
    prediction: str = setting("v", "Prediction target", "What the network predicts. v: the velocity √ᾱ·ε - √(1-ᾱ)·x₀ (Salimans & Ho 2022): on the demo shapes, 1,200 steps give shapes on white where epsilon gives colour-filled frames; epsilon: the noise, as in the paper (Ho et al.). Cannot change when resuming.", choices=PREDICTIONS)
    loss: str = setting("mse", "Loss", "Distance between the network's output and its target (ε or v): mse (the paper's), l1 or huber.", choices=LOSS_TYPES)
    noise_levels: str = setting("uniform", "Noise levels", "Which noise levels training visits. uniform: every step t equally often (Ho et al.); lognormal: EDM's log-normal noise levels σ (Karras et al. 2022), mapped onto the T steps, which spend more effort on middle noise. See docs/quality_per_compute.md for what each gives at a small budget.", choices=NOISE_LEVELS)
    loss_weighting: str = setting("min-snr", "Loss weighting", "How the loss at each noise level counts. min-snr: Min-SNR-γ (Hang et al. 2023), less effort on nearly clean images (with v-prediction also on nearly pure noise): on the demo shapes it draws clean shapes about three times as often as uniform after the same images (docs/quality_per_compute.md); uniform: equally (the paper's); edm: EDM's λ(σ), meant with lognormal noise levels.", choices=LOSS_WEIGHTINGS)
    min_snr_gamma: float = setting(5.0, "Min-SNR γ", "With loss weighting min-snr: the loss at step t counts min(SNR, γ)/SNR for epsilon, min(SNR, γ)/(SNR + 1) for v (Hang et al. 2023 use 5).", min=0.0, max=1000.0)
    lognormal_mean: float = setting(-1.2, "Log-normal mean", "With lognormal noise levels: the mean of ln σ (EDM: -1.2). Lower it to train more on fine detail, raise it for layout and colour.", min=-10.0, max=10.0)
    lognormal_std: float = setting(1.2, "Log-normal spread", "With lognormal noise levels: the standard deviation of ln σ (EDM: 1.2).", min=0.05, max=10.0)


@dataclass(frozen=True)
class OptimConfig:
    """Optimisation, precision, device and length of the run."""

    batch_size: int = setting(32, "Batch size", "Images per optimisation step (per device).", min=1, max=4096)
    grad_accum: int = setting(1, "Gradient accumulation", "Micro-batches summed per step; the effective batch is batch size × this.", min=1, max=256)
    lr: float = setting(2e-3, "Learning rate", "AdamW learning rate. 2e-3 suits the CPU presets (tiny, fast, small, laptop); use 2e-4 for the paper's 35.7M models (Ho et al.; the app's GPU run presets set it).", min=1e-7, max=1e-1)
    warmup_steps: int = setting(100, "Warm-up steps", "Learning rate rises linearly from 0 over these steps (paper: 5000).", min=0, max=1_000_000)
    lr_schedule: str = setting("constant", "LR schedule", "After the warm-up: constant; cosine or linear: a decay to zero over the whole run (the time budget or the last step, whichever comes first); wsd: constant, then a linear decay to zero over the run's last part (LR decay share). A decay fitted to the run anneals the weights at its end; constant suits a run you will extend.", choices=LR_SCHEDULES)
    lr_decay_share: float = setting(0.2, "LR decay share", "wsd schedule: the share of the run (after the warm-up) over which the rate falls to zero at the end.", min=0.01, max=1.0)
    weight_decay: float = setting(0.0, "Weight decay", "AdamW decoupled weight decay.", min=0.0, max=1.0)
    adam_beta1: float = setting(0.9, "Adam β1", "AdamW's momentum: how many past gradients the step direction averages (0.9: ~10 steps; the diffusers training examples use 0.95).", min=0.0, max=0.9999)
    adam_beta2: float = setting(0.999, "Adam β2", "AdamW's average of squared gradients (0.999 as in the paper; lower, e.g. 0.99, reacts faster to changing gradient scales).", min=0.0, max=0.99999)
    grad_clip: float = setting(1.0, "Gradient clip norm", "Clip the gradient's global norm to this (0 = off; paper: 1.0).", min=0.0, max=1000.0)
    ema: str = setting("power", "EMA kind", "Samples come from an average of the weights over the last part of the run. power (the default): EDM2's power-function EMA, whose length is a fraction of the run so far (EMA length), so it fits any run length, and any other length can be rebuilt after training (sample --ema-length); on the demo shapes after ten minutes' images it scored 0.348 at length 0.035 where the fixed decay scored 0.297, and 0.559 at 0.02 against 0.473 with autoguidance (docs/quality_per_compute.md). fixed: a constant decay (EMA decay), the paper's. Cannot change when resuming.", choices=EMA_KINDS)
    ema_length: float = setting(0.02, "EMA length", "Power EMA: how much of the run the average covers, as EDM2's σ_rel (the spread of the averaged steps relative to the run's length so far; 90 % of the average's weight lies on the last 5 % of the run at 0.02, the last 12 % at 0.05, the last 25 % at 0.10, the last 56 % at 0.20). Shorter follows the latest weights, longer smooths more: 0.01-0.02 drew the cleanest demo shapes after ten minutes' images (0.56-0.57 guided, against 0.49 at 0.05), a long run may want longer (try it in Generate's EMA length). Previews and samples use it; sampling can choose another.", min=0.01, max=0.28)
    ema_snapshots: int = setting(4, "EMA snapshots", "Power EMA: earlier averages each checkpoint keeps (evenly spread over the run) so that any EMA length can be rebuilt after training; each costs two half-precision copies of the weights. 0 keeps only the two current averages (lengths 0.05-0.10 rebuild well).", min=0, max=64)
    ema_decay: float = setting(0.999, "EMA decay", "Fixed EMA: the decay per step (paper: 0.9999 for long runs; 0.999 averages about the last 1,000 steps whatever the run's length).", min=0.0, max=0.99999)
    mixed_precision: str = setting("auto", "Mixed precision", "auto: bf16 where the hardware is fast at it (CUDA, CPUs with AVX512-BF16), else float32.", choices=PRECISION_CHOICES)
    device: str = setting("auto", "Device", "auto picks CUDA, then Apple MPS, then CPU.", choices=DEVICE_CHOICES)
    attention: str = setting("auto", "Attention", "How self-attention is computed: sdpa (PyTorch's fused scaled_dot_product_attention) or math (plain matmul + softmax); auto = sdpa, except on Apple MPS, where a timing at start picks the faster. The same maths: only speed differs.", choices=ATTENTION_CHOICES)
    compile: str = setting("off", "Compile (torch.compile)", "Compile the training forward and backward with torch.compile: default (fuses the elementwise work between convolutions) or reduce-overhead (also CUDA graphs, for small models whose GPU steps are launch-bound). Try it on a GPU for long runs: the first step then takes a minute or more. Off on a CPU, where it was slower (docs/benchmarks.md). The same maths, float rounding apart.", choices=COMPILE_CHOICES)
    channels_last: bool = setting(False, "Channels-last layout", "Keep activations and weights as (N, H, W, C): can speed up convolutions on NVIDIA GPUs (docs/gpu.md says whether it did), slowed a CPU's bf16 training by a third (docs/benchmarks.md). The same maths, float rounding apart.")
    mps_memory_fraction: float = setting(1.0, "MPS memory limit", "Apple GPUs only: the most a run may allocate, as a multiple of Metal's recommended working set. At 1 a batch too large stops with an out-of-memory message instead of making macOS swap; PyTorch's own limit is 1.7; 0 = no limit.", min=0.0, max=2.0)
    total_steps: int = setting(20_000, "Total steps", "Optimisation steps to train for (with a time budget: at most; the run ends at whichever comes first).", min=1, max=100_000_000)
    train_minutes: float = setting(10.0, "Time budget (minutes)", "Train for this many minutes of running time (pauses do not count; a resumed run continues the clock), with the learning-rate decay fitted to it and a last preview and checkpoint at its end. 0 = no time limit: train for Total steps. Giving Total steps alone (a flag or a config file without this setting) makes a step run. A timed run is not bit-reproducible: its learning rate follows the clock.", min=0.0, max=1_000_000.0, aliases=("--minutes",))
    seed: int = setting(0, "Seed", "Seeds weights, data order and noise: the same seed reproduces the run.", min=0, max=2**31 - 1)
    label_dropout: float = setting(0.1, "Label dropout", "Class-conditional runs only: share of labels replaced by \"no class\", which trains the unconditional model classifier-free guidance needs (Ho & Salimans: 0.1-0.2).", min=0.0, max=1.0)


@dataclass(frozen=True)
class ScheduleConfig:
    """Checkpoints, previews and logging."""

    preview_every: int = setting(500, "Preview every (steps)", "Sample a fixed-seed trajectory from the EMA model this often (0 = off).", min=0, max=10_000_000)
    preview_minutes: float = setting(0.0, "Preview every (minutes)", "Also preview after this many minutes of training (pauses and previews do not count; 0 = off).", min=0.0, max=10_000.0)
    preview_budget: float = setting(0.1, "Preview time budget", "Largest share of the run's time that previews and their validation loss may take: when they are slow (a big model on a CPU), they are spaced out to stay within it. 0.1 = at most a tenth; raise it to see previews more often on a slow computer, at the cost of training time.", min=0.01, max=1.0)
    preview_images: int = setting(8, "Preview images", "Samples per preview.", min=1, max=64)
    preview_sampler: str = setting("dpm++2m-sde", "Preview sampler", "Previews use a fast sampler so they cost seconds, not minutes (stochastic DPM-Solver++ at 20 steps scores within 10% of DDPM's 1000 steps on the demo benchmark).", choices=SAMPLER_NAMES)
    preview_steps: int = setting(20, "Preview sampler steps", "Steps of the preview sampler (DDPM always uses T).", min=1, max=4000)
    checkpoint_every: int = setting(2000, "Checkpoint every (steps)", "Save a checkpoint this often (0 = only at the end and on stop).", min=0, max=10_000_000)
    checkpoint_minutes: float = setting(10.0, "Checkpoint every (minutes)", "Also save after this many minutes of training (pauses do not count; 0 = off).", min=0.0, max=10_000.0)
    keep_last: int = setting(3, "Keep last N checkpoints", "Older checkpoints are deleted only after a newer one is safely written.", min=1, max=1000)
    log_every: int = setting(10, "Log every (steps)", "Write a metrics line every this many steps.", min=1, max=100_000)
    tensorboard: bool = setting(False, "TensorBoard", "Also log to TensorBoard (needs the tensorboard package).")
    wandb: bool = setting(False, "Weights & Biases", "Also log the settings, losses, learning rate and previews to Weights & Biases (needs the wandb package and `wandb login`, or WANDB_MODE=offline to log to disk; WANDB_PROJECT names the project). A resumed run continues the same W&B run; if W&B fails, training goes on without it.")


@dataclass(frozen=True)
class SampleConfig:
    """How to generate images from a trained model."""

    sampler: str = setting("dpm++2m-sde", "Sampler", sampler_help(), choices=SAMPLER_NAMES)
    steps: int = setting(20, "Steps", "Sampler steps (DDPM always uses T). 20 steps of the default sampler and spacing scored 94 % of DDPM-1000 on the default model, 10 steps 90 % at half the time (docs/quality_vs_steps.md).", min=1, max=4000)
    eta: float = setting(0.0, "DDIM η", "0 = deterministic DDIM, 1 = DDPM-like noise.", min=0.0, max=1.0)
    spacing: str = setting("trailing", "Timestep spacing", spacing_help(), choices=SPACINGS)
    variance: str = setting("beta_tilde", "DDPM variance", "σ² = β̃ (posterior) or β (the paper's two choices).", choices=VARIANCES)
    num_images: int = setting(16, "Number of images", "How many images to generate.", min=1, max=100_000)
    sample_batch_size: int = setting(16, "Sampling batch size", "Images denoised at once.", min=1, max=1024)
    sample_seed: int = setting(0, "Sampling seed", "The same seed gives the same images.", min=0, max=2**31 - 1)
    use_ema: bool = setting(True, "Use EMA weights", "Sample from the averaged weights (recommended).")
    ema_length: float = setting(0.0, "EMA length", "Runs trained with a power EMA: rebuild the average of the weights at this length (σ_rel: 0.05 weighs mostly the last 12 % of the run, 0.10 the last 25 %, 0.20 the last 56 %) from the averages the checkpoint keeps (post-hoc EMA), and sample from it. Try a few lengths when samples look noisy (longer) or washed out (shorter). 0 = the run's own EMA.", min=0.0, max=0.28)
    class_label: str = setting("all", "Class", "Class-conditional models: all (one row per class), or a class name or number (0 = first). Unconditional models only accept all.")
    autoguidance: float = setting(1.0, "Autoguidance", "Steer each step away from the same run's weights from about halfway through it (Karras et al. 2024, autoguidance): cleaner shapes, most of all from short runs (demo shapes after ten CPU minutes: 67-69 % clean alone, 71-83 % at 1), at twice the sampling time. 0 = off: the model alone; 1 = recommended; 2 sharpens a young model further but favours some colours more, and can score below no guidance at all when the guide falls at a third of the run or earlier. Needs a checkpoint saved by this version (older ones sample without it).", min=0.0, max=4.0)
    guidance_scale: float = setting(1.0, "Guidance scale", "Class-conditional models: 0 = ignore the class, 1 = plain conditional model, >1 = classifier-free guidance (closer to the class, less variety, two model calls per step).", min=0.0, max=20.0)


#: Where an evaluation's sampling settings start: more images than a preview, a fast sampler.
EVALUATION_SAMPLE_DEFAULTS: dict[str, Any] = {"num_images": 256, "sample_batch_size": 64, "sampler": "dpm++2m-sde", "steps": 20}


@dataclass(frozen=True)
class InterpolationConfig:
    """Interpolation between two seeds' noise (the other settings come from SampleConfig)."""

    seed_from: int = setting(0, "From seed", "Seed of the first image of the strip (the same image the sampler gives for this seed).", min=0, max=2**31 - 1)
    seed_to: int = setting(1, "To seed", "Seed of the last image of the strip.", min=0, max=2**31 - 1)
    frames: int = setting(9, "Frames", "Images in the strip, both ends included.", min=2, max=64)


@dataclass(frozen=True)
class RunConfig:
    """Everything a training run needs; saved with the run and in each checkpoint."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)


#: The training recipe of Ho et al. 2020 (DDPM) for the settings the defaults have moved away from: presets that
#: reproduce the paper ("Paper CIFAR-10") apply all of these, so the paper's DDPM stays one click away.
PAPER_RECIPE: dict[str, dict[str, Any]] = {
    "model": {"dropout": 0.1},
    "diffusion": {"schedule": "linear", "prediction": "epsilon", "noise_levels": "uniform", "loss_weighting": "uniform"},
    "optim": {"lr_schedule": "constant", "ema": "fixed", "ema_decay": 0.9999, "adam_beta1": 0.9, "adam_beta2": 0.999,
              "weight_decay": 0.0, "grad_clip": 1.0, "train_minutes": 0.0},
}


SECTION_TYPES: dict[str, type] = {
    "data": DataConfig, "model": ModelConfig, "diffusion": DiffusionConfig, "optim": OptimConfig, "schedule": ScheduleConfig,
}
SECTION_TITLES = {
    "data": "Data", "model": "Model", "diffusion": "Diffusion", "optim": "Optimisation", "schedule": "Checkpoints & previews",
}


def field_kind(f: dataclasses.Field[Any]) -> str:
    """One of bool, int, float, str, ints (tuple of ints), derived from the field's default type."""
    annotation = str(f.type)
    for kind in ("bool", "tuple", "int", "float", "str"):
        if annotation.startswith(kind) or annotation.startswith(f"{kind} "):
            return "ints" if kind == "tuple" else kind
    raise TypeError(f"Unsupported config field type {annotation}")


def coerce(f: dataclasses.Field[Any], value: Any) -> Any:
    """Convert ``value`` (from TOML, JSON, a CLI string or a widget) to the field's type, or raise ValueError."""
    label = f.metadata["label"]
    if value is None or (isinstance(value, str) and value.strip() == "" and f.metadata["optional"]):
        if f.metadata["optional"]:
            return None
        raise ValueError(f"{label} needs a value")
    kind = field_kind(f)
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
                return value.lower() in ("true", "yes", "on", "1")
            raise ValueError
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind == "ints":
            items = value.replace(" ", "").split(",") if isinstance(value, str) else list(value)
            return tuple(int(v) for v in items if v != "")
        if not isinstance(value, str):
            raise ValueError
        return value
    except (TypeError, ValueError):
        expected = {"bool": "true or false", "int": "a whole number", "float": "a number",
                    "ints": "a list of whole numbers such as 1,2,2", "str": "text"}[kind]
        raise ValueError(f"{label} must be {expected} (got {value!r})") from None


def field_errors(section: object) -> list[str]:
    """Range and choice checks of one section, from the field metadata."""
    errors: list[str] = []
    for f in dataclasses.fields(section):  # type: ignore[arg-type]
        value = getattr(section, f.name)
        meta = f.metadata
        if value is None:
            continue
        if meta["choices"] and value not in meta["choices"]:
            errors.append(f"{meta['label']} must be one of {', '.join(meta['choices'])} (got {value!r})")
        lo, hi = meta["min"], meta["max"]
        if isinstance(value, int | float) and not isinstance(value, bool):
            if value != value:  # NaN
                errors.append(f"{meta['label']} must be a number (got NaN)")
            elif (lo is not None and value < lo) or (hi is not None and value > hi):
                errors.append(f"{meta['label']} must be between {lo:g} and {hi:g} (got {value:g})")
    return errors


def validate(cfg: RunConfig) -> list[str]:
    """Every problem with ``cfg`` as a sentence; an empty list means it can run."""
    errors: list[str] = []
    for name in SECTION_TYPES:
        errors += field_errors(getattr(cfg, name))
    d, m = cfg.data, cfg.model
    if d.channels not in (1, 3):
        errors.append(f"Channels must be 1 (grayscale) or 3 (RGB) (got {d.channels})")
    if d.source in ("folder", "mnist", "fashion_mnist", "cifar10"):
        if not d.data_path:
            errors.append("Choose a data folder")
        elif not Path(d.data_path).expanduser().is_dir():
            errors.append(f"Data folder {d.data_path} does not exist or is not a folder")
    if m.channel_mults is not None and (not m.channel_mults or any(c < 1 or c > 16 for c in m.channel_mults)):
        errors.append("Channel multipliers must be 1 to 6 whole numbers between 1 and 16, e.g. 1,2,2,2")
    elif m.channel_mults is not None and len(m.channel_mults) > 6:
        errors.append("Channel multipliers: at most 6 levels")
    if m.base_channels is not None and m.base_channels % 32:
        errors.append(f"Base channels must be a multiple of 32 (GroupNorm uses 32 groups) (got {m.base_channels})")
    if not errors:
        errors += model_errors(cfg)
    diff = cfg.diffusion
    if diff.loss_weighting == "min-snr" and diff.min_snr_gamma <= 0:
        errors.append("Loss weighting min-snr needs Min-SNR γ above 0 (Hang et al. use 5)")
    if diff.loss_weighting == "edm" and diff.prediction == "epsilon" and diff.noise_levels == "uniform":
        errors.append("Loss weighting edm with epsilon prediction needs lognormal noise levels: with uniform ones the "
                      "noisiest steps would weigh up to a million times more than the rest")
    if uses_steps(cfg.schedule.preview_sampler) and cfg.schedule.preview_steps > cfg.diffusion.timesteps:
        errors.append(f"Preview sampler steps ({cfg.schedule.preview_steps}) cannot exceed timesteps T ({cfg.diffusion.timesteps})")
    return errors


def model_errors(cfg: RunConfig) -> list[str]:
    """Checks that need the resolved U-Net layout (e.g. image size divisible by the down-sampling); no torch needed."""
    try:
        unet_config(cfg)
    except ValueError as exc:
        return [str(exc)]
    return []


def unet_config(cfg: RunConfig) -> UNetConfig:
    """The U-Net layout ``cfg`` asks for: its model preset at the data's size and channels, with any overrides.

    Raises ValueError when the layout cannot be built (e.g. 4 levels need an image size divisible by 8).
    """
    m = cfg.model
    overrides: dict[str, Any] = {
        f.name: getattr(m, f.name) for f in dataclasses.fields(m) if f.name != "preset" and getattr(m, f.name) is not None
    }
    return preset_config(m.preset, image_size=cfg.data.image_size, in_channels=cfg.data.channels, **overrides)


def check(cfg: RunConfig) -> RunConfig:
    """Return ``cfg`` or raise :class:`ConfigError` listing every problem."""
    errors = validate(cfg)
    if errors:
        raise ConfigError(errors)
    return cfg


# -- (de)serialisation ---------------------------------------------------------------
def to_dict(cfg: RunConfig) -> dict[str, dict[str, Any]]:
    """Plain nested dict (tuples as lists, None kept) for checkpoints and JSON."""
    out: dict[str, dict[str, Any]] = {}
    for name in SECTION_TYPES:
        section = getattr(cfg, name)
        out[name] = {f.name: _plain(getattr(section, f.name)) for f in dataclasses.fields(section)}
    return out


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def from_dict(data: dict[str, Any], *, base: RunConfig | None = None, strict: bool = True) -> RunConfig:
    """Build a config from nested sections; unknown keys and wrong types raise :class:`ConfigError`."""
    base = base or RunConfig()
    errors: list[str] = []
    sections: dict[str, Any] = {}
    if not isinstance(data, dict):
        raise ConfigError(["A config file must contain sections such as [optim]"])
    for key in data:
        if key not in SECTION_TYPES and strict:
            errors.append(f"Unknown section [{key}]{_did_you_mean(key, SECTION_TYPES)}")
    for name in SECTION_TYPES:
        values = data.get(name, {})
        if not isinstance(values, dict):
            errors.append(f"[{name}] must be a section of settings")
            continue
        sections[name] = update_section(getattr(base, name), values, errors, name, strict)
    if errors:
        raise ConfigError(errors)
    return RunConfig(**sections)


def update_section(section: Any, values: dict[str, Any], errors: list[str] | None = None, name: str = "",
                   strict: bool = True) -> Any:
    """``section`` with ``values`` coerced into it; problems go to ``errors`` (or raise ConfigError if None)."""
    own_errors: list[str] = [] if errors is None else errors
    fields = {f.name: f for f in dataclasses.fields(section)}
    updates = {}
    if "total_steps" in values and "train_minutes" in fields and "train_minutes" not in values:
        updates["train_minutes"] = 0.0  # Total steps given on its own: a step run, as before time budgets existed
    for key, value in values.items():
        if key not in fields:
            if strict:
                own_errors.append(f"Unknown setting {key!r} in [{name}]{_did_you_mean(key, fields)}")
            continue
        try:
            updates[key] = coerce(fields[key], value)
        except ValueError as exc:
            own_errors.append(str(exc))
    if errors is None and own_errors:
        raise ConfigError(own_errors)
    return dataclasses.replace(section, **updates)


def _did_you_mean(key: str, options: Any) -> str:
    close = difflib.get_close_matches(key, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
