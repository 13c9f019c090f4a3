"""The checkpoint file: one self-describing ``.pt`` written atomically, loaded without running code.

Format: a dict of tensors and plain Python values only (no numpy, no dataclasses), so that
``torch.load(weights_only=True)`` reads it with torch's default allow-list. Writes go to a
temporary file in the same folder, are fsynced, then renamed over the target, then the
folder is fsynced: a crash at any moment leaves either the old file or the new one.
"""

from __future__ import annotations

import errno
import zipfile
from pathlib import Path
from typing import Any

import torch

from ddpm_studio.core.atomic import atomic_write

FORMAT_NAME = "ddpm-studio"
FORMAT_VERSION = 1


class CheckpointError(Exception):
    """A checkpoint that cannot be used, with a message meant for the user."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (plus the format header) atomically. ENOSPC surfaces as a clear OSError."""
    data = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **payload}
    try:
        atomic_write(path, lambda fh: torch.save(data, fh))
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"Disk full: could not write checkpoint {path}; earlier checkpoints are intact") from exc
        raise
    except RuntimeError as exc:  # torch wraps write failures of its zip writer
        if "No space left" in str(exc) or "file write failed" in str(exc):
            message = f"Could not write checkpoint {path} (disk full?); earlier checkpoints are intact"
            raise OSError(errno.ENOSPC, message) from exc
        raise


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``), or raise :class:`CheckpointError` saying why."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"Checkpoint {path.name} is empty (0 bytes): it was never written completely")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except (zipfile.BadZipFile, EOFError) as exc:
        raise CheckpointError(f"Checkpoint {path.name} is truncated or corrupt ({exc})") from exc
    except Exception as exc:  # UnpicklingError, RuntimeError from a broken zip, …
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise CheckpointError(
                f"Checkpoint {path.name} contains Python objects that would run code when loaded; refusing to load it"
            ) from exc
        raise CheckpointError(f"Checkpoint {path.name} is not a readable PyTorch file ({text})") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path.name} is a PyTorch file but not a DDPM Studio checkpoint")
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"Checkpoint {path.name} has format version {version}, newer than this DDPM Studio "
            f"understands ({FORMAT_VERSION}); update DDPM Studio to load it"
        )
    for key in ("config", "model", "step"):
        if key not in data:
            raise CheckpointError(f"Checkpoint {path.name} is incomplete: it has no {key!r} entry")
    return data
