"""Atomic file writes: a crash or a kill leaves either the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

TEMP_SUFFIX = ".tmp"
#: ``.<target>.<pid>.<random>.tmp``, the temp files :func:`atomic_write` makes.
_TEMP_RE = re.compile(r"^\.(?P<target>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp$")
#: Temp files without a pid (written before it was in the name) count as stale after this long.
_UNNAMED_STALE_SECONDS = 24 * 3600


def _fsync_dir(folder: Path) -> None:
    # Directory fsync makes the rename itself durable; not supported on Windows.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _read_umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read it: set, then restore at once
    os.umask(mask)
    return mask


#: Read once at import, before any worker thread exists (os.umask is process-wide, not thread-safe).
_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file to stream into; on a clean exit it is fsynced and renamed onto ``path``, else deleted.

    For writes too big to build in memory first (a decoded dataset): the file is written piece by piece,
    and ``path`` appears only once it is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The pid in the name lets a later process tell a killed writer's leftover from a write in progress.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        # mkstemp makes the file owner-only (0600); give it the mode a plain open() would (0666 minus the umask),
        # so saved images and checkpoints can be shared like any other file the user writes.
        if hasattr(os, "fchmod"):
            with contextlib.suppress(OSError):
                os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "w+b") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(path.parent)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(file_object)`` on a temp file beside ``path``, fsync, then rename into place."""
    with atomic_output(path) as fh:
        write(fh)


def pid_alive(pid: object) -> bool:
    """Whether a process with this id exists (ours, or someone else's we may not signal)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, someone else's
        return True
    return True


def remove_stale_temp_files(folder: str | Path, pattern: str = ".*.tmp") -> list[Path]:
    """Delete temp files that killed writers left in ``folder``; returns what was deleted.

    A temp file is stale when the process named in it is gone (or, for a name without a pid, when it
    is a day old). Files of live processes, this one included, are left alone: they may be mid-write.
    """
    removed: list[Path] = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for entry in folder.glob(pattern):
        match = _TEMP_RE.match(entry.name)
        try:
            if match is not None:
                stale = not pid_alive(int(match.group("pid")))
            else:
                stale = time.time() - entry.stat().st_mtime > _UNNAMED_STALE_SECONDS
            if stale and entry.is_file() and not entry.is_symlink():
                entry.unlink()
                removed.append(entry)
        except OSError:
            continue
    return removed
