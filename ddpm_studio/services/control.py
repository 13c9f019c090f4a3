"""Pause, resume and stop, callable from any thread; and the one loop that drives a session.

Pause blocks on a ``threading.Event`` (no polling, no CPU). Stop sets its flag *before*
waking a paused run, so the woken run sees the stop (napari's StatusChecker rule).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Iterator
from typing import Any


class RunControl:
    """Thread-safe flags shared between a running session and whoever owns it."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._resume = threading.Event()
        self._resume.set()

    def pause(self) -> None:
        if not self._stop.is_set():
            self._resume.clear()

    def resume(self) -> None:
        self._resume.set()

    def stop(self) -> None:
        self._stop.set()
        self._resume.set()

    @property
    def paused(self) -> bool:
        return not self._resume.is_set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def wait_resumed(self, timeout: float | None = None) -> bool:
        """Block until resumed or stopped; returns False on timeout."""
        return self._resume.wait(timeout)


def drive(events: Iterator[Any], sink: Callable[[Any], None]) -> None:
    """Pull every event into ``sink``; always close the generator so its ``finally`` runs."""
    try:
        for event in events:
            sink(event)
    finally:
        if isinstance(events, Generator):
            events.close()
