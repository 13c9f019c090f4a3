"""Export a run to a diffusers folder, and import one as a run: DDPM Studio's models in and out of diffusers.

A diffusers ``DDPMPipeline`` folder is ``model_index.json`` + ``unet/`` (``config.json`` and
``diffusion_pytorch_model.safetensors``) + ``scheduler/scheduler_config.json``. Neither direction needs diffusers
itself: the configs are JSON and the weights safetensors (the ``safetensors`` package, the ``diffusers`` extra), so
the app reads and writes these folders on a machine without diffusers, and nothing is ever executed: weights come
only from safetensors files, or from ``.bin`` files through ``torch.load(weights_only=True)``. What a folder means
is translated by :mod:`ddpm_studio.services.diffusers_format`, which refuses what our U-Net cannot express.

An import becomes a run folder like any other (config.toml and a checkpoint), so ``sample``, ``evaluate`` and
``train --resume`` need nothing new. An export also writes ``ddpm_studio.json`` (step and settings), which lets a
re-import keep the run's step and training settings.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ddpm_studio.core.atomic import atomic_write
from ddpm_studio.core.checkpoint import CheckpointError, save_checkpoint
from ddpm_studio.core.device import choose_device
from ddpm_studio.core.ema import EMA
from ddpm_studio.core.unet import PRESETS, UNetConfig, preset_config
from ddpm_studio.services import config as config_mod
from ddpm_studio.services import config_files
from ddpm_studio.services.diffusers_format import (
    DIFFUSERS_VERSION,
    DiffusersFormatError,
    diffusion_from_diffusers,
    from_diffusers_weights,
    scheduler_to_diffusers,
    to_diffusers_weights,
    unet_from_diffusers,
    unet_to_diffusers,
)
from ddpm_studio.services.model_factory import build_model, unet_config
from ddpm_studio.services.runs import RunFolder, resolve_checkpoint

WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                "diffusion_pytorch_model.bin", "diffusion_pytorch_model.fp16.bin")
PROVENANCE_FILE = "ddpm_studio.json"
_MAX_JSON_BYTES = 1 << 20  # a config is a few KB; refuse to parse anything huge
#: Imported runs train at the paper's rate: fine-tuning a trained model at the small presets' 2e-3 would undo it.
IMPORTED_LR = 2e-4


@dataclass(frozen=True)
class DiffusersFolder:
    """A diffusers folder read and understood (weights not loaded yet): what an import would create."""

    path: Path
    unet_dir: Path
    weights_path: Path
    cfg: config_mod.RunConfig
    step: int
    notes: tuple[str, ...]


@dataclass(frozen=True)
class ImportResult:
    run_dir: Path
    checkpoint: Path
    cfg: config_mod.RunConfig
    step: int
    notes: tuple[str, ...]


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    step: int
    weights: str  # "ema" or "training"
    files: tuple[str, ...]


# -- reading ------------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict[str, Any]:
    try:
        if path.stat().st_size > _MAX_JSON_BYTES:
            raise DiffusersFormatError(f"{path} is too large to be a diffusers config")
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DiffusersFormatError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DiffusersFormatError(f"{path} cannot be read as JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DiffusersFormatError(f"{path} is not a JSON object")
    return data


def _parts(path: Path) -> tuple[Path, Path, Path]:
    """(pipeline root, unet folder, scheduler config) of a pipeline folder or of its unet/ folder."""
    path = Path(path).expanduser()
    if (path / "unet" / "config.json").is_file():
        root = path
    elif (path / "config.json").is_file() and (path.parent / "scheduler").is_dir():
        root = path.parent
    else:
        raise DiffusersFormatError(f"{path} is not a diffusers pipeline folder (no unet/config.json in it)")
    scheduler = root / "scheduler" / "scheduler_config.json"
    if not scheduler.is_file():
        raise DiffusersFormatError(f"{root} has no scheduler/scheduler_config.json: the noise schedule is unknown")
    return root, root / "unet", scheduler


def is_diffusers_folder(path: str | Path) -> bool:
    """Whether ``path`` is a diffusers folder with a UNet2DModel and a scheduler (reads one small JSON file).

    True does not promise the model fits DDPM Studio: :func:`read_diffusers_folder` says that, with reasons.
    """
    try:
        _, unet_dir, _ = _parts(Path(path))
        return _read_json(unet_dir / "config.json").get("_class_name", "UNet2DModel") == "UNet2DModel"
    except (DiffusersFormatError, OSError):
        return False


def read_diffusers_folder(path: str | Path) -> DiffusersFolder:
    """Understand a diffusers folder without loading its weights; DiffusersFormatError says every misfit."""
    root, unet_dir, scheduler_path = _parts(Path(path))
    problems: list[str] = []
    unet_cfg = diffusion = None
    try:
        unet_cfg = unet_from_diffusers(_read_json(unet_dir / "config.json"))
    except DiffusersFormatError as exc:
        problems.append(str(exc))
    try:
        diffusion = diffusion_from_diffusers(_read_json(scheduler_path))
    except DiffusersFormatError as exc:
        problems.append(str(exc))
    if (unet_dir / "diffusion_pytorch_model.safetensors.index.json").is_file():
        problems.append("Its weights are split into shards, which DDPM Studio does not read (a UNet2DModel fits one file)")
    weights = next((unet_dir / name for name in WEIGHT_FILES if (unet_dir / name).is_file()), None)
    if weights is None:
        problems.append(f"{unet_dir} holds no weights file ({' or '.join(WEIGHT_FILES[::2])})")
    if problems:
        raise DiffusersFormatError(" ".join(p if p.endswith(".") else p + "." for p in problems))
    assert unet_cfg is not None and diffusion is not None and weights is not None
    cfg = _run_config(unet_cfg, diffusion.timesteps, diffusion.schedule, diffusion.prediction)
    notes = list(diffusion.notes)
    cfg, step = _with_provenance(root, cfg, notes)
    errors = config_mod.validate(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, source="demo")))
    if errors:
        raise DiffusersFormatError("This model does not fit DDPM Studio's settings: " + "; ".join(errors))
    if ".fp16." in weights.name:
        notes.append("its weights are float16; they are widened to float32")
    return DiffusersFolder(root, unet_dir, weights, cfg, step, tuple(notes))


def _run_config(u: UNetConfig, timesteps: int, schedule: str, prediction: str) -> config_mod.RunConfig:
    """Run settings whose model is exactly ``u``: a preset when one matches, else explicit overrides.

    The data source is an image folder yet to be chosen: sampling needs none, training asks for it.
    """
    preset = next((name for name in PRESETS if _preset_is(name, u)), None)
    model: dict[str, Any] = {"preset": preset or "cifar10", "dropout": u.dropout, "downsample_padding": u.downsample_padding}
    if preset is None:
        model.update(base_channels=u.base_channels, channel_mults=list(u.channel_mults), num_res_blocks=u.num_res_blocks,
                     attention_resolutions=list(u.attention_resolutions))
    return config_mod.from_dict({
        "data": {"source": "folder", "data_path": "", "image_size": u.image_size, "channels": u.in_channels},
        "model": model,
        "diffusion": {"timesteps": timesteps, "schedule": schedule, "prediction": prediction},
        "optim": {"lr": IMPORTED_LR},
    })


def _preset_is(name: str, u: UNetConfig) -> bool:
    try:
        return preset_config(name, u.image_size, u.in_channels, dropout=u.dropout, downsample_padding=u.downsample_padding) == u
    except ValueError:  # the preset's layout does not fit this image size
        return False


def _with_provenance(root: Path, cfg: config_mod.RunConfig, notes: list[str]) -> tuple[config_mod.RunConfig, int]:
    """Our own export's step and settings (ddpm_studio.json), when they describe the same model and schedule."""
    path = root / PROVENANCE_FILE
    if not path.is_file():
        return cfg, 0
    try:
        info = _read_json(path)
        saved = config_mod.from_dict(config_files.with_legacy_defaults(info["config"]), strict=False)
        step = info["step"]
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step {step!r}")
    except (DiffusersFormatError, config_mod.ConfigError, KeyError, TypeError, ValueError) as exc:
        notes.append(f"{PROVENANCE_FILE} was ignored: it cannot be read ({exc})")
        return cfg, 0
    try:
        same = unet_config(saved) == unet_config(cfg) and saved.diffusion.timesteps == cfg.diffusion.timesteps \
            and saved.diffusion.schedule == cfg.diffusion.schedule and saved.diffusion.prediction == cfg.diffusion.prediction
    except ValueError:
        same = False
    if not same:
        notes.append(f"{PROVENANCE_FILE} was ignored: its settings describe another model than the folder's configs")
        return cfg, 0
    notes.append(f"exported by DDPM Studio at step {step}: its training settings and step are restored "
                 "(the optimizer state is not in the folder: it starts afresh)")
    return saved, step


