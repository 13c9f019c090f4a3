"""What a training run records, and where: the metrics log (always), TensorBoard and W&B (when asked for).

Why apart from the training loop: the loop reports every step; the log averages those steps over each
log interval (the loss and its breakdown by quarter of t, as improved-diffusion logs it), adds the
validation loss and preview images, and writes each record to metrics.jsonl and, if their packages are
installed, to TensorBoard and Weights & Biases (:mod:`ddpm_studio.services.wandb_log`). The records it
writes are what the loop yields as MetricsLogged.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ddpm_studio.core.choices import TIMESTEP_BUCKETS
from ddpm_studio.services.metrics import MetricsLog
from ddpm_studio.services.wandb_log import WandbLog

log = logging.getLogger(__name__)



class TrainingLog:
    """The metrics of one run; the loss window is kept on every rank, records are written by whoever calls write."""

    def __init__(self, run_path: Path, metrics_path: Path, *, tensorboard: bool = False, wandb: bool = False,
                 config: dict[str, Any] | None = None) -> None:
        """``config``: the run's settings, W&B's run config."""
        self.metrics = MetricsLog(metrics_path)
        self._tensorboard = _open_tensorboard(run_path) if tensorboard else None
        self._wandb = WandbLog.open(run_path, config or {}) if wandb else None
        self._loss_sum, self._steps = 0.0, 0
        self._bucket_sum = torch.zeros(TIMESTEP_BUCKETS)
        self._bucket_count = torch.zeros(TIMESTEP_BUCKETS)

    def add_step(self, loss: float, bucket_sums: torch.Tensor, bucket_counts: torch.Tensor) -> None:
        """Count one step's loss and its per-quarter sums and counts into the current interval."""
        self._loss_sum, self._steps = self._loss_sum + loss, self._steps + 1
        self._bucket_sum += bucket_sums.cpu()
        self._bucket_count += bucket_counts.cpu()

    def interval_record(self, step: int, lr: float, images_per_sec: float, elapsed: float) -> dict[str, Any]:
        """Write the interval's averages as one record, start a new interval, and return the record."""
        record: dict[str, Any] = {"step": step, "loss": self._loss_sum / self._steps, "lr": lr,
                                  "images_per_sec": images_per_sec, "elapsed": round(elapsed, 3), "time": time.time()}
        for q in range(TIMESTEP_BUCKETS):
            if self._bucket_count[q] > 0:
                record[f"loss_q{q}"] = float(self._bucket_sum[q] / self._bucket_count[q])
        self.write(record)
        self._loss_sum, self._steps = 0.0, 0
        self._bucket_sum.zero_()
        self._bucket_count.zero_()
        return record

    def validation_record(self, step: int, val_loss: float) -> dict[str, Any]:
        """Write a preview's validation loss as a record of its own and return it."""
        record = {"step": step, "val_loss": val_loss, "time": time.time()}
        self.write(record)
        return record

    def write(self, record: dict[str, Any]) -> None:
        self.metrics.append(record)
        if self._tensorboard is not None:
            for key, value in record.items():
                if key not in ("step", "time") and isinstance(value, float):
                    self._tensorboard.add_scalar(key, value, record["step"])
        if self._wandb is not None:
            self._wandb.log(record)

    def preview_image(self, image: np.ndarray, step: int) -> None:
        """A preview grid (H, W, C uint8) for TensorBoard's image tab and W&B; the PNG on disk is the previewer's."""
        if self._tensorboard is not None:
            self._tensorboard.add_image("preview", image, step, dataformats="HWC")
        if self._wandb is not None:
            self._wandb.image(image, step)

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step`` (on resume, so a re-trained stretch is not logged twice)."""
        self.metrics.truncate_after(step)

    def close(self) -> None:
        self.metrics.close()
        if self._tensorboard is not None:
            self._tensorboard.close()
        if self._wandb is not None:
            self._wandb.finish()


def _open_tensorboard(run_path: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("TensorBoard logging was asked for but the tensorboard package is not installed; "
                    "the metrics log (metrics.jsonl) is still written. Install it with: pip install tensorboard")
        return None
    return SummaryWriter(str(run_path / "tensorboard"))
