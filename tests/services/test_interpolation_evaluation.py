"""Interpolation strips and the evaluate command, on a tiny conditional model with random weights."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from ddpm_studio.cli import main
from ddpm_studio.core.device import choose_device
from ddpm_studio.core.fid import FeaturesUnavailable
from ddpm_studio.services import config as c
from ddpm_studio.services import events as ev
from ddpm_studio.services.control import drive
from ddpm_studio.services.evaluation import EvaluationSession, evaluation_sample_config
from ddpm_studio.services.interpolation import InterpolationSession
from ddpm_studio.services.sampling import SamplingSession, load_for_sampling


def last(session):
    events = []
    drive(session.steps(), events.append)
    return events[-1]


@pytest.fixture(scope="module")
def loaded(conditional_run):
    """The conditional checkpoint with random weights, so the network (not just x_T) shapes every image."""
    model = load_for_sampling(conditional_run, choose_device("cpu"))
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.model.parameters():
            p.normal_(0, 0.05)
    return model


@pytest.mark.parametrize("sampler", ["dpm++2m", "ddim"])
def test_strip_ends_are_the_two_seeds_samples(loaded, tmp_path, sampler):
    sample = c.SampleConfig(sampler=sampler, steps=4, class_label="square", guidance_scale=1.5, sample_batch_size=3)
    strip = last(InterpolationSession(loaded, sample, c.InterpolationConfig(seed_from=3, seed_to=8, frames=5), tmp_path))
    assert strip.images.shape == (5, 16, 16, 3) and strip.extra["row_classes"] == ["square"]
    assert Image.open(strip.grid_path).size[0] > 5 * 16
    for seed, frame in ((3, strip.images[0]), (8, strip.images[-1])):
        alone = last(SamplingSession(loaded, dataclasses.replace(sample, num_images=1, sample_seed=seed), tmp_path / str(seed)))
        assert np.abs(alone.images[0].astype(int) - frame.astype(int)).max() <= 1  # batch size may change rounding
    assert not (strip.images[1] == strip.images[0]).all()


def test_all_classes_give_one_row_each_and_random_samplers_are_refused(loaded, tmp_path):
    sample = c.SampleConfig(sampler="dpm++2m", steps=3, sample_batch_size=16)
    strip = last(InterpolationSession(loaded, sample, c.InterpolationConfig(frames=4), tmp_path))
    assert strip.images.shape[0] == 12 and strip.extra["row_classes"] == ["circle", "square", "triangle"]
    for bad in (c.SampleConfig(sampler="ddpm"), c.SampleConfig(sampler="ddim", eta=0.5)):
        with pytest.raises(c.ConfigError, match="deterministic sampler"):
            InterpolationSession(loaded, bad, c.InterpolationConfig(), tmp_path)


def test_evaluation_scores_demo_runs_and_explains_missing_fid(loaded, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    sample = evaluation_sample_config(num_images=6, steps=3)
    done = last(EvaluationSession(loaded, sample, tmp_path / "eval"))
    assert isinstance(done, ev.EvaluationReady)
    report = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert report["num_images"] == 6 and 0.0 <= report["demo"]["score"] <= 1.0
    assert report["demo"]["class_accuracy"] is not None  # class "all" on the demo shapes: asked-for classes known
    assert any("download-inception" in note for note in report["notes"]) and "fid" not in report
    assert any(line.startswith("Demo shape score") for line in done.lines)
    with pytest.raises(FeaturesUnavailable):
        last(EvaluationSession(loaded, sample, None, fid="on"))


def test_cli_interpolate_and_evaluate(conditional_run, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["interpolate", str(conditional_run), "--frames", "3", "--steps", "2", "--class-label", "circle",
                 "--out", str(out)]) == 0
    assert "strip of 3 interpolated images" in capsys.readouterr().err
    assert main(["evaluate", str(conditional_run), "--num-images", "3", "--steps", "2", "--fid", "off", "--out", str(out)]) == 0
    assert "Demo shape score" in capsys.readouterr().err
    assert len(list(out.rglob("evaluation.json"))) == 1 and len(list(out.rglob("interp_seed0-1.png"))) == 1
    assert main(["interpolate", str(conditional_run), "--sampler", "ddpm", "--out", str(out)]) == 2