def _load_weights(path: Path) -> dict[str, Any]:
    """The tensors of a safetensors file, or of a .bin through torch.load(weights_only=True): no code runs."""
    if path.suffix == ".safetensors":
        try:
            from safetensors import SafetensorError
            from safetensors.torch import load_file
        except ImportError:
            raise DiffusersFormatError("Reading diffusers weights needs the safetensors package: "
                                       "pip install safetensors (or pip install 'ddpm-studio[diffusers]')") from None
        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise DiffusersFormatError(f"{path.name} is not a readable safetensors file ({exc})") from None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError (code inside), a truncated zip, …
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DiffusersFormatError(f"{path.name} cannot be loaded safely ({first})") from None
    if not isinstance(data, dict):
        raise DiffusersFormatError(f"{path.name} is not a table of weights")
    return data


# -- import -------------------------------------------------------------------------------------------
def import_diffusers(path: str | Path, runs_dir: str | Path | None = None, name: str | None = None) -> ImportResult:
    """Make a run folder (config.toml + one checkpoint) from a diffusers folder, ready to sample and train.

    Everything is checked and converted in memory first; a failure while writing removes only the new folder.
    """
    from ddpm_studio.services.checkpoint_check import checked_weights

    folder = read_diffusers_folder(path)
    cfg, step = folder.cfg, folder.step
    unet = unet_config(cfg)
    weights = from_diffusers_weights(_load_weights(folder.weights_path), unet)
    where = f"{folder.path.name}/unet/{folder.weights_path.name}"
    try:
        checked_weights({"model": weights}, cfg, where, use_ema=False)
    except CheckpointError as exc:
        raise DiffusersFormatError(str(exc).replace("Checkpoint ", "", 1)) from None
    model = build_model(cfg)
    model.load_state_dict(weights)
    # The one set of weights is written as a fixed EMA's state, so the run continues with a fixed EMA whatever the
    # exported run used (an export of a power-EMA run records "power" in its provenance).
    cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, ema="fixed"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    ema = EMA(model, cfg.optim.ema_decay)
    notes = (*folder.notes, "the folder holds one set of weights: it is both the training model and its EMA")
    payload = {
        "config": config_mod.to_dict(cfg), "model": model.state_dict(), "ema": ema.state_dict(),
        "optimizer": optimizer.state_dict(), "step": step, "created": time.time(), "metrics": {"loss": None},
        "dataset": f"imported from the diffusers folder {folder.path}", "class_names": [],
        "imported_from": {"format": "diffusers", "path": str(folder.path), "notes": list(notes)},
    }
    run = RunFolder.create(runs_dir, name or folder.path.name)
    try:
        config_files.save_config_file(cfg, run.config_path)
        save_checkpoint(run.checkpoint_path(step), payload)
        run.write_status(state="imported", step=step, total_steps=cfg.optim.total_steps,
                         imported_from=str(folder.path), last_checkpoint=str(run.checkpoint_path(step)))
    except BaseException:
        shutil.rmtree(run.path, ignore_errors=True)  # our own, just made: nothing of the user's is in it
        raise
    return ImportResult(run.path, run.checkpoint_path(step), cfg, step, notes)


