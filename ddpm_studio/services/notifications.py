"""Notifications of how a training run ended: completed, failed, or paused because a checkpoint could not be written.

:class:`Notifier` is an event sink, not part of the training loop: whoever drives a session (the CLI's loop,
the GUI's worker signals) hands it every event with :meth:`Notifier.observe`, which returns a
:class:`Notification` when one is due. The GUI shows those as desktop notifications; with a webhook URL each
is also POSTed as JSON::

    {"run": "cats", "run_dir": "/…/runs/cats", "state": "completed", "step": 20000, "loss": 0.0312,
     "checkpoint": "/…/runs/cats/checkpoints/step_00020000.pt", "message": "Run cats completed …", "time": 1764…}

The POST happens on a background thread with a short timeout: a webhook that errors, hangs or refuses
never stops or slows training (a failed delivery is logged as a warning, with the URL's host only, since
webhook URLs carry their secret in the path). The URL is deliberately not a run setting: run settings are
copied into every checkpoint and every export, which would hand the secret to whoever gets the model.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ddpm_studio import __version__
from ddpm_studio.services import events as ev

log = logging.getLogger(__name__)

#: Where the CLI (and anything else without a setting of its own) finds the webhook URL when no flag gives one.
WEBHOOK_ENV = "DDPM_STUDIO_WEBHOOK_URL"
STATES = ("completed", "failed", "paused", "stopped")
#: What is worth interrupting someone for by default: a stop is something the user just did.
DEFAULT_STATES = ("completed", "failed", "paused")
WEBHOOK_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Notification:
    """One outcome of a run, for a person (``title``, ``message``) and for a webhook (all of it, as JSON)."""

    run: str
    run_dir: str | None
    state: str  # one of STATES
    step: int | None
    loss: float | None
    checkpoint: str | None  # the newest checkpoint on disk
    title: str
    message: str
    time: float

    def payload(self) -> dict[str, Any]:
        """The webhook's JSON body."""
        return {k: v for k, v in asdict(self).items() if k != "title"}


def check_webhook_url(url: str) -> str:
    """``url`` if it is an http(s) URL with a host, else ValueError with a sentence for the user."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"The webhook URL must start with http:// or https:// and name a host (got {redact(url)!r})")
    return url.strip()


def redact(url: str) -> str:
    """The URL's scheme and host only: the path and query of a webhook URL are its secret."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}/…" if parts.scheme else "…"


