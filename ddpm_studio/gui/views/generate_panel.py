"""Generate panel (GenerateView): choose a model (live run, a checkpoint or a run), sampler settings, then
generate, interpolate between two seeds, or evaluate the model against its training set.

The sampler settings are generated from SampleConfig's metadata like the training form; the Class
field lists the chosen model's classes (generate_tools.py). While sampling, the newest predicted-x0
grid is shown live; the results appear as a selectable grid that can be saved (selection or all as
PNG files, a grid image, the trajectory as a GIF); an evaluation's report shows as text.
"""

from __future__ import annotations

import dataclasses

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
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from ddpm_studio.gui.views.config_form import ConfigForm
from ddpm_studio.gui.views.generate_tools import (
    NEAREST_TIP,
    UNCONDITIONAL_TIP,
    ClassChoice,
    EmaLengthChoice,
    EvaluateBox,
    InterpolateBox,
    NeighboursBox,
)
from ddpm_studio.gui.views.images import to_pixmap
from ddpm_studio.services import config as config_mod


class GeneratePanel(QWidget):
    """The view of the Generate tab's presenters (GenerateView: model sources, sampling, nearest images, saving)."""

    requested = Signal(str)  # generate, interpolate, evaluate, cancel
    browseRequested = Signal()
    nearestRequested = Signal()
    saveRequested = Signal(str)  # selected, all, grid, gif
    sourceChanged = Signal(str)  # the chosen model's value (a checkpoint or run folder path, the live model, or "")
    settingsChanged = Signal()
    emaLengthChanged = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._frame: np.ndarray | None = None
        split = QSplitter(Qt.Orientation.Horizontal, self)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)

        left = QWidget()
        col = QVBoxLayout(left)
        model_box = QGroupBox("Model")  # the tab's whole width: a run's name and the checkpoint's step both show
        mrow = QHBoxLayout(model_box)
        self.source = QComboBox()
        self.source.setObjectName("generate_source")
        self.source.setToolTip("The live model of the running training run, or a saved checkpoint")
        self.source.setMinimumContentsLength(12)
        self.source.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.browse = QPushButton("Browse…")
        self.browse.setToolTip("Choose a checkpoint file (.pt), or the model_index.json of a diffusers model folder "
                               "(a UNet2DModel with a DDPMScheduler, e.g. google/ddpm-cifar10-32), which is imported "
                               "as a run you can sample from and continue training")
        self.browse.clicked.connect(lambda: self.browseRequested.emit())
        self.source.currentIndexChanged.connect(lambda _i: self.sourceChanged.emit(self.source_value()))
        mrow.addWidget(self.source, 1)
        mrow.addWidget(self.browse)
        outer.addWidget(model_box)
        outer.addWidget(split, 1)
        self.form = ConfigForm(config_mod.SampleConfig, skip=("class_label", "ema_length"))
        self.form.edited.connect(self.settingsChanged)
        self.class_choice = ClassChoice()
        self.class_choice.currentIndexChanged.connect(self.settingsChanged)
        guidance_row, _role = self.form.form_layout.getWidgetPosition(self.form.editors["guidance_scale"])
        class_f = next(f for f in dataclasses.fields(config_mod.SampleConfig) if f.name == "class_label")
        self.form.form_layout.insertRow(guidance_row, class_f.metadata["label"], self.class_choice)
        self.ema_length = EmaLengthChoice()
        self.ema_length.chosen.connect(self.emaLengthChanged)
        ema_row, _role = self.form.form_layout.getWidgetPosition(self.form.editors["use_ema"])
        self.form.form_layout.insertRow(ema_row + 1, "EMA length", self.ema_length)
        self.interpolate_box = InterpolateBox()
        self.interpolate_box.requested.connect(lambda: self.requested.emit("interpolate"))
        self.evaluate_box = EvaluateBox()
        self.evaluate_box.requested.connect(lambda: self.requested.emit("evaluate"))
        scrolled = QWidget()
        scol = QVBoxLayout(scrolled)
        scol.setContentsMargins(0, 0, 0, 0)
        for widget in (self.form, self.interpolate_box, self.evaluate_box):
            scol.addWidget(widget)
        scol.addStretch(1)
        form_scroll = QScrollArea()
        form_scroll.setWidgetResizable(True)
        form_scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        form_scroll.setWidget(scrolled)
        col.addWidget(form_scroll, 1)
        self.error_label = QLabel()
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #c62828;")
        col.addWidget(self.error_label)
        buttons = QHBoxLayout()
        self.generate_button = QPushButton("Generate")
        self.generate_button.setObjectName("generate_button")
        self.generate_button.setToolTip("Generate images with these settings (Ctrl+G)")
        self.generate_button.clicked.connect(lambda: self.requested.emit("generate"))
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setObjectName("cancel_generate")
        self.cancel_button.clicked.connect(lambda: self.requested.emit("cancel"))
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
        self.report = QPlainTextEdit()
        self.report.setObjectName("evaluation_report")
        self.report.setReadOnly(True)
        self.report.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self.report.hide()
        rcol.addWidget(self.report, 2)
        self.neighbours = NeighboursBox()
        rcol.addWidget(self.neighbours)
        saves = QHBoxLayout()
        self.nearest_button = QPushButton("Nearest training images")
        self.nearest_button.setObjectName("nearest_button")
        self.nearest_button.setToolTip(NEAREST_TIP)
        self.nearest_button.clicked.connect(lambda: self.nearestRequested.emit())
        self.nearest_button.setEnabled(False)
        saves.addWidget(self.nearest_button)
        saves.addStretch(1)
        saves.addWidget(QLabel("Save:"))
        self.save_buttons: dict[str, QPushButton] = {}
        for key, text, tip in (
            ("selected", "Selected…", "Save the selected images as PNG files"),
            ("all", "All…", "Save every generated image as a PNG file"),
            ("grid", "Grid…", "Save the images (the selection, or all) tiled in one PNG"),
            ("gif", "GIF…", "Save the denoising of the first batch as an animated GIF"),
        ):
            button = QPushButton(text)
            button.setObjectName(f"save_{key}")
            button.setToolTip(tip)
            button.clicked.connect(lambda _c=False, k=key: self.saveRequested.emit(k))
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
        before = self.source_value()
        current = select or before
        self.source.blockSignals(True)
        self.source.clear()
        for label, value in sources:
            self.source.addItem(label, value)
        if not sources:
            self.source.addItem("No model yet: train one, or Browse… for a checkpoint", "")
        index = self.source.findData(current) if current else -1
        self.source.setCurrentIndex(max(0, index))
        self.source.blockSignals(False)
        if self.source_value() != before:
            self.sourceChanged.emit(self.source_value())

    def source_value(self) -> str:
        value = self.source.currentData()
        return value if isinstance(value, str) else ""

    def set_model_classes(self, classes: tuple[str, ...] | None) -> None:
        """The chosen model's classes: None = not known (yet), () = unconditional (class and guidance disabled)."""
        self.class_choice.set_classes(classes)
        self.form.set_field_enabled("guidance_scale", classes != (), UNCONDITIONAL_TIP)

    # -- settings ---------------------------------------------------------------------------------
    def sample_config(self) -> tuple[config_mod.SampleConfig, list[str]]:
        cfg, errors = self.form.read(config_mod.SampleConfig())
        cfg = dataclasses.replace(cfg, class_label=self.class_choice.value(), ema_length=self.ema_length.value_for_sampling())
        self.form.mark_errors(errors)
        self.error_label.setText("\n".join(errors))
        return cfg, errors

    def set_sample_config(self, cfg: config_mod.SampleConfig) -> None:
        self.form.set_section(cfg)
        self.class_choice.set_value(cfg.class_label)

    def interp_config(self) -> tuple[config_mod.InterpolationConfig, list[str]]:
        cfg, errors = self.interpolate_box.interp_config()
        self.error_label.setText("\n".join(errors))
        return cfg, errors

    def evaluation_images(self) -> int:
        return self.evaluate_box.images.value()

    def set_steps_enabled(self, enabled: bool, reason: str = "") -> None:
        """The Steps field, off (with ``reason`` as its tooltip) for a sampler that always takes all T steps."""
        self.form.set_field_enabled("steps", enabled, reason)

    def set_autoguidance_enabled(self, enabled: bool, reason: str = "") -> None:
        """The Autoguidance field, off (with ``reason`` as its tooltip) for a model that keeps no guide."""
        self.form.set_field_enabled("autoguidance", enabled, reason)

    def set_ema_length(self, own: float | None, reason: str = "") -> None:
        self.ema_length.set_own(own, reason)
        label = self.form.form_layout.labelForField(self.ema_length)
        if label is not None:
            label.setEnabled(own is not None)
            label.setToolTip(self.ema_length.toolTip())

    # -- progress and results ---------------------------------------------------------------------
    def set_busy(self, busy: bool) -> None:
        self.generate_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        for widget in (self.form, self.interpolate_box, self.evaluate_box, self.source, self.browse):
            widget.setEnabled(not busy)
        if busy:
            self.nearest_button.setEnabled(False)
            self.error_label.clear()
            self.results.hide()
            self.report.hide()
            self.neighbours.hide()
            self.live.show()
            self._frame = None
            self.live.setText("Starting…")
            self.live.setToolTip("")
            self.progress.setToolTip("")
            for b in self.save_buttons.values():
                b.setEnabled(False)

    def show_progress(self, text: str, done: int, total: int, frame: np.ndarray | None) -> None:
        self.progress.setMaximum(max(1, total))
        self.progress.setValue(done)
        self.progress.setFormat(text)
        if frame is not None:
            self._frame = frame
            self._fit_live()

    def _fit_live(self) -> None:
        """Show the newest x0-prediction grid as large as the live area is now."""
        if self._frame is not None and self.live.isVisible():
            self.live.setPixmap(to_pixmap(self._frame, max(64, min(self.live.width(), self.live.height()) - 8)))

    def set_message(self, text: str) -> None:
        self.progress.setFormat(text)

    def show_task(self, text: str, done: int = 0, total: int = 0) -> None:
        self.browse.setEnabled(False)
        self.progress.setRange(0, max(0, total))  # 0, 0: a busy bar
        self.progress.setValue(done)
        self.progress.setFormat(text)

    def end_task(self, text: str) -> None:
        self.browse.setEnabled(self.generate_button.isEnabled())  # (still off while a job runs)
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        self.progress.setFormat(text)

    def show_failure(self, title: str, message: str) -> None:
        self.error_label.setText(message)
        self.progress.setFormat(title)

    def show_strip(self, images: np.ndarray, strip_path: str | None, frames: int) -> None:
        """An interpolation: the strip (rows of ``frames`` images) above its frames, which save like any results."""
        from ddpm_studio.services.imaging import make_grid

        self.show_results(images, (), False)
        for i in range(len(images)):
            self.results.item(i).setToolTip(f"Frame {i % frames + 1} of {frames} · strip: {strip_path}")
        size = max(64, self.live.width() - 8)
        self.live.setPixmap(to_pixmap(make_grid(images, ncols=frames), size))
        self.live.setToolTip(strip_path or "")
        self.live.show()
        rows = len(images) // max(1, frames)
        self.progress.setFormat(f"Strip of {frames} frames" + (f" × {rows} classes" if rows > 1 else "") + " saved")
        self.progress.setToolTip(strip_path or "")

    def show_report(self, lines: tuple[str, ...], path: str | None, grid: str | None = None) -> None:
        """An evaluation's result in words, and where its report and image grid were written."""
        text = list(lines)
        if path:
            text += ["", f"Report written to {path}"]
        if grid:
            text.append(f"Evaluated images: {grid}")
        self.report.setPlainText("\n".join(text))
        self.report.show()
        QTimer.singleShot(0, self._fit_live)  # the report took some of the live area: shrink its last frame to fit
        self.progress.setValue(self.progress.maximum())
        self.progress.setFormat("Evaluation finished")

    def show_results(self, images: np.ndarray, paths: tuple[str, ...], has_gif: bool) -> None:
        self.results.clear()
        for i, image in enumerate(images):
            item = QListWidgetItem(QIcon(to_pixmap(image, 88)), f"#{i + 1}")
            item.setToolTip(paths[i] if i < len(paths) else "")
            self.results.addItem(item)
        self.live.hide()
        self.results.show()
        self.neighbours.hide()
        QTimer.singleShot(0, self.results.doItemsLayout)  # lay out at the now-visible width
        self.save_buttons["all"].setEnabled(True)
        self.save_buttons["grid"].setEnabled(True)
        self.save_buttons["gif"].setEnabled(has_gif)
        self.progress.setValue(self.progress.maximum())
        self.progress.setFormat(f"{len(images)} images generated")
        self._update_save_buttons()

    def selected_indices(self) -> list[int]:
        return sorted(self.results.row(item) for item in self.results.selectedItems())

    def show_neighbours(self, index: int, sample: np.ndarray, images: np.ndarray, captions: list[str], verdict: str,
                        copy: bool) -> None:
        self.neighbours.show_neighbours(index, sample, images, captions, verdict, copy)

    def _update_save_buttons(self) -> None:
        selected = bool(self.results.selectedItems())
        self.save_buttons["selected"].setEnabled(selected)
        # Generated images only: an interpolation's frames show under their strip (the live area)
        self.nearest_button.setEnabled(selected and not self.results.isHidden() and self.live.isHidden())

