"""Every dialog the app opens, in one place; presenters get them through :class:`QtDialogs` (a DialogService).

Why: errors are shown with ``QMessageBox.open()`` (window-modal but non-blocking), so an error
raised while training never stalls the event loop; the few questions that must block (quit while
training, reopen an interrupted run) and the file choosers go through these functions, which tests
replace with monkeypatch (or a presenter test with a mock DialogService) so nothing waits for a click.

File dialogs are asked for by *purpose* (``data_folder``, ``settings_file``, ``images``, ...): each starts in the
folder last used for that purpose (remembered in the preferences, so across launches), else in the folder the
presenter suggests (the runs folder for a checkpoint), else in Pictures or Documents or the home folder; never
in the current directory, which for README's command is the source checkout.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from PySide6.QtCore import QStandardPaths, Qt, QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QFileDialog, QMessageBox, QWidget

log = logging.getLogger("ddpm_studio.gui")

#: (title, text) of every error shown, newest last (tests and the log panel read it).
shown_errors: list[tuple[str, str]] = []

#: Where a purpose's dialog starts before the user ever chose a folder for it (and none was suggested).
FIRST_PLACES = {"data_folder": "pictures", "images": "pictures", "grid": "pictures", "gif": "pictures",
                "settings_file": "documents"}
_LOCATIONS = {"pictures": QStandardPaths.StandardLocation.PicturesLocation,
              "documents": QStandardPaths.StandardLocation.DocumentsLocation}


def standard_folder(place: str) -> str:
    """The user's Pictures or Documents folder when it exists, else the home folder."""
    location = _LOCATIONS.get(place)
    path = QStandardPaths.writableLocation(location) if location is not None else ""
    return path if path and os.path.isdir(path) else str(Path.home())


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
    """The DialogService the presenters get: these functions, over the main window; file dialogs start in the
    folder last used for their purpose (``prefs``: the app's Preferences, where those folders are kept)."""

    def __init__(self, parent: QWidget | None, prefs: Any = None) -> None:
        self.parent, self.prefs = parent, prefs

    def start_folder(self, purpose: str, hint: str = "") -> str:
        """The last folder used for ``purpose`` if it still exists, else ``hint`` (a folder or a file in one), else
        the purpose's standard place; always an absolute path."""
        remembered = self.prefs.dialog_folder(purpose) if self.prefs is not None else ""
        hinted = os.path.dirname(hint) if hint and os.path.isfile(hint) else hint
        for folder in (remembered, hinted):
            if folder and os.path.isabs(folder) and os.path.isdir(folder):
                return folder
        return standard_folder(FIRST_PLACES.get(purpose, "home"))

    def _remember(self, purpose: str, chosen: str, is_folder: bool) -> str:
        if chosen and self.prefs is not None:
            self.prefs.remember_dialog_folder(purpose, chosen if is_folder else os.path.dirname(chosen))
        return chosen

    # Each looks the module function up when called, so a test's monkeypatch of it applies here too.
    def show_error(self, title: str, text: str, detail: str = "") -> None:
        show_error(self.parent, title, text, detail)

    def show_info(self, title: str, text: str) -> None:
        show_info(self.parent, title, text)

    def ask(self, title: str, text: str, buttons: tuple[str, ...], default: int = 0) -> int:
        return ask(self.parent, title, text, buttons, default)

    def choose_directory(self, title: str, purpose: str, hint: str = "") -> str:
        chosen = choose_directory(self.parent, title, self.start_folder(purpose, hint))
        return self._remember(purpose, chosen, is_folder=True)

    def choose_open_file(self, title: str, purpose: str, filters: str = "", hint: str = "") -> str:
        chosen = choose_open_file(self.parent, title, self.start_folder(purpose, hint), filters)
        return self._remember(purpose, chosen, is_folder=False)

    def choose_save_file(self, title: str, purpose: str, name: str, filters: str = "") -> str:
        chosen = choose_save_file(self.parent, title, os.path.join(self.start_folder(purpose), name), filters)
        return self._remember(purpose, chosen, is_folder=False)

    def open_folder(self, path: str) -> None:
        open_folder(path)
