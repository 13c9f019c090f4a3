"""The demo generator follows its documented rules: one clean shape of one colour on white."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ddpm_studio.core.datasets import DatasetError, load_image_folder
from ddpm_studio.core.demo_data import DEMO_COLORS, DEMO_SHAPES, demo_image_set, generate_demo_images, write_demo_folder

PALETTE = np.array(list(DEMO_COLORS.values()), dtype=np.float64)


def test_deterministic_per_seed() -> None:
    a, la = generate_demo_images(64, 32, seed=3)
    b, lb = generate_demo_images(64, 32, seed=3)
    c, _ = generate_demo_images(64, 32, seed=4)
    assert torch.equal(a, b) and torch.equal(la, lb) and not torch.equal(a, c)
    assert torch.equal(generate_demo_images(10, 32, seed=3)[0], a[:10])  # prefix-stable too


def test_shapes_dtypes_and_labels() -> None:
    images, labels = generate_demo_images(300, 24, seed=0)
    assert images.shape == (300, 3, 24, 24) and images.dtype == torch.uint8 and images.is_contiguous()
    assert labels.dtype == torch.int64 and set(labels.tolist()) == {0, 1, 2}
    assert DEMO_SHAPES == ("circle", "square", "triangle") and len(DEMO_COLORS) >= 6


def test_each_image_is_one_clean_shape_on_white() -> None:
    size = 32
    images, labels = generate_demo_images(200, size, seed=1)
    arr = images.permute(0, 2, 3, 1).numpy().astype(np.float64)
    white = np.array([255.0, 255.0, 255.0])
    fill = {0: [], 1: [], 2: []}
    for img, label in zip(arr, labels.tolist(), strict=True):
        # Border and corners are white.
        assert (img[0] == 255).all() and (img[-1] == 255).all() and (img[:, 0] == 255).all() and (img[:, -1] == 255).all()
        # Exactly one palette colour appears at full strength, and every pixel blends it with white.
        flat = img.reshape(-1, 3)
        exact = {i for i, c in enumerate(PALETTE) if (np.abs(flat - c).max(axis=1) == 0).any()}
        assert len(exact) == 1
        color = PALETTE[exact.pop()]
        alpha = ((white - flat) @ (white - color)) / ((white - color) @ (white - color))
        assert np.abs(white + alpha[:, None] * (color - white) - flat).max() <= 1.0
        assert alpha.min() >= -0.01 and alpha.max() <= 1.01
        # Size: bounding box of the shape is 30-70 % of the image.
        mask = (alpha > 0.5).reshape(size, size)
        rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        side = max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)
        assert 0.3 * size - 2 <= side <= 0.7 * size + 2
        fill[label].append(alpha.sum() / side**2)
    # The label matches the drawn shape: area / bounding-box area ~ pi/4, 1 and 1/2.
    assert abs(np.mean(fill[0]) - np.pi / 4) < 0.08
    assert abs(np.mean(fill[1]) - 1.0) < 0.08
    assert abs(np.mean(fill[2]) - 0.5) < 0.08


def test_colours_are_well_separated() -> None:
    dist = np.linalg.norm(PALETTE[:, None] - PALETTE[None], axis=-1)
    assert dist[~np.eye(len(PALETTE), dtype=bool)].min() > 100
    luminance = PALETTE @ np.array([0.299, 0.587, 0.114])
    assert luminance.max() < 200  # visible on white in grayscale too


def test_fast_enough() -> None:
    start = time.perf_counter()
    generate_demo_images(4096, 32, seed=0)
    assert time.perf_counter() - start < 5.0  # ~0.6 s on one core; generous for shared CI machines


def test_demo_image_set() -> None:
    rgb = demo_image_set(50, 32, 3, seed=2)
    assert len(rgb) == 50 and rgb.class_names == DEMO_SHAPES and rgb.labels is not None and rgb.skipped == ()
    gray = demo_image_set(50, 32, 1, seed=2)
    assert gray.images.shape == (50, 1, 32, 32) and torch.equal(gray.labels, rgb.labels)
    assert (gray.images[:, :, 0, 0] == 255).all() and "grayscale" in gray.description
    assert gray.images.min() < 200  # shapes stay visible in grayscale
    with pytest.raises(ValueError):
        demo_image_set(5, 32, 2)


def test_write_demo_folder_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    assert write_demo_folder(out, 30, 16, seed=5) == 30
    assert sorted(p.name for p in out.iterdir()) == sorted(DEMO_SHAPES)
    assert not [p for p in tmp_path.iterdir() if p.name != "demo"]  # temp folder renamed away
    images, labels = generate_demo_images(30, 16, seed=5)
    first = sorted((out / DEMO_SHAPES[int(labels[0])]).iterdir())[0]
    assert first.name == "00001.png"
    loaded = load_image_folder(out, 16, 3)
    order = np.argsort(labels.numpy(), kind="stable")
    assert loaded.class_names == DEMO_SHAPES and torch.equal(loaded.labels, labels[order])
    assert torch.equal(loaded.images, images[order])


def test_write_demo_folder_flat_and_refusals(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert write_demo_folder(empty, 7, 16, by_class=False) == 7
    assert sorted(p.name for p in empty.iterdir()) == [f"{i:05d}.png" for i in range(1, 8)]
    with pytest.raises(DatasetError, match="not empty"):
        write_demo_folder(empty, 3, 16)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match="not a folder"):
        write_demo_folder(tmp_path / "file", 3, 16)
