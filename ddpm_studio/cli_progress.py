"""The CLI's sink for session events: a one-line progress bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

from ddpm_studio.services import events as ev
from ddpm_studio.services.formatting import RunPosition, format_duration


def bar(done: int, total: int, width: int = 24) -> str:
    filled = int(width * done / total) if total else 0
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def batch_breakdown(event: ev.RunStarted) -> str:
    """How the effective batch comes about, e.g. " = 8 per device × 2 processes × 4 accumulation steps" ("" for 1 x 1)."""
    if not event.batch_per_device or (event.world_size == 1 and event.grad_accum == 1):
        return ""
    parts = [f"{event.batch_per_device} per device"]
    if event.world_size > 1:
        parts.append(f"{event.world_size} processes")
    if event.grad_accum > 1:
        parts.append(f"{event.grad_accum} accumulation steps")
    return " = " + " × ".join(parts)


class EventPrinter:
    """Callable sink: redraws the bar at most every ``interval`` s (a TTY) or prints a line every ``line_every`` s.

    ``quiet`` prints nothing but still records the outcome (the other ranks of a torchrun job: rank 0 reports).
    """

    def __init__(self, stream: TextIO | None = None, interval: float = 0.2, line_every: float = 10.0,
                 quiet: bool = False) -> None:
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.interval = interval if self.tty else line_every
        self._last = 0.0
        self._bar_shown = False
        self._drawn = 0  # length of the bar line now on screen
        self.outcome: str | None = None
        self._last_status = ""
        self._budget_s = 0.0  # the run's time budget (RunStarted), for the bar of a timed run

    def _width(self) -> int:
        """The terminal's width, asked at each redraw (a resized window is followed); $COLUMNS overrides it."""
        if os.environ.get("COLUMNS", "").isdigit():
            return int(os.environ["COLUMNS"])
        try:
            return os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, OSError, ValueError):
            return shutil.get_terminal_size().columns

    def note(self, message: str) -> None:
        """A line of its own, above the bar."""
        if self.quiet:
            return
        if self._bar_shown:
            self.stream.write("\n")
            self._bar_shown = False
            self._drawn = 0
        self.stream.write(message + "\n")
        self.stream.flush()

    def _progress(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if self.quiet or (not force and now - self._last < self.interval):
            return
        self._last = now
        if self.tty:
            # Never wider than the terminal: a line that wraps is not redrawn in place by "\r", and each redraw
            # then leaves a line behind (the blank lines after "Loading checkpoint…" on an 80-column terminal).
            line = text[: max(self._width(), 20) - 1]
            self.stream.write("\r" + line.ljust(self._drawn))  # spaces erase the rest of a longer previous line
            self._drawn = len(line)
            self._bar_shown = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def __call__(self, event: Any) -> None:
        if isinstance(event, ev.TrainProgress):
            # A timed run shows where it stands in its minutes as well as its steps: it ends at whichever comes first.
            pos = RunPosition(event.step, event.total_steps, event.train_seconds, self._budget_s)
            self._progress(
                f"{bar(round(pos.fraction * 1000), 1000)} {pos.where()} loss {event.loss:.4f} "
                f"lr {event.lr:.1e} {event.images_per_sec:.1f} img/s ETA {format_duration(event.eta_seconds)}",
                force=event.step == event.total_steps,
            )
        elif isinstance(event, ev.SamplingProgress):
            self._progress(
                f"{bar(event.done, event.total)} step {event.done}/{event.total} batch {event.batch}/{event.batches} "
                f"ETA {format_duration(event.eta_seconds)}",
                force=event.done == event.total,
            )
        elif isinstance(event, ev.Status):
            if event.total:
                self._progress(f"{event.message}: {event.done}/{event.total}")
            elif event.message != self._last_status:
                self.note(event.message + "…")
            self._last_status = event.message
        elif isinstance(event, ev.RunStarted):
            self._budget_s = event.time_budget_s
            verb = f"Resuming from {event.resumed_from} at step {event.step}" if event.resumed_from else "Training"
            self.note(f"{verb}: {event.parameters / 1e6:.2f}M parameters on {event.device_reason}")
            self.note(f"Data: {event.dataset}; effective batch {event.effective_batch}{batch_breakdown(event)}")
            for warning in event.warnings:  # e.g. the accelerator self-check's, which names the CPU as the way out
                self.note(f"WARNING: {warning}")
            self.note(f"Run folder: {event.run_dir}")
        elif isinstance(event, ev.PreviewReady):
            val = f", validation loss {event.val_loss:.4f}" if event.val_loss is not None else ""
            self.note(f"Preview at step {event.step}: {event.path}{val}")
        elif isinstance(event, ev.CheckpointSaved):
            self.note(f"Checkpoint saved: {event.path} ({event.size_bytes / 1e6:.1f} MB)")
        elif isinstance(event, ev.CheckpointFailed):
            self.note(f"WARNING: {event.message}")
        elif isinstance(event, ev.RunPaused):
            self.note(f"Paused at step {event.step}")
        elif isinstance(event, ev.RunFinished):
            self.outcome = event.reason
            self.note(f"Training {event.reason} at step {event.step}. Checkpoint: {event.checkpoint}")
            if event.checkpoint:
                self.note(f"Generate images with: ddpm-studio sample {event.checkpoint}")
        elif isinstance(event, ev.EvaluationReady):
            self.outcome = "evaluated"
            for line in event.lines:
                self.note(line)
            if event.path:
                self.note(f"Report: {event.path}")
        elif isinstance(event, ev.SamplesReady):
            self.outcome = "samples"
            if "frames" in event.extra:  # an interpolation: one strip
                self.note(f"Saved a strip of {len(event.images)} interpolated images: {event.grid_path}")
            else:
                self.note(f"Saved {len(event.paths)} images and a grid: {event.grid_path}")
            if event.trajectory_path:
                self.note(f"Trajectory: {event.trajectory_path}")

    def close(self) -> None:
        if self._bar_shown:
            self.stream.write("\n")
            self.stream.flush()
            self._bar_shown = False
            self._drawn = 0


class _NoteHandler(logging.Handler):
    """Writes log records as the printer's notes, so a message never lands in the middle of the progress bar."""

    def __init__(self, printer: EventPrinter, like: logging.Handler) -> None:
        super().__init__(like.level)
        self.printer = printer
        self.setFormatter(like.formatter)
        for f in like.filters:
            self.addFilter(f)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.printer.note(self.format(record))
        except Exception:  # a log line must never break the run
            self.handleError(record)


@contextlib.contextmanager
def logging_through(printer: EventPrinter) -> Iterator[None]:
    """While a session runs, the root logger's console handler writes through ``printer`` (Pause / Resume, a
    checkpoint asked for, warnings: each on a line of its own above the bar)."""
    root = logging.getLogger()
    swapped = [(i, h) for i, h in enumerate(root.handlers)
               if type(h) is logging.StreamHandler and h.stream in (sys.stderr, printer.stream)]
    for i, h in swapped:
        root.handlers[i] = _NoteHandler(printer, h)
    try:
        yield
    finally:
        for i, h in swapped:
            root.handlers[i] = h
