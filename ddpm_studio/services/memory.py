"""How much memory this process uses (the app's status bar; memory checks)."""

from __future__ import annotations

import ctypes
import os
import sys


def process_memory_mb() -> float:
    """Resident memory of this process in MB (Linux /proc, else the peak from ``resource``; 0 when unknown)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, AttributeError):
        pass
    try:
        import resource
    except ImportError:
        return 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


# -- glibc's allocator: what it keeps after frees ---------------------------------------------------------------
# Why: on Linux a process's freed memory mostly stays with glibc's malloc (per-thread arenas, heap tops, chunks
# below the dynamic mmap threshold), so the app's resident memory only ever grew: +350 MB kept after a laptop-preset
# run had ended, +50 MB from the first dozen background jobs (a new arena per thread). These two calls are no-ops
# where glibc is absent (macOS, Windows, musl).
_M_ARENA_MAX = -8


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 - glibc only
        return libc
    except (OSError, AttributeError):
        return None


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Let all threads share ``arenas`` malloc arenas (glibc's default is 8 per core, one per new thread)."""
    libc = _glibc()
    return bool(libc is not None and libc.mallopt(_M_ARENA_MAX, arenas))


def release_free_memory() -> bool:
    """Give the memory malloc keeps after frees back to the system (``malloc_trim``); True if any was released.

    Costs a few milliseconds; call it when the process has just become idle, not between training steps
    (the next step would fault the same pages in again)."""
    libc = _glibc()
    return bool(libc is not None and libc.malloc_trim(0))
