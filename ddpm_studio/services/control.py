"""Pause, resume, stop and one-off requests (sample now, checkpoint now), callable from any thread; and the one
loop that drives a session.

Pause blocks on a condition variable (no polling, no CPU). Stop sets its flag *before* waking a paused run,
so the woken run sees the stop (napari's StatusChecker rule). A request ("checkpoint now", "preview now")
wakes a paused run too, so it is served at once; the run then goes back to waiting. The lock is re-entrant,
so a POSIX signal handler (the CLI's SIGUSR1 / SIGUSR2) may make a request while the main thread waits here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator, Iterator
from typing import Any

#: The requests a session serves between steps (and while paused): save a checkpoint, make a preview now.
CHECKPOINT = "checkpoint"
PREVIEW = "preview"
REQUESTS = (CHECKPOINT, PREVIEW)


class RunControl:
    """Thread-safe flags shared between a running session and whoever owns it."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.RLock())
        self._stopped = False
        self._paused = False
        self._requests: set[str] = set()

    def pause(self) -> None:
        with self._cond:
            if not self._stopped:
                self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._paused = False
            self._cond.notify_all()

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def stop_requested(self) -> bool:
        return self._stopped

    # -- one-off requests ------------------------------------------------------------------------
    def request_checkpoint(self) -> None:
        """Ask for a checkpoint of the current weights, written between steps (or at once while paused)."""
        self._request(CHECKPOINT)

    def request_preview(self) -> None:
        """Ask for a preview (trajectory of the fixed noise, and the validation loss) now."""
        self._request(PREVIEW)

    def _request(self, kind: str) -> None:
        with self._cond:
            self._requests.add(kind)
            self._cond.notify_all()

    @property
    def has_requests(self) -> bool:
        return bool(self._requests)

    def take_requests(self) -> frozenset[str]:
        """The pending requests, cleared: each is served once however often it was asked for."""
        with self._cond:
            taken, self._requests = frozenset(self._requests), set()
        return taken

    # -- waiting -----------------------------------------------------------------------------------
    def wait_resumed(self, timeout: float | None = None) -> bool:
        """Block until resumed or stopped; returns False on timeout. Requests do not end the wait."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._paused, timeout)

    def wait_while_paused(self, timeout: float | None = None) -> bool:
        """Block until resumed, stopped or a request comes in; returns False on timeout.

        The paused loop calls this, serves what was requested, and waits again while still paused.
        """
        with self._cond:
            return self._cond.wait_for(lambda: not self._paused or bool(self._requests), timeout)


def drive(events: Iterator[Any], sink: Callable[[Any], None]) -> None:
    """Pull every event into ``sink``; always close the generator so its ``finally`` runs."""
    try:
        for event in events:
            sink(event)
    finally:
        if isinstance(events, Generator):
            events.close()
