"""The Generate panel's model-dependent and extra controls: the class choice, the interpolation between
two seeds, and the evaluation against the training set.

Why apart from generate_panel.py: each is a small self-contained view with its own signal, and the
panel only places them. No torch here: the class list arrives from a background read of the checkpoint.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ddpm_studio.core.sampler_catalog import SAMPLERS, sampler_info
from ddpm_studio.gui.views.config_form import ConfigForm
from ddpm_studio.gui.views.images import to_pixmap
from ddpm_studio.services import config as config_mod

ALL_LABEL = "all (one row per class)"
#: Tooltip of the class and guidance fields when the chosen model has no classes.
UNCONDITIONAL_TIP = ("This model was trained without classes (unconditional), so there is no class to choose "
                     "and nothing for classifier-free guidance to do. Train with Class-conditional on to use them.")
CLASS_TIP = ("Class-conditional models: all (one row per class), or one of the model's classes.\n"
             "The list comes from the chosen checkpoint.")
EVALUATION_IMAGES = int(config_mod.EVALUATION_SAMPLE_DEFAULTS["num_images"])


class ClassChoice(QComboBox):
    """The Class setting as a list of the chosen model's classes (plus "all").

    ``set_classes``: None = not known yet (no model, or it is still being read): the last choice is kept;
    () = an unconditional model: disabled, with a tooltip saying why; else the model's class names.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("field_class_label")
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(8)
        self.classes: tuple[str, ...] | None = None
        self._wanted = "all"
        self.currentIndexChanged.connect(self._remember)
        self.set_classes(None)

    def set_classes(self, classes: tuple[str, ...] | None) -> None:
        self.classes = None if classes is None else tuple(classes)
        wanted = self._wanted
        self.blockSignals(True)
        self.clear()
        self.addItem(ALL_LABEL, "all")
        for name in classes or ():
            self.addItem(name, name)
        self._select(wanted)
        self.blockSignals(False)
        self.setEnabled(classes != ())
        self.setToolTip(UNCONDITIONAL_TIP if classes == () else CLASS_TIP)

    def value(self) -> str:
        data = self.currentData()
        return data if isinstance(data, str) else "all"

    def set_value(self, value: str) -> None:
        """Show ``value`` (a class name, a number or all) without emitting a change."""
        self._wanted = str(value).strip() or "all"
        self.blockSignals(True)
        self._select(self._wanted)
        self.blockSignals(False)

    def _select(self, wanted: str) -> None:
        index = self.findData(wanted, flags=Qt.MatchFlag.MatchFixedString)  # case-insensitive
        if index < 0 and self.classes and wanted.isdigit() and int(wanted) < len(self.classes):
            index = int(wanted) + 1  # "2" = the third class, as on the command line
        if index < 0 and self.classes is None and wanted.lower() not in ("all", "-1", ""):
            self.addItem(wanted, wanted)  # kept until the model's classes are known
            index = self.count() - 1
        self.setCurrentIndex(max(0, index))

    def _remember(self) -> None:
        self._wanted = self.value()


#: σ_rel offered: every length a run can be trained with (the run setting's range, so a run's own length is shown as
#: it is: the default 0.02 did best on ten-minute runs, docs/quality_per_compute.md).
EMA_LENGTHS = (0.01, 0.28)
NO_EMA_LENGTH = "n/a"  # what the off control shows
EMA_LENGTH_TIP = (
    "EMA length (σ_rel): how much of the run the averaged weights cover, rebuilt from the two averages the checkpoint "
    "keeps (post-hoc EMA), so you can pick it after training. It starts at the run's own ({own}).\n"
    "Change it when samples look noisy, grainy or blotchy (try longer: 0.15-0.25), or washed out, blurry or "
    "stuck on an early look of the run (try shorter: 0.01-0.05). Changing it samples the same seeds again, so the "
    "images compare.")


class EmaLengthChoice(QDoubleSpinBox):
    """The EMA length to sample with, for checkpoints of power-EMA runs; off (saying why) for any other model.

    ``value_for_sampling()``: 0 (the checkpoint's own EMA weights, not a rebuild) while it shows the run's own length.
    ``chosen`` fires when the user settles on a new length (Enter, focus out, or an arrow step).
    """

    chosen = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("field_ema_length")
        self.setRange(*EMA_LENGTHS)
        self.setSingleStep(0.01)
        self.setDecimals(3)
        self.setKeyboardTracking(False)  # valueChanged once the number is typed, not at each digit
        self.own: float | None = None
        self._sent = 0.0
        self.valueChanged.connect(self._changed)
        self.set_own(None, "Choose a model first.")

    def set_own(self, own: float | None, reason: str = "") -> None:
        """The run's own length (the control starts there when it changes), or None: disabled with ``reason``."""
        if own != self.own or own is None:
            self.own = own
            self.blockSignals(True)
            if own is not None:
                self.setSpecialValueText("")
                self.setRange(*EMA_LENGTHS)
                self.setValue(own)
            else:  # no number at all (a length the model does not have would read as its setting): "n/a" at 0
                self.setSpecialValueText(NO_EMA_LENGTH)
                self.setRange(0.0, EMA_LENGTHS[1])
                self.setValue(0.0)
            self.blockSignals(False)
            self._sent = self.value()
        self.setEnabled(own is not None)
        self.setToolTip(EMA_LENGTH_TIP.format(own=f"{own:g}") if own is not None else reason)

    def value_for_sampling(self) -> float:
        if self.own is None or not self.isEnabled() or abs(self.value() - self.own) < 5e-4:
            return 0.0
        return round(self.value(), 3)

    def _changed(self, value: float) -> None:
        if self.own is not None and abs(value - self._sent) >= 5e-4:
            self._sent = value
            self.chosen.emit()


