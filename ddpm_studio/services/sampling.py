"""The sampling session: load a checkpoint, generate K images in batches, save PNGs, a grid and a GIF.

:func:`denoise_batches` is the loop shared with interpolation and evaluation: it takes the
x_T (and class labels) of each batch and yields progress, so every generator of images reports,
cancels and applies classifier-free guidance the same way.

Like training, it is a generator of events, so the CLI's progress bar and the GUI's worker
consume the same thing; ``control.stop()`` cancels between sampler steps.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ddpm_studio.core.autoguidance import Autoguided, EarlyWeights, guide_network, pick_guide
from ddpm_studio.core.checkpoint import FORMAT_NAME, CheckpointError, load_checkpoint
from ddpm_studio.core.device import DeviceChoice, attention_impl, choose_device, default_mps_memory_limit
from ddpm_studio.core.samplers import SamplerSpec, iter_sampler
from ddpm_studio.core.schedules import NoiseSchedule
from ddpm_studio.core.unet_blocks import use_attention
from ddpm_studio.services import config as config_mod
from ddpm_studio.services.conditioning import sample_labels
from ddpm_studio.services.control import RunControl
from ddpm_studio.services.events import SamplesReady, SamplingProgress, Status
from ddpm_studio.services.imaging import make_grid, pick_frames, save_gif, save_png, to_uint8
from ddpm_studio.services.model_factory import build_model, build_schedule, make_denoiser
from ddpm_studio.services.runs import resolve_checkpoint

TRAJECTORY_FRAMES = 40


@dataclass
class LoadedModel:
    """A model ready to sample: weights on the device, its run config, schedule and classes (empty = unconditional)."""

    model: nn.Module
    cfg: config_mod.RunConfig
    schedule: NoiseSchedule
    step: int
    path: Path
    class_names: tuple[str, ...] = ()
    ema_length: float | None = None  # the power-EMA length (σ_rel) of these weights; None: a fixed EMA or raw weights
    guide: nn.Module | None = None  # autoguidance's guide: the run's EMA weights from about half as many steps
    guide_step: int | None = None  # the step of ``guide``

    def autoguidance(self, weight: float) -> float:
        """The autoguidance weight sampling applies when ``weight`` is asked for: 0 without a guide."""
        return weight if self.guide is not None else 0.0

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.cfg.data.channels, self.cfg.data.image_size, self.cfg.data.image_size)


def training_snapshot(ema_model: nn.Module, early: EarlyWeights, step: int, cfg: config_mod.RunConfig,
                      schedule: NoiseSchedule, run_path: Path, class_names: tuple[str, ...]) -> LoadedModel:
    """A running training's EMA model, ready to sample as its checkpoint at ``step`` would be (with the guide that
    checkpoint would keep, from the run's ``early`` weights), in weights of its own: training goes on meanwhile."""
    model = copy.deepcopy(ema_model).eval().requires_grad_(False)
    picked = early.guide_for(step)
    guide = None if picked is None else guide_network(model, picked[1])
    return LoadedModel(model, cfg, schedule, step, run_path, class_names, guide=guide,
                       guide_step=None if picked is None else picked[0])


