"""Desktop notifications through the system tray, and the dialog that edits the webhook URL (NotificationsView).

Qt shows a tray message in macOS' Notification Center and through the notification daemon on Linux desktops;
where the system has no tray (some Linux desktops, a headless session) nothing is shown and nothing fails.
The tray icon is made at the first notification, not at start-up, so the app adds no icon it does not need.
"""

from __future__ import annotations

from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QLineEdit, QSystemTrayIcon, QVBoxLayout, QWidget

MESSAGE_MS = 10_000
EXPLAIN = ("When a run completes, fails, or pauses because a checkpoint could not be written, the app shows a desktop "
           "notification and, with a URL here, POSTs it as JSON (run, state, step, loss, newest checkpoint).\n"
           "The URL is kept in this computer's app settings, never in a run's files; empty = no webhook.")


class DesktopNotifications:
    """Tray messages and the webhook dialog, parented to ``window``."""

    def __init__(self, window: QWidget | None = None) -> None:
        self.window = window
        self.tray: QSystemTrayIcon | None = None

    def notify(self, title: str, text: str) -> None:
        if not QSystemTrayIcon.isSystemTrayAvailable():
            return
        if self.tray is None:
            self.tray = QSystemTrayIcon(QGuiApplication.windowIcon(), self.window)
            self.tray.setToolTip("DDPM Studio")
            self.tray.show()
        self.tray.showMessage(title, text, QSystemTrayIcon.MessageIcon.Information, MESSAGE_MS)

    def ask_webhook_url(self, url: str, error: str = "") -> str | None:
        dialog = WebhookDialog(url, error, self.window)
        return dialog.url() if dialog.exec() == QDialog.DialogCode.Accepted else None


class WebhookDialog(QDialog):
    """File → Notifications…: the webhook URL, what it is for, and why the last one was refused."""

    def __init__(self, url: str, error: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Notifications")
        layout = QVBoxLayout(self)
        explain = QLabel(EXPLAIN)
        explain.setWordWrap(True)
        layout.addWidget(explain)
        self.edit = QLineEdit(url)
        self.edit.setObjectName("webhook_url")
        self.edit.setPlaceholderText("https://hooks.example.com/…")
        self.edit.setMinimumWidth(420)
        layout.addWidget(self.edit)
        self.error = QLabel(error)
        self.error.setObjectName("webhook_error")
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #c62828;")
        self.error.setVisible(bool(error))
        layout.addWidget(self.error)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def url(self) -> str:
        return self.edit.text().strip()