class ActionBox(QGroupBox):
    """A titled box: a few settings above a button that acts with them (``requested`` when pressed)."""

    requested = Signal()

    def __init__(self, title: str, key: str, action: str, tip: str, parent: QWidget | None = None) -> None:
        super().__init__(title, parent)
        self.setObjectName(f"{key}_box")
        self.column = QVBoxLayout(self)
        self.column.setContentsMargins(4, 4, 4, 4)
        self.button = QPushButton(action)
        self.button.setObjectName(f"{key}_button")
        self.button.setToolTip(tip)
        self.button.clicked.connect(self.requested)
        self.column.addWidget(self.button)

    def add_above_button(self, widget: QWidget) -> None:
        self.column.insertWidget(self.column.count() - 1, widget)


def deterministic_samplers() -> str:
    """The samplers that can interpolate, in words, from the catalog."""
    return ", ".join(info.label for info in SAMPLERS.values() if info.deterministic)


class InterpolateBox(ActionBox):
    """From seed, to seed and frames (InterpolationConfig's form) and the Interpolate button."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Interpolate between two seeds", "interpolate", "Interpolate",
                         "Decode a row of images whose noise slides from one seed to the other, with the sampler above "
                         f"(it must be deterministic: {deterministic_samplers()}; DDIM with η = 0)", parent)
        self.form = ConfigForm(config_mod.InterpolationConfig)
        self.form.set_section(config_mod.InterpolationConfig())
        self.add_above_button(self.form)

    def interp_config(self) -> tuple[config_mod.InterpolationConfig, list[str]]:
        cfg, errors = self.form.read(config_mod.InterpolationConfig())
        self.form.mark_errors(errors)
        return cfg, errors

    def set_interp_config(self, cfg: config_mod.InterpolationConfig) -> None:
        self.form.set_section(cfg)


class EvaluateBox(ActionBox):
    """The number of images to score and the Evaluate button."""

    def __init__(self, parent: QWidget | None = None) -> None:
        sampler = sampler_info(config_mod.EVALUATION_SAMPLE_DEFAULTS["sampler"])
        steps = f", {config_mod.EVALUATION_SAMPLE_DEFAULTS['steps']} steps" if sampler.uses_steps else ""
        super().__init__("Evaluate against the training set", "evaluate", "Evaluate",
                         f"Generate the images with {sampler.label}{steps} and the class, guidance and EMA choice "
                         "above, then compare them with the training images: the demo shape score for demo runs, FID/KID "
                         "when torchvision's Inception weights are on this computer. A report is written next to the samples.",
                         parent)
        row = QWidget()
        form = QFormLayout(row)
        form.setContentsMargins(0, 0, 0, 0)
        self.images = QSpinBox()
        self.images.setObjectName("evaluate_images")
        self.images.setRange(2, 100_000)
        self.images.setValue(EVALUATION_IMAGES)
        self.images.setToolTip("Images to generate and score (more = a steadier score; FID wants thousands)")
        form.addRow("Images", self.images)
        self.add_above_button(row)


NEAREST_TIP = ("Does the model copy its training images? Compare the selected image (the first, if several) with every "
               "training image of its run: its nearest ones, their distances (RMS difference of pixel values 0-1, after "
               "aligning by a pixel) and whether it counts as a copy. Needs the run's training images on this computer.")


class NeighboursBox(QGroupBox):
    """A sample beside its nearest training images, with distances, and the copy verdict (hidden until asked)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Nearest training images", parent)
        self.setObjectName("neighbours_box")
        column = QVBoxLayout(self)
        column.setContentsMargins(4, 4, 4, 4)
        self.images = QListWidget()
        self.images.setObjectName("neighbour_images")
        self.images.setViewMode(QListWidget.ViewMode.IconMode)
        self.images.setMovement(QListWidget.Movement.Static)
        self.images.setIconSize(QSize(72, 72))
        self.images.setGridSize(QSize(104, 96))
        self.images.setFlow(QListWidget.Flow.LeftToRight)
        self.images.setWrapping(False)
        self.images.setFixedHeight(112)
        self.images.setSelectionMode(QListWidget.SelectionMode.NoSelection)
        column.addWidget(self.images)
        self.verdict = QLabel()
        self.verdict.setObjectName("neighbour_verdict")
        self.verdict.setWordWrap(True)
        column.addWidget(self.verdict)
        self.hide()

    def show_neighbours(self, index: int, sample: np.ndarray, images: np.ndarray, captions: list[str], verdict: str,
                        copy: bool) -> None:
        self.images.clear()
        for image, caption in [(sample, f"sample #{index + 1}"), *zip(images, captions, strict=True)]:
            item = QListWidgetItem(QIcon(to_pixmap(image, 72)), caption)
            item.setToolTip(caption)
            self.images.addItem(item)
        self.verdict.setText(verdict)
        self.verdict.setStyleSheet("color: #c62828; font-weight: bold;" if copy else "")
        self.show()
