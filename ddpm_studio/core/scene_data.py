"""A harder synthetic image set than the demo shapes: textured backgrounds and one to three textured objects.

Why: the demo shapes (:mod:`ddpm_studio.core.demo_data`) are flat colours on white, so a recipe can look good
on them by getting one colour and one edge right. These "scenes" ask for more of what real images have:

* a background that is a flat colour, a two-colour linear gradient at any angle, or two-colour stripes
  (period 3-7 px at 32x32, any angle), colours uniform in RGB;
* one to three objects (circle, square, triangle, ring), each 20-45 % of the image wide, centred anywhere
  in the middle 80 % of the image (they may overlap and be cut by the border; later ones are drawn on top),
  each filled with one colour or (a third of them) with stripes of that colour and its complement;
* anti-aliased edges (4x4 supersampling); label = 3 x (objects - 1) + background kind (9 classes).

Everything is a pure function of ``seed``, and image i does not depend on ``n``. The labels let
``benchmarks/quality_per_compute.py`` train a small classifier whose features measure how far generated
scenes are from real ones (a Fréchet distance), since no pretrained Inception network is at hand offline.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ddpm_studio.core.datasets import DatasetError

BACKGROUNDS = ("flat", "gradient", "stripes")
OBJECT_SHAPES = ("circle", "square", "triangle", "ring")
MAX_OBJECTS = 3
NUM_CLASSES = MAX_OBJECTS * len(BACKGROUNDS)
SUPERSAMPLE = 4
_PARAMS = 40  # uniforms per image: one row each, so image i depends only on (seed, i)


def scene_class_names() -> tuple[str, ...]:
    """"1 object, flat" … "3 objects, stripes": the meaning of each label."""
    return tuple(f"{k} object{'s' if k > 1 else ''}, {b}" for k in range(1, MAX_OBJECTS + 1) for b in BACKGROUNDS)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel sample centres (y, x) in [0, 1), shape (S·k, S·k)."""
    sub = (np.arange(size * SUPERSAMPLE, dtype=np.float32) + 0.5) / (size * SUPERSAMPLE)
    return np.meshgrid(sub, sub, indexing="ij")


def _stripes(ys: np.ndarray, xs: np.ndarray, angle: float, period: float, phase: float) -> np.ndarray:
    """1 where a band of the two-colour stripe pattern is the second colour (period in image fractions)."""
    d = xs * np.cos(angle) + ys * np.sin(angle)
    return (((d / period + phase) % 1.0) < 0.5).astype(np.float32)


def _shape_mask(kind: int, ys: np.ndarray, xs: np.ndarray, cx: float, cy: float, half: float) -> np.ndarray:
    if kind == 0:  # circle
        return ((xs - cx) ** 2 + (ys - cy) ** 2 <= half**2).astype(np.float32)
    if kind == 1:  # square
        return ((np.abs(xs - cx) <= half) & (np.abs(ys - cy) <= half)).astype(np.float32)
    if kind == 2:  # triangle: apex at the top middle, base at the bottom of the box
        depth = ys - (cy - half)
        return ((depth >= 0) & (depth <= 2 * half) & (np.abs(xs - cx) <= depth / 2)).astype(np.float32)
    r2 = (xs - cx) ** 2 + (ys - cy) ** 2  # ring: a disc with a hole of half its radius
    return ((r2 <= half**2) & (r2 >= (0.5 * half) ** 2)).astype(np.float32)


def _render(u: np.ndarray, size: int) -> tuple[np.ndarray, int]:
    """One image (S, S, 3) float in [0, 255] and its label, from a row of uniforms."""
    ys, xs = _grid(size)
    c1, c2 = u[0:3] * 255, u[3:6] * 255
    background = min(int(u[6] * 3), 2)
    if background == 0:
        canvas = np.broadcast_to(c1, (*ys.shape, 3)).copy()
    elif background == 1:
        angle = u[7] * 2 * np.pi
        d = (xs - 0.5) * np.cos(angle) + (ys - 0.5) * np.sin(angle)
        w = np.clip(d / 1.414 + 0.5, 0, 1)[..., None]
        canvas = c1 * (1 - w) + c2 * w
    else:
        band = _stripes(ys, xs, u[7] * np.pi, (3 + 4 * u[8]) / 32, u[9])[..., None]
        canvas = c1 * (1 - band) + c2 * band
    count = 1 + min(int(u[10] * MAX_OBJECTS), MAX_OBJECTS - 1)
    for k in range(count):
        v = u[11 + 9 * k: 20 + 9 * k]  # kind, size, x, y, colour (3), striped, stripe angle
        kind = min(int(v[0] * len(OBJECT_SHAPES)), len(OBJECT_SHAPES) - 1)
        half = (0.20 + 0.25 * v[1]) / 2
        mask = _shape_mask(kind, ys, xs, 0.1 + 0.8 * v[2], 0.1 + 0.8 * v[3], half)[..., None]
        colour = v[4:7] * 255
        if v[7] < 1 / 3:  # striped in this colour and its complement
            band = _stripes(ys, xs, v[8] * np.pi, 3 / 32, 0.0)[..., None]
            fill = colour * (1 - band) + (255 - colour) * band
        else:
            fill = np.broadcast_to(colour, canvas.shape)
        canvas = canvas * (1 - mask) + fill * mask
    k = SUPERSAMPLE
    image = canvas.reshape(size, k, size, k, 3).mean(axis=(1, 3))
    return image, 3 * (count - 1) + background


def generate_scene_images(n: int = 4096, image_size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images (n, 3, S, S), int64 labels (n,)) as the module docstring describes."""
    if n < 0 or image_size < 8:
        raise ValueError(f"need n >= 0 and image_size >= 8 (got n={n}, image_size={image_size})")
    u = np.random.default_rng(seed).random((n, _PARAMS)).astype(np.float32)
    images = np.empty((n, 3, image_size, image_size), dtype=np.uint8)
    labels = np.empty(n, dtype=np.int64)
    for i in range(n):
        image, labels[i] = _render(u[i], image_size)
        images[i] = np.rint(image).clip(0, 255).astype(np.uint8).transpose(2, 0, 1)
    return torch.from_numpy(images), torch.from_numpy(labels)


def write_scene_folder(out_dir: str | os.PathLike[str], n: int = 4096, image_size: int = 32, seed: int = 0) -> int:
    """Write the scenes as PNGs, one subfolder per class; refuses a non-empty folder (DatasetError).

    Written into a temporary sibling first and renamed into place, so an interrupted export leaves nothing.
    """
    out = Path(os.fspath(out_dir)).expanduser().absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetError(f"{out} is not an empty folder; choose a new or empty folder for the scene images")
    out.parent.mkdir(parents=True, exist_ok=True)
    images, labels = generate_scene_images(n, image_size, seed)
    names = [name.replace(", ", "-").replace(" ", "-") for name in scene_class_names()]
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        for i, (image, label) in enumerate(zip(images.permute(0, 2, 3, 1).numpy(), labels.tolist(), strict=True)):
            folder = tmp / names[label]
            folder.mkdir(exist_ok=True)
            Image.fromarray(image, "RGB").save(folder / f"{i:05d}.png", compress_level=1)
        os.chmod(tmp, 0o755)
        if out.is_dir():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return n
