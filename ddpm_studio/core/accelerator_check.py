"""Does this GPU compute our network correctly? One forward + backward against the CPU, at the start of a run.

Why: a wrong kernel does not crash, it trains garbage. Apple's MPS backend has had GroupNorm's backward
give NaN gradients or fall back to the CPU (pytorch issues 88331, 99981, 182805) and LayerNorm's give
wrong ones (183825); a new GPU, driver or PyTorch build can have its own. A tiny U-Net (GroupNorm,
attention, SiLU, convolutions, the time-embedding linears, nearest upsampling) is run forward and backward on
the device and on the CPU with the same weights and inputs, which takes well under a second; when they
disagree, each op group is checked alone, so the warning can name the culprit and offer the CPU.

How it compares: the device runs float32; the reference runs on the CPU in float64 from the same float32
weights and inputs. Each result (the output, the input's gradient, the weights' gradients) is compared by
relative L2 error ‖device - reference‖ / ‖reference‖. :data:`TOLERANCE` is 1e-2: float32 arithmetic lands
near 1e-6 and TF32 (CUDA's default for convolutions) near 1e-3, while the failures this guards against are
NaN, infinities, or errors of order 1. A small real error may pass: this is a smoke alarm, not a proof.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where it is used: events carry a DeviceCheck and must import without it
    import torch
    from torch import Tensor

TOLERANCE = 1e-2
#: The op groups checked one by one when the whole network disagrees, in the order they are reported.
OP_GROUPS = ("GroupNorm", "attention", "SiLU", "convolution", "linear", "nearest upsampling")


@dataclass(frozen=True)
class GroupResult:
    """One op group's (or the whole network's) largest relative error over its output and gradients."""

    name: str
    error: float  # inf when anything was not finite
    ok: bool


@dataclass(frozen=True)
class DeviceCheck:
    """The outcome: ``ok``, the whole network's error, and, when that fails, each op group's."""

    device: str
    ok: bool
    network: GroupResult
    groups: tuple[GroupResult, ...]
    seconds: float
    tolerance: float = TOLERANCE

    @property
    def failed_groups(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.groups if not g.ok)

    @property
    def suggest_cpu(self) -> bool:
        """Whether to offer the CPU instead (the GUI's "Use CPU" button, the CLI's hint)."""
        return not self.ok

    @property
    def warning(self) -> str | None:
        """A sentence for the user when the check failed, naming the op groups; None when it passed."""
        if self.ok:
            return None
        culprits = ", ".join(self.failed_groups) or "the network as a whole (no single op group on its own)"
        err = self.network.error
        how = ("gave NaN or infinite values" if math.isinf(err)
               else f"differs from the CPU by {err:.2g} (tolerance {self.tolerance:g})")
        return (f"The {self.device} device computes this network wrongly: one training step of a tiny U-Net {how}; "
                f"op group(s) at fault: {culprits}. Training on it may give NaN or garbage. Train on the CPU instead "
                "(Device: cpu, or --device cpu), or update PyTorch.")


def is_accelerator(device: torch.device) -> bool:
    """Every device but the CPU gets the check."""
    return device.type != "cpu"


def check_device(device: torch.device, attention_impl: str = "sdpa", tolerance: float = TOLERANCE) -> DeviceCheck:
    """Run the tiny network (and, if it disagrees, each op group) on ``device`` and on the CPU; compare."""
    import torch

    t0 = time.perf_counter()
    network = _compare("network", functools.partial(_network_probe, attention_impl=attention_impl), device, tolerance)
    groups: tuple[GroupResult, ...] = ()
    if not network.ok:
        probes = _group_probes(attention_impl)
        groups = tuple(_compare(name, probes[name], device, tolerance) for name in OP_GROUPS)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return DeviceCheck(str(device), network.ok, network, groups, time.perf_counter() - t0, tolerance)


# ------------------------------------------------------------------------------------------------ comparing
Probe = Callable[["torch.device", "torch.dtype"], list["Tensor"]]


def _compare(name: str, probe: Probe, device: torch.device, tolerance: float) -> GroupResult:
    """Run ``probe`` on the device in float32 and on the CPU in float64; the largest relative error of its results."""
    import torch

    try:
        got = [t.detach().to("cpu", torch.float64) for t in probe(device, torch.float32)]
    except RuntimeError:  # an op the device cannot run at all is as wrong as it gets
        return GroupResult(name, math.inf, False)
    want = probe(torch.device("cpu"), torch.float64)
    error = max(_relative_error(g, w) for g, w in zip(got, want, strict=True))
    return GroupResult(name, error, error <= tolerance)


def _relative_error(got: Tensor, want: Tensor) -> float:
    got, want = got.detach(), want.detach()
    if not bool(got.isfinite().all()):
        return math.inf
    return float((got - want).norm()) / max(float(want.norm()), 1e-12)


def _random(shape: tuple[int, ...], seed: int, device: torch.device, dtype: torch.dtype, scale: float = 1.0,
            grad: bool = True) -> Tensor:
    """The same values on every device: drawn in float32 on the CPU from ``seed``, then moved and cast."""
    import torch

    values = torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale
    return values.to(device=device, dtype=dtype).requires_grad_(grad)


def _backward(out: Tensor, inputs: list[Tensor], seed: int) -> list[Tensor]:
    """The output, and the gradients of a fixed random projection of it with respect to ``inputs``."""
    import torch

    weight = _random(tuple(out.shape), seed, out.device, out.dtype, grad=False)
    grads = torch.autograd.grad((out * weight).sum(), inputs)
    return [out, *grads]


# ------------------------------------------------------------------------------------------------ probes
def _network_probe(device: torch.device, dtype: torch.dtype, attention_impl: str = "sdpa") -> list[Tensor]:
    """A 2-level U-Net at 8x8 (GroupNorm, attention at 4x4 and in the middle, SiLU, nearest upsampling), with
    random weights everywhere (the paper's zero-initialised output layers would hide every gradient behind them)."""
    import torch

    from ddpm_studio.core.unet import UNet, UNetConfig
    from ddpm_studio.core.unet_blocks import use_attention

    with torch.random.fork_rng(devices=[]):  # building draws initial weights: leave the caller's random stream alone
        model = UNet(UNetConfig(image_size=8, in_channels=3, base_channels=32, channel_mults=(1, 2), num_res_blocks=1,
                                attention_resolutions=(4,), dropout=0.0))
    with torch.no_grad():
        for i, (name, p) in enumerate(model.named_parameters()):
            fan_in = p[0].numel() if p.ndim > 1 else 1
            base = 1.0 if name.endswith("weight") and p.ndim == 1 else 0.0  # GroupNorm scales around 1
            p.copy_(base + _random(tuple(p.shape), 1000 + i, torch.device("cpu"), torch.float32,
                                   scale=1.0 / math.sqrt(fan_in) if p.ndim > 1 else 0.1, grad=False))
    model = model.to(device=device, dtype=dtype)
    use_attention(model, attention_impl)
    x = _random((2, 3, 8, 8), 1, device, dtype)
    t = torch.tensor([3, 700], device=device)
    params = list(model.parameters())
    out, x_grad, *param_grads = _backward(model(x, t), [x, *params], 2)
    return [out, x_grad, torch.cat([g.flatten() for g in param_grads])]


def _group_probes(attention_impl: str) -> dict[str, Probe]:
    """One small forward + backward per op group, at the widths the network uses."""
    import torch.nn.functional as F

    from ddpm_studio.core import unet_blocks

    def group_norm(device: torch.device, dtype: torch.dtype) -> list[Tensor]:
        x = _random((2, 64, 8, 8), 10, device, dtype)
        w, b = _random((64,), 11, device, dtype, 0.1), _random((64,), 12, device, dtype, 0.1)
        with_scale = w + 1.0
        return _backward(F.group_norm(x, unet_blocks.GROUPS, with_scale, b, unet_blocks.NORM_EPS), [x, w, b], 13)

    def attention(device: torch.device, dtype: torch.dtype) -> list[Tensor]:
        q, k, v = (_random((2, 1, 16, 64), s, device, dtype) for s in (20, 21, 22))
        return _backward(unet_blocks.attention(q, k, v, attention_impl), [q, k, v], 23)

    def silu(device: torch.device, dtype: torch.dtype) -> list[Tensor]:
        x = _random((2, 64, 8, 8), 30, device, dtype)
        return _backward(F.silu(x), [x], 31)

    def convolution(device: torch.device, dtype: torch.dtype) -> list[Tensor]:
        x = _random((2, 32, 8, 8), 40, device, dtype)
        w, b = _random((64, 32, 3, 3), 41, device, dtype, 1 / 17), _random((64,), 42, device, dtype, 0.1)
        return _backward(F.conv2d(x, w, b, padding=1), [x, w, b], 43)

    def linear(device: torch.device, dtype: torch.dtype) -> list[Tensor]:
        x = _random((16, 128), 50, device, dtype)
        w, b = _random((192, 128), 51, device, dtype, 1 / 11), _random((192,), 52, device, dtype, 0.1)
        return _backward(F.linear(x, w, b), [x, w, b], 53)

    def upsample(device: torch.device, dtype: torch.dtype) -> list[Tensor]:
        x = _random((2, 64, 4, 4), 60, device, dtype)
        return _backward(F.interpolate(x, scale_factor=2.0, mode="nearest"), [x], 61)

    probes = {"GroupNorm": group_norm, "attention": attention, "SiLU": silu, "convolution": convolution,
              "linear": linear, "nearest upsampling": upsample}
    assert tuple(probes) == OP_GROUPS
    return probes


# ------------------------------------------------------------------------------------------------ attention timing
def time_attention(device: torch.device, batch: int, heads: int, tokens: int, head_dim: int,
                   repeats: int = 5) -> dict[str, float]:
    """Median milliseconds of one attention forward + backward by each implementation at this shape on ``device``."""
    import statistics

    import torch

    from ddpm_studio.core.choices import ATTENTION_IMPLS
    from ddpm_studio.core.unet_blocks import attention

    q, k, v = (_random((batch, heads, tokens, head_dim), s, device, torch.float32) for s in (70, 71, 72))
    times: dict[str, float] = {}
    for impl in ATTENTION_IMPLS:
        samples = []
        for i in range(repeats + 1):
            _sync(device)
            t0 = time.perf_counter()
            attention(q, k, v, impl).sum().backward()
            _sync(device)
            if i:  # the first call loads kernels
                samples.append((time.perf_counter() - t0) * 1000)
        times[impl] = statistics.median(samples)
    return times


def _sync(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def summary(check: DeviceCheck) -> dict[str, Any]:
    """Plain data for logs and JSON."""
    return {"device": check.device, "ok": check.ok, "network_error": check.network.error,
            "groups": {g.name: g.error for g in check.groups}, "failed_groups": list(check.failed_groups),
            "seconds": round(check.seconds, 3), "tolerance": check.tolerance}
