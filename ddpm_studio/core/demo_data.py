"""The built-in demo dataset: one flat-coloured shape on white, learnable on a CPU in minutes.

Real photos need hours of GPU time before a DDPM draws anything recognisable. These images are
simple enough that a small U-Net trained for ~10 minutes on a CPU produces clean samples, and
their rules are strict enough for an automatic quality check of generated samples:

* background: pure white (255, 255, 255);
* exactly one filled shape from :data:`DEMO_SHAPES` in exactly one colour from
  :data:`DEMO_COLORS`; no outline, gradient, texture, rotation or noise;
* the shape's bounding box is a square of side 30-70 % of the image (uniform); a circle fills it,
  a square is it, a triangle has its base on the box's bottom edge and its apex at the middle of
  the top edge;
* the box lies fully inside the image with a white margin of at least ``image_size / 16``
  (at least 1 pixel), so the border rows/columns and the corners are always white;
* edges are anti-aliased by 4x4 supersampling (pixels there are a blend of shape colour and white);
* label = index of the shape in :data:`DEMO_SHAPES`; everything is a pure function of ``seed``
  (and image i does not depend on ``n``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ddpm_studio.core.datasets import DatasetError, ImageSet

#: Saturated, well-separated colours (pairwise RGB distance > 100), all clearly darker than white
#: so they stay visible in grayscale (luminance 75-185).
DEMO_COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (235, 190, 20),
    "magenta": (200, 40, 190),
    "cyan": (20, 170, 200),
}
DEMO_SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

MIN_FRACTION = 0.30
MAX_FRACTION = 0.70
SUPERSAMPLE = 4
_SAMPLES_PER_CHUNK = 1 << 23  # bounds the temporary boolean masks to ~8 MB each


def _margin(image_size: int) -> float:
    return max(1.0, image_size / 16)


def _coverage(shape: np.ndarray, x0: np.ndarray, y0: np.ndarray, side: np.ndarray, image_size: int) -> np.ndarray:
    """Fraction (0..1) of each pixel covered by its image's shape, from 4x4 sub-pixel samples."""
    k = SUPERSAMPLE
    sub = (np.arange(image_size * k, dtype=np.float32) + 0.5) / k  # sample centres, pixel units
    xs = sub[None, None, :]
    ys = sub[None, :, None]
    x0, y0, side = (v.astype(np.float32)[:, None, None] for v in (x0, y0, side))
    half = side / 2
    cx, cy = x0 + half, y0 + half
    shape = shape[:, None, None]
    circle = (xs - cx) ** 2 + (ys - cy) ** 2 <= half**2
    square = (np.abs(xs - cx) <= half) & (np.abs(ys - cy) <= half)
    # Apex at (cx, y0), base from (x0, y0 + side) to (x0 + side, y0 + side).
    depth = ys - y0
    triangle = (depth >= 0) & (depth <= side) & (np.abs(xs - cx) <= depth / 2)
    inside = np.where(shape == 0, circle, np.where(shape == 1, square, triangle))
    n = inside.shape[0]
    return inside.reshape(n, image_size, k, image_size, k).mean(axis=(2, 4), dtype=np.float32)


def generate_demo_images(n: int = 4096, image_size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images (n, 3, S, S), int64 labels (n,)) following the module docstring's rules."""
    if n < 0 or image_size < 8:
        raise ValueError(f"need n >= 0 and image_size >= 8 (got n={n}, image_size={image_size})")
    # One row of uniforms per image, so the first k images do not depend on n.
    u = np.random.default_rng(seed).random((n, 5))
    shapes = np.minimum((u[:, 0] * len(DEMO_SHAPES)).astype(np.int64), len(DEMO_SHAPES) - 1)
    colors = np.minimum((u[:, 1] * len(DEMO_COLORS)).astype(np.int64), len(DEMO_COLORS) - 1)
    side = (MIN_FRACTION + u[:, 2] * (MAX_FRACTION - MIN_FRACTION)) * image_size
    room = image_size - 2 * _margin(image_size) - side
    x0 = _margin(image_size) + u[:, 3] * room
    y0 = _margin(image_size) + u[:, 4] * room

    palette = np.array(list(DEMO_COLORS.values()), dtype=np.float32)  # (K, 3)
    out = np.empty((n, 3, image_size, image_size), dtype=np.uint8)
    chunk = max(1, _SAMPLES_PER_CHUNK // (image_size * SUPERSAMPLE) ** 2)
    for start in range(0, n, chunk):
        sl = slice(start, min(n, start + chunk))
        alpha = _coverage(shapes[sl], x0[sl], y0[sl], side[sl], image_size)[:, None]  # (b, 1, S, S)
        color = palette[colors[sl]][:, :, None, None]  # (b, 3, 1, 1)
        out[sl] = np.rint(255.0 + alpha * (color - 255.0)).astype(np.uint8)
    return torch.from_numpy(out), torch.from_numpy(shapes.astype(np.int64))


def demo_image_set(n: int = 4096, image_size: int = 32, channels: int = 3, seed: int = 0) -> ImageSet:
    """The demo images as an in-memory :class:`ImageSet` (grayscale = Pillow's luminance)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3 (got {channels})")
    images, labels = generate_demo_images(n, image_size, seed)
    if channels == 1:
        weights = torch.tensor([299, 587, 114], dtype=torch.int32).view(1, 3, 1, 1)
        images = ((images.to(torch.int32) * weights).sum(dim=1, keepdim=True) + 500).div(1000, rounding_mode="floor")
        images = images.to(torch.uint8).contiguous()
    mode = "RGB" if channels == 3 else "grayscale"
    return ImageSet(
        images=images,
        labels=labels,
        class_names=DEMO_SHAPES,
        skipped=(),
        description=f"{n:,} built-in demo images (one coloured shape on white), {image_size}x{image_size} {mode}",
    )


def write_demo_folder(
    out_dir: str | os.PathLike[str], n: int = 4096, image_size: int = 32, seed: int = 0, *, by_class: bool = True
) -> int:
    """Write the demo images as PNGs (``out_dir/<shape>/00001.png`` ...); returns how many.

    Written into a temporary sibling folder first and renamed into place, so an interrupted
    export never leaves a half-filled dataset. Refuses a non-empty ``out_dir`` (DatasetError).
    """
    out = Path(os.fspath(out_dir)).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        raise DatasetError(f"{out} is not empty; choose a new or empty folder for the demo images")
    out.parent.mkdir(parents=True, exist_ok=True)
    images, labels = generate_demo_images(n, image_size, seed)
    arrays = images.permute(0, 2, 3, 1).numpy()
    width = max(5, len(str(n)))
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        counters = [0] * len(DEMO_SHAPES)
        for arr, label in zip(arrays, labels.tolist(), strict=True):
            counters[label] += 1
            folder = tmp / DEMO_SHAPES[label] if by_class else tmp
            number = counters[label] if by_class else sum(counters)
            folder.mkdir(exist_ok=True)
            Image.fromarray(arr, "RGB").save(folder / f"{number:0{width}d}.png", compress_level=1)
        os.chmod(tmp, 0o755)  # mkdtemp makes 0o700; the export should look like any other folder
        if out.is_dir():
            out.rmdir()  # empty (checked above); rename cannot replace a folder on every OS
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return n
