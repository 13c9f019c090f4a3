"""The demo shape detector: ~1.0 on the real demo images, 0 on what breaks the rules."""

import numpy as np
import pytest

from ddpm_studio.core.demo_data import DEMO_COLORS, _coverage, demo_image_set, generate_demo_images
from ddpm_studio.core.demo_score import demo_score, read_image


def hwc(images):
    return images.permute(0, 2, 3, 1).numpy()


def render(shapes, boxes, colors, size=32):
    """Shapes painted on white with the generator's own anti-aliasing; later ones cover earlier ones."""
    img = np.full((size, size, 3), 255.0)
    for shape, (x0, y0, side), color in zip(shapes, boxes, colors, strict=True):
        a = _coverage(np.array([shape]), np.array([x0]), np.array([y0]), np.array([side]), size)[0][..., None]
        img = img + a * (np.array(DEMO_COLORS[color]) - img)
    return np.rint(img).astype(np.uint8)


@pytest.mark.parametrize("size", [16, 32])
def test_real_demo_images_score_one(size):
    images, labels = generate_demo_images(200, size, seed=7)
    score = demo_score(hwc(images), labels.numpy())
    assert score.score == 1.0 and score.class_accuracy == 1.0, score.reasons
    assert set(score.shapes) == {"circle", "square", "triangle"} and len(score.colors) == len(DEMO_COLORS)


def test_grayscale_and_mild_noise_still_read():
    gray = demo_image_set(100, 32, channels=1, seed=2)
    assert demo_score(hwc(gray.images), gray.labels.numpy()).score == 1.0
    images, labels = generate_demo_images(100, 32, seed=3)
    noisy = np.clip(hwc(images) + np.random.default_rng(0).normal(0, 5, (100, 32, 32, 3)), 0, 255).astype(np.uint8)
    assert demo_score(noisy, labels.numpy()).score >= 0.95


def test_rule_breakers_score_zero():
    rng = np.random.default_rng(0)
    cases = {
        "noise": rng.integers(0, 256, (32, 32, 3)).astype(np.uint8),
        "blank": np.full((32, 32, 3), 255, np.uint8),
        "two shapes": render([0, 1], [(2.5, 2.5, 10), (18, 18, 11)], ["red", "red"]),
        "two colours": render([1, 0], [(5, 5, 20), (10, 10, 8)], ["red", "blue"]),
        "too small": render([1], [(5, 5, 6)], ["green"]),
        "off palette": np.where(render([1], [(6, 6, 16)], ["red"]) < 255, 128, 255).astype(np.uint8),
    }
    readings = {name: read_image(img) for name, img in cases.items()}
    assert not any(r.valid for r in readings.values()), readings
    assert readings["blank"].reason == "blank"
    assert readings["two shapes"].reason == "several shapes or specks"
    assert readings["two colours"].reason == "more than one colour"
    good = read_image(render([2], [(6, 7, 15)], ["cyan"]))
    assert good.valid and good.shape == "triangle" and good.color == "cyan"
    batch = np.stack([*cases.values(), render([0], [(5, 5, 14)], ["red"])])
    assert demo_score(batch).score == pytest.approx(1 / 7)
