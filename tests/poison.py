"""Faults injected into training for the tests: one training step's loss made NaN or infinite."""

from collections.abc import Callable

import pytest
import torch


def poison_training_loss(monkeypatch: pytest.MonkeyPatch, at_call: int, value: float) -> Callable[..., torch.Tensor]:
    """Multiply the ``at_call``-th training loss (counted from 1) by ``value``; returns the real loss function.

    Validation forwards (previews' and checkpoints', run without gradients) are not counted: they are not steps.
    """
    from ddpm_studio.core import objectives

    real, calls = objectives.per_sample_loss, {"n": 0}

    def poisoned(pred: torch.Tensor, target: torch.Tensor, loss_type: str = "mse") -> torch.Tensor:
        out = real(pred, target, loss_type)
        if not torch.is_grad_enabled():
            return out
        calls["n"] += 1
        return out * value if calls["n"] == at_call else out

    monkeypatch.setattr(objectives, "per_sample_loss", poisoned)
    return real
