"""The save presenter: the Generate panel's Save buttons write the images shown (the generate presenter's
``resultsChanged``) where the user asks: the selected or all images as PNG files into a folder, a grid image, the
trajectory as a GIF. Why apart from the jobs: saving needs only those images and the selection, and a place to
write; a disk error is said in a message, never raised into the GUI.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject

from ddpm_studio.gui.presenters.messages import ShownResults
from ddpm_studio.gui.views.protocols import DialogService, SaveResultsView
from ddpm_studio.services import events as ev
from ddpm_studio.services import outputs

log = logging.getLogger("ddpm_studio.gui")


class SaveResultsPresenter(QObject):
    """Saves the shown results: ``selected`` / ``all`` images, the ``grid`` or the ``gif``."""

    def __init__(self, view: SaveResultsView, dialogs: DialogService) -> None:
        super().__init__()
        self.view, self.dialogs = view, dialogs
        self.result: ev.SamplesReady | None = None
        view.saveRequested.connect(self.save)

    def set_results(self, shown: ShownResults | None) -> None:
        self.result = shown.result if shown is not None else None

    def save(self, what: str) -> Any:
        """Save the result: ``selected`` / ``all`` images into a folder, the ``grid`` or the ``gif`` into a file."""
        result = self.result
        if result is None:
            return None
        if what in ("selected", "all"):
            indices = self.view.selected_indices() if what == "selected" else None
            folder = self.dialogs.choose_directory("Save images to folder", "images")
            if not folder:
                return None
            return self._guarded("Cannot save images", lambda: outputs.save_images(result, indices, folder))
        if what == "grid":
            path = self.dialogs.choose_save_file("Save grid image", "grid", "samples_grid.png", "PNG images (*.png)")
            indices = self.view.selected_indices() or None
            return self._guarded("Cannot save the grid", lambda: outputs.save_grid(result, path, indices)) if path else None
        if what != "gif":
            raise ValueError(f"Nothing to save called {what!r} (selected, all, grid or gif)")
        path = self.dialogs.choose_save_file("Save trajectory GIF", "gif", "trajectory.gif", "GIF animations (*.gif)")
        return self._guarded("Cannot save the GIF", lambda: outputs.save_gif(result, path)) if path else None

    def _guarded(self, title: str, action: Callable[[], Any]) -> Any:
        try:
            result = action()
        except OSError as exc:
            self.dialogs.show_error(title, f"{exc.filename or ''}: {exc.strerror or exc}")
            return None
        log.info("Saved %s", result if not isinstance(result, list) else f"{len(result)} file(s)")
        return result
