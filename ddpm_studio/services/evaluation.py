"""Evaluate a checkpoint: generate images, then score them against what the model was trained on.

Three checks, whichever apply: the demo shape score (:mod:`ddpm_studio.core.demo_score`) when the run
trained on the built-in demo shapes; FID / KID against the training images when torchvision's
Inception weights are on this computer (:mod:`ddpm_studio.core.fid`; nothing is downloaded unless
asked); and the share of samples that copy a training image (:mod:`ddpm_studio.services.memorization`),
whenever the training images can be loaded. Like the other sessions it is a generator of events, ending
with :class:`EvaluationReady`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ddpm_studio.core.atomic import atomic_write
from ddpm_studio.core.demo_data import DEMO_SHAPES
from ddpm_studio.core.demo_score import demo_score
from ddpm_studio.core.fid import NOT_COMPARABLE, FeaturesUnavailable, InceptionFeatures, fid_from_features, kid_from_features
from ddpm_studio.core.sampler_catalog import uses_steps
from ddpm_studio.services import config as config_mod
from ddpm_studio.services.conditioning import sample_labels
from ddpm_studio.services.control import RunControl
from ddpm_studio.services.events import EvaluationReady, Status
from ddpm_studio.services.imaging import make_grid, save_png
from ddpm_studio.services.progress import run_with_progress
from ddpm_studio.services.sampling import (
    LoadedModel,
    denoise_batches,
    load_source,
    sampler_spec,
    seeded_batches,
    weights_record,
)

FID_MODES = ("auto", "on", "off")


def evaluation_sample_config(**overrides: Any) -> config_mod.SampleConfig:
    """Sampling settings for an evaluation: more images than a preview, a fast sampler by default."""
    return dataclasses.replace(config_mod.SampleConfig(), **{**config_mod.EVALUATION_SAMPLE_DEFAULTS, **overrides})


def _report_lines(report: dict[str, Any]) -> tuple[str, ...]:
    steps = f" {report['steps']} steps" if uses_steps(report["sampler"]) else ""
    ema = f", EMA length {report['ema_length']:g}" if report.get("ema_length") else ""
    guided = f", autoguidance {report['autoguidance']:g} by step {report['guide_step']}" if report.get("autoguidance") else ""
    lines = [f"Evaluated step {report['step']} with {report['num_images']} images ({report['sampler']}{steps}{ema}{guided}, "
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
    mem = report.get("memorization")
    if mem:
        lines.append(f"Memorization: {mem['flagged']} of {mem['num_images']} samples ({mem['share']:.1%}) copy one of the "
                     f"{mem['training_images']} training images")
        lines.append(f"  rule: {mem['rule']}")
        for c in mem["copies"][:5]:
            lines.append(f"  sample {c['sample']} ≈ training image {c['training_image']}{' (mirrored)' if c['mirrored'] else ''}"
                         f": distance {c['distance']:.4f}, {c['score']:.3f} x the second nearest")
        if mem.get("pairs"):
            lines.append(f"  side by side (sample, nearest, second nearest): {mem['pairs']}")
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
        memorization: bool = True,
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
        self.memorization = memorization
        self._training: Any = None  # the training images, loaded once for FID and the memorization check
        self.control = control or RunControl()
        self.device_name, self.precision = device, precision

    def steps(self) -> Iterator[Any]:
        sc = self.sample
        loaded, device = yield from load_source(self.source, sc, self.device_name, self.precision)
        labels, ncols = sample_labels(sc.class_label, loaded.class_names, sc.num_images)
        started = time.perf_counter()
        images = yield from denoise_batches(
            loaded, sampler_spec(sc), device, seeded_batches(sc, loaded.image_shape, labels),
            guidance_scale=sc.guidance_scale, autoguidance=sc.autoguidance,
            generator=torch.Generator().manual_seed(sc.sample_seed + 1), control=self.control,
        )
        if images is None:
            return
        report: dict[str, Any] = {
            "checkpoint": str(loaded.path), "step": loaded.step, "num_images": int(images.shape[0]),
            "sampler": sc.sampler, "steps": sc.steps, "spacing": sc.spacing, "sample_seed": sc.sample_seed,
            "class_label": sc.class_label, "guidance_scale": sc.guidance_scale, **weights_record(loaded, sc),
            "sampling_seconds": round(time.perf_counter() - started, 3), "notes": [],
        }
        if self.demo or (self.demo is None and loaded.cfg.data.source == "demo"):
            yield Status("Scoring the demo shapes")
            known = labels is not None and tuple(loaded.class_names) == DEMO_SHAPES
            score = demo_score(images, labels.numpy() if known and labels is not None else None)
            report["demo"] = {"score": score.score, "class_accuracy": score.class_accuracy, "reasons": score.reasons,
                              "shapes": score.shapes, "colors": score.colors}
        pairs = (yield from self._memorization(loaded, images, report)) if self.memorization else None
        if self.fid != "off":
            yield from self._fid(loaded, images, report)
        grid_path = report_path = None
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if pairs is not None:
                report["memorization"]["pairs"] = str(save_png(pairs, self.out_dir / "memorization_pairs.png"))
            grid_path = save_png(make_grid(images[:256], ncols), self.out_dir / "evaluation_grid.png")
            report["grid"] = str(grid_path)
            report_path = self.out_dir / "evaluation.json"
            text = json.dumps(report, indent=1).encode("utf-8")
            atomic_write(report_path, lambda fh: fh.write(text))
        yield EvaluationReady(report, _report_lines(report), str(report_path) if report_path else None)

    def _training_images(self, loaded: LoadedModel, report: dict[str, Any], purpose: str) -> Generator[Any, None, Any]:
        """The run's training images (loaded once), or None with a note saying why ``purpose`` was skipped."""
        from ddpm_studio.core.datasets import DatasetError
        from ddpm_studio.services.data_source import load_images

        if self._training is None:
            yield Status("Loading the training images")
            try:
                self._training = load_images(loaded.cfg.data)
            except DatasetError as exc:
                self._training = exc
        if isinstance(self._training, DatasetError):
            report["notes"].append(f"{purpose} skipped: the training images cannot be loaded ({self._training})")
            return None
        return self._training

    def _memorization(self, loaded: LoadedModel, images: np.ndarray, report: dict[str, Any]) -> Generator[Any, None, Any]:
        """Add the share of samples that copy a training image and the copies to ``report``; return a grid showing
        them (sample, nearest, second nearest training image; the 8 closest samples when none is a copy), or None."""
        from ddpm_studio.services.memorization import check_memorization, rule_text

        data = yield from self._training_images(loaded, report, "Memorization check")
        if data is None:
            return None
        mirror = loaded.cfg.data.hflip
        check = yield from run_with_progress(
            f"Comparing {len(images)} samples with {len(data)} training images",
            lambda progress: check_memorization(images, data.images, mirror=mirror, progress=progress),
        )
        nb = check.neighbours
        flagged = np.flatnonzero(check.flagged)
        shown = flagged[np.argsort(check.score[flagged])] if flagged.size else np.argsort(check.score)[:8]

        def entry(i: int) -> dict[str, Any]:
            return {"sample": int(i), "training_image": int(nb.indices[i, 0]), "distance": round(float(nb.distances[i, 0]), 5),
                    "score": round(float(check.score[i]), 4), "mirrored": bool(nb.mirrored[i, 0])}

        report["memorization"] = {
            "share": check.share, "flagged": int(flagged.size), "num_images": len(images),
            "training_images": len(data), "mirror": mirror, "rule": rule_text(mirror),
            "copies": [entry(i) for i in shown[:100]] if flagged.size else [],
            "closest": [entry(i) for i in shown[:8]],
        }
        rows = []
        for i in shown[:16]:
            neighbours = [data.images[int(j)].permute(1, 2, 0).numpy() for j in nb.indices[i, :2]]
            rows += [images[i], *neighbours] + [np.full_like(images[i], 255)] * (2 - len(neighbours))
        return make_grid(np.stack(rows), 3)

    def _fid(self, loaded: LoadedModel, images: np.ndarray, report: dict[str, Any]) -> Iterator[Any]:
        """Add FID / KID against the training images to ``report``, or a note saying why not."""
        try:
            features = InceptionFeatures.load(str(next(loaded.model.parameters()).device))
        except FeaturesUnavailable as exc:
            if self.fid == "on":
                raise
            report["notes"].append(f"FID/KID skipped: {exc}")
            return
        data = yield from self._training_images(loaded, report, "FID/KID")
        if data is None:
            return
        g = torch.Generator().manual_seed(0)
        idx = torch.randperm(len(data), generator=g)[: self.reference_images]
        reference = data.images[idx].permute(0, 2, 3, 1).numpy()
        yield Status(f"Inception features of {len(reference)} training and {len(images)} generated images")
        real, fake = features(reference), features(images)
        kid, kid_std = kid_from_features(real, fake, subset_size=min(1000, len(real), len(fake)))
        report.update(fid=fid_from_features(real, fake), kid=kid, kid_std=kid_std, reference_images=len(reference),
                      fid_note=NOT_COMPARABLE)
