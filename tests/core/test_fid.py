"""FID / KID maths on Gaussians with known answers; Inception features never downloaded."""

import numpy as np
import pytest
import torch

from ddpm_studio.core import fid


def gaussian(n, d, mean=0.0, scale=1.0, seed=0):
    return np.random.default_rng(seed).normal(mean, scale, (n, d))


def test_frechet_distance_closed_forms():
    d = 8
    assert fid.frechet_distance(np.zeros(d), np.eye(d), np.zeros(d), np.eye(d)) == pytest.approx(0.0, abs=1e-9)
    # N(0, I) vs N(0, 4I): Tr(I + 4I - 2·2I) = d; a mean shift δ adds ‖δ‖².
    assert fid.frechet_distance(np.zeros(d), np.eye(d), np.zeros(d), 4 * np.eye(d)) == pytest.approx(d)
    assert fid.frechet_distance(np.zeros(d), np.eye(d), np.full(d, 0.5), np.eye(d)) == pytest.approx(0.25 * d)
    # Non-commuting covariances: symmetric in its arguments.
    a = gaussian(50, d, seed=1)
    s1, s2 = np.cov(a, rowvar=False), np.diag(np.linspace(0.5, 2, d))
    assert fid.frechet_distance(np.zeros(d), s1, np.ones(d), s2) == pytest.approx(
        fid.frechet_distance(np.ones(d), s2, np.zeros(d), s1), rel=1e-6)


def test_fid_of_a_sample_with_itself_is_zero_and_grows_with_a_shift():
    a = gaussian(2000, 16, seed=0)
    assert fid.fid_from_features(a, a) == pytest.approx(0.0, abs=1e-6)
    same = fid.fid_from_features(a, gaussian(2000, 16, seed=1))
    shifts = [fid.fid_from_features(a, gaussian(2000, 16, mean=m, seed=1)) for m in (0.25, 0.5, 1.0)]
    assert same < 0.2 and same < shifts[0] < shifts[1] < shifts[2]
    assert shifts[2] == pytest.approx(16.0, rel=0.1)  # ‖δ‖² = 16 · 1²


def test_kid_is_unbiased_near_zero_and_grows_with_a_shift():
    a, b = gaussian(400, 16, seed=0), gaussian(400, 16, seed=1)
    same, _ = fid.kid_from_features(a, b, subsets=20, subset_size=200)
    shifted = [fid.kid_from_features(a, gaussian(400, 16, mean=m, seed=1), subsets=20, subset_size=200)[0] for m in (0.5, 1.0)]
    assert abs(same) < 0.01 < shifted[0] < shifted[1]


def test_missing_inception_weights_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(fid.FeaturesUnavailable, match="download-inception") as info:
        fid.InceptionFeatures.load()
    assert str(tmp_path) in str(info.value) and not list(tmp_path.rglob("*.pth"))


def test_feature_preprocessing_feeds_299_imagenet_normalised_rgb():
    seen = []

    def fake_model(x):
        seen.append(x)
        return x.mean(dim=(2, 3))

    extract = fid.InceptionFeatures(fake_model, torch.device("cpu"))
    gray = np.full((3, 16, 16, 1), 255, np.uint8)
    out = extract(gray, batch_size=2)
    assert out.shape == (3, 3) and [x.shape for x in seen] == [(2, 3, 299, 299), (1, 3, 299, 299)]
    np.testing.assert_allclose(out[0], (1 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225]), rtol=1e-5)
