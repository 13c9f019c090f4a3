"""The training recipe end to end: power EMA and post-hoc EMA through checkpoints, time budgets, noise levels,
and runs saved before these options existed (they load, resume and sample with their old meaning)."""

import json

import pytest
import torch

from ddpm_studio.cli import main as cli_main
from ddpm_studio.core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ddpm_studio.core.device import choose_device
from ddpm_studio.services import config as c
from ddpm_studio.services import config_files
from ddpm_studio.services import events as ev
from ddpm_studio.services import training as training_mod
from ddpm_studio.services.control import RunControl
from ddpm_studio.services.run_budget import TrainingClock
from ddpm_studio.services.runs import RunFolder
from ddpm_studio.services.sampling import checkpoint_offer, load_for_sampling
from ddpm_studio.services.training import TrainingError, TrainingSession
from tests.services.resume_helpers import straight_and_resumed
from tests.services.test_training import collect

POWER = {"ema": "power", "ema_length": 0.1, "ema_snapshots": 2}
CPU = choose_device("cpu", "off")


def test_power_ema_resume_is_exact(tmp_path, tiny_cfg):
    n = 5
    cfg = tiny_cfg(optim={**POWER, "total_steps": 2 * n, "lr_schedule": "cosine"},
                   diffusion={"noise_levels": "lognormal", "loss_weighting": "edm"})
    straight, resumed = straight_and_resumed(cfg, tmp_path, n)
    for key in straight["model"]:
        assert torch.equal(straight["model"][key], resumed["model"][key]), key
        assert torch.equal(straight["ema"]["model"][key], resumed["ema"]["model"][key]), key
    a, b = straight["phema"], resumed["phema"]
    assert a["num_updates"] == b["num_updates"] == 2 * n and a["snapshot_interval"] == b["snapshot_interval"]
    for wa, wb in zip(a["averages"], b["averages"], strict=True):
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [s["step"] for s in a["snapshots"]] == [s["step"] for s in b["snapshots"]]
    assert straight["ema"]["length"] == 0.1