class Notifier:
    """Turns a training session's events into notifications and, with ``webhook_url``, POSTs each one.

    Call :meth:`observe` with every event, in order, from one thread. Call :meth:`close` when the run is over
    to give the last POST a moment (at most ``timeout``) to leave before the process exits.
    """

    def __init__(self, webhook_url: str | None = None, *, states: tuple[str, ...] = DEFAULT_STATES,
                 timeout: float = WEBHOOK_TIMEOUT_S) -> None:
        unknown = sorted(set(states) - set(STATES))
        if unknown:
            raise ValueError(f"Unknown notification state(s) {', '.join(unknown)}; choose from {', '.join(STATES)}")
        self.url = check_webhook_url(webhook_url) if webhook_url else None
        self.states, self.timeout = states, timeout
        self._run_dir: str | None = None
        self._step: int | None = None
        self._step_loss: float | None = None
        self._interval_loss: float | None = None  # the mean over the last log interval: steadier than one step's
        self._checkpoint: str | None = None
        self._failed_save: ev.CheckpointFailed | None = None
        self._paused_told = False
        self._senders: list[threading.Thread] = []

    # -- events -> notifications ------------------------------------------------------------------
    def observe(self, event: Any) -> Notification | None:
        """Take one event; return the notification it causes (already queued for the webhook), or None."""
        note = self._notification(event)
        self._failed_save = event if isinstance(event, ev.CheckpointFailed) else None
        if note is None or note.state not in self.states:
            return None
        if self.url is not None:
            self._post(note)
        return note

    def _notification(self, event: Any) -> Notification | None:
        if isinstance(event, ev.RunStarted):
            self._run_dir, self._step = event.run_dir, event.step
        elif isinstance(event, ev.TrainProgress):
            self._step, self._step_loss = event.step, event.loss
        elif isinstance(event, ev.MetricsLogged) and isinstance(event.record.get("loss"), float):
            self._interval_loss = event.record["loss"]
        elif isinstance(event, ev.CheckpointSaved):
            self._checkpoint, self._paused_told = event.path, False
        elif isinstance(event, ev.RunPaused) and self._failed_save is not None:
            if self._paused_told:  # the CLI retries every minute: say it once per episode, not on every retry
                return None
            self._paused_told = True
            return self._make("paused", event.step, f"is paused at step {event.step:,}: {self._failed_save.message}")
        elif isinstance(event, ev.RunFinished):
            self._checkpoint = event.checkpoint or self._checkpoint
            loss = f" (loss {self.loss:.4g})" if self.loss is not None else ""
            return self._make(event.reason, event.step, f"{event.reason} at step {event.step:,}{loss}")
        elif isinstance(event, ev.RunFailed):
            self._checkpoint = event.checkpoint or self._checkpoint
            step = event.step if event.step is not None else self._step
            at = f" at step {step:,}" if step is not None else ""
            return self._make("failed", step, f"failed{at}: {event.message}")
        return None

    @property
    def loss(self) -> float | None:
        """The run's recent loss: the last log interval's mean, else the last step's."""
        return self._interval_loss if self._interval_loss is not None else self._step_loss

    def _make(self, state: str, step: int | None, what: str) -> Notification:
        run = Path(self._run_dir).name if self._run_dir else "Training"
        newest = f" Newest checkpoint: {Path(self._checkpoint).name}." if self._checkpoint else ""
        title = f"{run}: {state}" if self._run_dir else f"Training {state}"
        message = f"{'Run ' + run if self._run_dir else 'Training'} {what.rstrip('.')}.{newest}"
        return Notification(run, self._run_dir, state, step, self.loss, self._checkpoint, title, message, time.time())

    # -- the webhook ------------------------------------------------------------------------------
    def _post(self, note: Notification) -> None:
        """Send on a thread of its own, after the previous notification's (so they arrive in order)."""
        previous = self._senders[-1] if self._senders else None
        sender = threading.Thread(target=self._send_after, args=(previous, note), name="ddpm-webhook", daemon=True)
        try:
            sender.start()
        except RuntimeError as exc:  # no thread to be had: lose the notification, never the run
            log.warning("Webhook %s: the %s notification was not sent (%s)", redact(self.url or ""), note.state, exc)
            return
        self._senders = [t for t in self._senders if t.is_alive()] + [sender]

    def _send_after(self, previous: threading.Thread | None, note: Notification) -> None:
        if previous is not None:
            previous.join()
        assert self.url is not None
        request = urllib.request.Request(
            self.url, data=json.dumps(note.payload()).encode("utf-8"), method="POST",
            headers={"Content-Type": "application/json", "User-Agent": f"ddpm-studio/{__version__}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read(1024)
        except (urllib.error.URLError, OSError, ValueError) as exc:  # HTTPError, refused, timed out, reset, …
            reason = getattr(exc, "reason", None) or exc
            log.warning("Webhook %s failed for the %s notification (%s); training is not affected",
                        redact(self.url), note.state, reason)

    def close(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` (default: the webhook timeout) for the POSTs under way; True when none is left."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        for sender in self._senders:
            sender.join(max(0.0, deadline - time.monotonic()))
        self._senders = [t for t in self._senders if t.is_alive()]
        return not self._senders


def webhook_url_from_env() -> str | None:
    return os.environ.get(WEBHOOK_ENV) or None


__all__ = ["DEFAULT_STATES", "STATES", "WEBHOOK_ENV", "Notification", "Notifier", "check_webhook_url",
           "webhook_url_from_env"]
