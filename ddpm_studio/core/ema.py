"""Exponential moving average of the weights, the model that samples look best from.

Kept as a full frozen copy of the network (not shadow tensors swapped in and out), so a
preview can sample from it while the training copy is untouched, with one batched
``_foreach_lerp_`` per update instead of a Python loop over parameters.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class EMA:
    """θ_ema ← d·θ_ema + (1-d)·θ, with warm-up d_n = min(decay, (1+n)/(10+n)) (as in TF's EMA)."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1) (got {decay})")
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self) -> float:
        """The decay the next update will use."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, model: nn.Module, gate: torch.Tensor | None = None) -> None:
        """Move the average towards ``model``'s current weights; buffers are copied.

        ``gate``: a 0-dim tensor on the weights' device, 1 to apply this update and 0 to leave the average as it
        is, decided on the device so the caller need not wait for the GPU (the training loop's refused-step flag).
        Gated, the step is θ_ema + gate·(1-d)·(θ - θ_ema) in three multi-tensor ops, since lerp's fast path
        takes its weight from the host; it equals the lerp to float32 rounding.
        """
        lerp_towards(list(self.model.parameters()), [p.detach() for p in model.parameters()],
                     1.0 - self.current_decay(), gate)
        for b_ema, b in zip(self.model.buffers(), model.buffers(), strict=True):
            b_ema.copy_(b)
        self.num_updates += 1

    def discard_updates(self, count: int) -> None:
        """Forget that the last ``count`` updates happened: they were gated off (refused on the device), so the
        average is already as it was, but the step count that sets the warm-up went on."""
        self.num_updates -= min(count, self.num_updates)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "num_updates": self.num_updates, "decay": self.decay}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.num_updates = int(state["num_updates"])


def lerp_towards(averages: list[torch.Tensor], params: list[torch.Tensor], weight: float,
                 gate: torch.Tensor | None = None) -> None:
    """averages += weight·(params - averages), in place; with ``gate`` (a 0-dim 0/1 tensor on the device) the
    step is multiplied by it, so a refused training step leaves the averages as they were without a host sync."""
    if gate is None:
        torch._foreach_lerp_(averages, params, weight)
    else:
        delta = torch._foreach_sub(params, averages)
        torch._foreach_mul_(delta, gate * weight)
        torch._foreach_add_(averages, delta)


def thin_evenly(steps: list[int], interval: int, max_count: int) -> tuple[int, list[int]]:
    """(interval, kept steps) after keeping at most ``max_count`` of ``steps``, taken every ``interval`` steps.

    While too many are kept, every other one is dropped (only multiples of the doubled interval stay), so the kept
    ones stay evenly spread over the run and later ones are taken half as often. Shared by the power EMA's snapshots
    and autoguidance's earlier weights (:class:`ddpm_studio.core.autoguidance.EarlyWeights`).
    """
    while len(steps) > max_count:
        interval *= 2
        steps = [s for s in steps if s % interval == 0]
    return interval, steps
