"""The harder benchmark images ("scenes") and the distance that scores samples of them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ddpm_studio.core.datasets import DatasetError, load_image_folder
from ddpm_studio.core.scene_data import NUM_CLASSES, generate_scene_images, scene_class_names, write_scene_folder


def test_deterministic_prefix_stable_and_labelled() -> None:
    a, la = generate_scene_images(48, 16, seed=3)
    b, lb = generate_scene_images(48, 16, seed=3)
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert not torch.equal(a, generate_scene_images(48, 16, seed=4)[0])
    assert torch.equal(generate_scene_images(10, 16, seed=3)[0], a[:10])  # image i does not depend on n
    assert a.shape == (48, 3, 16, 16) and a.dtype == torch.uint8
    labels, _ = np.unique(generate_scene_images(400, 16, seed=0)[1].numpy(), return_counts=True)
    assert set(labels.tolist()) == set(range(NUM_CLASSES)) and len(scene_class_names()) == NUM_CLASSES


def test_scenes_are_harder_than_flat_shapes_on_white() -> None:
    """Many colours per image and texture: far more distinct colours and edges than a demo image has."""
    images, labels = generate_scene_images(64, 32, seed=0)
    x = images.permute(0, 2, 3, 1).reshape(64, -1, 3).numpy()
    distinct = [len(np.unique(img, axis=0)) for img in x]
    assert np.median(distinct) > 40
    stripes = images[(labels % 3 == 2)].float()  # striped backgrounds: strong pixel-to-pixel changes
    assert (stripes.diff(dim=-1).abs().mean() > 20).item()


def test_folder_export_round_trips(tmp_path) -> None:
    assert write_scene_folder(tmp_path / "s", n=12, image_size=16, seed=1) == 12
    loaded = load_image_folder(tmp_path / "s", 16, 3)
    assert len(loaded) == 12
    original = generate_scene_images(12, 16, seed=1)[0]
    assert sorted(map(bytes, loaded.images.numpy())) == sorted(map(bytes, original.numpy()))
    with pytest.raises(DatasetError, match="not an empty folder"):
        write_scene_folder(tmp_path / "s", n=2, image_size=16)


def test_scene_distance_separates_real_from_damaged_scenes() -> None:
    """A briefly trained extractor already tells real scenes from noisy ones by a wide margin."""
    from ddpm_studio.core.scene_score import SceneFeatures, scene_distance

    torch.manual_seed(0)
    features = SceneFeatures.train(image_size=8, n=2048, epochs=3)
    reference = features.reference(256)
    real = features.real_baseline(256, reference)
    images = generate_scene_images(256, 8, seed=77)[0]
    noisy = (images.float() + 40 * torch.randn(images.shape)).clamp(0, 255).to(torch.uint8)
    damaged = scene_distance(features(noisy), reference)
    assert damaged["fid"] > 3 * real["fid"] and damaged["kid"] > real["kid"] + 3 * damaged["kid_std"]
