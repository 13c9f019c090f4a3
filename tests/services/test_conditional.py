"""Class-conditional training, label dropout, classifier-free guidance and class choice at sampling."""

import dataclasses

import numpy as np
import pytest
import torch

from ddpm_studio.core.checkpoint import load_checkpoint, save_checkpoint
from ddpm_studio.core.demo_data import DEMO_SHAPES, write_demo_folder
from ddpm_studio.core.device import choose_device
from ddpm_studio.core.unet import UNet, preset_config
from ddpm_studio.services import config as c
from ddpm_studio.services import events as ev
from ddpm_studio.services.conditioning import drop_labels, sample_labels
from ddpm_studio.services.control import RunControl, drive
from ddpm_studio.services.model_factory import make_denoiser
from ddpm_studio.services.runs import RunFolder
from ddpm_studio.services.sampling import SamplingSession, load_for_sampling
from ddpm_studio.services.training import TrainingError, TrainingSession


def collect(session, on_event=None):
    events = []

    def sink(e):
        events.append(e)
        if on_event:
            on_event(e)

    drive(session.steps(), sink)
    return events


def test_conditional_training_records_classes_and_resumes_exactly(tmp_path, tiny_cfg):
    n = 3
    cfg = tiny_cfg(data={"conditional": True}, optim={"total_steps": 2 * n, "label_dropout": 0.5})
    collect(TrainingSession(cfg, runs_dir=tmp_path, run_name="straight"))
    straight = load_checkpoint(RunFolder(tmp_path / "straight").latest_checkpoint().path)
    assert straight["class_names"] == list(DEMO_SHAPES)
    assert straight["model"]["class_embed.weight"].shape[0] == len(DEMO_SHAPES) + 1  # + the null label

    control = RunControl()
    collect(TrainingSession(cfg, runs_dir=tmp_path, run_name="split", control=control),
            on_event=lambda e: control.stop() if isinstance(e, ev.TrainProgress) and e.step == n else None)
    mid = RunFolder(tmp_path / "split").latest_checkpoint()
    assert mid.step == n
    assert collect(TrainingSession(resume_from=mid.path))[-1].reason == "completed"
    resumed = load_checkpoint(RunFolder(tmp_path / "split").latest_checkpoint().path)
    for key in straight["model"]:
        assert torch.equal(straight["model"][key], resumed["model"][key]), key
    with pytest.raises(TrainingError, match="Class-conditional cannot change"):
        collect(TrainingSession(resume_from=mid.path, overrides={"data": {"conditional": False}}))


def test_conditional_needs_classes(tmp_path, tiny_cfg):
    flat = tmp_path / "flat"
    write_demo_folder(flat, n=6, image_size=16, by_class=False)
    cfg = tiny_cfg(data={"source": "folder", "data_path": str(flat), "conditional": True, "cache": False})
    with pytest.raises(TrainingError, match="one subfolder per class"):
        collect(TrainingSession(cfg, runs_dir=tmp_path / "runs", run_name="x"))
    assert not (tmp_path / "runs" / "x").exists()  # refused before a run folder is made


def test_label_dropout_uses_the_generator():
    labels = torch.arange(1000) % 3
    a = drop_labels(labels, 0.2, 3, torch.Generator().manual_seed(0))
    b = drop_labels(labels, 0.2, 3, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and 0.15 < (a == 3).float().mean() < 0.25
    assert torch.equal(a[a != 3], labels[a != 3])


class CountingUNet(torch.nn.Module):
    """A conditional U-Net with random (non-zero) weights that records each forward's batch size."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = UNet(preset_config("tiny", image_size=16, in_channels=3, num_classes=3))
        for p in self.net.parameters():
            torch.nn.init.normal_(p, std=0.05)
        self.config = self.net.config
        self.calls = []

    def forward(self, x, t, y=None):
        self.calls.append(x.shape[0])
        return self.net(x, t, y)


def test_guidance_scale_zero_and_one_are_the_plain_models():
    model = CountingUNet().eval()
    x = torch.randn((4, 3, 16, 16), generator=torch.Generator().manual_seed(1))
    t = torch.full((4,), 40)
    y = torch.tensor([0, 1, 2, 0])
    autocast = choose_device("cpu", "off").autocast
    with torch.no_grad():
        uncond, cond = model.net(x, t, torch.full_like(y, 3)), model.net(x, t, y)
    assert not torch.allclose(uncond, cond)
    for scale, expected in ((0.0, uncond), (1.0, cond), (2.5, uncond + 2.5 * (cond - uncond))):
        model.calls.clear()
        out = make_denoiser(model, autocast, y, scale)(x, t)
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
        assert model.calls == ([4] if scale in (0.0, 1.0) else [8])  # one forward; guidance batches both branches


def test_sample_labels_rows_names_and_errors():
    labels, ncols = sample_labels("all", DEMO_SHAPES, 8)
    assert labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2] and ncols == 3
    assert sample_labels("-1", DEMO_SHAPES, 2)[0].tolist() == [0, 1]  # fewer images than classes: one each
    assert sample_labels("Triangle", DEMO_SHAPES, 2)[0].tolist() == [2, 2]
    assert sample_labels("1", DEMO_SHAPES, 1)[0].tolist() == [1]
    assert sample_labels("all", (), 4) == (None, None)
    with pytest.raises(c.ConfigError, match="0 = circle, 1 = square, 2 = triangle"):
        sample_labels("hexagon", DEMO_SHAPES, 1)
    with pytest.raises(c.ConfigError, match="trained without classes"):
        sample_labels("circle", (), 1)


def test_sampling_a_conditional_checkpoint(conditional_run, tmp_path):
    loaded = load_for_sampling(conditional_run, choose_device("cpu"))
    assert loaded.class_names == DEMO_SHAPES
    sample = c.SampleConfig(sampler="dpm++2m", steps=4, num_images=5, guidance_scale=2.0)
    done = collect(SamplingSession(loaded, sample, tmp_path / "all"))[-1]
    assert done.extra["labels"] == [0, 0, 1, 1, 2] and done.images.shape == (5, 16, 16, 3)
    one = collect(SamplingSession(loaded, dataclasses.replace(sample, class_label="square"), tmp_path / "sq"))[-1]
    assert one.extra["labels"] == [1] * 5
    with pytest.raises(c.ConfigError, match="Unknown class"):
        collect(SamplingSession(loaded, dataclasses.replace(sample, class_label="star"), tmp_path / "x"))


def test_checkpoints_without_class_names_still_load(conditional_run, tmp_path):
    """Checkpoints from before conditional training have no class_names: unconditional."""
    old = load_checkpoint(conditional_run)
    old.pop("class_names")
    old["model"] = {k: v for k, v in old["model"].items() if not k.startswith("class_embed")}
    old["ema"]["model"] = {k: v for k, v in old["ema"]["model"].items() if not k.startswith("class_embed")}
    path = tmp_path / "old.pt"
    save_checkpoint(path, {k: v for k, v in old.items() if k not in ("format", "format_version")})
    loaded = load_for_sampling(path, choose_device("cpu"))
    assert loaded.class_names == () and loaded.model.class_embed is None
    done = collect(SamplingSession(loaded, c.SampleConfig(steps=3, num_images=2), tmp_path / "s"))[-1]
    assert np.isfinite(done.images).all() and "labels" not in done.extra
    with pytest.raises(c.ConfigError, match="trained without classes"):
        collect(SamplingSession(loaded, c.SampleConfig(steps=3, class_label="circle"), tmp_path / "s2"))
