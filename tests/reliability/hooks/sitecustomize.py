"""Fault-injection hooks for child processes of the reliability tests (put this folder on PYTHONPATH).

Inert unless an environment variable asks for a fault, so it never changes what a normal run does.

``DDPM_STUDIO_TEST_SLOW_WRITE=SECONDS``: every ``write()`` into a file being written by
:func:`ddpm_studio.core.atomic.atomic_write` (checkpoints, run.json, config.toml) first sleeps this long.
The real writer (``torch.save`` into the temp file, fsync, rename) still runs; it only takes long
enough that a SIGKILL sent at a random moment often lands in the middle of a checkpoint write.
"""

from __future__ import annotations

import os
import time

_delay = float(os.environ.get("DDPM_STUDIO_TEST_SLOW_WRITE", "0") or 0)

if _delay > 0:
    from ddpm_studio.core import atomic as _atomic

    _real_atomic_write = _atomic.atomic_write

    class _SlowFile:
        """The temp file, with a pause before each write (torch.save writes record by record)."""

        def __init__(self, fh):
            self._fh = fh

        def write(self, data):
            time.sleep(_delay)
            return self._fh.write(data)

        def __getattr__(self, name):
            return getattr(self._fh, name)

    def _slow_atomic_write(path, write):
        return _real_atomic_write(path, lambda fh: write(_SlowFile(fh)))

    _atomic.atomic_write = _slow_atomic_write  # before checkpoint.py / runs.py bind the name
