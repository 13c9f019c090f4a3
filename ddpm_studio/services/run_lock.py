"""One trainer per run folder: an OS advisory lock plus a small record of who holds it.

Why: two trainers on one run folder (``train --resume RUN`` started twice, or the app's Continue while a
terminal trains the same run) interleave their checkpoints, and each one's retention deletes the other's
files. So training a run folder, and deleting one of its checkpoints, first takes its lock; a second
process is refused with a message naming the holder and changes nothing. Reading (sample, evaluate,
the Runs list) takes no lock and never waits.

Two files in the run folder:

- ``.trainer.lock``: empty; the holder keeps an exclusive ``flock`` on it (``msvcrt.locking`` on
  Windows). The OS releases that lock when the process ends, however it ends, so a crash or a SIGKILL
  never leaves a stale lock on one machine. The file is never replaced or deleted: the lock lives on its inode.
- ``trainer.json``: who holds it (pid, host, since when, what for), written atomically once the lock is
  taken and deleted before it is released. It is what the refusal message quotes, and what is left to go
  by when the OS lock cannot be used.

When the lock is free but a record is left (its process was killed): on this host the record is stale
and is taken over with a note in the log; from another host it is not broken silently: that machine may
still be training on a network file system where the lock does not reach it, so the message says how to
force it (``--force-unlock``, or deleting ``trainer.json``).

Network file systems: ``flock`` works across machines on NFS v4 (and v3 with lockd); on a mount without
lock support it fails with ENOLCK / EOPNOTSUPP, and then the lock degrades to the record alone, created
exclusively (``link``, atomic on NFS) and judged by its pid on this host, by a forced unlock elsewhere.
That fallback is logged once per run folder.

Under torchrun, rank 0 holds the lock for the whole group (:func:`claim_for_training`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ddpm_studio.core.atomic import atomic_write, pid_alive

log = logging.getLogger(__name__)

LOCK_FILE = ".trainer.lock"
HOLDER_FILE = "trainer.json"
#: How long a refused acquirer waits for the holder's record to appear (it is written just after the lock).
_RECORD_WAIT_S = 1.0
#: The errors with which a file system says it does not support locking.
_NO_LOCKING = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class RunLockError(RuntimeError):
    """The run folder is in use by another process; the message names it and says what to do."""

    def __init__(self, message: str, holder: Holder | None = None) -> None:
        super().__init__(message)
        self.holder = holder


def this_host() -> str:
    return socket.gethostname()


@dataclass(frozen=True)
class Holder:
    """Who holds a run folder's lock (the contents of ``trainer.json``)."""

    pid: int
    host: str
    since: float
    purpose: str  # "training", "deleting a checkpoint"
    command: str = ""
    token: str = field(default_factory=lambda: uuid.uuid4().hex)  # tells our record from a later one

    @classmethod
    def mine(cls, purpose: str) -> Holder:
        program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
        if program in ("__main__.py", "-c", ""):  # python -m ddpm_studio …, or the app
            program = "ddpm-studio"
        command = " ".join([program, *sys.argv[1:]])[:200]
        return cls(os.getpid(), this_host(), time.time(), purpose, command)

    @property
    def on_this_host(self) -> bool:
        return self.host == this_host()

    def describe(self) -> str:
        """'process 1234 on host "lab-pc" since 2026-11-23 14:05 (12 min ago), training (ddpm-studio train …)'."""
        ago = max(0.0, time.time() - self.since)
        age = f"{ago:.0f} s" if ago < 120 else f"{ago / 60:.0f} min" if ago < 7200 else f"{ago / 3600:.1f} h"
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        text = f'process {self.pid} on host "{self.host}" since {stamp} ({age} ago), {self.purpose}'
        return text + (f" ({self.command})" if self.command else "")


