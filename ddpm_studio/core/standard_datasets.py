"""MNIST / Fashion-MNIST / CIFAR-10 from files the user already has, through torchvision (no download).

CIFAR-10's "python batches" are pickles: loading one runs whatever it contains, so only trusted
copies should be used (``CIFAR_PICKLE_WARNING`` is what the app shows).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ddpm_studio.core.datasets import DatasetError, ImageSet
from ddpm_studio.core.images import display_path

CIFAR_PICKLE_WARNING = (
    "CIFAR-10 batches are Python pickle files, and loading a pickle can run arbitrary code. "
    "Only use files extracted from the official cifar-10-python.tar.gz; torchvision checks their "
    "MD5 checksums against the official release before unpickling them."
)

_KIND_ALIASES = {
    "mnist": "mnist",
    "fashion_mnist": "fashion_mnist",
    "fashionmnist": "fashion_mnist",
    "cifar10": "cifar10",
    "cifar_10": "cifar10",
}
_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_CIFAR_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch", "batches.meta")


def _mnist_root(root: Path, folder: str) -> Path:
    """Accept the parent of ``<folder>/raw`` (torchvision's layout) or that folder itself."""
    for candidate in (root, root.parent, root.parent.parent):
        if (candidate / folder / "raw").is_dir():
            return candidate
    return root


def _resize_batch(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """Antialiased bilinear resize of a uint8 batch, in chunks to bound the float copy."""
    chunks = []
    for start in range(0, images.shape[0], 4096):
        x = images[start : start + 4096].to(torch.float32)
        x = torch.nn.functional.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True)
        chunks.append(x.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(chunks).contiguous()


def load_standard_dataset(
    kind: str, root: str | os.PathLike[str], image_size: int | None = None, *, train: bool = True
) -> ImageSet:
    """MNIST / Fashion-MNIST (1 channel, padded 28 -> 32 with 0) or CIFAR-10 (RGB 32x32) from disk.

    Files are read through ``torchvision.datasets`` with ``download=False``. CIFAR-10 batches are
    Python pickles (see :data:`CIFAR_PICKLE_WARNING`). ``image_size`` other than 32 resizes.
    """
    name = _KIND_ALIASES.get(kind.lower().replace("-", "_"))
    if name is None:
        raise DatasetError(f"Unknown dataset {kind!r}; choose one of mnist, fashion_mnist, cifar10")
    if root is None or not os.fspath(root):
        raise DatasetError("Choose the folder that holds the dataset files")
    base = Path(os.fspath(root)).expanduser()
    split = "training" if train else "test"
    import torchvision

    try:
        if name == "cifar10":
            label = "CIFAR-10"
            if base.name == "cifar-10-batches-py":
                base = base.parent
            try:
                ds = torchvision.datasets.CIFAR10(str(base), train=train, download=False)
            except RuntimeError:
                raise DatasetError(
                    f"CIFAR-10 files not found in {display_path(base)}: torchvision expects the folder "
                    f"{display_path(base / 'cifar-10-batches-py')} with {', '.join(_CIFAR_FILES)} "
                    "(extract cifar-10-python.tar.gz there; the files must match the official MD5 checksums)"
                ) from None
            images = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
            labels = torch.as_tensor(ds.targets, dtype=torch.int64)
        else:
            label = "MNIST" if name == "mnist" else "Fashion-MNIST"
            cls = torchvision.datasets.MNIST if name == "mnist" else torchvision.datasets.FashionMNIST
            folder = cls.__name__
            base = _mnist_root(base, folder)
            try:
                ds = cls(str(base), train=train, download=False)
            except RuntimeError:
                raise DatasetError(
                    f"{label} files not found in {display_path(base)}: torchvision expects "
                    f"{', '.join(_MNIST_FILES)} in {display_path(base / folder / 'raw')} "
                    "(uncompressed: gunzip the .gz downloads)"
                ) from None
            # Pad 28x28 to 32x32 with the background value 0 (-1 after scaling), like the DDPM seeds.
            images = torch.nn.functional.pad(ds.data.to(torch.uint8), (2, 2, 2, 2), value=0).unsqueeze(1).contiguous()
            labels = ds.targets.to(torch.int64)
        class_names = tuple(str(c) for c in ds.classes)
    except DatasetError:
        raise
    except Exception as exc:  # torchvision's readers assert / raise on malformed files
        raise DatasetError(f"Could not read the {kind} files in {display_path(base)}: {type(exc).__name__}: {exc}") from exc

    if image_size is not None and image_size != images.shape[-1]:
        images = _resize_batch(images, image_size)
    size, channels = images.shape[-1], images.shape[1]
    description = (
        f"{images.shape[0]:,} {label} {split} images from {display_path(base)}, "
        f"{size}x{size} {'RGB' if channels == 3 else 'grayscale'}, {len(class_names)} classes"
    )
    return ImageSet(images=images, labels=labels, class_names=class_names, skipped=(), description=description)