def test_post_hoc_ema_lengths_through_the_services_api_and_the_cli(tmp_path, tiny_cfg, capsys):
    cfg = tiny_cfg(optim={**POWER, "total_steps": 6})
    collect(TrainingSession(cfg, runs_dir=tmp_path, run_name="p"))
    ckpt = RunFolder(tmp_path / "p").latest_checkpoint().path
    assert checkpoint_offer(ckpt).ema_length == 0.1

    own = load_for_sampling(ckpt, CPU)
    assert own.ema_length == 0.1
    same = load_for_sampling(ckpt, CPU, ema_length=0.1)  # the run's own length, rebuilt: the same weights
    longer = load_for_sampling(ckpt, CPU, ema_length=0.2)
    assert longer.ema_length == 0.2
    for (name, p), q in zip(own.model.state_dict().items(), same.model.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    assert any(not torch.allclose(p, r) for p, r in zip(own.model.parameters(), longer.model.parameters(), strict=True))
    with pytest.raises(c.ConfigError, match="EMA length must be between"):
        load_for_sampling(ckpt, CPU, ema_length=0.5)

    out = tmp_path / "samples"
    assert cli_main(["sample", str(ckpt), "--num-images", "2", "--sampler", "ddim", "--steps", "3",
                     "--ema-length", "0.2", "--out", str(out), "--device", "cpu"]) == 0
    assert len(list(out.rglob("sample_0000*.png"))) == 2
    # Each length's images in a folder of their own, and an evaluation says which length it scored.
    assert cli_main(["sample", str(ckpt), "--num-images", "1", "--sampler", "ddim", "--steps", "3",
                     "--ema-length", "0.05", "--out", str(out), "--device", "cpu"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 2 and "-ema0.05-" in names[0] and "-ema0.2-" in names[1], names
    capsys.readouterr()
    assert cli_main(["evaluate", str(ckpt), "--num-images", "2", "--sampler", "ddim", "--steps", "3", "--fid", "off",
                     "--no-memorization", "--ema-length", "0.2", "--out", str(tmp_path / "ev"), "--device", "cpu"]) == 0
    assert "EMA length 0.2" in capsys.readouterr().err
    report = json.loads(next((tmp_path / "ev").rglob("evaluation.json")).read_text())
    assert report["ema_length"] == 0.2


def test_a_fixed_ema_run_says_it_cannot_rebuild_ema_lengths(tmp_path, tiny_cfg, capsys):
    collect(TrainingSession(tiny_cfg(optim={"ema": "fixed", "total_steps": 2}), runs_dir=tmp_path, run_name="f"))
    ckpt = RunFolder(tmp_path / "f").latest_checkpoint().path
    assert checkpoint_offer(ckpt).ema_length is None
    with pytest.raises(CheckpointError, match="fixed-decay EMA"):
        load_for_sampling(ckpt, CPU, ema_length=0.1)
    assert cli_main(["sample", str(ckpt), "--ema-length", "0.1", "--num-images", "1", "--device", "cpu",
                     "--out", str(tmp_path / "s")]) == 1
    assert "fixed-decay EMA" in capsys.readouterr().err


def test_damaged_ema_averages_are_refused_clearly(tmp_path, tiny_cfg):
    collect(TrainingSession(tiny_cfg(optim={**POWER, "total_steps": 3}), runs_dir=tmp_path, run_name="d"))
    path = RunFolder(tmp_path / "d").latest_checkpoint().path
    ckpt = load_checkpoint(path)
    ckpt["phema"]["averages"][1] = {"conv_in.weight": torch.zeros(3)}
    bad = tmp_path / "bad.pt"
    save_checkpoint(bad, {k: v for k, v in ckpt.items() if k not in ("format", "format_version")})
    with pytest.raises(CheckpointError, match="do not fit"):
        load_for_sampling(bad, CPU, ema_length=0.2)
    ckpt["phema"] = {"tracked": "x"}
    save_checkpoint(bad, {k: v for k, v in ckpt.items() if k not in ("format", "format_version")})
    with pytest.raises(CheckpointError, match="stored EMA averages are not readable"):
        load_for_sampling(bad, CPU, ema_length=0.2)
    assert load_for_sampling(bad, CPU).ema_length == 0.1  # its own EMA weights are still usable


def test_the_ema_kind_cannot_change_when_resuming(tmp_path, tiny_cfg):
    collect(TrainingSession(tiny_cfg(optim={"ema": "fixed", "total_steps": 2}), runs_dir=tmp_path, run_name="k"))
    ckpt = RunFolder(tmp_path / "k").latest_checkpoint().path
    with pytest.raises(TrainingError, match="EMA kind cannot change"):
        collect(TrainingSession(resume_from=ckpt, overrides={"optim": {"ema": "power", "total_steps": 4}}))


class SteppedClock:
    """A clock the test moves: each training step takes ``per_step`` seconds, pauses take no running time."""

    def __init__(self, per_step: float) -> None:
        self.now, self.per_step = 0.0, per_step

    def __call__(self) -> float:
        return self.now


def test_a_time_budget_ends_the_run_on_time_fits_the_lr_and_resumes_its_clock(tmp_path, tiny_cfg, monkeypatch):
    clock = SteppedClock(per_step=10.0)
    monkeypatch.setattr(training_mod, "TrainingClock", lambda: TrainingClock(clock=clock))
    real_step = TrainingSession._train_step

    def timed_step(self):
        clock.now += clock.per_step  # one training step = 10 s on this clock
        return real_step(self)

    monkeypatch.setattr(TrainingSession, "_train_step", timed_step)
    cfg = tiny_cfg(optim={"train_minutes": 1.0, "lr_schedule": "cosine", "warmup_steps": 0, "lr": 1e-3},
                   schedule={"preview_every": 4})
    assert (cfg.optim.train_minutes, cfg.optim.total_steps) == (1.0, 10)  # the fixture's 10 steps stay a cap
    cfg = c.check(c.from_dict({"optim": {"total_steps": 1000, "train_minutes": 1.0}}, base=cfg))
    events = collect(TrainingSession(cfg, runs_dir=tmp_path, run_name="t"))
    started = next(e for e in events if isinstance(e, ev.RunStarted))
    assert started.time_budget_s == 60.0
    progress = [e for e in events if isinstance(e, ev.TrainProgress)]
    assert [p.step for p in progress] == [1, 2, 3, 4, 5, 6]  # 6 steps of 10 s fill the minute
    assert events[-1].reason == "completed"
    # The decay follows the clock: step k reads it at k·10 s (this fake step moves the clock before training).
    for p in progress:
        frac = p.step * 10.0 / 60.0
        assert p.lr == pytest.approx(1e-3 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * frac)).item()), rel=1e-6)
    assert progress[-1].eta_seconds == 0.0 and progress[2].eta_seconds == pytest.approx(30.0)
    previews = [e.step for e in events if isinstance(e, ev.PreviewReady)]
    assert previews == [0, 4, 6]  # ... and a timed run ends on a preview of its last step
    ckpt = load_checkpoint(RunFolder(tmp_path / "t").latest_checkpoint().path)
    assert ckpt["step"] == 6 and ckpt["train_seconds"] == pytest.approx(60.0)

    # Resume with a longer budget: the clock goes on from 60 s, so 3 more steps fill 1.5 minutes.
    resumed = collect(TrainingSession(resume_from=RunFolder(tmp_path / "t").latest_checkpoint().path,
                                      overrides={"optim": {"train_minutes": 1.5}}))
    assert [p.step for p in resumed if isinstance(p, ev.TrainProgress)] == [7, 8, 9]
    assert load_checkpoint(RunFolder(tmp_path / "t").latest_checkpoint().path)["train_seconds"] == pytest.approx(90.0)


