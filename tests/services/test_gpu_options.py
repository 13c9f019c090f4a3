"""The GPU-facing settings of a training run, on the CPU: the accelerator self-check's warning, channels_last,
the attention choice, and what a torch.compile failure tells the user."""

import pytest
import torch
import torch.nn.functional as F

from ddpm_studio.cli import main
from ddpm_studio.services import events as ev
from ddpm_studio.services import training_setup
from ddpm_studio.services.training import TrainingError, TrainingSession
from tests.services.test_training import collect as run


def faulty_float32_group_norm(monkeypatch):
    """The "device" side of the self-check runs float32 (the CPU reference float64): break GroupNorm there."""
    real = F.group_norm

    def group_norm(*args, **kwargs):
        out = real(*args, **kwargs)
        return out + 0.3 if out.dtype == torch.float32 else out

    monkeypatch.setattr(F, "group_norm", group_norm)


def test_a_failed_device_check_warns_and_offers_the_cpu(tmp_path, tiny_cfg, monkeypatch):
    monkeypatch.setattr(training_setup, "is_accelerator", lambda device: True)  # treat this CPU as an accelerator
    faulty_float32_group_norm(monkeypatch)
    events = run(TrainingSession(tiny_cfg(optim={"total_steps": 1, "mixed_precision": "off"}), runs_dir=tmp_path))
    started = next(e for e in events if isinstance(e, ev.RunStarted))
    assert started.device_check is not None and started.device_check.suggest_cpu
    assert started.device_check.failed_groups == ("GroupNorm",)
    assert len(started.warnings) == 1 and "GroupNorm" in started.warnings[0] and "--device cpu" in started.warnings[0]
    assert any(isinstance(e, ev.Status) and e.message.startswith("Checking the cpu device") for e in events)


def test_the_cli_prints_the_device_warning(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(training_setup, "is_accelerator", lambda device: True)
    faulty_float32_group_norm(monkeypatch)
    code = main(["train", "--source", "demo", "--image-size", "16", "--preset", "tiny", "--timesteps", "50",
                 "--batch-size", "4", "--total-steps", "1", "--device", "cpu", "--mixed-precision", "off",
                 "--preview-every", "0", "--checkpoint-minutes", "0", "--runs-dir", str(tmp_path), "--name", "w"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "WARNING: The cpu device computes this network wrongly" in err and "GroupNorm" in err


def test_a_cpu_run_skips_the_check(tmp_path, tiny_cfg):
    started = next(e for e in run(TrainingSession(tiny_cfg(optim={"total_steps": 1}), runs_dir=tmp_path))
                   if isinstance(e, ev.RunStarted))
    assert started.device_check is None and started.warnings == ()


def test_channels_last_and_math_attention_train_the_same_model_to_rounding(tmp_path, tiny_cfg):
    sessions, losses = {}, {}
    for name, optim in {"plain": {}, "fast": {"channels_last": True, "attention": "math"}}.items():
        cfg = tiny_cfg(optim={"total_steps": 3, "mixed_precision": "off", **optim}, model={"preset": "tiny", "dropout": 0.0})
        sessions[name] = TrainingSession(cfg, runs_dir=tmp_path, run_name=name)
        losses[name] = [e.loss for e in run(sessions[name]) if isinstance(e, ev.TrainProgress)]
    fast = sessions["fast"].model
    assert fast.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert {m.impl for m in fast.modules() if hasattr(m, "impl")} == {"math"}
    assert losses["fast"][0] == pytest.approx(losses["plain"][0], rel=1e-5)  # same weights, same batch
    assert losses["fast"] == pytest.approx(losses["plain"], rel=1e-3)
    # Adam moves a weight by up to ~lr per step whatever its gradient's size, so rounding-level gradient
    # differences can show as ~lr (1e-3) in weights whose gradients are near zero: compare at that scale.
    for key, value in sessions["plain"].model.state_dict().items():
        torch.testing.assert_close(fast.state_dict()[key], value, rtol=0, atol=3e-3, msg=key)


def test_a_torch_compile_failure_says_to_turn_it_off(tmp_path, tiny_cfg, monkeypatch):
    import torch._dynamo.exc

    def fake_compile(module, mode=None):
        assert mode == "default"

        def fail(*args, **kwargs):
            raise torch._dynamo.exc.InternalTorchDynamoError("inductor needs a C++ compiler")

        return fail

    monkeypatch.setattr(torch, "compile", fake_compile)
    with pytest.raises(TrainingError, match=r"torch.compile failed on this machine \(InternalTorchDynamoError: inductor "
                                            r"needs a C\+\+ compiler\)\. Set Compile to off"):
        run(TrainingSession(tiny_cfg(optim={"compile": "default"}), runs_dir=tmp_path))