def read_holder(run_path: str | Path) -> Holder | None:
    """The recorded holder of ``run_path``'s lock, or None (no record, or one that cannot be read). Never blocks."""
    try:
        data = json.loads((Path(run_path) / HOLDER_FILE).read_text(encoding="utf-8"))
        return Holder(int(data["pid"]), str(data["host"]), float(data["since"]), str(data.get("purpose", "training")),
                      str(data.get("command", "")), str(data.get("token", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def training_holder(run_path: str | Path) -> Holder | None:
    """Who trains ``run_path`` now as far as a reader can tell (for the Runs list): the record, unless its
    process is known to be gone (same host, pid not running). Takes no lock."""
    holder = read_holder(run_path)
    if holder is None or (holder.on_this_host and not pid_alive(holder.pid)):
        return None
    return holder


# -------------------------------------------------------------------------------------------------- OS lock


def _os_lock(fd: int) -> bool | None:
    """Try to lock ``fd`` exclusively without waiting: True when locked, False when another process holds
    it, None when this file system cannot lock."""
    try:
        if os.name == "nt":
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES, errno.EDEADLK):
            return False
        if exc.errno in _NO_LOCKING:
            return None
        raise
    return True


def _os_unlock(fd: int) -> None:
    with contextlib.suppress(OSError):
        if os.name == "nt":
            import msvcrt

            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_UN)


# -------------------------------------------------------------------------------------------------- the lock

_held: dict[str, RunLock] = {}  # run folders this process holds, by real path
_held_guard = threading.Lock()
_warned_no_locking: set[str] = set()


def _key(run_path: Path) -> str:
    return os.path.realpath(run_path)


class RunLock:
    """A held run-folder lock; :meth:`release` (or leaving the ``with`` block) gives it up."""

    def __init__(self, run_path: Path, fd: int | None, holder: Holder) -> None:
        self.run_path, self.holder = run_path, holder
        self._fd = fd  # None: no OS lock on this file system, the record alone
        self.released = False

    @property
    def os_locked(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Delete our record, then drop the OS lock (in that order: whoever gets the lock next finds no record of us)."""
        if self.released:
            return
        self.released = True
        with _held_guard:
            if _held.get(_key(self.run_path)) is self:
                del _held[_key(self.run_path)]
        current = read_holder(self.run_path)
        if current is not None and current.token == self.holder.token:
            with contextlib.suppress(OSError):
                (self.run_path / HOLDER_FILE).unlink()
        if self._fd is not None:
            _os_unlock(self._fd)
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def held_here(run_path: str | Path) -> RunLock | None:
    """This process's lock on ``run_path``, if it holds one (e.g. the window's own training thread)."""
    with _held_guard:
        return _held.get(_key(Path(run_path)))


def acquire(run_path: str | Path, purpose: str = "training", *, force: bool = False) -> RunLock:
    """Take ``run_path``'s lock without waiting; raises :class:`RunLockError` naming the holder when it is taken.

    ``force``: also take it over from a record left by another host (whose process this machine cannot see).
    A lock held by a running process (the OS lock is taken) cannot be forced.
    """
    run_path = Path(run_path)
    if (mine := held_here(run_path)) is not None:
        raise RunLockError(f"Run {run_path.name} is already in use in this process: {mine.holder.describe()}", mine.holder)
    try:
        fd = os.open(run_path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise RunLockError(f"Cannot lock run {run_path}: {exc.strerror or exc}") from exc
    try:
        locked = _os_lock(fd)
    except OSError as exc:
        os.close(fd)
        raise RunLockError(f"Cannot lock run {run_path}: {exc.strerror or exc}") from exc
    if locked is False:
        os.close(fd)
        holder = _wait_for_record(run_path)
        raise RunLockError(_busy_message(run_path, holder), holder)
    if locked is None:
        os.close(fd)
        if _key(run_path) not in _warned_no_locking:
            _warned_no_locking.add(_key(run_path))
            log.warning("The file system of %s does not support file locks: relying on %s and the process id alone "
                        "(a second trainer on another computer is detected only by its record)", run_path, HOLDER_FILE)
    try:
        holder = _claim_record(run_path, purpose, os_locked=locked is True, force=force)
    except BaseException:
        if locked:
            _os_unlock(fd)
            os.close(fd)
        raise
    lock = RunLock(run_path, fd if locked else None, holder)
    with _held_guard:
        _held[_key(run_path)] = lock
    return lock


@contextlib.contextmanager
def locked(run_path: str | Path, purpose: str) -> Iterator[RunLock | None]:
    """Hold ``run_path``'s lock for a short job (None inside when this process already holds it)."""
    if held_here(run_path) is not None:
        yield None
        return
    lock = acquire(run_path, purpose)
    try:
        yield lock
    finally:
        lock.release()


def force_unlock(run_path: str | Path) -> Holder | None:
    """Remove a record left by another host (or a dead process) so the run can be trained; returns what was removed.

    Refuses (RunLockError) while a running process holds the OS lock: stop that process instead.
    """
    before = read_holder(run_path)
    acquire(run_path, "forcing the lock open", force=True).release()
    return before


def _claim_record(run_path: Path, purpose: str, *, os_locked: bool, force: bool) -> Holder:
    """Write our record, after judging any record already there (see the module docstring)."""
    path = run_path / HOLDER_FILE
    existing = read_holder(run_path)
    unreadable = existing is None and path.exists()
    if existing is not None and not existing.on_this_host:
        if not force:
            raise RunLockError(_foreign_message(run_path, existing), existing)
        log.warning("Forcing the lock of run %s: removing the record of %s", run_path.name, existing.describe())
    elif existing is not None and not os_locked and pid_alive(existing.pid):
        raise RunLockError(_busy_message(run_path, existing), existing)  # no OS lock: a live pid is the holder
    elif existing is not None:  # this host's, and the OS lock was free (or its pid is gone): stale
        why = ("that process no longer holds it (the folder was copied, or its id was reused)" if pid_alive(existing.pid)
               else "that process is no longer running")
        log.warning("Taking over the lock of run %s from %s: %s", run_path.name, existing.describe(), why)
    elif unreadable:
        if not os_locked and not force:
            raise RunLockError(f"Run {run_path.name} has an unreadable lock record {path}; if no other process trains "
                               f"this run, delete that file (or use --force-unlock) and try again")
        log.warning("Replacing the unreadable lock record of run %s", run_path.name)
    mine = Holder.mine(purpose)
    payload = json.dumps(asdict(mine), indent=1).encode()
    if os_locked:  # the OS lock makes us the only writer: replace atomically
        atomic_write(path, lambda fh: fh.write(payload))
    else:
        _create_exclusively(path, payload, replace=existing is not None or unreadable)
    return mine


def _create_exclusively(path: Path, payload: bytes, *, replace: bool) -> None:
    """Without an OS lock: move a stale record aside, then create ours so that only one of two racing
    processes can succeed (``link`` of a complete temp file fails when the name exists, also on NFS)."""
    if replace:
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, path.with_name(f".{path.name}.stale.{os.getpid()}"))
            os.unlink(path.with_name(f".{path.name}.stale.{os.getpid()}"))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_bytes(payload)
    try:
        os.link(tmp, path)
    except FileExistsError:
        holder = read_holder(path.parent)
        raise RunLockError(_busy_message(path.parent, holder), holder) from None
    except OSError:  # no hard links here (FAT, some FUSE): O_EXCL is exclusive too, though not atomic in content
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            holder = read_holder(path.parent)
            raise RunLockError(_busy_message(path.parent, holder), holder) from None
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _wait_for_record(run_path: Path) -> Holder | None:
    deadline = time.monotonic() + _RECORD_WAIT_S
    while True:
        holder = read_holder(run_path)
        if holder is not None or time.monotonic() > deadline:
            return holder
        time.sleep(0.05)


