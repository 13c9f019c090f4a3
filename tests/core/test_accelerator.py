"""Accelerator guards that can be tested without one: the self-check (with faults injected into the "device"
side, which runs float32 while the CPU reference runs float64), the selectable attention, the MPS memory cap,
the gated EMA update and the schedule's device copy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ddpm_studio.core import accelerator_check, device, unet_blocks
from ddpm_studio.core.accelerator_check import OP_GROUPS, check_device
from ddpm_studio.core.ema import EMA
from ddpm_studio.core.schedules import NoiseSchedule
from ddpm_studio.core.unet import UNet, preset_config
from ddpm_studio.core.unet_blocks import attention, use_attention

CPU = torch.device("cpu")


def only_float32(fault):
    """Wrap ``fn`` so that ``fault`` changes its result on the float32 side (the "device") alone."""

    def wrap(fn):
        def faulty(*args, **kwargs):
            out = fn(*args, **kwargs)
            return fault(out) if out.dtype == torch.float32 else out

        return faulty

    return wrap


class NaNGradient(torch.autograd.Function):
    """Identity forward, NaN backward: GroupNorm's MPS failure (pytorch 88331) in miniature."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, float("nan"))


# ---------------------------------------------------------------------------------------------- the self-check
def test_the_cpu_agrees_with_itself():
    check = check_device(CPU)
    assert check.ok and check.network.ok and check.network.error < 1e-5
    assert check.groups == () and check.warning is None and not check.suggest_cpu


@pytest.mark.parametrize("impl", ["sdpa", "math"])
def test_a_wrong_group_norm_forward_is_named(monkeypatch, impl):
    monkeypatch.setattr(F, "group_norm", only_float32(lambda out: out + 0.3)(F.group_norm))
    check = check_device(CPU, attention_impl=impl)
    assert not check.ok and check.suggest_cpu
    assert check.failed_groups == ("GroupNorm",)
    assert [g.name for g in check.groups] == list(OP_GROUPS)
    assert "GroupNorm" in check.warning and "Train on the CPU instead" in check.warning


def test_a_nan_group_norm_backward_is_named(monkeypatch):
    monkeypatch.setattr(F, "group_norm", only_float32(NaNGradient.apply)(F.group_norm))
    check = check_device(CPU)
    assert not check.ok and check.network.error == float("inf")
    assert check.failed_groups == ("GroupNorm",)
    assert "NaN or infinite" in check.warning


def test_a_wrong_attention_is_named(monkeypatch):
    monkeypatch.setattr(unet_blocks, "attention", only_float32(lambda out: out * 1.5)(unet_blocks.attention))
    check = check_device(CPU)
    assert check.failed_groups == ("attention",)


def test_an_op_the_device_cannot_run_fails_the_check(monkeypatch):
    def unsupported(*args, **kwargs):
        if args[0].dtype == torch.float32:
            raise NotImplementedError("The operator 'aten::silu' is not currently implemented for the MPS device")
        return torch.nn.functional.__dict__["_silu_real"](*args, **kwargs)

    monkeypatch.setitem(F.__dict__, "_silu_real", F.silu)
    monkeypatch.setattr(F, "silu", unsupported)
    check = check_device(CPU)
    assert not check.ok and "SiLU" in check.failed_groups


def test_the_check_leaves_the_random_stream_alone():
    torch.manual_seed(3)
    check_device(CPU)
    after = torch.rand(3)
    torch.manual_seed(3)
    assert torch.equal(after, torch.rand(3))


def test_summary_is_plain_data(monkeypatch):
    monkeypatch.setattr(F, "silu", only_float32(lambda out: out * 0)(F.silu))
    summary = accelerator_check.summary(check_device(CPU))
    assert summary["ok"] is False and summary["failed_groups"] == ["SiLU"] and set(summary["groups"]) == set(OP_GROUPS)


