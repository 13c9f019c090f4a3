"""The nearest training images of one generated sample and the copy verdict, for the app's "Nearest training images".

Why a module of its own: the app asks this of one sample at a time, from a model it names by a checkpoint or a run
folder, so it has to find that run's training images (its settings say where they were) and say clearly when they
are not on this computer; the distance and the copy rule are :mod:`ddpm_studio.services.memorization`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ddpm_studio.services import config as config_mod
from ddpm_studio.services import config_files

#: How many nearest training images are shown.
SHOWN = 4
Progress = Callable[[str, int, int], None]


class TrainingImagesUnavailable(ValueError):
    """The run's training images cannot be read here; the message says which and why."""


@dataclass(frozen=True)
class SampleNeighbours:
    """One sample's nearest training images, nearest first, and what the copy rule says of it."""

    images: np.ndarray  # (k, H, W, C) uint8
    indices: np.ndarray  # (k,) positions in the training set
    distances: np.ndarray  # (k,) RMS difference in [0, 1] units after the best alignment
    mirrored: np.ndarray  # (k,) the training image's mirror image was the closer one
    copy: bool
    score: float  # d1 / d2
    verdict: str
    training_images: int


def run_settings(source: str | Path) -> config_mod.RunConfig:
    """The settings a model was trained with: a run folder's config.toml, or a checkpoint's own (off the GUI thread)."""
    path = Path(source)
    if path.is_dir():
        return config_files.load_config_file(path / "config.toml", saved_run=True)
    from ddpm_studio.core.checkpoint import load_checkpoint
    from ddpm_studio.services.checkpoint_check import checked_config

    return checked_config(load_checkpoint(path), path)


def load_training_images(data: config_mod.DataConfig, progress: Progress | None = None,
                         cancel: Callable[[], bool] | None = None) -> torch.Tensor:
    """The run's training images, uint8 (M, C, H, W); TrainingImagesUnavailable says why not."""
    from ddpm_studio.core.datasets import DatasetError
    from ddpm_studio.services.data_source import load_images

    if data.source == "folder" and not Path(data.data_path).expanduser().is_dir():
        raise TrainingImagesUnavailable(
            f"This model was trained on the folder {data.data_path}, which is not on this computer (moved, renamed, or "
            "on a drive that is not connected). Its nearest training images need that folder at that path.")
    step = (lambda done, total: progress("Loading the training images", done, total)) if progress else None
    try:
        return load_images(data, step, cancel=cancel).images
    except DatasetError as exc:
        raise TrainingImagesUnavailable(f"The training images of this model cannot be read here: {exc}") from None


def nearest_of_sample(sample: np.ndarray, source: str | Path, *, progress: Progress | None = None,
                      cancel: Callable[[], bool] | None = None) -> SampleNeighbours:
    """``sample`` (H, W, C uint8, as generated) against the training images of the model at ``source`` (a checkpoint
    or a run folder): its :data:`SHOWN` nearest and the copy verdict."""
    from ddpm_studio.services.memorization import copy_rule, nearest_training_images, rule_text

    cfg = run_settings(source)
    training = load_training_images(cfg.data, progress, cancel)
    count = int(training.shape[0])
    compare = (lambda done, total: progress(f"Comparing with {count:,} training images", done, total)) if progress else None
    nb = nearest_training_images(sample[None], training, k=SHOWN, mirror=cfg.data.hflip, progress=compare)
    score, flagged = copy_rule(nb.distances[:, :2])
    d = nb.distances[0]
    if flagged[0]:
        verdict = (f"Copy: this sample is {d[0]:.3f} RMS from training image #{nb.indices[0, 0]}"
                   + (f", {score[0]:.2f} x its distance to the next nearest" if len(d) > 1 else "") + ".")
    else:
        verdict = (f"Not a copy: the nearest training image is {d[0]:.3f} RMS away"
                   + (f", {score[0]:.2f} x the distance to the next nearest ({d[1]:.3f})" if len(d) > 1 else "") + ".")
    verdict += f" Rule: {rule_text(cfg.data.hflip)}; compared with all {count:,} training images."
    images = training[nb.indices[0]].permute(0, 2, 3, 1).numpy()
    return SampleNeighbours(images, nb.indices[0], d, nb.mirrored[0], bool(flagged[0]), float(score[0]), verdict, count)
