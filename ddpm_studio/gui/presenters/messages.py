"""What the presenters tell each other: the payloads of the signals the composition root wires between them."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ddpm_studio.services import config as config_mod
from ddpm_studio.services import events as ev


@dataclass(frozen=True)
class Verdict:
    """What the settings presenter says about the current settings: may Start use them, and if not, why."""

    cfg: config_mod.RunConfig
    ok: bool
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class LiveModel:
    """The running run's model as Generate offers it. ``snapshot`` is thread-safe: call it off the GUI thread
    (the copy is made by the training thread, or by the caller once the run has ended)."""

    run_dir: str
    class_names: tuple[str, ...]
    snapshot: Callable[[], Future[Any]]


@dataclass(frozen=True)
class ModelInfo:
    """What the model chosen in Generate offers the sampler form: its classes (None: unknown yet, (): unconditional),
    its run's own EMA length when it can rebuild others (a power EMA), else the reason it cannot, and why it cannot
    be autoguided ("": it can, or it is not known yet)."""

    classes: tuple[str, ...] | None
    ema_length: float | None
    ema_reason: str = ""
    guide_reason: str = ""


@dataclass(frozen=True)
class ShownResults:
    """The images the Generate panel shows: made by a ``generate`` or ``interpolate`` job from ``source`` (the model
    chosen for it: a checkpoint or run folder, or the live model's choice value)."""

    kind: str
    result: ev.SamplesReady
    source: str


@dataclass(frozen=True)
class RunHistory:
    """An earlier run as read from its folder, for showing (loss records, preview grids, where it stopped)."""

    run_dir: str
    cfg: config_mod.RunConfig
    records: list[dict[str, Any]]
    previews: list[tuple[int, np.ndarray]] = field(default_factory=list)
    step: int = 0
    total_steps: int = 0
    train_seconds: float = 0.0  # running time the run used (what a time budget counts)
