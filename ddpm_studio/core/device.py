"""Pick the compute device and the mixed-precision mode, and say why."""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass

import torch

from ddpm_studio.core.choices import ATTENTION_CHOICES, DEVICE_CHOICES, PRECISION_CHOICES

#: Apple GPUs share the machine's memory. By default PyTorch lets an MPS process grow to 1.7x Metal's recommended
#: working set (PYTORCH_MPS_HIGH_WATERMARK_RATIO), by which point macOS swaps and a run crawls instead of failing;
#: capped at 1.0x, a batch too large fails at once with "MPS backend out of memory" and the advice that goes with it.
DEFAULT_MPS_MEMORY_FRACTION = 1.0


@dataclass(frozen=True)
class DeviceChoice:
    """The chosen device, autocast dtype (None = float32) and a sentence for the user."""

    device: torch.device
    autocast_dtype: torch.dtype | None
    reason: str

    @property
    def precision_name(self) -> str:
        return {None: "float32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast"}[self.autocast_dtype]

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        """Autocast context for forward passes, or a no-op in float32."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)


def mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def cpu_has_fast_bf16() -> bool:
    """True when oneDNN has native bf16 kernels (AVX512-BF16 / AMX): then bf16 autocast is ~1.5-2x faster."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def choose_device(requested: str = "auto", precision: str = "auto") -> DeviceChoice:
    """CUDA, then MPS, then CPU unless ``requested`` names one; raise ValueError if it is absent."""
    if requested not in DEVICE_CHOICES:
        raise ValueError(f"Unknown device {requested!r}; choose one of {DEVICE_CHOICES}")
    if precision not in PRECISION_CHOICES:
        raise ValueError(f"Unknown precision {precision!r}; choose one of {PRECISION_CHOICES}")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("CUDA was requested but no CUDA GPU is available (torch.cuda.is_available() is False)")
    if requested == "mps" and not mps_available():
        raise ValueError("MPS was requested but Apple's Metal backend is not available on this machine")

    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        device = torch.device("cuda")
        why = f"CUDA GPU {torch.cuda.get_device_name(0)}" + (" (auto)" if requested == "auto" else " (requested)")
    elif requested == "mps" or (requested == "auto" and mps_available()):
        device = torch.device("mps")
        why = "Apple GPU via MPS" + (" (auto)" if requested == "auto" else " (requested)")
    else:
        device = torch.device("cpu")
        why = "CPU (requested)" if requested == "cpu" else "CPU (no CUDA or MPS GPU found)"

    dtype, prec_why = _choose_precision(device, precision)
    return DeviceChoice(device, dtype, f"{why}; {prec_why}")


def _choose_precision(device: torch.device, precision: str) -> tuple[torch.dtype | None, str]:
    if precision == "off":
        return None, "float32 (mixed precision off)"
    if precision == "bf16":
        return torch.bfloat16, "bf16 autocast (requested)"
    if precision == "fp16":
        if device.type == "cpu":
            raise ValueError("fp16 autocast is not supported for training on CPU; use bf16 or off")
        return torch.float16, "fp16 autocast with loss scaling (requested)"
    # auto
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, "bf16 autocast (GPU supports bf16)"
        return torch.float16, "fp16 autocast with loss scaling (GPU lacks bf16)"
    if device.type == "mps":
        # fp16 autocast on MPS has produced NaNs in GroupNorm-heavy U-Nets; float32 is the safe default.
        return None, "float32 (the stable choice on MPS)"
    if cpu_has_fast_bf16():
        return torch.bfloat16, "bf16 autocast (this CPU has native bf16 instructions)"
    return None, "float32 (this CPU has no native bf16)"


def limit_mps_memory(fraction: float) -> str | None:
    """Cap this process's MPS allocations at ``fraction`` x Metal's recommended working set (0 = no cap).

    Returns a sentence saying what was set, or None off MPS. A PYTORCH_MPS_HIGH_WATERMARK_RATIO in the
    environment is the user's own choice and wins.
    """
    if not mps_available():
        return None
    if os.environ.get("PYTORCH_MPS_HIGH_WATERMARK_RATIO"):
        return f"MPS memory limit left to PYTORCH_MPS_HIGH_WATERMARK_RATIO={os.environ['PYTORCH_MPS_HIGH_WATERMARK_RATIO']}"
    torch.mps.set_per_process_memory_fraction(fraction)
    global _mps_fraction
    _mps_fraction = fraction
    if fraction == 0:
        return "MPS memory: no limit (the machine may swap)"
    recommended = getattr(torch.mps, "recommended_max_memory", None)
    size = f" = {fraction * recommended() / 2**30:.1f} GB" if recommended else ""
    return f"MPS memory limited to {fraction:g} x the recommended working set{size}"


_mps_fraction: float | None = None  # what limit_mps_memory set in this process


def default_mps_memory_limit() -> str | None:
    """The default cap for a process that set none (sampling from the CLI); a training run's own setting stays."""
    return limit_mps_memory(DEFAULT_MPS_MEMORY_FRACTION) if _mps_fraction is None else None


def attention_impl(requested: str, device: torch.device, shape: tuple[int, int, int, int] = (8, 1, 256, 128)) -> str:
    """The attention implementation to use: ``requested`` unless "auto"; auto is "sdpa", except on MPS, where
    both are timed once per process at ``shape`` (batch, heads, tokens, head width) and the faster is used."""
    if requested not in ATTENTION_CHOICES:
        raise ValueError(f"Unknown attention {requested!r}; choose one of {', '.join(ATTENTION_CHOICES)}")
    if requested != "auto":
        return requested
    if device.type != "mps":
        return "sdpa"
    return _faster_attention(device.type, shape)


@functools.lru_cache(maxsize=8)
def _faster_attention(device_type: str, shape: tuple[int, int, int, int]) -> str:
    from ddpm_studio.core.accelerator_check import time_attention

    times = time_attention(torch.device(device_type), *shape)
    return min(times, key=times.__getitem__)
