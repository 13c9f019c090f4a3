"""The memorization check: nearest training images, the copy rule, and evaluate's share of copies."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.memorization_calibration import blobs, textures
from ddpm_studio.services import config as c
from ddpm_studio.services import memorization as mem
from ddpm_studio.services.control import drive
from ddpm_studio.services.evaluation import EvaluationSession, evaluation_sample_config
from ddpm_studio.services.memorization import check_memorization, copy_probes, nearest_training_images
from ddpm_studio.services.runs import RunFolder
from ddpm_studio.services.training import TrainingSession


def brute_force(samples: torch.Tensor, training: torch.Tensor, mirror: bool) -> np.ndarray:
    """d(s, x) for every pair by the definition: RMS over the interior, best of ±1 px shifts (and mirror)."""
    out = np.zeros((len(samples), len(training)))
    h = samples.shape[-1]
    for i, s in enumerate(samples.float() / 255):
        for j, x in enumerate(training.float() / 255):
            best = np.inf
            for ref in ([x, x.flip(-1)] if mirror else [x]):
                core = ref[:, 1 : h - 1, 1 : h - 1]
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        moved = s[:, 1 + dy : h - 1 + dy, 1 + dx : h - 1 + dx]
                        best = min(best, float((moved - core).pow(2).mean().sqrt()))
            out[i, j] = best
    return out


@pytest.mark.parametrize("mirror", [False, True])
def test_nearest_training_images_follow_the_definition_in_small_chunks(monkeypatch, mirror):
    monkeypatch.setattr(mem, "_CHUNK_VALUES", 3 * 12 * 12 * 5)  # 5 training images per chunk
    monkeypatch.setattr(mem, "_SAMPLE_BLOCK", 3)  # and samples in blocks of 3
    training = textures(23, 12, seed=0, res=3)
    samples = torch.cat([textures(7, 12, seed=1, res=3), copy_probes(training[:2])["shift"][:2]])
    nb = nearest_training_images(samples, training, k=3, mirror=mirror)
    expected = brute_force(samples, training, mirror)
    order = np.argsort(expected, axis=1)[:, :3]
    assert (nb.indices == order).all()
    np.testing.assert_allclose(nb.distances, np.take_along_axis(expected, order, 1), atol=1e-5)
    assert nb.distances[-2:, 0].max() < 1e-6, "a shifted copy is at distance 0 (its border aside)"


def test_planted_copies_are_all_flagged_and_novel_samples_none():
    """The calibration's copies (exact, moved by a pixel, mirrored, light noise) hidden among novel images."""
    training = blobs(16, 16, seed=0)
    novel = blobs(120, 16, seed=7)
    probes = copy_probes(training[:6], seed=3, mirror=True)
    planted = torch.cat(list(probes.values()))
    samples = torch.cat([novel, planted])
    perm = torch.randperm(len(samples), generator=torch.Generator().manual_seed(0))
    check = check_memorization(samples[perm].permute(0, 2, 3, 1).numpy(), training, mirror=True)  # (N, H, W, C) too
    is_copy = (perm >= len(novel)).numpy()
    assert check.flagged[is_copy].all()
    assert not check.flagged[~is_copy].any()
    assert check.share == pytest.approx(len(planted) / len(samples))
    copied = np.tile(np.arange(6), 7)  # exact, 4 shifts, mirror, noise: each of training images 0..5 in turn
    assert (check.neighbours.indices[is_copy, 0] == copied[perm[is_copy].numpy() - len(novel)]).all()


def test_a_mirror_copy_counts_only_when_the_run_trained_with_flips():
    training = blobs(16, 16, seed=0)
    mirrored = training[:4].flip(-1)
    assert check_memorization(mirrored, training, mirror=True).flagged.all()
    assert check_memorization(mirrored, training, mirror=True).neighbours.mirrored[:, 0].all()
    assert not check_memorization(mirrored, training, mirror=False).flagged.any()


def test_a_copy_of_an_image_the_folder_holds_twice_is_flagged():
    """d2 = d1 = 0: the ratio says nothing, the absolute distance does."""
    training = torch.cat([blobs(8, 16, seed=0), blobs(1, 16, seed=0)])  # image 0 twice
    check = check_memorization(training[:1], training)
    assert check.flagged.all() and check.neighbours.distances[0, :2].max() == 0
    one = check_memorization(blobs(3, 16, seed=5), training[:1])  # one training image: only the absolute rule
    assert not one.flagged.any() and np.isinf(one.score).all()
    assert check_memorization(training[:1], training[:1]).flagged.all()


def test_bad_inputs_are_refused():
    training = blobs(4, 16, seed=0)
    with pytest.raises(ValueError, match="uint8"):
        check_memorization(training.float(), training)
    with pytest.raises(ValueError, match="like the samples"):
        check_memorization(blobs(2, 32, seed=0), training)


def _folder(path, images):
    path.mkdir(parents=True)
    for i, im in enumerate(images):
        Image.fromarray(im.permute(1, 2, 0).numpy()).save(path / f"{i:02d}.png")
    return path


