"""Dataset panel (DatasetView): the built-in demo set or a folder (dialog, drag and drop, recent), and what is in it.

A view: it reports the user's choices (``dataEdited``, ``folderChosen``, ``browseRequested``) and shows what
the settings presenter found (the scan's verdict, skipped files, statistics, thumbnails). Thumbnails decode
lazily, only for rows on screen, so a 100 000-image folder never freezes the window.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QMenu,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ddpm_studio.gui.views.thumbnails import ThumbnailModel, ThumbnailView
from ddpm_studio.services.config import DataConfig
from ddpm_studio.services.dataset_scan import ScanSummary, load_thumbnail

SOURCES = (("demo", "Built-in demo shapes"), ("folder", "Image folder"), ("mnist", "MNIST files"),
           ("fashion_mnist", "Fashion-MNIST files"), ("cifar10", "CIFAR-10 files"))
SIZES = (16, 24, 28, 32, 48, 64, 96, 128, 192, 256)
MAX_SKIPPED_SHOWN = 2000
ERROR_STYLE = "color: #c62828; font-weight: bold;"


class DatasetPanel(QWidget):
    """Choose what to train on; shows the scan verdict, skipped files, statistics and thumbnails."""

    dataEdited = Signal(dict)  # {source, image_size, channels}
    folderChosen = Signal(str)  # typed, dropped or picked from Recent
    browseRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAcceptDrops(True)
        self.summary: ScanSummary | None = None  # the scan shown (None: none yet, or not a folder)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        form = QFormLayout()
        self.source = QComboBox()
        for key, text in SOURCES:
            self.source.addItem(text, key)
        self.source.setToolTip("The demo shapes need no files; or train on a folder of your own images")
        self.source.currentIndexChanged.connect(self._emit)
        form.addRow("Dataset", self.source)

        row = QHBoxLayout()
        self.path_edit = QLineEdit()
        self.path_edit.setObjectName("data_path")
        self.path_edit.setPlaceholderText("Drop a folder here")
        self.path_edit.editingFinished.connect(self._on_path_edited)
        self.browse = QPushButton("Browse…")
        self.browse.clicked.connect(self.browseRequested)
        self.recent_button = QPushButton("Recent")  # a push button's size includes its menu arrow (a tool button's
        self.recent_button.setToolTip("Folders you trained on before")  # arrow was drawn over the text)
        self.recent_menu = QMenu(self)
        self.recent_button.setMenu(self.recent_menu)
        row.addWidget(self.path_edit, 1)
        row.addWidget(self.browse)
        row.addWidget(self.recent_button)
        folder_row = QWidget()
        folder_row.setLayout(row)
        row.setContentsMargins(0, 0, 0, 0)
        form.addRow("Folder", folder_row)

        size_row = QHBoxLayout()
        self.size = QComboBox()
        for s in SIZES:
            self.size.addItem(f"{s} × {s}", s)
        self.size.setToolTip("Images are centre-cropped and resized to this square size")
        self.size.currentIndexChanged.connect(self._emit)
        self.mode = QComboBox()
        self.mode.addItem("RGB", 3)
        self.mode.addItem("Grayscale", 1)
        self.mode.setToolTip("Train on colour images or on their luminance")
        self.mode.currentIndexChanged.connect(self._emit)
        size_row.addWidget(self.size, 1)
        size_row.addWidget(self.mode, 1)
        form.addRow("Image size", size_row)
        layout.addLayout(form)

        self.status = QLabel()
        self.status.setObjectName("dataset_status")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.status)
        self.stats = QLabel()
        self.stats.setWordWrap(True)
        self.stats.setStyleSheet("color: #555;")
        layout.addWidget(self.stats)
        self.thumbs_model = ThumbnailModel(load_thumbnail, self)  # decodes visible rows on its own thread
        self.thumbs = ThumbnailView()
        self.thumbs.setModel(self.thumbs_model)
        layout.addWidget(self.thumbs, 3)
        self.skipped_label = QLabel("Skipped files")
        self.skipped = QListWidget()
        self.skipped.setObjectName("skipped_files")
        self.skipped.setToolTip("Files in the folder that will not be used, with the reason")
        layout.addWidget(self.skipped_label)
        layout.addWidget(self.skipped, 1)
        self._show_skipped(())

    # -- what the user chose -----------------------------------------------------------------------
    def data_values(self) -> dict[str, Any]:
        return {"source": self.source.currentData(), "data_path": self.path_edit.text().strip(),
                "image_size": int(self.size.currentData()), "channels": int(self.mode.currentData())}

    def _emit(self) -> None:
        values = self.data_values()
        del values["data_path"]  # the folder arrives through folderChosen
        self.dataEdited.emit(values)

    def _on_path_edited(self) -> None:
        folder = self.path_edit.text().strip()
        if folder:
            self.folderChosen.emit(folder)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        for url in event.mimeData().urls():
            if url.isLocalFile():
                path = url.toLocalFile()
                self.folderChosen.emit(path if os.path.isdir(path) else os.path.dirname(path))
                event.acceptProposedAction()
                return

    # -- what to show ----------------------------------------------------------------------------
    def set_data(self, data: DataConfig) -> None:
        """Show ``data`` (no signals: the presenter already knows)."""
        widgets = (self.source, self.size, self.mode, self.path_edit)
        for w in widgets:
            w.blockSignals(True)
        try:
            self.source.setCurrentIndex(max(0, self.source.findData(data.source)))
            while self.size.count() > len(SIZES):  # one slot for a size typed in Settings, not one per keystroke
                self.size.removeItem(len(SIZES))
            if self.size.findData(data.image_size) < 0:
                self.size.addItem(f"{data.image_size} × {data.image_size}", data.image_size)
            self.size.setCurrentIndex(self.size.findData(data.image_size))
            self.mode.setCurrentIndex(max(0, self.mode.findData(data.channels)))
            self.path_edit.setText(data.data_path)
        finally:
            for w in widgets:
                w.blockSignals(False)

    def set_recent(self, folders: list[str]) -> None:
        self.recent_menu.clear()
        for folder in folders:
            self.recent_menu.addAction(folder, lambda f=folder: self.folderChosen.emit(f))
        self.recent_button.setEnabled(bool(folders))

    def show_status(self, text: str, error: bool = False) -> None:
        self.status.setText(text)
        self.status.setStyleSheet(ERROR_STYLE if error else "")

    def show_scan(self, summary: ScanSummary | None, stats: str) -> None:
        """A folder's files (thumbnails decoded lazily), skipped files, warnings and statistics; None clears them.

        While the scan is checking files the thumbnails keep its first list (a broken file shows an empty tile
        whose tooltip says why), so scrolling is not reset at every report; the list is replaced once, at the end,
        when files turned out broken."""
        first = self.summary is None or summary is None or self.summary.root != summary.root
        self.summary = summary
        if first or (summary is not None and summary.complete and summary.files != self.thumbs_model.files):
            self.thumbs_model.set_files(summary.files if summary is not None else ())
        self._show_skipped(summary.skipped if summary is not None else (), summary.warnings if summary is not None else ())
        self.stats.setText(stats)

    def show_stats(self, text: str) -> None:
        self.stats.setText(text)

    def show_images(self, images: np.ndarray) -> None:
        """In-memory images as thumbnails (the demo set)."""
        self.thumbs_model.set_arrays(images)

    def set_read_only(self, read_only: bool) -> None:
        for w in (self.source, self.path_edit, self.browse, self.recent_button, self.size, self.mode):
            w.setEnabled(not read_only)
        self.setAcceptDrops(not read_only)

    def _show_skipped(self, skipped: tuple[tuple[str, str], ...], warnings: tuple[tuple[str, str], ...] = ()) -> None:
        """Each skipped file with its reason, then each usable file that deserves a warning (used anyway)."""
        self.skipped.clear()
        for marks, items in (("", skipped), ("⚠ used: ", warnings)):
            for path, reason in items[:MAX_SKIPPED_SHOWN]:
                self.skipped.addItem(f"{os.path.basename(path) or path} — {marks}{reason}")
                self.skipped.item(self.skipped.count() - 1).setToolTip(f"{path}\n{marks}{reason}")
            if len(items) > MAX_SKIPPED_SHOWN:
                self.skipped.addItem(f"… and {len(items) - MAX_SKIPPED_SHOWN:,} more")
        text = f"Skipped files ({len(skipped):,})" if skipped else "Skipped files: none"
        if warnings:
            text += f" · used with a warning ({len(warnings):,})"
        self.skipped_label.setText(text)
        self.skipped.setVisible(bool(skipped or warnings))