def load_for_sampling(path: str | Path, device: DeviceChoice, use_ema: bool = True,
                      ema_length: float | None = None, guided: bool = False) -> LoadedModel:
    """Build the network a checkpoint describes and load its (EMA) weights; CheckpointError says why not.

    ``ema_length`` (σ_rel, e.g. 0.02-0.25): rebuild the power-function EMA of that length from the averages the
    checkpoint stores (post-hoc EMA, :func:`ddpm_studio.core.power_ema.reconstruct`) instead of using the run's
    own EMA; only checkpoints of runs with EMA kind "power" have them (CheckpointError otherwise). None or 0: the
    checkpoint's own EMA weights (at the run's length for a power EMA). Checkpoints written before
    class-conditional training existed have no ``class_names``: unconditional. ``guided``: also load the
    autoguidance guide the checkpoint keeps (none in checkpoints from before autoguidance: ``guide`` stays None).
    """
    from ddpm_studio.services.checkpoint_check import (
        checked_class_names,
        checked_config,
        checked_step,
        checked_weights,
    )

    ckpt_path = resolve_checkpoint(path)
    ckpt = load_checkpoint(ckpt_path)
    # Settings, step and weight shapes are checked before the network is built: a hostile file cannot make us
    # allocate a huge model, and a mismatch is named precisely.
    class_names = checked_class_names(ckpt, ckpt_path)
    cfg = checked_config(ckpt, ckpt_path)
    step = checked_step(ckpt, ckpt_path)
    length = _own_ema_length(ckpt) if use_ema else None
    if ema_length:
        if not use_ema:
            raise CheckpointError("An EMA length applies to the EMA weights: sample with the EMA (use_ema) to choose one")
        weights = _rebuilt_ema(ckpt, cfg, ckpt_path, len(class_names), ema_length)
        length = float(ema_length)
    else:
        weights = checked_weights(ckpt, cfg, ckpt_path, use_ema=use_ema, num_classes=len(class_names))
    try:
        model = build_model(cfg, num_classes=len(class_names))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"Checkpoint {ckpt_path.name} has settings this version cannot build: {exc}") from exc
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(
            f"Checkpoint {ckpt_path.name}'s weights do not fit its model settings: {str(exc).splitlines()[0]}"
        ) from exc
    model.to(device.device).eval().requires_grad_(False)
    use_attention(model, attention_impl("auto", device.device))  # on MPS the faster of SDPA and matmul + softmax
    loaded = LoadedModel(model, cfg, build_schedule(cfg), step, ckpt_path, class_names, length)
    picked = pick_guide(ckpt.get("early_weights"), step) if guided else None
    if picked is not None:
        from ddpm_studio.services.checkpoint_check import checked_table, expected_shapes

        try:
            weights = checked_table(picked[1], expected_shapes(cfg, len(class_names)), ckpt_path.name)
        except CheckpointError as exc:
            raise CheckpointError(f"{exc} (in the earlier weights autoguidance steers by: sample with autoguidance 0 "
                                  "to use the model alone)") from exc
        loaded.guide, loaded.guide_step = guide_network(model, weights), picked[0]
    return loaded


def _own_ema_length(ckpt: dict[str, Any]) -> float | None:
    """The length of a power-EMA checkpoint's own EMA weights (None: a fixed EMA, or no EMA)."""
    ema = ckpt.get("ema")
    length = ema.get("length") if isinstance(ema, dict) else None
    return float(length) if isinstance(length, int | float) and not isinstance(length, bool) else None


def _rebuilt_ema(ckpt: dict[str, Any], cfg: config_mod.RunConfig, path: Path, num_classes: int,
                 ema_length: float) -> dict[str, torch.Tensor]:
    """The post-hoc EMA of ``ema_length`` from a power-EMA checkpoint's stored averages (checked first)."""
    from ddpm_studio.core.posthoc_ema import MAX_SIGMA_REL
    from ddpm_studio.core.power_ema import reconstruct
    from ddpm_studio.services.checkpoint_check import checked_ema_sources, checked_table, expected_shapes

    if not 0 < ema_length < MAX_SIGMA_REL:
        raise config_mod.ConfigError([f"EMA length must be between 0 and {MAX_SIGMA_REL:.3f} (got {ema_length:g})"])
    step, sources = checked_ema_sources(ckpt, cfg, path, num_classes)
    if step == 0:  # no update yet: every average is still the initial network
        return sources[0][2]
    weights = reconstruct(sources, step, ema_length)
    return checked_table(weights, expected_shapes(cfg, num_classes), path.name)  # finite (fp16 sums cannot overflow)


@dataclass(frozen=True)
class CheckpointOffer:
    """What a checkpoint offers the sampler form (the GUI's Class, EMA length and Autoguidance fields)."""

    class_names: tuple[str, ...]  # the classes it was trained with; empty = unconditional
    ema_length: float | None  # the run's own EMA length when it can rebuild others (a power EMA), else None
    guide_step: int | None  # the step of the earlier weights autoguidance would use; None: it keeps none


def checkpoint_offer(path: str | Path) -> CheckpointOffer:
    """What a checkpoint (or a run folder's newest one) offers, read once.

    Memory-maps the file so that a multi-GB checkpoint is not read just for this (falls back to
    :func:`load_checkpoint`, whose CheckpointError says what is wrong). Still file I/O: call it off the GUI thread.
    """
    ckpt_path = resolve_checkpoint(path)
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        ckpt = None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT_NAME or "config" not in ckpt:
        ckpt = load_checkpoint(ckpt_path)
    step = ckpt.get("step")
    picked = pick_guide(ckpt.get("early_weights"), step) if isinstance(step, int) else None
    return CheckpointOffer(tuple(str(n) for n in ckpt.get("class_names", ())),
                           _own_ema_length(ckpt) if isinstance(ckpt.get("phema"), dict) else None,
                           None if picked is None else picked[0])


