"""Run blocking work on a helper thread while a session's generator keeps yielding progress events.

The sessions are generators the CLI and the GUI drive one event at a time; a long blocking call inside one
(decoding a big image folder, comparing samples with every training image) would otherwise yield nothing until
it ends, and the progress bar would stand still. :func:`run_with_progress` runs the call on a thread and yields a
:class:`Status` with its latest done / total meanwhile. Training and evaluation both use it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from ddpm_studio.services.events import Status


def run_with_progress(message: str, work: Any, interval: float = 0.2) -> Iterator[Any]:
    """Run ``work(progress)`` in a helper thread, yielding a Status every ``interval`` seconds; return its result.

    Lets a generator report progress of a long blocking call (decoding a big folder) to the GUI.
    """
    latest: list[tuple[int, int]] = [(0, 0)]
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = work(lambda done, total: latest.__setitem__(0, (done, total)))
        except BaseException as exc:  # re-raised in the generator's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="ddpm-load", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(interval)
        if thread.is_alive():
            yield Status(message, *latest[0])
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
