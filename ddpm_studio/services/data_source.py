"""Load the images a run trains on, from whichever source its settings name."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ddpm_studio.core.datasets import ImageSet
    from ddpm_studio.services.config import DataConfig


def load_images(
    data: DataConfig,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> ImageSet:
    """An in-memory :class:`ImageSet` at the configured size and channels; raises DatasetError."""
    from ddpm_studio.core import datasets
    from ddpm_studio.core.demo_data import demo_image_set
    from ddpm_studio.core.standard_datasets import load_standard_dataset

    if data.source == "demo":
        return demo_image_set(image_size=data.image_size, channels=data.channels)
    if data.source == "folder":
        return datasets.load_image_folder(
            data.data_path,
            data.image_size,
            data.channels,
            cache_dir=datasets.default_cache_dir() if data.cache else None,
            progress=progress,
            cancel=cancel,
        )
    images = load_standard_dataset(data.source, data.data_path, data.image_size)
    if images.images.shape[1] != data.channels:
        raise datasets.DatasetError(
            f"{data.source} images have {images.images.shape[1]} channel(s); set Channels to {images.images.shape[1]}"
        )
    return images