# ---------------------------------------------------------------------------------------------- attention
def test_math_attention_equals_sdpa():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 64, 32, generator=g) for _ in range(3))
    torch.testing.assert_close(attention(q, k, v, "math"), attention(q, k, v, "sdpa"), rtol=1e-5, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, want = attention(q, k, v, "math"), attention(q, k, v, "sdpa")
    torch.testing.assert_close(got.float(), want.float(), rtol=0, atol=3e-2)
    with pytest.raises(ValueError, match="sdpa, math"):
        attention(q, k, v, "flash")


@pytest.mark.parametrize("heads", [1, 2])
def test_the_whole_network_agrees_under_either_attention(heads):
    torch.manual_seed(0)
    model = UNet(preset_config("tiny", num_heads=heads)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1 and not p.any():
                p.normal_(0.0, 0.05)  # the zero-initialised output layers would hide the attention
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10, 900])
    want = model(x, t)
    use_attention(model, "math")
    assert {m.impl for m in model.modules() if isinstance(m, unet_blocks.AttentionBlock)} == {"math"}
    torch.testing.assert_close(model(x, t), want, rtol=1e-4, atol=1e-5)
    assert "impl" not in str(model.state_dict().keys())  # not a weight: checkpoints do not change
    with pytest.raises(ValueError):
        use_attention(model, "fast")


def test_attention_choice(monkeypatch):
    assert device.attention_impl("auto", CPU) == "sdpa"
    assert device.attention_impl("math", CPU) == "math"
    with pytest.raises(ValueError):
        device.attention_impl("flash", CPU)
    # On MPS, auto times both and takes the faster (timing stubbed: no Mac here).
    monkeypatch.setattr(accelerator_check, "time_attention", lambda dev, *shape: {"sdpa": 9.0, "math": 4.0})
    device._faster_attention.cache_clear()
    assert device.attention_impl("auto", torch.device("mps")) == "math"
    device._faster_attention.cache_clear()


def test_attention_timing_runs_on_the_cpu():
    times = accelerator_check.time_attention(CPU, 2, 1, 16, 8, repeats=2)
    assert set(times) == {"sdpa", "math"} and all(t > 0 for t in times.values())


# ---------------------------------------------------------------------------------------------- MPS memory cap
def test_mps_memory_cap(monkeypatch):
    monkeypatch.setattr(device, "mps_available", lambda: False)
    monkeypatch.setattr(device, "_mps_fraction", None)
    assert device.limit_mps_memory(1.0) is None
    calls = []
    monkeypatch.setattr(device, "mps_available", lambda: True)
    monkeypatch.setattr(torch.mps, "set_per_process_memory_fraction", calls.append)
    monkeypatch.setattr(torch.mps, "recommended_max_memory", lambda: 16 * 2**30, raising=False)
    monkeypatch.delenv("PYTORCH_MPS_HIGH_WATERMARK_RATIO", raising=False)
    assert device.limit_mps_memory(0.75) == "MPS memory limited to 0.75 x the recommended working set = 12.0 GB"
    assert device.limit_mps_memory(0) == "MPS memory: no limit (the machine may swap)"
    assert calls == [0.75, 0]
    assert device.default_mps_memory_limit() is None and calls == [0.75, 0]  # a run's own setting stays
    monkeypatch.setattr(device, "_mps_fraction", None)
    assert device.default_mps_memory_limit().startswith("MPS memory limited to 1 x") and calls[-1] == 1.0
    monkeypatch.setenv("PYTORCH_MPS_HIGH_WATERMARK_RATIO", "1.3")
    assert "left to PYTORCH_MPS_HIGH_WATERMARK_RATIO=1.3" in device.limit_mps_memory(1.0)
    assert calls == [0.75, 0, 1.0]  # the user's own environment setting wins


# ---------------------------------------------------------------------------------------------- EMA and schedule
def test_gated_ema_update_is_the_lerp_or_nothing():
    torch.manual_seed(0)
    model = torch.nn.Linear(64, 64)
    plain, gated = EMA(model, 0.99), EMA(model, 0.99)
    for _ in range(12):  # the first updates use lerp's other branch (weight >= 0.5): both must agree there too
        with torch.no_grad():
            model.weight.add_(torch.randn_like(model.weight) * 0.1)
        plain.update(model)
        gated.update(model, gate=torch.ones(()))
    torch.testing.assert_close(gated.model.weight, plain.model.weight, rtol=1e-6, atol=1e-7)
    before = [p.clone() for p in gated.model.parameters()]
    gated.update(model, gate=torch.zeros(()))
    assert all(torch.equal(a, b) for a, b in zip(before, gated.model.parameters(), strict=True))


def test_schedule_to_device_keeps_every_table():
    schedule = NoiseSchedule.create("cosine", 50)
    moved = schedule.to("cpu")
    assert moved.name == "cosine" and moved.num_timesteps == 50
    assert torch.equal(moved.posterior_mean_coef2, schedule.posterior_mean_coef2)
    if torch.cuda.is_available():
        assert schedule.to("cuda").betas.device.type == "cuda"