def seed_noise(seed: int, n: int, shape: tuple[int, ...]) -> torch.Tensor:
    """x_T for the first ``n`` images of ``seed``, drawn on the CPU so a seed gives the same images on every device."""
    return torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed))


def sampler_spec(sample: config_mod.SampleConfig) -> SamplerSpec:
    return SamplerSpec(sample.sampler, sample.steps, sample.eta, sample.spacing, sample.variance)


def seeded_batches(
    sample: config_mod.SampleConfig, shape: tuple[int, ...], labels: torch.Tensor | None
) -> list[Callable[[], tuple[torch.Tensor, torch.Tensor | None]]]:
    """The batches of ``sample.num_images`` images for :func:`denoise_batches`: x_T drawn batch after batch
    from one CPU generator seeded with ``sample_seed``. With ``num_images = 1`` that is ``seed_noise(seed, 1)``
    (and, as torch fills normals in blocks of 16 values, the first image of any batch whose images have a
    multiple of 16 values, e.g. every size divisible by 4)."""
    g_init = torch.Generator().manual_seed(sample.sample_seed)
    n_all, bs = sample.num_images, sample.sample_batch_size

    def batch(start: int) -> Callable[[], tuple[torch.Tensor, torch.Tensor | None]]:
        n = min(bs, n_all - start)
        return lambda: (torch.randn((n, *shape), generator=g_init), None if labels is None else labels[start : start + n])

    return [batch(start) for start in range(0, n_all, bs)]


def denoise_batches(
    loaded: LoadedModel,
    spec: SamplerSpec,
    device: DeviceChoice,
    batches: list[Callable[[], tuple[torch.Tensor, torch.Tensor | None]]],
    *,
    guidance_scale: float = 1.0,
    autoguidance: float = 0.0,
    generator: torch.Generator | None = None,
    control: RunControl | None = None,
    trajectory: list[np.ndarray] | None = None,
) -> Generator[SamplingProgress, None, np.ndarray | None]:
    """Run the sampler over each batch and return all final images as (N, H, W, C) uint8, or None if stopped.

    Each of ``batches`` returns that batch's x_T and labels (or None) only when its turn comes, so a
    100k-image job never holds all its noise. Progress frames come from the first batch; ``trajectory``
    (if given) collects its x_t grids for a GIF. ``autoguidance``: its weight w, applied when ``loaded`` has a guide
    (:class:`ddpm_studio.core.autoguidance.Autoguided`; a second network evaluation per step).
    """
    per_batch = spec.steps_for(loaded.schedule.num_timesteps)
    total = per_batch * len(batches)
    keep = set(pick_frames(per_batch, TRAJECTORY_FRAMES))
    results: list[np.ndarray] = []
    done, start = 0, time.perf_counter()
    weight = loaded.autoguidance(autoguidance)
    model = Autoguided(loaded.model, loaded.guide, weight) if weight and loaded.guide is not None else loaded.model
    for b, make in enumerate(batches):
        x_T, labels = make()
        if labels is not None:
            labels = labels.to(device.device)
        denoise = make_denoiser(model, device.autocast, labels, guidance_scale,
                                prediction=loaded.cfg.diffusion.prediction, schedule=loaded.schedule)
        final = None
        for s in iter_sampler(spec, denoise, loaded.schedule, x_T.to(device.device), generator):
            if control is not None and control.stop_requested:
                return None
            done += 1
            frame = None
            if s.index in keep and b == 0:
                frame = make_grid(to_uint8(s.x0_pred))
                if trajectory is not None:
                    trajectory.append(make_grid(to_uint8(s.x_next)))
            elapsed = time.perf_counter() - start
            yield SamplingProgress(done, total, b + 1, len(batches), elapsed / done * (total - done), frame)
            final = s.x_next
        assert final is not None
        results.append(to_uint8(final))
    return np.concatenate(results)


