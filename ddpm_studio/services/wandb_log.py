"""Weights & Biases logging for a training run (optional: the ``wandb`` package, the ``wandb`` extra).

What it logs: the run's settings as the W&B config, every metrics record the training log writes (loss, lr,
the loss per quarter of t, images/s, validation loss) against the training step, and each preview grid.

Why it never stops training: W&B is a mirror of metrics.jsonl, not the record itself. A missing package,
a failed login or a network fault is one warning, and the run goes on with W&B off; the record stays on disk.

A run keeps one W&B run: its id is stored in the run folder's run.json (``wandb_run_id``) and a resumed run
reopens it with ``resume="allow"``. Steps re-trained after a resume from an older checkpoint are logged
again (W&B cannot take points back); the chart's x-axis is the training step, so they overlay the first pass.
``WANDB_MODE=offline`` writes the run under ``<run>/wandb/`` for a later ``wandb sync``; ``WANDB_PROJECT``
names the project (default ``ddpm-studio``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ddpm_studio.services.runs import RunFolder

log = logging.getLogger(__name__)

DEFAULT_PROJECT = "ddpm-studio"
#: How long W&B may take to start (log in, reach its server) before the run goes on without it.
INIT_TIMEOUT_S = 30.0


class WandbLog:
    """One run's W&B mirror; every call is safe to make after a failure (it then does nothing)."""

    def __init__(self, run: Any, wandb: Any) -> None:
        self._run, self._wandb = run, wandb

    @classmethod
    def open(cls, run_path: Path, config: dict[str, Any]) -> WandbLog | None:
        """Start (or, for a resumed run, reopen) the run's W&B run; None, after one warning, when that fails."""
        try:
            import wandb
        except ImportError:
            log.warning("Weights & Biases logging was asked for but the wandb package is not installed; training goes "
                        "on and metrics.jsonl is written as always. Install it with: pip install wandb")
            return None
        folder = RunFolder(run_path)
        run_id = folder.read_status().get("wandb_run_id")
        try:
            run = wandb.init(
                project=os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT, name=folder.name, dir=str(run_path),
                id=run_id if isinstance(run_id, str) else None, resume="allow",
                settings=wandb.Settings(console="off", init_timeout=INIT_TIMEOUT_S),
            )
            run.config.update(config, allow_val_change=True)  # a resumed run may have changed e.g. total_steps
            run.define_metric("step")
            run.define_metric("*", step_metric="step")
        except Exception as exc:  # wandb's UsageError / CommError / timeouts: never a reason to stop training
            log.warning("Weights & Biases logging is off for this run: %s. Training goes on and metrics.jsonl is "
                        "written as always (run `wandb login`, or set WANDB_MODE=offline to log to disk)",
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return None
        folder.write_status(wandb_run_id=run.id)
        return cls(run, wandb)

    @property
    def run_id(self) -> str | None:
        return None if self._run is None else str(self._run.id)

    def log(self, record: dict[str, Any]) -> None:
        """One metrics record: its numbers against its step ("time" is W&B's own)."""
        values = {k: v for k, v in record.items() if k not in ("step", "time") and isinstance(v, int | float)
                  and not isinstance(v, bool)}
        if values:
            self._call("log", {"step": record["step"], **values})

    def image(self, image: np.ndarray, step: int) -> None:
        """A preview grid (H, W, C uint8)."""
        if self._run is not None:
            self._call("log", {"step": step, "preview": self._wandb.Image(image, caption=f"step {step}")})

    def finish(self) -> None:
        self._call("finish")
        self._run = None

    def _call(self, method: str, *args: Any) -> None:
        if self._run is None:
            return
        try:
            getattr(self._run, method)(*args)
        except Exception as exc:
            log.warning("Weights & Biases logging stopped for this run: %s. Training goes on; metrics.jsonl is "
                        "written as always", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            self._run = None
