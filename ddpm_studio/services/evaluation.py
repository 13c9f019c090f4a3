"""Evaluate a checkpoint: generate images, then score them against what the model was trained on.

Two scores, whichever apply: the demo shape score (:mod:`ddpm_studio.core.demo_score`) when the run
trained on the built-in demo shapes, and FID / KID against the training images when torchvision's
Inception weights are on this computer (:mod:`ddpm_studio.core.fid`; nothing is downloaded unless
asked). Like the other sessions it is a generator of events, ending with :class:`EvaluationReady`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ddpm_studio.core.atomic import atomic_write
from ddpm_studio.core.demo_data import DEMO_SHAPES
from ddpm_studio.core.demo_score import demo_score
from ddpm_studio.core.fid import NOT_COMPARABLE, FeaturesUnavailable, InceptionFeatures, fid_from_features, kid_from_features
from ddpm_studio.services import config as config_mod
from ddpm_studio.services.conditioning import sample_labels
from ddpm_studio.services.control import RunControl
from ddpm_studio.services.events import EvaluationReady, Status
from ddpm_studio.services.imaging import make_grid, save_png
from ddpm_studio.services.sampling import (
    LoadedModel,
    denoise_batches,
    load_for_sampling,
    resolve_device,
    sampler_spec,
    seeded_batches,
)

FID_MODES = ("auto", "on", "off")


def evaluation_sample_config(**overrides: Any) -> config_mod.SampleConfig:
    """Sampling settings for an evaluation: more images than a preview, a fast sampler by default."""
    return dataclasses.replace(config_mod.SampleConfig(), **{**config_mod.EVALUATION_SAMPLE_DEFAULTS, **overrides})


def _report_lines(report: dict[str, Any]) -> tuple[str, ...]:
    steps = "" if report["sampler"] == "ddpm" else f" {report['steps']} steps"
    lines = [f"Evaluated step {report['step']} with {report['num_images']} images ({report['sampler']}{steps}, "
             f"{report['sampling_seconds']:.1f} s of sampling)"]
    demo = report.get("demo")
    if demo:
        line = f"Demo shape score: {demo['score']:.3f} (fraction of images that are one clean shape of a valid colour)"
        if demo.get("class_accuracy") is not None:
            line += f"; class accuracy {demo['class_accuracy']:.3f}"
        lines.append(line)
        if demo["reasons"]:
            reasons = sorted(demo["reasons"].items(), key=lambda kv: -kv[1])
            lines.append("  rejected: " + ", ".join(f"{why} ×{n}" for why, n in reasons))
        lines.append("  shapes: " + ", ".join(f"{k} {v}" for k, v in sorted(demo["shapes"].items()))
                     + "; colours: " + ", ".join(f"{k} {v}" for k, v in sorted(demo["colors"].items())))
    if report.get("fid") is not None:
        lines.append(f"FID {report['fid']:.2f}, KID {report['kid']:.4f} ± {report['kid_std']:.4f} "
                     f"against {report['reference_images']} training images ({NOT_COMPARABLE})")
    lines += [f"Note: {n}" for n in report["notes"]]
    return tuple(lines)


class EvaluationSession:
    """Sample ``sample.num_images`` images from a checkpoint and score them; yields progress, then EvaluationReady."""

    def __init__(
        self,
        checkpoint: str | Path | LoadedModel,
        sample: config_mod.SampleConfig | None = None,
        out_dir: str | Path | None = None,
        *,
        fid: str = "auto",
        demo: bool | None = None,
        reference_images: int = 1000,
        control: RunControl | None = None,
        device: str = "auto",
        precision: str = "auto",
    ) -> None:
        self.sample = sample or evaluation_sample_config()
        errors = config_mod.field_errors(self.sample)
        if fid not in FID_MODES:
            errors.append(f"FID must be one of {', '.join(FID_MODES)} (got {fid!r})")
        if reference_images < 2:
            errors.append(f"Reference images must be at least 2 (got {reference_images})")
        if errors:
            raise config_mod.ConfigError(errors)
        self.source, self.out_dir = checkpoint, Path(out_dir) if out_dir else None
        self.fid, self.demo, self.reference_images = fid, demo, reference_images
        self.control = control or RunControl()
        self.device_name, self.precision = device, precision

    def steps(self) -> Iterator[Any]:
        sc = self.sample
        device = resolve_device(self.source, self.device_name, self.precision)
        if isinstance(self.source, LoadedModel):
            loaded = self.source
        else:
            yield Status("Loading checkpoint")
            loaded = load_for_sampling(self.source, device, sc.use_ema, sc.ema_length)
        labels, ncols = sample_labels(sc.class_label, loaded.class_names, sc.num_images)
        started = time.perf_counter()
        images = yield from denoise_batches(
            loaded, sampler_spec(sc), device, seeded_batches(sc, loaded.image_shape, labels),
            guidance_scale=sc.guidance_scale, generator=torch.Generator().manual_seed(sc.sample_seed + 1), control=self.control,
        )
        if images is None:
            return
        report: dict[str, Any] = {
            "checkpoint": str(loaded.path), "step": loaded.step, "num_images": int(images.shape[0]),
            "sampler": sc.sampler, "steps": sc.steps, "spacing": sc.spacing, "sample_seed": sc.sample_seed,
            "class_label": sc.class_label, "guidance_scale": sc.guidance_scale,
            "sampling_seconds": round(time.perf_counter() - started, 3), "notes": [],
        }
        if self.demo or (self.demo is None and loaded.cfg.data.source == "demo"):
            yield Status("Scoring the demo shapes")
            known = labels is not None and tuple(loaded.class_names) == DEMO_SHAPES
            score = demo_score(images, labels.numpy() if known and labels is not None else None)
            report["demo"] = {"score": score.score, "class_accuracy": score.class_accuracy, "reasons": score.reasons,
                              "shapes": score.shapes, "colors": score.colors}
        if self.fid != "off":
            yield from self._fid(loaded, images, report)
        grid_path = report_path = None
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            grid_path = save_png(make_grid(images[:256], ncols), self.out_dir / "evaluation_grid.png")
            report["grid"] = str(grid_path)
            report_path = self.out_dir / "evaluation.json"
            text = json.dumps(report, indent=1).encode("utf-8")
            atomic_write(report_path, lambda fh: fh.write(text))
        yield EvaluationReady(report, _report_lines(report), str(report_path) if report_path else None)

    def _fid(self, loaded: LoadedModel, images: np.ndarray, report: dict[str, Any]) -> Iterator[Any]:
        """Add FID / KID against the training images to ``report``, or a note saying why not."""
        from ddpm_studio.core.datasets import DatasetError
        from ddpm_studio.services.data_source import load_images

        try:
            features = InceptionFeatures.load(str(next(loaded.model.parameters()).device))
        except FeaturesUnavailable as exc:
            if self.fid == "on":
                raise
            report["notes"].append(f"FID/KID skipped: {exc}")
            return
        yield Status("Loading the training images for FID")
        try:
            data = load_images(loaded.cfg.data)
        except DatasetError as exc:
            report["notes"].append(f"FID/KID skipped: the training images cannot be loaded ({exc})")
            return
        g = torch.Generator().manual_seed(0)
        idx = torch.randperm(len(data), generator=g)[: self.reference_images]
        reference = data.images[idx].permute(0, 2, 3, 1).numpy()
        yield Status(f"Inception features of {len(reference)} training and {len(images)} generated images")
        real, fake = features(reference), features(images)
        kid, kid_std = kid_from_features(real, fake, subset_size=min(1000, len(real), len(fake)))
        report.update(fid=fid_from_features(real, fake), kid=kid, kid_std=kid_std, reference_images=len(reference),
                      fid_note=NOT_COMPARABLE)