# -- export -------------------------------------------------------------------------------------------
def export_diffusers(source: str | Path, out_dir: str | Path, *, use_ema: bool = True) -> ExportResult:
    """Write a checkpoint (or a run's newest) as a diffusers DDPMPipeline folder at ``out_dir``.

    ``out_dir`` must not exist or be empty: the folder is built beside it and renamed into place, so an
    interrupted export leaves nothing half-written and never touches an existing folder's files.
    """
    from ddpm_studio.services.sampling import load_for_sampling

    out = Path(out_dir).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DiffusersFormatError(f"{out} already exists and is not an empty folder; choose a new folder to export to")
    loaded = load_for_sampling(resolve_checkpoint(source), choose_device("cpu", "off"), use_ema=use_ema)
    if loaded.class_names:
        raise DiffusersFormatError(
            "This model is class-conditional: its class embedding has a 'no class' row for classifier-free guidance, "
            "which diffusers' DDPMPipeline cannot use (it never passes a class). Export an unconditional model")
    unet = loaded.model.config
    d = loaded.cfg.diffusion
    unet_json = unet_to_diffusers(unet)
    scheduler_json = scheduler_to_diffusers(d.schedule, d.timesteps, d.prediction)
    tensors = to_diffusers_weights(loaded.model.state_dict(), unet)
    try:
        from safetensors.torch import save
    except ImportError:
        raise DiffusersFormatError("Writing diffusers weights needs the safetensors package: "
                                   "pip install safetensors (or pip install 'ddpm-studio[diffusers]')") from None
    weights = "ema" if use_ema else "training"
    provenance = {"format": "ddpm-studio export", "source_checkpoint": str(loaded.path), "step": loaded.step,
                  "weights": weights, "config": config_mod.to_dict(loaded.cfg)}
    index = {"_class_name": "DDPMPipeline", "_diffusers_version": DIFFUSERS_VERSION,
             "scheduler": ["diffusers", "DDPMScheduler"], "unet": ["diffusers", "UNet2DModel"]}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    files = {"model_index.json": index, "unet/config.json": unet_json,
             "scheduler/scheduler_config.json": scheduler_json, PROVENANCE_FILE: provenance}
    try:
        (tmp / "unet").mkdir(parents=True)
        (tmp / "scheduler").mkdir()
        for rel, data in files.items():
            text = (json.dumps(data, indent=2) + "\n").encode("utf-8")
            atomic_write(tmp / rel, lambda fh, text=text: fh.write(text))
        blob = save(tensors, metadata={"format": "pt"})
        atomic_write(tmp / "unet" / WEIGHT_FILES[0], lambda fh: fh.write(blob))
        if out.is_dir():
            out.rmdir()  # empty (checked above); a file appearing meanwhile makes this fail, keeping it
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(out, loaded.step, weights, tuple(sorted((*files, f"unet/{WEIGHT_FILES[0]}"))))


__all__ = [
    "DiffusersFolder",
    "DiffusersFormatError",
    "ExportResult",
    "ImportResult",
    "export_diffusers",
    "import_diffusers",
    "is_diffusers_folder",
    "read_diffusers_folder",
]
