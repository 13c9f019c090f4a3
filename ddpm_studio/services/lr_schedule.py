"""The learning rate at each step: a linear warm-up, then a decay fitted to the run's planned length.

The decay follows the run's *progress* p ∈ [0, 1], the larger of two fractions: steps after the warm-up out
of those planned (``total_steps``), and training time used out of a time budget (``train_minutes``, when set;
see :mod:`ddpm_studio.services.run_budget`). So a 10-minute run anneals to zero at minute 10 however fast the
machine is, and a step run exactly as before this existed.

Why decay at all: at a fixed small budget a rate that falls to zero over the run is the largest single gain in
sample quality we measured (docs/quality_per_compute.md), as in the diffusers training examples (cosine to
zero) and EDM's ablations (Karras et al. 2022, Table 2, config B).
"""

from __future__ import annotations

import math

from ddpm_studio.services.config import OptimConfig


def decay_progress(step: int, optim: OptimConfig, time_fraction: float = 0.0) -> float:
    """p ∈ [0, 1]: how far the decay has gone after ``step`` steps and ``time_fraction`` of the time budget."""
    span = max(1, optim.total_steps - optim.warmup_steps)
    by_steps = (step - optim.warmup_steps) / span
    return min(1.0, max(0.0, by_steps, time_fraction))


def lr_at(step: int, optim: OptimConfig, time_fraction: float = 0.0) -> float:
    """The rate of step ``step`` (0-based): warm-up to ``lr`` over ``warmup_steps``, then ``lr_schedule``.

    constant: ``lr``; cosine: lr·(1 + cos πp)/2; linear: lr·(1 - p); wsd ("warm-up, stable, decay", Hägele et
    al. 2024): ``lr`` until the last ``lr_decay_share`` of the run, then linear to zero — with p from
    :func:`decay_progress`.
    """
    if optim.warmup_steps and step < optim.warmup_steps:
        return optim.lr * (step + 1) / optim.warmup_steps
    if optim.lr_schedule == "constant":
        return optim.lr
    p = decay_progress(step, optim, time_fraction)
    if optim.lr_schedule == "cosine":
        return optim.lr * 0.5 * (1.0 + math.cos(math.pi * p))
    if optim.lr_schedule == "linear":
        return optim.lr * (1.0 - p)
    if optim.lr_schedule == "wsd":
        return optim.lr * min(1.0, (1.0 - p) / optim.lr_decay_share)
    raise ValueError(f"Unknown LR schedule {optim.lr_schedule!r}")
