"""The sampling session: load a checkpoint, generate K images in batches, save PNGs, a grid and a GIF.

Like training, it is a generator of events, so the CLI's progress bar and the GUI's worker
consume the same thing; ``control.stop()`` cancels between sampler steps.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ddpm_studio.core.checkpoint import CheckpointError, load_checkpoint
from ddpm_studio.core.device import DeviceChoice, choose_device
from ddpm_studio.core.samplers import SamplerSpec, iter_sampler
from ddpm_studio.core.schedules import NoiseSchedule
from ddpm_studio.services import config as config_mod
from ddpm_studio.services.control import RunControl
from ddpm_studio.services.events import SamplesReady, SamplingProgress, Status
from ddpm_studio.services.imaging import make_grid, pick_frames, save_gif, save_png, to_uint8
from ddpm_studio.services.model_factory import build_model, build_schedule, make_denoiser
from ddpm_studio.services.runs import resolve_checkpoint

TRAJECTORY_FRAMES = 40


@dataclass
class LoadedModel:
    """A model ready to sample: weights on the device, its run config and schedule."""

    model: nn.Module
    cfg: config_mod.RunConfig
    schedule: NoiseSchedule
    step: int
    path: Path


def load_for_sampling(path: str | Path, device: DeviceChoice, use_ema: bool = True) -> LoadedModel:
    """Build the network a checkpoint describes and load its (EMA) weights; CheckpointError says why not."""
    ckpt_path = resolve_checkpoint(path)
    ckpt = load_checkpoint(ckpt_path)
    try:
        cfg = config_mod.from_dict(ckpt["config"], strict=False)
        model = build_model(cfg)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"Checkpoint {ckpt_path.name} has settings this version cannot build: {exc}") from exc
    weights = ckpt["ema"]["model"] if use_ema and ckpt.get("ema") else ckpt["model"]
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(
            f"Checkpoint {ckpt_path.name}'s weights do not fit its model settings: {str(exc).splitlines()[0]}"
        ) from exc
    model.to(device.device).eval().requires_grad_(False)
    return LoadedModel(model, cfg, build_schedule(cfg), int(ckpt["step"]), ckpt_path)


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
        if isinstance(self.source, LoadedModel):
            loaded = self.source
            model_device = next(loaded.model.parameters()).device
            device = choose_device(model_device.type, self.precision)
        else:
            yield Status("Loading checkpoint")
            device = choose_device(self.device_name, self.precision)
            loaded = load_for_sampling(self.source, device, sc.use_ema)
        spec = SamplerSpec(sc.sampler, sc.steps, sc.eta, sc.spacing, sc.variance)
        per_batch = spec.steps_for(loaded.schedule.num_timesteps)
        batches = -(-sc.num_images // sc.sample_batch_size)
        total = per_batch * batches
        cfg = loaded.cfg
        shape = (cfg.data.channels, cfg.data.image_size, cfg.data.image_size)
        denoise = make_denoiser(loaded.model, device.autocast)
        # Noise is drawn on the CPU so a seed gives the same images on every device.
        g_init = torch.Generator().manual_seed(sc.sample_seed)
        g_step = torch.Generator().manual_seed(sc.sample_seed + 1)
        keep = set(pick_frames(per_batch, TRAJECTORY_FRAMES))
        results: list[np.ndarray] = []
        trajectory: list[np.ndarray] = []
        done, start = 0, time.perf_counter()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for b in range(batches):
            n = min(sc.sample_batch_size, sc.num_images - b * sc.sample_batch_size)
            x_T = torch.randn((n, *shape), generator=g_init).to(device.device)
            final = None
            for s in iter_sampler(spec, denoise, loaded.schedule, x_T, g_step):
                if self.control.stop_requested:
                    return
                done += 1
                frame = None
                if s.index in keep and b == 0:
                    frame = make_grid(to_uint8(s.x0_pred))
                    if self.save_trajectory:
                        trajectory.append(make_grid(to_uint8(s.x_t)))
                elapsed = time.perf_counter() - start
                yield SamplingProgress(done, total, b + 1, batches, elapsed / done * (total - done), frame)
                final = s.x_t
            assert final is not None
            results.append(to_uint8(final))
        images = np.concatenate(results)
        paths = tuple(str(save_png(img, self.out_dir / f"{self.prefix}_{i:05d}.png")) for i, img in enumerate(images))
        grid_path = str(save_png(make_grid(images), self.out_dir / f"{self.prefix}_grid.png"))
        traj_path = str(save_gif(trajectory, self.out_dir / f"{self.prefix}_trajectory.gif")) if trajectory else None
        yield SamplesReady(images, paths, grid_path, traj_path, {"checkpoint": str(loaded.path), "step": loaded.step})