def test_evaluate_reports_the_share_with_the_rule_and_a_side_by_side_grid(tmp_path, capsys):
    from ddpm_studio.cli import main

    folder = _folder(tmp_path / "imgs", blobs(8, 16, seed=0))
    cfg = c.check(c.from_dict({
        "data": {"source": "folder", "data_path": str(folder), "image_size": 16, "cache": False},
        "model": {"preset": "tiny"}, "diffusion": {"timesteps": 50},
        "optim": {"batch_size": 4, "total_steps": 2, "device": "cpu"},
        "schedule": {"preview_every": 0, "checkpoint_every": 0, "checkpoint_minutes": 0},
    }))
    drive(TrainingSession(cfg, runs_dir=tmp_path, run_name="r").steps(), lambda e: None)
    assert main(["evaluate", str(tmp_path / "r"), "--num-images", "6", "--steps", "3", "--fid", "off",
                 "--out", str(tmp_path / "eval")]) == 0
    out = capsys.readouterr().err
    assert "Memorization: 0 of 6 samples (0.0%) copy one of the 8 training images" in out  # 2 steps: noise
    assert "rule: a sample is a copy when" in out
    grid = next((tmp_path / "eval").glob("*/memorization_pairs.png"))
    assert Image.open(grid).size[0] > 3 * 16  # the 6 closest samples, each beside its two nearest training images
    assert main(["evaluate", str(tmp_path / "r"), "--num-images", "2", "--steps", "3", "--fid", "off",
                 "--no-memorization", "--out", str(tmp_path / "eval2")]) == 0
    assert "Memorization" not in capsys.readouterr().err


def test_evaluate_without_training_images_says_why(tmp_path):
    cfg = c.check(c.from_dict({
        "data": {"source": "folder", "data_path": str(_folder(tmp_path / "imgs", blobs(4, 16, seed=0))), "image_size": 16},
        "model": {"preset": "tiny"}, "diffusion": {"timesteps": 50},
        "optim": {"batch_size": 4, "total_steps": 1, "device": "cpu"},
        "schedule": {"preview_every": 0, "checkpoint_every": 0, "checkpoint_minutes": 0},
    }))
    drive(TrainingSession(cfg, runs_dir=tmp_path, run_name="r").steps(), lambda e: None)
    for png in (tmp_path / "imgs").iterdir():
        png.unlink()
    events = []
    drive(EvaluationSession(RunFolder(tmp_path / "r").path, evaluation_sample_config(num_images=2, steps=2),
                            fid="off").steps(), events.append)
    report = events[-1].report
    assert "memorization" not in report
    assert any(n.startswith("Memorization check skipped: the training images cannot be loaded") for n in report["notes"])


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_share_of_copies_rises_as_a_tiny_model_memorizes_eight_images(tmp_path):
    """8 images of 16 px, the tiny U-Net without dropout, no flips, EMA 0.99: it learns to redraw them.
    Measured here (32 samples, DPM-Solver++ 20 steps): share 0.0 at steps 250-750, 0.19 at 1000, 0.59 at 1250,
    0.69 at 1500, 0.81 at 1750 and 2000; a CPU run of 1,500 steps takes 1-7 minutes depending on the machine.
    The loss weighting is pinned to uniform, the one these shares were measured with: with Min-SNR (the default
    since) the model copies sooner (0.16 at 500, 0.66 at 1000, 0.88 at 1500; docs/memorization.md)."""
    folder = _folder(tmp_path / "imgs", blobs(8, 16, seed=0))
    cfg = c.check(c.from_dict({
        "data": {"source": "folder", "data_path": str(folder), "image_size": 16, "cache": False, "hflip": False},
        "model": {"preset": "tiny", "dropout": 0.0}, "diffusion": {"timesteps": 100, "loss_weighting": "uniform"},
        "optim": {"batch_size": 8, "total_steps": 1500, "device": "cpu", "mixed_precision": "off", "lr": 2e-3,
                  "warmup_steps": 50, "ema": "fixed", "ema_decay": 0.99},
        "schedule": {"preview_every": 0, "checkpoint_every": 500, "checkpoint_minutes": 0, "keep_last": 10,
                     "log_every": 100},
    }))
    drive(TrainingSession(cfg, runs_dir=tmp_path, run_name="m").steps(), lambda e: None)
    shares = {}
    for info in RunFolder(tmp_path / "m").checkpoints():
        events = []
        sample = evaluation_sample_config(num_images=32, sample_batch_size=32, sampler="dpm++2m", steps=20,
                                          autoguidance=0)  # unguided, as the shares above were measured
        drive(EvaluationSession(info.path, sample, fid="off", device="cpu").steps(), events.append)
        shares[info.step] = events[-1].report["memorization"]["share"]
    print("memorization share by step:", shares)
    assert list(shares) == [500, 1000, 1500]
    assert shares[500] == 0.0, shares  # blurry mixtures of the training images: no copies yet
    assert shares[500] <= shares[1000] <= shares[1500], shares
    assert shares[1500] >= 0.5, shares