def _busy_message(run_path: Path, holder: Holder | None) -> str:
    who = holder.describe() if holder else "another process (it has not written its record yet, or is just ending)"
    return (f"Run {run_path.name} is in use by {who}. Nothing was changed. Wait for it to finish or stop it "
            "(Ctrl-C in its terminal, Stop in its window), then try again.")


def _foreign_message(run_path: Path, holder: Holder) -> str:
    return (f"Run {run_path.name} is locked by {holder.describe()}; this computer cannot tell whether that process is "
            f"still running. Nothing was changed. If it is not, force the lock open with "
            f"`ddpm-studio train --resume {run_path} --force-unlock`, or delete {run_path / HOLDER_FILE}.")


# -------------------------------------------------------------------------------------------------- services


class _Group(Protocol):
    """What :func:`claim_for_training` needs of :class:`~ddpm_studio.services.distributed.Distributed`."""

    @property
    def is_main(self) -> bool: ...

    def broadcast(self, value: Any) -> Any: ...


def claim_for_training(run_path: str | Path, group: _Group) -> RunLock | None:
    """Rank 0 takes the lock for training; every rank of a torchrun group learns the outcome and raises the
    same :class:`RunLockError` when it failed (so none waits forever at the next collective)."""
    lock, refusal = None, None
    if group.is_main:
        try:
            lock = acquire(run_path, "training")
        except RunLockError as exc:
            refusal = str(exc)
    refusal = group.broadcast(refusal)
    if refusal is not None:
        raise RunLockError(refusal)
    return lock


def delete_checkpoint(path: str | Path) -> None:
    """Delete a checkpoint of a run folder, under the run's lock.

    Refused with :class:`RunLockError` (the file untouched) while another process trains the run: its
    retention and resume count on its files. Allowed when this process holds the lock (the window deleting an
    older checkpoint of its own run). Raises OSError when the file cannot be deleted.
    """
    path = Path(path)
    run_path = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    try:
        with locked(run_path, "deleting a checkpoint"):
            path.unlink()
    except RunLockError as exc:
        raise RunLockError(f"Cannot delete {path.name}: {exc}", exc.holder) from None
