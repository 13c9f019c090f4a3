"""The Settings panel (SettingsView): every RunConfig field, grouped by section, generated from the metadata.

It owns no validation logic of its own: parse and range errors come from the field metadata as the user
types, and the settings presenter's full verdict (``config.validate``) is shown here and gates Start.

Nothing above the form changes height as the user types (a field that moves under the mouse takes the next
click): the size estimate is one elided line, and the verdict has a box of fixed height that scrolls when
there are many problems (every problem is also marked on its field, with the message as tooltip).
"""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from ddpm_studio.gui.views.config_form import ConfigForm
from ddpm_studio.gui.views.elided_label import ElidedLabel
from ddpm_studio.services import config as config_mod

VERDICT_LINES = 3  # the verdict box's height in lines of text (more problems scroll)
ERROR_COLOUR, READY_COLOUR = "#c62828", "#2e7d32"
ESTIMATE_TIP = "Parameters of the U-Net these settings build, and a rough training memory estimate"


class SettingsPanel(QWidget):
    """Grouped forms for all sections; emits ``configChanged(cfg, field_errors)`` on every edit."""

    configEdited = Signal(object, object)  # (RunConfig, field errors)
    presetChosen = Signal(str)
    loadRequested = Signal()
    saveRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._cfg = config_mod.RunConfig()
        self.forms: dict[str, ConfigForm] = {}
        outer = QVBoxLayout(self)
        outer.setContentsMargins(4, 4, 4, 4)

        top = QHBoxLayout()
        self.preset_combo = QComboBox()
        self.preset_combo.addItem("Apply a preset…")
        self.preset_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.preset_combo.setMinimumContentsLength(12)
        self.preset_combo.setToolTip("Fill in a tested set of settings (your dataset choice is kept)")
        self.preset_combo.activated.connect(self._on_preset)
        self.load_button = QPushButton("Load…")
        self.load_button.setToolTip("Load settings from a TOML or JSON config file (or a run's config.toml)")
        self.save_button = QPushButton("Save…")
        self.save_button.setToolTip("Save these settings as a TOML file (usable with `ddpm-studio train --config`)")
        self.load_button.clicked.connect(self.loadRequested)
        self.save_button.clicked.connect(self.saveRequested)
        top.addWidget(self.preset_combo, 1)
        top.addWidget(self.load_button)
        top.addWidget(self.save_button)
        outer.addLayout(top)

        self.estimate_label = ElidedLabel("Estimating model size…")  # one line: the breakdown is its tooltip
        self.estimate_label.setObjectName("estimate_label")
        outer.addWidget(self.estimate_label)
        self.error_label = QLabel()
        self.error_label.setObjectName("hparam_errors")
        self.error_label.setWordWrap(True)
        self.error_label.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.verdict_box = QScrollArea()  # fixed height: the form below never moves when problems come and go
        self.verdict_box.setObjectName("verdict_box")
        self.verdict_box.setWidgetResizable(True)
        self.verdict_box.setFrameShape(QScrollArea.Shape.NoFrame)
        self.verdict_box.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.verdict_box.setWidget(self.error_label)
        self.verdict_box.setFixedHeight(VERDICT_LINES * self.fontMetrics().lineSpacing() + 6)
        outer.addWidget(self.verdict_box)

        self.scroll = scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        body = QWidget()
        self.body = body
        column = QVBoxLayout(body)
        column.setContentsMargins(0, 0, 0, 0)
        for name, section_type in config_mod.SECTION_TYPES.items():
            box = QGroupBox(config_mod.SECTION_TITLES[name].replace("&", "&&"))  # "&" would be a mnemonic
            box.setObjectName(f"section_{name}")
            box_layout = QVBoxLayout(box)
            box_layout.setContentsMargins(2, 2, 2, 2)
            form = ConfigForm(section_type)
            form.edited.connect(self._on_edited)
            box_layout.addWidget(form)
            if name == "model":
                self.preset_info = QLabel()
                self.preset_info.setWordWrap(True)
                self.preset_info.setStyleSheet("color: #555;")
                self.preset_info.hide()
                box_layout.addWidget(self.preset_info)
            self.forms[name] = form
            column.addWidget(box)
        column.addStretch(1)
        scroll.setWidget(body)
        outer.addWidget(scroll, 1)
        self.set_config(self._cfg)

    # -- model ------------------------------------------------------------------------------------
    def set_presets(self, names: Sequence[str]) -> None:
        while self.preset_combo.count() > 1:
            self.preset_combo.removeItem(1)
        self.preset_combo.addItems(list(names))

    def set_config(self, cfg: config_mod.RunConfig) -> None:
        """Show ``cfg`` (no ``configEdited``: the caller already knows)."""
        self._cfg = cfg
        for name, form in self.forms.items():
            form.set_section(getattr(cfg, name))

    def field_editor(self, section: str, name: str) -> QWidget:
        return self.forms[section].editors[name]

    def _on_edited(self) -> None:
        errors: list[str] = []
        sections = {}
        for name, form in self.forms.items():
            section, problems = form.read(getattr(self._cfg, name))
            form.mark_errors(problems)
            sections[name] = section
            errors += problems
        self._cfg = config_mod.RunConfig(**sections)
        self.configEdited.emit(self._cfg, errors)

    def _on_preset(self, index: int) -> None:
        if index <= 0:
            return
        name = self.preset_combo.itemText(index)
        self.preset_combo.setCurrentIndex(0)
        self.presetChosen.emit(name)

    # -- feedback ---------------------------------------------------------------------------------
    def show_errors(self, errors: list[str]) -> None:
        """The full validation's verdict, in its fixed box above the form (and marked on the fields it names)."""
        if errors:
            self.error_label.setStyleSheet(f"color: {ERROR_COLOUR};")
            first, *more = errors
            self.error_label.setText(f"<b>Cannot start:</b> {_escape(first)}" + "".join(f"<br>• {_escape(e)}" for e in more))
            self.error_label.setToolTip("\n".join(errors))
        else:
            self.error_label.setStyleSheet(f"color: {READY_COLOUR};")
            self.error_label.setText("Ready: Start trains with these settings")
            self.error_label.setToolTip("")
        self.verdict_box.verticalScrollBar().setValue(0)
        for form in self.forms.values():
            form.mark_errors(errors)

    def set_estimate(self, text: str) -> None:
        self.estimate_label.set_full_text(text, tooltip=text + "\n\n" + ESTIMATE_TIP)

    def set_preset_info(self, text: str) -> None:
        self.preset_info.setText(text)
        self.preset_info.setVisible(bool(text))

    def set_field_enabled(self, section: str, name: str, enabled: bool, reason: str = "") -> None:
        self.forms[section].set_field_enabled(name, enabled, reason)

    def set_read_only(self, read_only: bool) -> None:
        """While a run is active the settings are the run's: editing them would mislead."""
        self.body.setEnabled(not read_only)
        for w in (self.preset_combo, self.load_button):
            w.setEnabled(not read_only)
        self.body.setToolTip("Settings are locked while a run is active" if read_only else "")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
