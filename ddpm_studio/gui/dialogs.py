"""Every dialog the app opens, in one place; presenters get them through :class:`QtDialogs` (a DialogService).

Why: errors are shown with ``QMessageBox.open()`` (window-modal but non-blocking), so an error
raised while training never stalls the event loop; the few questions that must block (quit while
training, reopen an interrupted run) and the file choosers go through these functions, which tests
replace with monkeypatch (or a presenter test with a mock DialogService) so nothing waits for a click.
"""

from __future__ import annotations

import logging

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QFileDialog, QMessageBox, QWidget

log = logging.getLogger("ddpm_studio.gui")

#: (title, text) of every error shown, newest last (tests and the log panel read it).
shown_errors: list[tuple[str, str]] = []


def show_error(parent: QWidget | None, title: str, text: str, detail: str = "") -> QMessageBox:
    """A clear, non-blocking error message; the app stays usable behind it."""
    shown_errors.append((title, text))
    log.error("%s: %s", title, text)
    box = QMessageBox(QMessageBox.Icon.Warning, title, text, QMessageBox.StandardButton.Ok, parent)
    box.setObjectName("error_box")
    if detail:
        box.setDetailedText(detail)
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, True)
    box.open()
    return box


def show_info(parent: QWidget | None, title: str, text: str) -> QMessageBox:
    box = QMessageBox(QMessageBox.Icon.Information, title, text, QMessageBox.StandardButton.Ok, parent)
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, True)
    box.open()
    return box


def ask(parent: QWidget | None, title: str, text: str, buttons: tuple[str, ...], default: int = 0) -> int:
    """A blocking question with custom buttons; returns the index of the one pressed (-1 = closed)."""
    box = QMessageBox(QMessageBox.Icon.Question, title, text, QMessageBox.StandardButton.NoButton, parent)
    made = [box.addButton(label, QMessageBox.ButtonRole.AcceptRole if i == 0 else QMessageBox.ButtonRole.RejectRole)
            for i, label in enumerate(buttons)]
    box.setDefaultButton(made[default])
    box.exec()
    clicked = box.clickedButton()
    return made.index(clicked) if clicked in made else -1


def choose_directory(parent: QWidget | None, title: str, start: str = "") -> str:
    return QFileDialog.getExistingDirectory(parent, title, start)


def choose_open_file(parent: QWidget | None, title: str, start: str = "", filters: str = "") -> str:
    path, _ = QFileDialog.getOpenFileName(parent, title, start, filters)
    return path


def choose_save_file(parent: QWidget | None, title: str, start: str = "", filters: str = "") -> str:
    path, _ = QFileDialog.getSaveFileName(parent, title, start, filters)
    return path


def open_folder(path: str) -> None:
    """Show ``path`` in the platform's file manager."""
    QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))


class QtDialogs:
    """The DialogService the presenters get: these functions, over the main window."""

    def __init__(self, parent: QWidget | None) -> None:
        self.parent = parent

    # Each looks the module function up when called, so a test's monkeypatch of it applies here too.
    def show_error(self, title: str, text: str, detail: str = "") -> None:
        show_error(self.parent, title, text, detail)

    def show_info(self, title: str, text: str) -> None:
        show_info(self.parent, title, text)

    def ask(self, title: str, text: str, buttons: tuple[str, ...], default: int = 0) -> int:
        return ask(self.parent, title, text, buttons, default)

    def choose_directory(self, title: str, start: str = "") -> str:
        return choose_directory(self.parent, title, start)

    def choose_open_file(self, title: str, start: str = "", filters: str = "") -> str:
        return choose_open_file(self.parent, title, start, filters)

    def choose_save_file(self, title: str, start: str = "", filters: str = "") -> str:
        return choose_save_file(self.parent, title, start, filters)

    def open_folder(self, path: str) -> None:
        open_folder(path)
