"""Autoguidance end to end: a run keeps its guide in each checkpoint, sampling uses it when asked, and checkpoints
from before autoguidance sample as they did, saying that they cannot be guided."""

import pytest
import torch

from ddpm_studio.cli import main as cli_main
from ddpm_studio.core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ddpm_studio.core.device import choose_device
from ddpm_studio.services import config as c
from ddpm_studio.services import events as ev
from ddpm_studio.services.evaluation import EvaluationSession
from ddpm_studio.services.interpolation import InterpolationSession
from ddpm_studio.services.runs import RunFolder
from ddpm_studio.services.sampling import NO_GUIDE, SamplingSession, checkpoint_offer, load_for_sampling
from ddpm_studio.services.training import TrainingSession
from tests.services.test_training import collect

CPU = choose_device("cpu", "off")
FAST = {"sampler": "ddim", "steps": 4, "num_images": 4, "sample_batch_size": 4}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(checkpoint after 8 steps of a tiny run, the same checkpoint without the earlier weights, as before autoguidance)."""
    base = tmp_path_factory.mktemp("ag")
    cfg = c.check(c.from_dict({
        "data": {"source": "demo", "image_size": 16}, "model": {"preset": "tiny"}, "diffusion": {"timesteps": 50},
        "optim": {"batch_size": 8, "total_steps": 8, "lr": 2e-3, "device": "cpu"},
        "schedule": {"preview_every": 0, "checkpoint_every": 0, "checkpoint_minutes": 0},
    }))
    collect(TrainingSession(cfg, runs_dir=base, run_name="r"))
    path = RunFolder(base / "r").latest_checkpoint().path
    old = load_checkpoint(path)
    del old["early_weights"]
    save_checkpoint(base / "old.pt", {k: v for k, v in old.items() if k not in ("format", "format_version")})
    return path, base / "old.pt"


def sample(source, tmp_path, **settings):
    events = list(SamplingSession(source, c.SampleConfig(**{**FAST, **settings}), tmp_path / "out", device="cpu").steps())
    ready = [e for e in events if isinstance(e, ev.SamplesReady)]
    return ready[0], [e.message for e in events if isinstance(e, ev.Status)]


def test_the_checkpoint_keeps_earlier_weights_and_the_guide_is_the_one_near_half_the_run(trained):
    path, _ = trained
    ckpt = load_checkpoint(path)
    kept = ckpt["early_weights"]["kept"]
    assert ckpt["step"] == 8 and [e["step"] for e in kept] == [2, 4, 6, 8]
    loaded = load_for_sampling(path, CPU, guided=True)
    assert loaded.guide_step == 4 and loaded.autoguidance(1.5) == 1.5
    for name, value in loaded.guide.state_dict().items():
        torch.testing.assert_close(value, kept[1]["weights"][name].float(), msg=name)
    assert any(not torch.equal(p, q) for p, q in zip(loaded.model.parameters(), loaded.guide.parameters(), strict=True))
    assert load_for_sampling(path, CPU).guide is None  # loaded only when asked for
    assert checkpoint_offer(path).guide_step == 4 and checkpoint_offer(trained[1]).guide_step is None  # what the GUI reads


def test_sampling_applies_autoguidance_and_records_it(trained, tmp_path):
    path, _ = trained
    plain, _ = sample(path, tmp_path, autoguidance=0.0)
    guided, notes = sample(path, tmp_path, autoguidance=1.0)
    assert NO_GUIDE not in notes
    assert (plain.extra["autoguidance"], plain.extra["guide_step"]) == (0.0, None)
    assert (guided.extra["autoguidance"], guided.extra["guide_step"]) == (1.0, 4)
    assert c.SampleConfig().autoguidance == 1.0  # on by default
    assert (plain.images != guided.images).any()  # same noises, another denoiser


def test_a_checkpoint_from_before_autoguidance_samples_unguided_and_says_so(trained, tmp_path):
    path, old = trained
    plain, _ = sample(path, tmp_path, autoguidance=0.0)
    result, notes = sample(old, tmp_path, autoguidance=1.0)
    assert NO_GUIDE in notes and result.extra["autoguidance"] == 0.0
    assert (result.images == plain.images).all()


def test_a_model_passed_in_without_its_guide_samples_unguided_without_blaming_the_checkpoint(trained, tmp_path):
    result, notes = sample(load_for_sampling(trained[0], CPU), tmp_path)  # e.g. a benchmark's own loaded model
    assert result.extra["autoguidance"] == 0.0 and NO_GUIDE not in notes


def test_damaged_guide_weights_are_refused_with_the_way_out(trained, tmp_path):
    ckpt = load_checkpoint(trained[0])
    for entry in ckpt["early_weights"]["kept"]:
        entry["weights"] = {k: v[..., :1] if v.ndim else v for k, v in entry["weights"].items()}
    save_checkpoint(tmp_path / "bad.pt", {k: v for k, v in ckpt.items() if k not in ("format", "format_version")})
    with pytest.raises(CheckpointError, match="sample with autoguidance 0 to use the model alone"):
        load_for_sampling(tmp_path / "bad.pt", CPU, guided=True)
    assert load_for_sampling(tmp_path / "bad.pt", CPU).guide is None  # the model alone still loads
    with pytest.raises(CheckpointError, match="earlier weights"):  # and resuming it is refused, not carried on
        collect(TrainingSession(resume_from=tmp_path / "bad.pt", overrides={"optim": {"total_steps": 10}}))


def test_a_power_ema_is_rebuilt_for_the_guide_only_when_a_copy_is_due(tmp_path, monkeypatch):
    from ddpm_studio.core.autoguidance import EarlyWeights

    asked_at: list[int] = []
    real = EarlyWeights.update

    def spy(self, step, model):  # ``model`` is the power EMA's average, rebuilt for the call
        asked_at.append(step)
        real(self, step, model)

    monkeypatch.setattr(EarlyWeights, "update", spy)
    cfg = c.check(c.from_dict({
        "data": {"source": "demo", "image_size": 16}, "model": {"preset": "tiny"}, "diffusion": {"timesteps": 50},
        "optim": {"batch_size": 4, "total_steps": 16, "device": "cpu", "ema": "power"},
        "schedule": {"preview_every": 0, "checkpoint_every": 0, "checkpoint_minutes": 0},
    }))
    collect(TrainingSession(cfg, runs_dir=tmp_path, run_name="p"))
    assert asked_at == [1, 2, 3, 4, 5, 6, 8, 10, 12, 16]  # the steps a copy is due at (then thinned), not every step


def test_interpolation_records_it(trained, tmp_path):
    session = InterpolationSession(trained[0], c.SampleConfig(**FAST), c.InterpolationConfig(frames=2), tmp_path / "i",
                                   device="cpu")
    ready = next(e for e in session.steps() if isinstance(e, ev.SamplesReady))
    assert (ready.extra["autoguidance"], ready.extra["guide_step"]) == (1.0, 4)


def test_evaluation_and_the_cli_take_the_setting(trained, tmp_path, capsys):
    path, _ = trained
    session = EvaluationSession(path, c.SampleConfig(**FAST, autoguidance=2.0), None, fid="off", demo=True,
                                memorization=False, device="cpu")
    ready = next(e for e in session.steps() if isinstance(e, ev.EvaluationReady))
    assert (ready.report["autoguidance"], ready.report["guide_step"]) == (2.0, 4)
    assert "(ddim 4 steps, EMA length 0.02, autoguidance 2 by step 4," in ready.lines[0]  # the run's default power EMA
    out = tmp_path / "cli"
    assert cli_main(["sample", str(path), "--num-images", "2", "--sampler", "ddim", "--steps", "2",
                     "--autoguidance", "0.5", "--out", str(out), "--device", "cpu"]) == 0
    assert len(list(out.rglob("sample_0000*.png"))) == 2
    assert [p.name for p in out.iterdir()] == ["step_00000008-ddim2-ag0.5-seed0"]  # a weight's own folder
    assert cli_main(["sample", str(path), "--autoguidance", "-1", "--out", str(out)]) != 0
    assert "Autoguidance must be between 0 and 4 (got -1)" in capsys.readouterr().err
