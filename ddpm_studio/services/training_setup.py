"""What a training session builds before its first step: the device, the claim on its run folder, the images, and
the trainer over them.

Apart from :class:`~ddpm_studio.services.training.TrainingSession` (which owns the run: its folder, clock, loop,
previews, checkpoints and requests, and the order of these calls) because this is construction, done once, and a
reader looking for "which device, which attention, which optimizer, how is a resume restored" wants it on one
screen without the loop around it:

- :func:`training_device` and :func:`ready_device`: the device and precision (under torchrun: this rank's GPU,
  once the process group is joined), then the device made ready and checked against the CPU. Two calls, so the
  session can claim a resumed run's folder in between: after the group exists, before the (maybe long) check.
- :func:`claim_run_folder`: one trainer per run folder (rank 0's lock), the torchrun job noted for a restart.
- :func:`load_training_data`: the images and a conditional run's class names.
- :func:`build_trainer`: the model, its EMA, optimizer, loss scaler and random streams, restored from a
  checkpoint when resuming, and the :class:`~ddpm_studio.services.training_step.TrainingStep` over them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from pathlib import Path
from typing import Any

import torch

from ddpm_studio.core.accelerator_check import DeviceCheck, check_device, is_accelerator
from ddpm_studio.core.autoguidance import EarlyWeights
from ddpm_studio.core.device import DeviceChoice, attention_impl, choose_device, limit_mps_memory
from ddpm_studio.core.unet_blocks import use_attention
from ddpm_studio.services import config as config_mod
from ddpm_studio.services.batches import BatchStream
from ddpm_studio.services.conditioning import ConditioningError, training_class_names
from ddpm_studio.services.control import RunControl
from ddpm_studio.services.distributed import Distributed, start
from ddpm_studio.services.events import Status
from ddpm_studio.services.model_factory import build_model, build_schedule
from ddpm_studio.services.progress import run_with_progress
from ddpm_studio.services.run_lock import RunLock, claim_for_training
from ddpm_studio.services.runs import RunFolder
from ddpm_studio.services.training_state import RestoredState, restore_state
from ddpm_studio.services.training_step import TrainingError, TrainingStep, make_ema, make_optimizer


@dataclasses.dataclass(frozen=True)
class ReadyDevice:
    """What :func:`ready_device` settled: the attention kernel the model uses, the accelerator check (None on a
    CPU) and the warnings for RunStarted, and a note on the MPS memory limit (None elsewhere), logged once the run
    has started."""

    attention: str
    check: DeviceCheck | None
    warnings: tuple[str, ...]
    mps_note: str | None


def training_device(optim: config_mod.OptimConfig, distributed: bool) -> tuple[DeviceChoice, Distributed]:
    """The device and precision to train on, and who this process is among the training processes.

    ``distributed``: join torchrun's process group first, which gives this rank its own GPU (``cuda:LOCAL_RANK``);
    otherwise (or not launched by torchrun) a single process.
    """
    device = choose_device(optim.device, optim.mixed_precision)
    if not distributed:
        return device, Distributed()
    dist, dev = start(device.device)
    return dataclasses.replace(device, device=dev), dist


def claim_run_folder(run_path: Path, dist: Distributed) -> RunLock | None:
    """One trainer per run folder: rank 0 locks it for the group (a second trainer is refused, naming this one),
    and under torchrun notes the job in run.json, so that a group torchrun restarts finds it (services/elastic.py).
    Returns rank 0's lock, held until the session's last write to the folder."""
    lock = claim_for_training(run_path, dist)
    if dist.is_main:
        from ddpm_studio.services.elastic import record_job

        record_job(RunFolder(run_path))
    return lock


def ready_device(device: torch.device, optim: config_mod.OptimConfig) -> Generator[Status, None, ReadyDevice]:
    """Make ``device`` ready to train: the MPS memory limit, the attention kernel, cuDNN's autotuner, and on an
    accelerator one forward + backward checked against the CPU (a wrong kernel trains garbage silently), announced
    by the Status it yields first since it takes a moment."""
    mps_note = limit_mps_memory(optim.mps_memory_fraction) if device.type == "mps" else None
    attention = attention_impl(optim.attention, device)
    if device.type == "cuda" and not torch.are_deterministic_algorithms_enabled():
        torch.backends.cudnn.benchmark = True  # a step's shapes never change: let cuDNN time its convolutions once
    check = None
    if is_accelerator(device):
        yield Status(f"Checking the {device.type} device against the CPU")
        check = check_device(device, attention)
    warnings = (check.warning,) if check is not None and check.warning else ()
    return ReadyDevice(attention, check, warnings, mps_note)


def load_training_data(data_cfg: config_mod.DataConfig, dist: Distributed, control: RunControl,
                       ckpt: dict[str, Any] | None) -> Generator[Any, None, tuple[Any, Any]]:
    """The run's images (yielding the progress of loading them; a stop request cancels it) and a conditional run's
    class names, checked against those ``ckpt`` was trained with when resuming (() for an unconditional run)."""
    yield Status("Loading images")
    from ddpm_studio.services.data_source import load_images  # looked up per run: benchmarks/gpu_check.py swaps it

    with dist.local_main_first():  # one process per node decodes (and caches) a folder, the others reuse it
        data = yield from run_with_progress(
            "Loading images", lambda progress: load_images(data_cfg, progress, cancel=lambda: control.stop_requested))
    try:
        class_names = training_class_names(data, ckpt) if data_cfg.conditional else ()
    except ConditioningError as exc:
        raise TrainingError(str(exc)) from None
    return data, class_names


def build_trainer(cfg: config_mod.RunConfig, device: DeviceChoice, dist: Distributed, control: RunControl, *,
                  data: Any, num_classes: int, attention: str, fused: bool, refuse_on_device: bool,
                  ckpt: dict[str, Any] | None) -> tuple[TrainingStep, RestoredState | None]:
    """The step's machinery over a new model (its EMA, earlier weights, optimizer, loss scaler, random streams and
    batches), restored from ``ckpt`` when resuming; and what ``ckpt`` restored besides (None: a new run).

    ``fused`` / ``refuse_on_device``: the session's :func:`~ddpm_studio.services.training_step.step_policy`.
    Built in this order because resume is exact: the model's initial weights and the run's generator come from
    seeded streams, and under torchrun each rank reseeds its dropout stream at the step it starts from.
    """
    dev = device.device
    model = build_model(cfg, num_classes=num_classes).to(dev)
    use_attention(model, attention)
    if cfg.optim.channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema, early = make_ema(model, cfg.optim), EarlyWeights()
    schedule = build_schedule(cfg)
    optimizer = make_optimizer(model, cfg.optim, fused)
    scaler = torch.amp.GradScaler(dev.type, enabled=device.autocast_dtype == torch.float16)
    generator = torch.Generator(device=dev).manual_seed(cfg.optim.seed + 1)  # t, ε and labels are drawn from it
    restored = None
    if ckpt is not None:
        restored = restore_state(ckpt, model=model, ema=ema, early=early, optimizer=optimizer, scaler=scaler,
                                 generator=generator, world=dist.world, distributed=dist.enabled)
    if dist.enabled:  # dropout masks: each rank its own stream (all else is drawn from the run's generator)
        torch.manual_seed(dist.rank_seed(cfg.optim.seed, restored.step if restored is not None else 0))
    net = dist.wrap(model)  # the model itself, or in DDP (forward and backward go through it)
    if cfg.optim.compile != "off":  # compiles at the first step (previews and EMA use the eager model)
        net = torch.compile(net, mode=cfg.optim.compile)
    batches = BatchStream(len(data), cfg.optim.batch_size, cfg.optim.seed, hflip=cfg.data.hflip, rank=dist.rank,
                          world=dist.world, cursor=restored.cursor if restored is not None else None)
    step = TrainingStep(cfg, device, dist, control, model=model, net=net, ema=ema, early=early, optimizer=optimizer,
                        scaler=scaler, schedule=schedule, data=data, num_classes=num_classes, batches=batches,
                        generator=generator, refuse_on_device=refuse_on_device)
    return step, restored
