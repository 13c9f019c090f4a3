"""Events that sessions yield. Frozen, and holding only CPU data (numpy, floats, str), so a
worker can hand them to another thread and the GUI never touches torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ddpm_studio.core.accelerator_check import DeviceCheck


@dataclass(frozen=True)
class Status:
    """A phase message while setting up ("Loading images", 340/1000)."""

    message: str
    done: int = 0
    total: int = 0


@dataclass(frozen=True)
class RunStarted:
    """Training is about to take its first step; the facts about the run a front end shows."""

    run_dir: str
    step: int
    total_steps: int
    device: str
    device_reason: str
    parameters: int
    dataset: str
    num_images: int
    effective_batch: int  # images per optimisation step, all processes: batch_per_device x world_size x grad_accum
    resumed_from: str | None = None
    warnings: tuple[str, ...] = ()
    world_size: int = 1  # training processes (torchrun); 1 = a single process
    batch_per_device: int = 0
    grad_accum: int = 1
    class_names: tuple[str, ...] = ()  # the model's classes; empty = unconditional
    precision: str = ""  # "float32", "bf16 autocast", "fp16 autocast"
    #: The accelerator self-check (None on a CPU): when ``device_check.suggest_cpu``, offer to train on the CPU.
    device_check: DeviceCheck | None = None
    time_budget_s: float = 0.0  # train for this long (running time, across resumes); 0 = until total_steps


@dataclass(frozen=True)
class TrainProgress:
    """One optimisation step.

    ``images_per_sec``: training steps only (not previews, checkpoints or pauses), smoothed over about a minute
    of training; ``eta_seconds``: the remaining steps at the run's smoothed rate plus the share of time previews and
    checkpoints have taken; ``elapsed_seconds``: time since this session's first step, pauses left out.
    """

    step: int
    total_steps: int
    loss: float
    lr: float
    images_per_sec: float
    eta_seconds: float
    elapsed_seconds: float
    train_seconds: float = 0.0  # running time the run has used, across resumes (what a time budget counts)


@dataclass(frozen=True)
class MetricsLogged:
    """A line written to the metrics log (windowed loss, per-quartile loss, validation loss)."""

    record: dict[str, Any]


@dataclass(frozen=True)
class PreviewReady:
    """A fixed-seed trajectory from the EMA model.

    ``x_t`` and ``x0_pred`` are uint8 arrays (frames, samples, H, W, C); ``timesteps`` the t of
    each frame; ``image`` the final samples as a grid (H, W, C) uint8.
    """

    step: int
    timesteps: tuple[int, ...]
    x_t: np.ndarray
    x0_pred: np.ndarray
    image: np.ndarray
    path: str
    val_loss: float | None = None


@dataclass(frozen=True)
class CheckpointSaved:
    step: int
    path: str
    size_bytes: int
    deleted: tuple[str, ...] = ()


@dataclass(frozen=True)
class CheckpointFailed:
    """A checkpoint could not be written (disk full, permission); earlier ones are intact."""

    step: int
    message: str


@dataclass(frozen=True)
class RunPaused:
    step: int


@dataclass(frozen=True)
class RunResumed:
    step: int


@dataclass(frozen=True)
class RunFinished:
    """The run ended on purpose: ``reason`` is "completed" or "stopped"."""

    step: int
    reason: str
    checkpoint: str | None


@dataclass(frozen=True)
class RunFailed:
    """The run cannot go on; ``message`` is for the user, ``detail`` (a traceback) for the log."""

    message: str
    detail: str = ""
    step: int | None = None
    checkpoint: str | None = None

    @classmethod
    def from_exception(cls, exc: BaseException, step: int | None = None, checkpoint: str | None = None) -> RunFailed:
        import traceback

        detail = "".join(traceback.format_exception(exc))
        return cls(message=user_message(exc), detail=detail, step=step, checkpoint=checkpoint)

    @classmethod
    def from_session(cls, exc: BaseException, session: Any) -> RunFailed:
        """For a training session that raised ``exc``: its step and its run's newest checkpoint (which is kept)."""
        run = getattr(session, "run", None)
        latest = run.latest_checkpoint() if run is not None else None
        return cls.from_exception(exc, getattr(session, "step", None), str(latest.path) if latest is not None else None)


@dataclass(frozen=True)
class SamplingProgress:
    """One sampler step of one batch; ``frame`` is the latest x0 prediction grid (uint8) or None."""

    done: int
    total: int
    batch: int
    batches: int
    eta_seconds: float
    frame: np.ndarray | None = None


@dataclass(frozen=True)
class SamplesReady:
    """Generation finished: the images (N, H, W, C uint8) and the files written."""

    images: np.ndarray
    paths: tuple[str, ...]
    grid_path: str | None
    trajectory_path: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def user_message(exc: BaseException) -> str:
    """A sentence for the user from an exception: known errors keep their text, others get a hint."""
    import errno

    name = type(exc).__name__
    text = str(exc) or name
    if isinstance(exc, MemoryError) or "out of memory" in text.lower():
        return "Out of memory: try a smaller batch size or model preset. " + text.splitlines()[0]
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "Disk full: " + text
    known = {"ConfigError", "DatasetError", "CheckpointError", "TrainingError", "ValueError", "ConditioningError",
             "RunLockError", "FeaturesUnavailable", "DiffusersFormatError", "TrainingImagesUnavailable"}
    if name in known:
        return text
    return f"{name}: {text}"


@dataclass(frozen=True)
class EvaluationReady:
    """An evaluation finished: ``report`` is JSON-ready (scores, settings, timings); ``lines`` say it in words."""

    report: dict[str, Any]
    lines: tuple[str, ...]
    path: str | None = None
