"""Generate panel: choose a model (live run, a checkpoint or a run), sampler settings, then generate.

The sampler settings are generated from SampleConfig's metadata like the training form. While
sampling, the newest predicted-x0 grid is shown live; the results appear as a selectable grid
that can be saved (selection or all as PNG files, a grid image, the trajectory as a GIF).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import (
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from ddpm_studio.gui.widgets.config_form import ConfigForm
from ddpm_studio.gui.widgets.thumbnails import array_to_pixmap
from ddpm_studio.services import config as config_mod

LIVE = "live"


class GeneratePanel(QWidget):
    """View of the sampling controller."""

    generateRequested = Signal()
    cancelRequested = Signal()
    browseRequested = Signal()
    saveSelectedRequested = Signal()
    saveAllRequested = Signal()
    saveGridRequested = Signal()
    saveGifRequested = Signal()
    settingsChanged = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.images: np.ndarray | None = None
        self.paths: tuple[str, ...] = ()
        split = QSplitter(Qt.Orientation.Horizontal, self)
        outer = QHBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(split)

        left = QWidget()
        col = QVBoxLayout(left)
        model_box = QGroupBox("Model")
        mrow = QHBoxLayout(model_box)
        self.source = QComboBox()
        self.source.setObjectName("generate_source")
        self.source.setToolTip("The live model of the running training run, or a saved checkpoint")
        self.source.setMinimumContentsLength(12)
        self.source.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.browse = QPushButton("Browse…")
        self.browse.setToolTip("Choose a checkpoint file (.pt) or a run folder")
        self.browse.clicked.connect(self.browseRequested)
        mrow.addWidget(self.source, 1)
        mrow.addWidget(self.browse)
        col.addWidget(model_box)
        self.form = ConfigForm(config_mod.SampleConfig)
        self.form.edited.connect(self.settingsChanged)
        form_scroll = QScrollArea()
        form_scroll.setWidgetResizable(True)
        form_scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        form_scroll.setWidget(self.form)
        col.addWidget(form_scroll, 1)
        self.error_label = QLabel()
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #c62828;")
        col.addWidget(self.error_label)
        buttons = QHBoxLayout()
        self.generate_button = QPushButton("Generate")
        self.generate_button.setObjectName("generate_button")
        self.generate_button.setToolTip("Generate images with these settings (Ctrl+G)")
        self.generate_button.clicked.connect(self.generateRequested)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setObjectName("cancel_generate")
        self.cancel_button.clicked.connect(self.cancelRequested)
        self.cancel_button.setEnabled(False)
        buttons.addWidget(self.generate_button, 1)
        buttons.addWidget(self.cancel_button)
        col.addLayout(buttons)
        self.progress = QProgressBar()
        self.progress.setObjectName("generate_progress")
        self.progress.setFormat("Ready")
        col.addWidget(self.progress)
        split.addWidget(left)

        right = QWidget()
        rcol = QVBoxLayout(right)
        rcol.setContentsMargins(0, 0, 0, 0)
        self.live = QLabel("Generated images appear here")
        self.live.setObjectName("generate_live")
        self.live.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.live.setMinimumHeight(120)
        self.live.setWordWrap(True)
        self.live.setStyleSheet("color: #777;")
        rcol.addWidget(self.live, 1)
        self.results = QListWidget()
        self.results.setObjectName("generated_images")
        self.results.setViewMode(QListWidget.ViewMode.IconMode)
        self.results.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.results.setMovement(QListWidget.Movement.Static)
        self.results.setIconSize(QSize(88, 88))
        self.results.setGridSize(QSize(96, 110))
        self.results.setUniformItemSizes(True)
        self.results.setSelectionMode(QListWidget.SelectionMode.ExtendedSelection)
        self.results.setToolTip("Click, Ctrl-click or Shift-click to select images to save")
        self.results.hide()
        rcol.addWidget(self.results, 3)
        saves = QHBoxLayout()
        saves.addWidget(QLabel("Save:"))
        self.save_buttons: dict[str, QPushButton] = {}
        for key, text, signal, tip in (
            ("selected", "Selected…", self.saveSelectedRequested, "Save the selected images as PNG files"),
            ("all", "All…", self.saveAllRequested, "Save every generated image as a PNG file"),
            ("grid", "Grid…", self.saveGridRequested, "Save the images (the selection, or all) tiled in one PNG"),
            ("gif", "GIF…", self.saveGifRequested, "Save the denoising of the first batch as an animated GIF"),
        ):
            button = QPushButton(text)
            button.setObjectName(f"save_{key}")
            button.setToolTip(tip)
            button.clicked.connect(signal)
            button.setEnabled(False)
            saves.addWidget(button)
            self.save_buttons[key] = button
        rcol.addLayout(saves)
        split.addWidget(right)
        split.setStretchFactor(0, 0)
        split.setStretchFactor(1, 1)
        split.setSizes([330, 700])
        self.results.itemSelectionChanged.connect(self._update_save_buttons)
        self.set_sources([])

    # -- model choice -----------------------------------------------------------------------------
    def set_sources(self, sources: list[tuple[str, str]], select: str | None = None) -> None:
        """Fill the model combo with (label, value) pairs; keep the current choice when still offered."""
        current = select or self.source_value()
        self.source.blockSignals(True)
        self.source.clear()
        for label, value in sources:
            self.source.addItem(label, value)
        if not sources:
            self.source.addItem("No model yet: train one, or Browse… for a checkpoint", "")
        index = self.source.findData(current) if current else -1
        self.source.setCurrentIndex(max(0, index))
        self.source.blockSignals(False)

    def source_value(self) -> str:
        value = self.source.currentData()
        return value if isinstance(value, str) else ""

    # -- settings ---------------------------------------------------------------------------------
    def sample_config(self) -> tuple[config_mod.SampleConfig, list[str]]:
        cfg, errors = self.form.read(config_mod.SampleConfig())
        self.form.mark_errors(errors)
        self.error_label.setText("\n".join(errors))
        return cfg, errors

    def set_sample_config(self, cfg: config_mod.SampleConfig) -> None:
        self.form.set_section(cfg)

    # -- progress and results ---------------------------------------------------------------------
    def set_busy(self, busy: bool) -> None:
        self.generate_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        self.form.setEnabled(not busy)
        self.source.setEnabled(not busy)
        self.browse.setEnabled(not busy)
        if busy:
            self.results.hide()
            self.live.show()
            self.live.setText("Starting…")
            for b in self.save_buttons.values():
                b.setEnabled(False)

    def show_progress(self, progress: Any) -> None:
        self.progress.setMaximum(max(1, progress.total))
        self.progress.setValue(progress.done)
        eta = progress.eta_seconds
        self.progress.setFormat(f"step {progress.done:,} / {progress.total:,} · batch {progress.batch}/{progress.batches}"
                                f" · ETA {int(eta // 60)}:{int(eta % 60):02d}")
        if progress.frame is not None:
            pix = array_to_pixmap(progress.frame, size=max(64, min(self.live.width(), self.live.height()) - 8))
            self.live.setPixmap(pix)

    def set_message(self, text: str) -> None:
        self.progress.setFormat(text)

    def show_results(self, images: np.ndarray, paths: tuple[str, ...], has_gif: bool) -> None:
        self.images, self.paths = images, paths
        self.results.clear()
        for i, image in enumerate(images):
            item = QListWidgetItem(QIcon(array_to_pixmap(image, 88)), f"#{i + 1}")
            item.setToolTip(paths[i] if i < len(paths) else "")
            self.results.addItem(item)
        self.live.hide()
        self.results.show()
        QTimer.singleShot(0, self.results.doItemsLayout)  # lay out at the now-visible width
        self.save_buttons["all"].setEnabled(True)
        self.save_buttons["grid"].setEnabled(True)
        self.save_buttons["gif"].setEnabled(has_gif)
        self.progress.setValue(self.progress.maximum())
        self.progress.setFormat(f"{len(images)} images generated")
        self._update_save_buttons()

    def selected_indices(self) -> list[int]:
        return sorted(self.results.row(item) for item in self.results.selectedItems())

    def _update_save_buttons(self) -> None:
        self.save_buttons["selected"].setEnabled(bool(self.results.selectedItems()))

