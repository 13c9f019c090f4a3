"""How much memory this process uses (the app's status bar; memory checks)."""

from __future__ import annotations

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
