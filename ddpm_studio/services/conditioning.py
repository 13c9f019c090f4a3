"""Class labels for class-conditional models: which classes a run learns, label dropout, and the
labels a user asks for when generating ("all" = one row per class, a name, or a number).

Why a module of its own: training, previews, sampling, interpolation and evaluation all need the
same rules, and the messages a user sees must be the same everywhere.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ddpm_studio.services.config import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from ddpm_studio.core.datasets import ImageSet

ALL_CLASSES = ("all", "-1", "")


class ConditioningError(RuntimeError):
    """The data cannot train a conditional model; the message is for the user."""


def training_class_names(data: ImageSet, checkpoint: dict[str, Any] | None = None) -> tuple[str, ...]:
    """The dataset's classes for a conditional run, checked against the checkpoint being resumed."""
    names = tuple(data.class_names)
    if data.labels is None or len(names) < 2:
        raise ConditioningError(
            f"Class-conditional training needs images with classes, but {data.description} has none. "
            "Use a folder with one subfolder per class (at least two), the demo shapes, MNIST, Fashion-MNIST "
            "or CIFAR-10, or turn off Class-conditional."
        )
    if checkpoint is not None:
        before = tuple(checkpoint.get("class_names", ()))
        if before != names:
            raise ConditioningError(
                f"The classes changed since the checkpoint was written (was {', '.join(before) or 'none'}, "
                f"now {', '.join(names)}); a conditional model cannot resume with other classes"
            )
    return names


def drop_labels(labels: Tensor, probability: float, null_label: int, generator: torch.Generator) -> Tensor:
    """Replace each label by ``null_label`` with ``probability`` (classifier-free guidance training,
    Ho & Salimans 2022, Algorithm 1); draws from ``generator`` so a resumed run replays them exactly."""
    import torch

    drop = torch.rand(labels.shape, generator=generator, device=labels.device) < probability
    return torch.where(drop, torch.full_like(labels, null_label), labels)


def class_index(class_label: str, class_names: tuple[str, ...]) -> int | None:
    """The class a user asked for: None for all classes, else its index. Raises ConfigError."""
    text = str(class_label).strip()
    if text.lower() in ALL_CLASSES:
        return None
    if not class_names:
        raise ConfigError([f"This model was trained without classes, so Class must be all (got {text!r})"])
    listing = ", ".join(f"{i} = {name}" for i, name in enumerate(class_names))
    if text.lstrip("-").isdigit():
        index = int(text)
        if 0 <= index < len(class_names):
            return index
        raise ConfigError([f"Class {index} does not exist; this model knows {listing}"])
    for i, name in enumerate(class_names):
        if name.lower() == text.lower():
            return i
    raise ConfigError([f"Unknown class {text!r}; this model knows {listing}"])


def sample_labels(class_label: str, class_names: tuple[str, ...], n: int) -> tuple[Tensor | None, int | None]:
    """(labels for ``n`` images or None when unconditional, grid columns or None for a square grid).

    "all" on a conditional model gives contiguous blocks of ⌈n / K⌉ images per class, so a grid with
    that many columns shows one class per row.
    """
    import torch

    index = class_index(class_label, class_names)
    if not class_names:
        return None, None
    if index is not None:
        return torch.full((n,), index, dtype=torch.long), None
    per_row = max(1, math.ceil(n / len(class_names)))
    return torch.arange(n, dtype=torch.long) // per_row, per_row
