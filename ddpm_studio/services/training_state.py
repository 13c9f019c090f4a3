"""What of a training run a checkpoint keeps, and getting it back: the resume point, the payload, the restore.

Apart from the session's loop so that the checkpoint's contents are read in one place: a resumed run must
continue exactly (weights, EMA, optimizer, loss scaler, random streams, data position, the time budget's clock),
and the settings a checkpoint may not change on resume (the weights depend on them) are checked here before any
model is built. The file format itself (atomic writes, ``weights_only`` loading) is
:mod:`ddpm_studio.core.checkpoint`; the keys a sampler reads are documented there too.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from ddpm_studio.core.autoguidance import EarlyWeights
from ddpm_studio.core.checkpoint import CheckpointError, load_checkpoint
from ddpm_studio.core.power_ema import PowerEMA
from ddpm_studio.services import config as config_mod
from ddpm_studio.services.batches import BatchCursor
from ddpm_studio.services.runs import RunFolder, plan_continue
from ddpm_studio.services.step_results import non_finite_message
from ddpm_studio.services.training_step import TrainingError, TrainingStep


@dataclasses.dataclass(frozen=True)
class ResumePoint:
    """Where a resumed run starts: its settings, and its checkpoint (None: a run folder with no checkpoint yet,
    ``restart`` then being that folder, trained again from step 0 with its saved settings)."""

    cfg: config_mod.RunConfig
    checkpoint: dict[str, Any] | None
    path: Path
    restart: RunFolder | None = None

    @property
    def run_dir(self) -> Path | None:
        """The run folder the resumed run continues in (None: a loose checkpoint file starts a new run)."""
        if self.restart is not None:
            return self.restart.path
        return self.path.parent.parent if self.path.parent.name == "checkpoints" else None


def load_resume_point(resume_from: Path, overrides: dict[str, dict[str, Any]]) -> ResumePoint:
    """The checkpoint (or run folder) to resume, its settings with ``overrides`` applied, checked.

    Settings, step, classes and weight shapes are checked before any model is built from them: a crafted file
    cannot make this process allocate a huge network, and a mismatch is named precisely.
    """
    if resume_from.is_dir():  # a run folder: its newest checkpoint, or its saved settings from step 0
        try:
            plan = plan_continue(resume_from)
        except ValueError as exc:
            raise TrainingError(str(exc)) from None
        if plan.from_scratch:
            cfg = config_mod.from_dict(overrides, base=plan.settings) if overrides else plan.settings
            return ResumePoint(cfg, None, resume_from, restart=plan.run)
        resume_from = plan.checkpoint
    ckpt = load_checkpoint(resume_from)
    from ddpm_studio.services.checkpoint_check import check_checkpoint

    saved = check_checkpoint(ckpt, resume_from)
    cfg = config_mod.from_dict(overrides, base=saved) if overrides else saved
    for section in ("model", "diffusion"):
        if getattr(cfg, section) != getattr(saved, section):
            raise TrainingError(f"The [{section}] settings cannot change when resuming (the weights depend on them)")
    if (cfg.data.image_size, cfg.data.channels) != (saved.data.image_size, saved.data.channels):
        raise TrainingError("Image size and channels cannot change when resuming")
    if cfg.data.conditional != saved.data.conditional:
        raise TrainingError("Class-conditional cannot change when resuming (the model's class embedding depends on it)")
    if cfg.optim.ema != saved.optim.ema:
        raise TrainingError(f"The EMA kind cannot change when resuming (this run averages its weights with a "
                            f"{saved.optim.ema} EMA)")
    return ResumePoint(cfg, ckpt, resume_from)


def ema_payload(ema: Any) -> dict[str, Any]:
    """The checkpoint's ``ema`` entry: the weights samples use by default (a power EMA's, rebuilt at its length)."""
    if isinstance(ema, PowerEMA):
        return {"model": ema.model.state_dict(), "num_updates": ema.num_updates, "length": ema.length}
    return ema.state_dict()


def checkpoint_payload(cfg: config_mod.RunConfig, trainer: TrainingStep, *, step: int, train_seconds: float,
                       class_names: tuple[str, ...] | list[str], recent_loss: float | None,
                       val_loss: float | None) -> dict[str, Any]:
    """Everything a resumed run needs to continue exactly, and what sampling reads (config, EMA, class names).

    ``cfg`` is the run's settings as they are now (the retention a user changed mid-run is recorded).

    Raises TrainingError when the device refused a step since the last read: a state after a refused step is
    never saved (the weights were frozen before it, but the step count and random streams went on).
    """
    refused = trainer.first_refused()
    if refused is not None:
        raise TrainingError(non_finite_message(*refused))
    dist = trainer.dist
    rng: dict[str, Any] = {"torch": torch.get_rng_state(), "generator": trainer.generator.get_state(),
                           "generator_device": trainer.device.device.type}
    if torch.cuda.is_available():  # under torchrun only this rank's GPU: get_rng_state_all would touch every GPU
        rng["cuda"] = [torch.cuda.get_rng_state()] if dist.enabled else torch.cuda.get_rng_state_all()
    payload = {
        "config": config_mod.to_dict(cfg), "model": trainer.model.state_dict(), "ema": ema_payload(trainer.ema),
        "optimizer": trainer.optimizer.state_dict(), "step": step, "rng": rng, "train_seconds": train_seconds,
        "data": trainer.batches.cursor.global_state(dist.world), "created": time.time(),
        "metrics": {"loss": recent_loss, "val_loss": val_loss}, "dataset": trainer.data.description,
        "class_names": list(class_names),  # empty = unconditional; sampling sizes the class embedding from it
        "early_weights": trainer.early.state_dict(),  # autoguidance's guide (core/autoguidance.py)
    }
    if trainer.scaler.is_enabled():
        payload["scaler"] = trainer.scaler.state_dict()
    if isinstance(trainer.ema, PowerEMA):
        payload["phema"] = trainer.ema.state_dict()
    return payload


@dataclasses.dataclass(frozen=True)
class RestoredState:
    """What a checkpoint restores besides the modules' own state: the step, the time budget's clock, the data position."""

    step: int
    train_seconds: float
    cursor: BatchCursor


def restore_state(ckpt: dict[str, Any], *, model: torch.nn.Module, ema: Any, early: EarlyWeights,
                  optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, generator: torch.Generator,
                  world: int, distributed: bool) -> RestoredState:
    """Load ``ckpt`` into the run's modules and random streams (the inverse of :func:`checkpoint_payload`)."""
    try:
        model.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["phema"] if isinstance(ema, PowerEMA) else ckpt["ema"])
        if "early_weights" in ckpt:  # checkpoints from before autoguidance have none: kept from here on
            early.load_state_dict(ckpt["early_weights"], {k: tuple(v.shape) for k, v in model.state_dict().items()})
        optimizer.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"Checkpoint does not match its model settings: {str(exc).splitlines()[0]}") from exc
    if "scaler" in ckpt and scaler.is_enabled():
        scaler.load_state_dict(ckpt["scaler"])
    rng = ckpt.get("rng", {})
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    if "generator" in rng and rng.get("generator_device") == generator.device.type:
        generator.set_state(rng["generator"])
    if "cuda" in rng and torch.cuda.is_available() and not distributed:  # ranks reseed theirs (see the session's setup)
        torch.cuda.set_rng_state_all(rng["cuda"])
    cursor = BatchCursor.from_global_state(ckpt.get("data", {"epoch": 0, "position": 0}), world)
    return RestoredState(int(ckpt["step"]), float(ckpt.get("train_seconds", 0.0)), cursor)
