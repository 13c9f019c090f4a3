"""Driving a session from the terminal: Ctrl-C (and, under torchrun, SIGTERM) stops with a checkpoint, a second
Ctrl-C aborts; SIGUSR1/SIGUSR2 ask a training run for a checkpoint or a preview now; a failed save is retried.

Shared by ``train``, ``sample``, ``interpolate`` and ``evaluate``, which differ only in the options they pass; the
parser takes :data:`TRAIN_SIGNALS_HELP` from here so ``train --help`` documents the signals this module installs.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from typing import Any

from ddpm_studio.cli_progress import EventPrinter, logging_through

TRAIN_SIGNALS_HELP = """\
While training (POSIX: Linux, macOS), from another terminal:
  kill -USR1 PID   save a checkpoint now (training goes on)
  kill -USR2 PID   make a preview now (samples of the fixed noise and the validation loss)
PID is the training process's id (shown when training starts). Ctrl-C saves a checkpoint and exits."""


def request_signals(control: Any) -> dict[int, Any]:
    """SIGUSR1 = checkpoint now, SIGUSR2 = preview now (POSIX); returns the handlers they replace."""
    if not hasattr(signal, "SIGUSR1"):
        return {}

    def on_usr1(signum: int, frame: Any) -> None:
        control.request_checkpoint()

    def on_usr2(signum: int, frame: Any) -> None:
        control.request_preview()

    return {signal.SIGUSR1: signal.signal(signal.SIGUSR1, on_usr1), signal.SIGUSR2: signal.signal(signal.SIGUSR2, on_usr2)}


def run_with_ctrl_c(session: Any, printer: EventPrinter, also_sigterm: bool = False,
                    retry_failed_saves: float | None = None, requests: bool = False,
                    observers: Sequence[Callable[[Any], Any]] = ()) -> None:
    """Drive ``session`` with the printer; the first Ctrl-C stops gracefully (checkpoint), a second aborts.

    ``observers`` see every event after the printer (e.g. a :class:`~ddpm_studio.services.notifications.Notifier`).

    ``retry_failed_saves``: when a checkpoint cannot be written (disk full) the session pauses; resume it after
    this many seconds to retry the save, again and again until it works or Ctrl-C stops the run.
    ``also_sigterm``: SIGTERM stops gracefully too (torchrun passes Ctrl-C to its workers as one SIGINT, and a
    cluster's or torchrun's shutdown as SIGTERM, then waits 30 s before SIGKILL).
    ``requests``: SIGUSR1 asks for a checkpoint now, SIGUSR2 for a preview now (training only, POSIX only).
    """
    from ddpm_studio.services.control import drive

    def on_signal(signum: int, frame: Any) -> None:
        if session.control.stop_requested:
            signal.default_int_handler(signum, frame)
        printer.note("Stopping: saving a checkpoint (press Ctrl-C again to abort without saving)")
        session.control.stop()

    import threading

    from ddpm_studio.services import events as ev

    timers: list[threading.Timer] = []
    last: list[Any] = [None]

    def sink(event: Any) -> None:
        printer(event)
        for observe in observers:
            observe(event)
        if retry_failed_saves is not None and isinstance(event, ev.RunPaused) and isinstance(last[0], ev.CheckpointFailed):
            printer.note(f"Paused: free some disk space; the checkpoint is retried in {retry_failed_saves:g} s "
                         "(Ctrl-C stops without it)")
            timer = threading.Timer(retry_failed_saves, session.control.resume)
            timer.daemon = True
            timer.start()
            timers.append(timer)
        last[0] = event

    signums = (signal.SIGINT, signal.SIGTERM) if also_sigterm else (signal.SIGINT,)
    previous = {signum: signal.signal(signum, on_signal) for signum in signums}
    if requests:
        previous.update(request_signals(session.control))
    try:
        with logging_through(printer):
            drive(session.steps(), sink)
    finally:
        for timer in timers:
            timer.cancel()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        printer.close()
