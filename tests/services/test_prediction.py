"""v-prediction: trained, previewed, sampled and resumed like ε-prediction; old checkpoints stay ε."""

from contextlib import nullcontext

import numpy as np
import pytest
import torch
from torch import nn

from ddpm_studio.core.checkpoint import load_checkpoint, save_checkpoint
from ddpm_studio.core.device import choose_device
from ddpm_studio.core.schedules import NoiseSchedule
from ddpm_studio.services import config as c
from ddpm_studio.services import events as ev
from ddpm_studio.services.control import drive
from ddpm_studio.services.model_factory import make_denoiser
from ddpm_studio.services.runs import RunFolder
from ddpm_studio.services.sampling import SamplingSession, load_for_sampling
from ddpm_studio.services.training import TrainingError, TrainingSession


def collect(session):
    events = []
    drive(session.steps(), events.append)
    return events


class VOracle(nn.Module):
    """Knows the clean images: returns the exact v for any x_t, as a perfectly trained v-model would."""

    def __init__(self, x0: torch.Tensor, schedule: NoiseSchedule) -> None:
        super().__init__()
        self.x0, self.schedule = x0, schedule

    def forward(self, x_t, t, y=None):
        a = self.schedule.sqrt_alphas_cumprod[t].view(-1, 1, 1, 1)
        s = self.schedule.sqrt_one_minus_alphas_cumprod[t].view(-1, 1, 1, 1)
        eps = (x_t - a * self.x0) / s
        return self.schedule.velocity(self.x0, t, eps)


def test_denoiser_turns_a_v_model_into_the_true_noise():
    sched = NoiseSchedule.create("linear", 1000)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.rand(5, 3, 8, 8, generator=g) * 2 - 1, torch.randn(5, 3, 8, 8, generator=g)
    t = torch.tensor([0, 250, 500, 750, 999])
    x_t = sched.q_sample(x0, t, eps)
    oracle = VOracle(x0, sched)
    denoise = make_denoiser(oracle, nullcontext, prediction="v", schedule=sched)
    torch.testing.assert_close(denoise(x_t, t), eps, rtol=1e-3, atol=1e-3)
    # Read as an ε-model, the same network would be wrong: the conversion is what makes it right.
    assert not torch.allclose(make_denoiser(oracle, nullcontext)(x_t, t), eps, atol=0.1)
    with pytest.raises(ValueError, match="schedule"):
        make_denoiser(oracle, None, prediction="v")


@pytest.fixture(scope="module")
def v_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("v")
    cfg = c.check(c.from_dict({
        "data": {"source": "demo", "image_size": 16}, "model": {"preset": "tiny"},
        "diffusion": {"timesteps": 50, "prediction": "v"},
        "optim": {"batch_size": 8, "total_steps": 3, "device": "cpu"},
        "schedule": {"preview_every": 2, "preview_steps": 3, "preview_images": 2, "checkpoint_every": 0,
                     "checkpoint_minutes": 0, "log_every": 1, "preview_budget": 1.0},
    }))
    events = collect(TrainingSession(cfg, runs_dir=base, run_name="v"))
    return events, RunFolder(base / "v").latest_checkpoint().path


def test_v_run_trains_previews_and_samples(v_run, tmp_path):
    events, ckpt = v_run
    assert events[-1].reason == "completed"
    previews = [e for e in events if isinstance(e, ev.PreviewReady)]
    assert previews and all(np.isfinite(p.val_loss) for p in previews)
    assert load_checkpoint(ckpt)["config"]["diffusion"]["prediction"] == "v"
    loaded = load_for_sampling(ckpt, choose_device("cpu"))
    assert loaded.cfg.diffusion.prediction == "v"
    done = collect(SamplingSession(loaded, c.SampleConfig(steps=3, num_images=2), tmp_path / "s"))[-1]
    assert done.images.shape == (2, 16, 16, 3)


def test_resume_cannot_switch_the_prediction_target(v_run):
    _, ckpt = v_run
    with pytest.raises(TrainingError, match=r"\[diffusion\] settings cannot change"):
        collect(TrainingSession(resume_from=ckpt, overrides={"diffusion": {"prediction": "epsilon"}}))


def test_checkpoints_from_before_v_prediction_are_read_as_epsilon(v_run, tmp_path):
    _, ckpt = v_run
    old = load_checkpoint(ckpt)
    del old["config"]["diffusion"]["prediction"]
    path = tmp_path / "old.pt"
    save_checkpoint(path, {k: v for k, v in old.items() if k not in ("format", "format_version")})
    assert load_for_sampling(path, choose_device("cpu")).cfg.diffusion.prediction == "epsilon"
