"""Interpolation between two seeds: slerp their x_T, decode every point with a deterministic sampler,
save the row of images as one strip PNG.

A deterministic sampler (DDIM with η = 0, or an ODE solver; a stochastic solver is swapped for its ODE form)
makes the image a smooth function of x_T, so the strip morphs instead of flickering, and its ends are
exactly the images ``sample`` gives for the two seeds. Conditional models get one row per class when Class is "all".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ddpm_studio.core.interpolation import slerp_path
from ddpm_studio.core.sampler_catalog import SAMPLERS, deterministic_samplers
from ddpm_studio.services import config as config_mod
from ddpm_studio.services.conditioning import class_index
from ddpm_studio.services.control import RunControl
from ddpm_studio.services.events import SamplesReady, Status
from ddpm_studio.services.imaging import make_grid, save_png
from ddpm_studio.services.sampling import (
    LoadedModel,
    denoise_batches,
    load_source,
    sampler_spec,
    seed_noise,
    weights_record,
)


def deterministic_form(sample: config_mod.SampleConfig) -> config_mod.SampleConfig:
    """``sample`` with a stochastic solver replaced by its ODE form (the catalog's ``ode_form``: dpm++2m-sde →
    dpm++2m), same steps and spacing; unknown names are left for validation to report."""
    name = SAMPLERS[sample.sampler].ode_form if sample.sampler in SAMPLERS else None
    return sample if name is None else dataclasses.replace(sample, sampler=name)


def interpolation_errors(sample: config_mod.SampleConfig, interp: config_mod.InterpolationConfig) -> list[str]:
    """Problems with these settings for an interpolation, as sentences (empty = fine)."""
    sample = deterministic_form(sample)
    errors = config_mod.field_errors(sample) + config_mod.field_errors(interp)
    if not sampler_spec(sample).deterministic:
        eta = f" with η = {sample.eta:g}" if SAMPLERS[sample.sampler].uses_eta else ""
        errors.append(f"Interpolation needs a deterministic sampler: {', '.join(deterministic_samplers())} "
                      f"(ddim with η = 0), got {sample.sampler}{eta}")
    return errors


class InterpolationSession:
    """Decode ``interp.frames`` slerp points between two seeds; yields SamplingProgress, then SamplesReady."""

    def __init__(
        self,
        checkpoint: str | Path | LoadedModel,
        sample: config_mod.SampleConfig,
        interp: config_mod.InterpolationConfig,
        out_dir: str | Path,
        *,
        control: RunControl | None = None,
        device: str = "auto",
        precision: str = "auto",
        prefix: str = "interp",
    ) -> None:
        errors = interpolation_errors(sample, interp)
        if errors:
            raise config_mod.ConfigError(errors)
        self.source, self.sample, self.interp, self.out_dir = checkpoint, deterministic_form(sample), interp, Path(out_dir)
        self.substituted = self.sample.sampler != sample.sampler
        self.control = control or RunControl()
        self.device_name, self.precision, self.prefix = device, precision, prefix

    def steps(self) -> Iterator[Any]:
        sc, ic = self.sample, self.interp
        if self.substituted:
            yield Status(f"Interpolating with {sc.sampler}, the deterministic form of the chosen sampler")
        loaded, device = yield from load_source(self.source, sc, self.device_name, self.precision)
        index = class_index(sc.class_label, loaded.class_names)
        if not loaded.class_names:
            row_labels = None
        elif index is None:
            row_labels = torch.arange(len(loaded.class_names))
        else:
            row_labels = torch.tensor([index])
        rows = 1 if row_labels is None else len(row_labels)
        # The same x_T as ``sample`` draws for the first image of each seed, so the strip's ends match it.
        path = slerp_path(seed_noise(ic.seed_from, 1, loaded.image_shape), seed_noise(ic.seed_to, 1, loaded.image_shape),
                          ic.frames)[:, 0]
        x_T = path.repeat(rows, 1, 1, 1)
        labels = None if row_labels is None else row_labels.repeat_interleave(ic.frames)
        bs = sc.sample_batch_size

        def batch(start: int) -> Any:
            return lambda: (x_T[start : start + bs], None if labels is None else labels[start : start + bs])

        images = yield from denoise_batches(
            loaded, sampler_spec(sc), device, [batch(s) for s in range(0, x_T.shape[0], bs)],
            guidance_scale=sc.guidance_scale, autoguidance=sc.autoguidance, control=self.control,
        )
        if images is None:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        strip = save_png(make_grid(images, ncols=ic.frames), self.out_dir / f"{self.prefix}_seed{ic.seed_from}-{ic.seed_to}.png")
        extra: dict[str, Any] = {"checkpoint": str(loaded.path), "step": loaded.step, "frames": ic.frames, "rows": rows,
                                 "seeds": (ic.seed_from, ic.seed_to), **weights_record(loaded, sc)}
        if row_labels is not None:
            extra["row_classes"] = [loaded.class_names[i] for i in row_labels.tolist()]
        yield SamplesReady(images, (str(strip),), str(strip), None, extra)
