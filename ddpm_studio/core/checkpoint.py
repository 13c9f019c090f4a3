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
    """Write ``payload`` (plus the format header) atomically.

    Any failure to write (disk full, read-only or vanished folder) raises OSError with a sentence for the
    user: ENOSPC for a full disk. torch's zip writer reports a failed ``write()`` as a RuntimeError
    ("unexpected pos ...") with the OSError only in its context, so the whole chain is searched.
    """
    data = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **payload}
    try:
        atomic_write(path, lambda fh: torch.save(data, fh))
    except Exception as exc:
        cause = _os_error_in(exc)
        text = str(exc)
        if cause is None and not any(s in text for s in _WRITE_FAILURES):
            raise
        if (cause is not None and cause.errno == errno.ENOSPC) or "No space left" in text:
            raise OSError(errno.ENOSPC, f"Disk full: could not write checkpoint {path}; earlier checkpoints are intact") from exc
        reason = (cause.strerror or str(cause)) if cause is not None else text.splitlines()[0]
        raise OSError(cause.errno if cause is not None and cause.errno else errno.EIO,
                      f"Could not write checkpoint {path} ({reason}); earlier checkpoints are intact") from exc


#: Texts of torch's write errors (RuntimeError) that mean the file system refused a write.
_WRITE_FAILURES = ("No space left", "file write failed", "unexpected pos")


def _os_error_in(exc: BaseException) -> OSError | None:
    """The first OSError in ``exc``'s cause/context chain (``exc`` included), or None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError):
            return current
        current = current.__cause__ or current.__context__
    return None


def _not_a_zip(path: Path) -> str | None:
    """Why ``path`` cannot be a checkpoint judging by its zip structure (every one since torch 1.6 is a zip), or None.

    Checked first so that junk is called junk: torch's own error for a non-zip file mentions weights_only,
    which would otherwise read as "unsafe content".
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
        if zipfile.is_zipfile(path):
            return None
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if head == b"PK\x03\x04":
        return "is truncated or corrupt: not a complete file (cut short by a full disk, an interrupted copy or a crash)"
    return "is not a readable PyTorch file: damaged, or another kind of file renamed"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``), or raise :class:`CheckpointError` saying why."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"Checkpoint {path.name} is empty (0 bytes): it was never written completely")
    problem = _not_a_zip(path)
    if problem:
        raise CheckpointError(f"Checkpoint {path.name} {problem}")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except (zipfile.BadZipFile, EOFError) as exc:
        raise CheckpointError(f"Checkpoint {path.name} is truncated or corrupt ({exc})") from exc
    except Exception as exc:  # UnpicklingError, RuntimeError from a broken zip, …
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "PytorchStreamReader" in text or "central directory" in text:
            raise CheckpointError(
                f"Checkpoint {path.name} is truncated or corrupt: not a complete file (cut short by a full disk, "
                "an interrupted copy or a crash outside DDPM Studio)"
            ) from exc
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