def test_paused_time_does_not_count_against_the_budget(tmp_path, tiny_cfg, monkeypatch):
    clock = SteppedClock(per_step=10.0)
    monkeypatch.setattr(training_mod, "TrainingClock", lambda: TrainingClock(clock=clock))
    real_step = TrainingSession._train_step

    def timed_step(self):
        clock.now += clock.per_step
        return real_step(self)

    monkeypatch.setattr(TrainingSession, "_train_step", timed_step)
    control = RunControl()
    cfg = c.check(c.from_dict({"optim": {"total_steps": 100, "train_minutes": 0.5}}, base=tiny_cfg()))

    def on_event(e):
        if isinstance(e, ev.TrainProgress) and e.step == 1:
            control.pause()
        if isinstance(e, ev.RunPaused):
            clock.now += 3600.0  # an hour paused
            control.resume()

    events = collect(TrainingSession(cfg, runs_dir=tmp_path, run_name="p", control=control), on_event)
    assert [p.step for p in events if isinstance(p, ev.TrainProgress)] == [1, 2, 3]
    assert events[-1].reason == "completed"


def _strip_new_settings(cfg_dict):
    """A config as DDPM Studio saved it before the recipe options existed."""
    for section, keys in {"diffusion": ("noise_levels", "loss_weighting", "lognormal_mean", "lognormal_std"),
                          "optim": ("ema", "ema_length", "ema_snapshots", "train_minutes", "adam_beta1", "adam_beta2")
                          }.items():
        for key in keys:
            cfg_dict[section].pop(key)
    return cfg_dict


def test_checkpoints_from_before_the_recipe_options_resume_and_sample_with_their_old_meaning(tmp_path, tiny_cfg):
    cfg = tiny_cfg(optim={"ema": "fixed", "total_steps": 2}, diffusion={"loss_weighting": "min-snr", "min_snr_gamma": 5.0})
    collect(TrainingSession(cfg, runs_dir=tmp_path, run_name="old"))
    run = RunFolder(tmp_path / "old")
    path = run.latest_checkpoint().path
    ckpt = load_checkpoint(path)
    ckpt["config"] = _strip_new_settings(ckpt["config"])
    ckpt.pop("train_seconds")
    save_checkpoint(path, {k: v for k, v in ckpt.items() if k not in ("format", "format_version")})
    text = "\n".join(line for line in run.config_path.read_text().splitlines()
                     if line.split(" = ")[0] not in ("noise_levels", "loss_weighting", "ema", "train_minutes", "adam_beta1",
                                                     "adam_beta2", "ema_length", "ema_snapshots"))
    run.config_path.write_text(text)

    old = config_files.load_config_file(run.config_path, saved_run=True)
    for saved in (old, load_for_sampling(path, CPU).cfg):
        assert saved.optim.ema == "fixed" and saved.optim.train_minutes == 0
        assert (saved.optim.adam_beta1, saved.optim.adam_beta2) == (0.9, 0.999)
        assert saved.diffusion.noise_levels == "uniform"
        assert saved.diffusion.loss_weighting == "min-snr"  # it had γ = 5 > 0: Min-SNR was on
    assert load_for_sampling(path, CPU).ema_length is None
    session = TrainingSession(resume_from=path, overrides={"optim": {"total_steps": 4}})
    events = collect(session)
    assert events[-1].reason == "completed" and session.cfg.optim.ema == "fixed"
    assert session.training_step.loss_weights is not None and session.training_step.timestep_probs is None
    # Without γ the old meaning was the plain loss.
    assert config_files.with_legacy_defaults({"diffusion": {"min_snr_gamma": 0.0}})["diffusion"]["loss_weighting"] == "uniform"
