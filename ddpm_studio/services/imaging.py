"""Turning sample tensors into pictures: uint8 conversion, grids, PNG, strips and GIFs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ddpm_studio.core.atomic import atomic_write


def to_uint8(x: object) -> np.ndarray:
    """A (N, C, H, W) tensor in [-1, 1] → (N, H, W, C) uint8 numpy (grayscale keeps C = 1)."""
    import torch

    assert isinstance(x, torch.Tensor)
    arr = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return arr.permute(0, 2, 3, 1).cpu().numpy()


def make_grid(images: np.ndarray, ncols: int | None = None, padding: int = 2, pad_value: int = 255) -> np.ndarray:
    """Tile (N, H, W, C) uint8 images into one (H', W', C) image, near-square by default."""
    n, h, w, c = images.shape
    ncols = ncols or max(1, math.ceil(math.sqrt(n)))
    nrows = math.ceil(n / ncols)
    grid = np.full((nrows * (h + padding) + padding, ncols * (w + padding) + padding, c), pad_value, np.uint8)
    for i in range(n):
        r, col = divmod(i, ncols)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[y : y + h, x : x + w] = images[i]
    return grid


def to_pil(image: np.ndarray) -> Image.Image:
    """(H, W, 1|3) uint8 → a PIL image (L or RGB)."""
    return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """Write one (H, W, C) uint8 image as PNG atomically."""
    path = Path(path)
    atomic_write(path, lambda fh: to_pil(image).save(fh, format="PNG"))
    return path


def save_gif(frames: Sequence[np.ndarray], path: str | Path, duration_ms: int = 80, hold_last_ms: int = 1200) -> Path:
    """An animated GIF of (H, W, C) frames that rests on the last frame."""
    pil = [to_pil(f).convert("RGB") for f in frames]
    durations = [duration_ms] * (len(pil) - 1) + [hold_last_ms]
    path = Path(path)
    atomic_write(path, lambda fh: pil[0].save(fh, format="GIF", save_all=True, append_images=pil[1:], duration=durations, loop=0))
    return path


def pick_frames(count: int, wanted: int) -> list[int]:
    """Indices of ``wanted`` frames spread evenly over ``count``, always including the last."""
    if count <= wanted:
        return list(range(count))
    return sorted({round(i * (count - 1) / (wanted - 1)) for i in range(wanted)})