def resolve_device(source: str | Path | LoadedModel, name: str, precision: str) -> DeviceChoice:
    """The device a session runs on: the loaded model's own, or the one asked for."""
    if isinstance(source, LoadedModel):
        return choose_device(next(source.model.parameters()).device.type, precision)
    device = choose_device(name, precision)
    if device.device.type == "mps":
        default_mps_memory_limit()  # fail with "out of memory" rather than make macOS swap
    return device


def load_source(source: str | Path | LoadedModel, sc: config_mod.SampleConfig, device_name: str,
                precision: str) -> Generator[Any, None, tuple[LoadedModel, DeviceChoice]]:
    """What a sampling, interpolation or evaluation session samples from: the model given, or the checkpoint loaded
    (saying so) with the sampling settings' EMA choice; and the device it runs on."""
    device = resolve_device(source, device_name, precision)
    if isinstance(source, LoadedModel):  # the live model (with its guide once it has one) or a caller's own
        return source, device
    yield Status("Loading checkpoint")
    loaded = load_for_sampling(source, device, sc.use_ema, sc.ema_length, guided=sc.autoguidance > 0)
    if sc.autoguidance > 0 and loaded.guide is None:
        yield Status(NO_GUIDE)
    return loaded, device


#: Said when autoguidance is asked for but the checkpoint keeps no earlier weights to guide with.
NO_GUIDE = ("Autoguidance is off for this checkpoint: it keeps no weights of its run from about half-way through "
            "(saved by a version of DDPM Studio before autoguidance, imported, saved in its first steps, or soon "
            "after resuming such a run); sampling without it")


def weights_record(loaded: LoadedModel, sc: config_mod.SampleConfig) -> dict[str, Any]:
    """What a result records of the weights that drew it: the power-EMA length (None: a fixed EMA or the raw
    weights), the autoguidance weight applied (0: off or no guide) and the guide's step."""
    weight = loaded.autoguidance(sc.autoguidance)
    return {"ema_length": loaded.ema_length, "autoguidance": weight, "guide_step": loaded.guide_step if weight else None}


class SamplingSession:
    """Generate ``sample.num_images`` images and save them under ``out_dir``."""

    def __init__(
        self,
        checkpoint: str | Path | LoadedModel,
        sample: config_mod.SampleConfig,
        out_dir: str | Path,
        *,
        control: RunControl | None = None,
        device: str = "auto",
        precision: str = "auto",
        save_trajectory: bool = False,
        prefix: str = "sample",
    ) -> None:
        errors = config_mod.field_errors(sample)
        if errors:
            raise config_mod.ConfigError(errors)
        self.source, self.sample, self.out_dir = checkpoint, sample, Path(out_dir)
        self.control = control or RunControl()
        self.device_name, self.precision = device, precision
        self.save_trajectory, self.prefix = save_trajectory, prefix

    def steps(self) -> Iterator[Any]:
        sc = self.sample
        loaded, device = yield from load_source(self.source, sc, self.device_name, self.precision)
        labels, ncols = sample_labels(sc.class_label, loaded.class_names, sc.num_images)
        g_step = torch.Generator().manual_seed(sc.sample_seed + 1)
        trajectory: list[np.ndarray] | None = [] if self.save_trajectory else None
        self.out_dir.mkdir(parents=True, exist_ok=True)
        images = yield from denoise_batches(
            loaded, sampler_spec(sc), device, seeded_batches(sc, loaded.image_shape, labels),
            guidance_scale=sc.guidance_scale, autoguidance=sc.autoguidance, generator=g_step, control=self.control,
            trajectory=trajectory,
        )
        if images is None:
            return
        paths = tuple(str(save_png(img, self.out_dir / f"{self.prefix}_{i:05d}.png")) for i, img in enumerate(images))
        grid_path = str(save_png(make_grid(images, ncols), self.out_dir / f"{self.prefix}_grid.png"))
        traj_path = str(save_gif(trajectory, self.out_dir / f"{self.prefix}_trajectory.gif")) if trajectory else None
        extra = {"checkpoint": str(loaded.path), "step": loaded.step, **weights_record(loaded, sc)}
        if labels is not None:
            extra["labels"] = labels.tolist()
            extra["class_names"] = list(loaded.class_names)
        yield SamplesReady(images, paths, grid_path, traj_path, extra)
