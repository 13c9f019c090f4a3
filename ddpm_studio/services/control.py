"""Pause, resume, stop and other requests, callable from any thread; and the one loop that drives a session.

Pause blocks on a condition variable (no polling, no CPU). Stop sets its flag *before* waking a paused
run, so the woken run sees the stop (napari's StatusChecker rule). Work that must not race a training
step (copying the model, changing the retention) is handed over with :meth:`RunControl.submit` and runs
on the session's own thread at its next safe point: between two steps, or while it waits paused.

"Checkpoint now" and "preview now" are requests of their own (:meth:`RunControl.request_checkpoint`,
:meth:`RunControl.request_preview`): the session serves them between steps and yields their usual events; a
paused run is woken to serve them and then waits again. The lock is re-entrant, so a POSIX signal handler (the
CLI's SIGUSR1 / SIGUSR2) may make a request while the main thread holds it or waits here.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")

#: The requests a session serves between steps (and while paused): save a checkpoint, make a preview now.
CHECKPOINT = "checkpoint"
PREVIEW = "preview"


class RunControl:
    """Thread-safe flags and requests shared between a running session and whoever owns it."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.RLock())
        self._stop = False
        self._paused = False
        self._calls: deque[tuple[Callable[[], Any], Future[Any]]] = deque()
        self._closed = False
        self._requests: set[str] = set()

    def pause(self) -> None:
        with self._cond:
            if not self._stop:
                self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._paused = False
            self._cond.notify_all()

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def stop_requested(self) -> bool:
        return self._stop

    # -- checkpoint now, preview now ------------------------------------------------------------------
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

    # -- waiting ---------------------------------------------------------------------------------------
    def wait_resumed(self, timeout: float | None = None) -> bool:
        """Block until resumed or stopped; returns False on timeout. Requests submitted meanwhile run here;
        checkpoint / preview requests do not end the wait (they are served once the run goes on)."""
        return self._wait(lambda: not self._paused, timeout)

    def wait_while_paused(self, timeout: float | None = None) -> bool:
        """Block until resumed, stopped, or a checkpoint / preview is requested; returns False on timeout.

        The paused loop calls this, serves what was requested, and waits again while still paused. Requests
        submitted meanwhile run here.
        """
        return self._wait(lambda: not self._paused or bool(self._requests), timeout)

    def serve_while_paused(self, serve: Callable[[], Iterator[Any]]) -> Iterator[Any]:
        """Wait until resumed or stopped, yielding from ``serve()`` (which takes the requests) each time a checkpoint
        / preview request wakes the run: it is served at once, and the run waits again, still paused."""
        while True:
            self.wait_while_paused()
            if self.has_requests and not self.stop_requested:
                yield from serve()
            if not self.paused or self.stop_requested:
                return

    def _wait(self, done: Callable[[], bool], timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self.run_pending()
            with self._cond:
                if done():
                    return True
                if self._calls:
                    continue
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)

    # -- requests run on the session's thread --------------------------------------------------------
    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn`` on the session's thread at its next safe point and return a Future of its result.

        Once the session has ended (:meth:`close`) nothing moves any more, so ``fn`` runs at once on the
        calling thread: a caller that must not block (a GUI thread) submits from a worker thread.
        """
        future: Future[T] = Future()
        with self._cond:
            if not self._closed:
                self._calls.append((fn, future))
                self._cond.notify_all()  # a paused session serves it now
                return future
        _run(fn, future)
        return future

    def run_pending(self) -> None:
        """Run the submitted requests (the session calls this between steps).

        Takes the lock only when something was submitted: a session calls this after every event, and a lock
        taken in a tight loop can starve the GUI thread's pause / resume of it (non-fair locks).
        """
        while self._calls:  # a lock-free look (a deque's length is read atomically)
            with self._cond:
                if not self._calls:
                    return
                fn, future = self._calls.popleft()
            _run(fn, future)

    def serving(self, events: Generator[Any, None, None]) -> Iterator[Any]:
        """``events``, running the submitted requests after each one: the session that makes them is then suspended
        at a yield, between two steps, so nothing races its weights or its checkpoint policy. Closing this closes
        ``events`` (its ``finally`` runs)."""
        try:
            for event in events:
                yield event
                self.run_pending()
        finally:
            events.close()

    def close(self) -> None:
        """The session has ended: serve what is pending, and from now on run submissions in the caller's thread."""
        with self._cond:
            self._closed = True
        self.run_pending()


def _run(fn: Callable[[], T], future: Future[T]) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        future.set_result(fn())
    except Exception as exc:  # delivered to the waiter, never raised into the session
        future.set_exception(exc)


def drive(events: Iterator[Any], sink: Callable[[Any], None]) -> None:
    """Pull every event into ``sink``; always close the generator so its ``finally`` runs."""
    try:
        for event in events:
            sink(event)
    finally:
        if isinstance(events, Generator):
            events.close()
