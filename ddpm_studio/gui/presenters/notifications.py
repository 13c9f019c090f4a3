"""The notifications presenter: a desktop notification when a run completes, fails or pauses on a full disk, and
the webhook URL those outcomes are also POSTed to.

Why the URL is a preference and not a run setting: run settings are copied into every checkpoint and export,
and a webhook URL carries its secret in its path (see services/notifications.py). Each run gets a fresh
:class:`Notifier` (``new_notifier``), which the training worker feeds every event on its own thread, so a slow
or failing webhook never touches the GUI thread or the run; the notifications it makes come back here.
"""

from __future__ import annotations

import logging
from typing import Any

from PySide6.QtCore import QObject

from ddpm_studio.gui.views.protocols import NotificationsView
from ddpm_studio.services.notifications import Notification, Notifier, check_webhook_url, redact

log = logging.getLogger("ddpm_studio.gui")


class NotificationsPresenter(QObject):
    """Shows each run outcome's notification; keeps the webhook URL (Notifications… in the File menu)."""

    def __init__(self, view: NotificationsView, prefs: Any) -> None:
        super().__init__()
        self.view, self.prefs = view, prefs

    @property
    def webhook_url(self) -> str:
        return self.prefs.webhook_url()

    def new_notifier(self) -> Notifier:
        """A run's Notifier: it POSTs to the webhook, if one is set (a stored URL that no longer checks is ignored)."""
        try:
            return Notifier(self.webhook_url or None)
        except ValueError as exc:
            log.warning("Notifications: %s; the webhook is not used", exc)
            return Notifier()

    def show(self, note: Notification) -> None:
        """A run's outcome, on the desktop (where the system shows tray messages)."""
        self.view.notify(note.title, note.message)

    def edit_webhook(self) -> bool:
        """Ask for the webhook URL until it is valid, empty (no webhook) or the dialog is cancelled; True if changed."""
        url, error = self.webhook_url, ""
        while True:
            answer = self.view.ask_webhook_url(url, error)
            if answer is None:
                return False
            url = answer.strip()
            try:
                url = check_webhook_url(url) if url else ""
            except ValueError as exc:
                error = str(exc)
                continue
            self.prefs.set_webhook_url(url)
            log.info("Notifications: %s", f"webhook {redact(url)}" if url else "no webhook")
            return True
