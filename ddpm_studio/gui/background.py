"""Short background jobs (torch warm-up, config checks, folder scans, thumbnails) off the GUI thread.

Why not QThread here: these jobs are fire-and-forget and some (scanning a huge folder) cannot be
interrupted; a daemon Python thread never blocks quitting the app, while a QThread still running
at exit aborts the process. Results come back through a queued Qt signal, so callbacks run on the
GUI thread; a callback whose owner was deleted meanwhile is dropped.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Signal, Slot

log = logging.getLogger(__name__)


class _Relay(QObject):
    """Lives on the GUI thread; its signal carries (callback, value) across threads."""

    deliver = Signal(object, object)

    def __init__(self) -> None:
        super().__init__()
        self.deliver.connect(self._run)

    @Slot(object, object)
    def _run(self, callback: Callable[[Any], None], value: Any) -> None:
        try:
            callback(value)
        except RuntimeError as exc:  # the widget it belonged to was deleted meanwhile
            if "already deleted" not in str(exc):
                raise


_relay: _Relay | None = None
_jobs: set[threading.Thread] = set()


def relay() -> _Relay:
    """The process-wide relay; create it on the GUI thread (first call from create_app)."""
    global _relay
    if _relay is None:
        _relay = _Relay()
    return _relay


def post(callback: Callable[[Any], None], value: Any = None) -> None:
    """Run ``callback(value)`` on the GUI thread soon (callable from any thread)."""
    with contextlib.suppress(RuntimeError):  # the application is gone
        relay().deliver.emit(callback, value)


def run_in_background(
    job: Callable[[], Any],
    on_done: Callable[[Any], None] | None = None,
    on_error: Callable[[BaseException], None] | None = None,
    name: str = "ddpm-gui-job",
) -> threading.Thread:
    """Run ``job()`` on a daemon thread; deliver its result or exception to the GUI thread."""
    relay()  # make sure the relay exists on the calling (GUI) thread

    def target() -> None:
        try:
            value = job()
        except BaseException as exc:
            if on_error is not None:
                post(on_error, exc)
            else:
                log.exception("Background job %s failed", name)
        else:
            if on_done is not None:
                post(on_done, value)
        finally:
            _jobs.discard(thread)

    thread = threading.Thread(target=target, name=name, daemon=True)
    _jobs.add(thread)
    thread.start()
    return thread


def running_jobs() -> int:
    """Number of background jobs still running (for tests and shutdown)."""
    return sum(1 for t in list(_jobs) if t.is_alive())


def wait_for_jobs(timeout: float = 10.0) -> bool:
    """Join the running jobs (at quit). A daemon thread still inside torch when the interpreter finalizes
    is killed mid-C++ call, and the process aborts ("terminate called without an active exception")."""
    import time

    deadline = time.monotonic() + timeout
    for thread in list(_jobs):
        thread.join(max(0.0, deadline - time.monotonic()))
    return running_jobs() == 0


def warm_up() -> dict[str, str]:
    """Import torch and the services that need it, and pick the device; runs after the window shows."""
    from ddpm_studio.core.device import choose_device
    from ddpm_studio.services import sampling, training  # noqa: F401 - imported for their side effect (warm cache)

    choice = choose_device()
    return {"device": str(choice.device), "reason": choice.reason}
