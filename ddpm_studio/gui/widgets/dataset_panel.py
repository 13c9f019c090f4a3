"""Dataset panel: the built-in demo set or a folder (dialog, drag and drop, recent), and what is in it.

Scanning runs on a background thread, thumbnails decode lazily, statistics sample headers only:
choosing a 100 000-image folder never freezes the window. The panel reports the chosen data as
``dataChanged`` and whether it can be trained on as ``problemChanged`` (None when fine).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QMenu,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ddpm_studio.gui import background
from ddpm_studio.gui.dataset_scan import ScanSummary, demo_thumbnails, describe_stats, load_thumbnail, scan_folder
from ddpm_studio.gui.widgets.thumbnails import ThumbnailModel, ThumbnailView
from ddpm_studio.services.config import DataConfig

SOURCES = (("demo", "Built-in demo shapes"), ("folder", "Image folder"), ("mnist", "MNIST files"),
           ("fashion_mnist", "Fashion-MNIST files"), ("cifar10", "CIFAR-10 files"))
SIZES = (16, 24, 28, 32, 48, 64, 96, 128, 192, 256)
MAX_SKIPPED_SHOWN = 2000


class DatasetPanel(QWidget):
    """Choose what to train on; shows the scan verdict, skipped files, statistics and thumbnails."""

    dataChanged = Signal(dict)  # {source, data_path, image_size, channels}
    problemChanged = Signal(object)  # str or None
    folderChosen = Signal(str)  # a folder the user picked (for the recent list)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAcceptDrops(True)
        self._scan_id = 0
        self._live = False  # background work (which imports torch) waits until the window has painted
        self.summary: ScanSummary | None = None
        self.problem: str | None = None
        self._recent: list[str] = []
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        form = QFormLayout()
        self.source = QComboBox()
        for key, text in SOURCES:
            self.source.addItem(text, key)
        self.source.setToolTip("The demo shapes need no files; or train on a folder of your own images")
        self.source.currentIndexChanged.connect(self._on_source)
        form.addRow("Dataset", self.source)

        row = QHBoxLayout()
        self.path_edit = QLineEdit()
        self.path_edit.setObjectName("data_path")
        self.path_edit.setPlaceholderText("Drop a folder here")
        self.path_edit.editingFinished.connect(lambda: self.set_folder(self.path_edit.text().strip()))
        self.browse = QPushButton("Browse…")
        self.browse.clicked.connect(self._browse)
        self.recent_button = QToolButton()
        self.recent_button.setText("Recent")
        self.recent_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.recent_menu = QMenu(self)
        self.recent_button.setMenu(self.recent_menu)
        row.addWidget(self.path_edit, 1)
        row.addWidget(self.browse)
        row.addWidget(self.recent_button)
        self.folder_row = QWidget()
        self.folder_row.setLayout(row)
        row.setContentsMargins(0, 0, 0, 0)
        form.addRow("Folder", self.folder_row)

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
        self.thumbs_model = ThumbnailModel(load_thumbnail, self)
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
        self._on_source()

    # -- reading / writing the choice -------------------------------------------------------------
    def data_values(self) -> dict[str, Any]:
        return {"source": self.source.currentData(), "data_path": self.path_edit.text().strip(),
                "image_size": int(self.size.currentData()), "channels": int(self.mode.currentData())}

    def set_data(self, data: DataConfig) -> None:
        """Show ``data`` (from settings, a loaded config or the hparam form) without a feedback loop."""
        changed_folder = data.data_path != self.path_edit.text().strip() or data.source != self.source.currentData()
        for w in (self.source, self.size, self.mode, self.path_edit):
            w.blockSignals(True)
        try:
            self.source.setCurrentIndex(max(0, self.source.findData(data.source)))
            if self.size.findData(data.image_size) < 0:
                self.size.addItem(f"{data.image_size} × {data.image_size}", data.image_size)
            self.size.setCurrentIndex(self.size.findData(data.image_size))
            self.mode.setCurrentIndex(max(0, self.mode.findData(data.channels)))
            self.path_edit.setText(data.data_path)
        finally:
            for w in (self.source, self.size, self.mode, self.path_edit):
                w.blockSignals(False)
        if changed_folder or self.summary is None:
            self._refresh(emit=False)

    def set_recent(self, folders: list[str]) -> None:
        self._recent = list(folders)
        self.recent_menu.clear()
        for folder in folders:
            self.recent_menu.addAction(folder, lambda f=folder: self.set_folder(f))
        self.recent_button.setEnabled(bool(folders))

    def set_folder(self, folder: str) -> None:
        """Use ``folder`` (from the dialog, a drop, the recent list or typing) and scan it."""
        if not folder:
            return
        self.source.blockSignals(True)
        if self.source.currentData() == "demo":
            self.source.setCurrentIndex(self.source.findData("folder"))
        self.source.blockSignals(False)
        self.path_edit.setText(folder)
        self.folderChosen.emit(folder)
        self._refresh(emit=True)

    def go_live(self) -> None:
        """Start background work (scans, demo thumbnails); called once the window is on screen."""
        if not self._live:
            self._live = True
            self._refresh(emit=False)

    def set_read_only(self, read_only: bool) -> None:
        for w in (self.source, self.path_edit, self.browse, self.recent_button, self.size, self.mode):
            w.setEnabled(not read_only)
        self.setAcceptDrops(not read_only)

    # -- events -----------------------------------------------------------------------------------
    def _on_source(self) -> None:
        # The folder row stays usable with the demo set: choosing a folder switches the source.
        self._refresh(emit=True)

    def _emit(self) -> None:
        self.dataChanged.emit(self.data_values())
        if self.summary is not None:
            self.stats.setText(describe_stats(self.summary.stats, int(self.size.currentData())))
        if self.source.currentData() == "demo":
            self._load_demo()

    def _browse(self) -> None:
        start = self.path_edit.text() or (self._recent[0] if self._recent else str(Path.home()))
        folder = QFileDialog.getExistingDirectory(self, "Choose a folder of images", start)
        if folder:
            self.set_folder(folder)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        for url in event.mimeData().urls():
            if url.isLocalFile():
                path = url.toLocalFile()
                self.set_folder(path if os.path.isdir(path) else os.path.dirname(path))
                event.acceptProposedAction()
                return

    # -- scanning ---------------------------------------------------------------------------------
    def _refresh(self, emit: bool) -> None:
        self._scan_id += 1
        if not self._live:
            if emit:
                self.dataChanged.emit(self.data_values())
            return
        source = self.source.currentData()
        self.summary = None
        self._show_skipped(())
        self.stats.clear()
        if source == "demo":
            self.status.setText("4,096 built-in demo images: one coloured shape on white (learnable on a CPU in minutes)")
            self.status.setStyleSheet("")
            self._set_problem(None)
            self._load_demo()
        elif source == "folder":
            folder = self.path_edit.text().strip()
            self.thumbs_model.set_files(())
            if not folder:
                self.status.setText("Choose a folder of images (any subfolders become classes)")
                self.status.setStyleSheet("")
                self._set_problem("Choose a data folder")
            else:
                self.status.setText(f"Scanning {folder}…")
                self.status.setStyleSheet("")
                self._set_problem(f"Still scanning {folder}")
                scan_id = self._scan_id
                background.run_in_background(
                    lambda: scan_folder(folder), lambda s: self._scanned(scan_id, s),
                    lambda e: self._scanned(scan_id, ScanSummary(folder, (), (), (), error=f"Cannot scan {folder}: {e}")),
                    name="ddpm-scan")
        else:
            self.thumbs_model.set_files(())
            text = "Point Folder at the dataset's files already on disk (nothing is downloaded)"
            if source == "cifar10":
                from ddpm_studio.core.standard_datasets import CIFAR_PICKLE_WARNING  # by now torch is warm

                text += "\n⚠ " + CIFAR_PICKLE_WARNING
            self.status.setText(text)
            self.status.setStyleSheet("")
            self._set_problem(None)
        if emit:
            self.dataChanged.emit(self.data_values())

    def _scanned(self, scan_id: int, summary: ScanSummary) -> None:
        if scan_id != self._scan_id:
            return  # a newer choice superseded this scan
        self.summary = summary
        ok = summary.error is None and summary.usable > 0
        self.status.setText(summary.message())
        self.status.setStyleSheet("" if ok else "color: #c62828; font-weight: bold;")
        self.stats.setText(describe_stats(summary.stats, int(self.size.currentData())))
        self.thumbs_model.set_files(summary.files)
        self._show_skipped(summary.skipped)
        self._set_problem(None if ok else summary.message())

    def _load_demo(self) -> None:
        if not self._live:
            return
        scan_id, size, channels = self._scan_id, int(self.size.currentData()), int(self.mode.currentData())

        def show(images: Any) -> None:
            if scan_id == self._scan_id and self.source.currentData() == "demo":
                self.thumbs_model.set_arrays(images)

        background.run_in_background(lambda: demo_thumbnails(48, max(16, size), channels), show, name="ddpm-demo-thumbs")

    def _show_skipped(self, skipped: tuple[tuple[str, str], ...]) -> None:
        self.skipped.clear()
        for path, reason in skipped[:MAX_SKIPPED_SHOWN]:
            self.skipped.addItem(f"{os.path.basename(path) or path} — {reason}")
            self.skipped.item(self.skipped.count() - 1).setToolTip(path)
        if len(skipped) > MAX_SKIPPED_SHOWN:
            self.skipped.addItem(f"… and {len(skipped) - MAX_SKIPPED_SHOWN:,} more")
        self.skipped_label.setText(f"Skipped files ({len(skipped):,})" if skipped else "Skipped files: none")
        self.skipped.setVisible(bool(skipped))

    def _set_problem(self, problem: str | None) -> None:
        if problem != self.problem:
            self.problem = problem
            self.problemChanged.emit(problem)
