"""The hyperparameter panel: every RunConfig field, grouped by section, generated from the metadata.

It owns no validation logic of its own: parse and range errors come from the field metadata
(instantly, without torch), and the full ``config.validate`` (which needs the U-Net layout) runs
off the GUI thread in the controller, whose verdict is shown here and gates the Start button.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from PySide6.QtCore import Signal
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

from ddpm_studio.gui.widgets.config_form import ConfigForm
from ddpm_studio.services import config as config_mod

#: Named starting points; each overlays only the settings it lists (the dataset choice is kept).
RUN_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "Laptop CPU (default)": {
        "model": {"preset": "laptop"}, "data": {"image_size": 32}, "diffusion": {"timesteps": 1000},
        "optim": {"batch_size": 32, "lr": 2e-3, "warmup_steps": 100, "total_steps": 20_000, "ema_decay": 0.999},
        "schedule": {"preview_every": 250, "preview_minutes": 1.0, "checkpoint_every": 2000},
    },
    "Quick pipeline check (tiny model, ~1 min)": {
        "model": {"preset": "tiny"}, "data": {"image_size": 16}, "diffusion": {"timesteps": 200},
        "optim": {"batch_size": 16, "lr": 1e-3, "warmup_steps": 20, "total_steps": 300, "ema_decay": 0.99},
        "schedule": {"preview_every": 50, "preview_steps": 20, "checkpoint_every": 100},
    },
    "Paper CIFAR-10 (GPU, days)": {
        "model": {**config_mod.PAPER_RECIPE["model"], "preset": "cifar10"}, "data": {"image_size": 32},
        "diffusion": {**config_mod.PAPER_RECIPE["diffusion"], "timesteps": 1000},
        "optim": {**config_mod.PAPER_RECIPE["optim"], "batch_size": 128, "lr": 2e-4, "warmup_steps": 5000,
                  "total_steps": 800_000},
        "schedule": {"preview_every": 5000, "checkpoint_every": 10_000},
    },
    "64x64 images (GPU)": {
        "model": {"preset": "ddpm-64"}, "data": {"image_size": 64}, "diffusion": {"timesteps": 1000, "schedule": "cosine"},
        "optim": {"batch_size": 64, "lr": 2e-4, "warmup_steps": 5000, "total_steps": 300_000, "ema_decay": 0.9999},
        "schedule": {"preview_every": 5000, "checkpoint_every": 10_000},
    },
}

#: What the app starts with on a fresh machine: the engine's defaults, previewing often enough to watch.
GUI_DEFAULTS: dict[str, dict[str, Any]] = {"schedule": {"preview_every": 250, "preview_minutes": 1.0}}


def default_config() -> config_mod.RunConfig:
    return config_mod.from_dict(GUI_DEFAULTS)


def apply_preset(cfg: config_mod.RunConfig, name: str) -> config_mod.RunConfig:
    """``cfg`` with the preset's settings; the model overrides are cleared so the preset's layout shows."""
    model_reset = {f.name: None for f in dataclasses.fields(config_mod.ModelConfig) if f.name != "preset"}
    values = {k: dict(v) for k, v in RUN_PRESETS[name].items()}
    values["model"] = {**model_reset, **values.get("model", {})}
    sections = {s: config_mod.update_section(getattr(cfg, s), values.get(s, {}), name=s) for s in config_mod.SECTION_TYPES}
    return config_mod.RunConfig(**sections)


class HParamPanel(QWidget):
    """Grouped forms for all sections; emits ``configChanged(cfg, field_errors)`` on every edit."""

    configChanged = Signal(object, object)
    loadRequested = Signal()
    saveRequested = Signal()

    def __init__(self, cfg: config_mod.RunConfig | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._cfg = cfg or default_config()
        self.forms: dict[str, ConfigForm] = {}
        outer = QVBoxLayout(self)
        outer.setContentsMargins(4, 4, 4, 4)

        top = QHBoxLayout()
        self.preset_combo = QComboBox()
        self.preset_combo.addItem("Apply a preset…")
        self.preset_combo.addItems(list(RUN_PRESETS))
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

        self.estimate_label = QLabel("Estimating model size…")
        self.estimate_label.setObjectName("estimate_label")
        self.estimate_label.setWordWrap(True)
        self.estimate_label.setToolTip("Parameters of the U-Net these settings build, and a rough training memory estimate")
        outer.addWidget(self.estimate_label)
        self.error_label = QLabel()
        self.error_label.setObjectName("hparam_errors")
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #c62828;")
        self.error_label.hide()
        outer.addWidget(self.error_label)

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
    def config(self) -> config_mod.RunConfig:
        return self._cfg

    def set_config(self, cfg: config_mod.RunConfig) -> None:
        """Show ``cfg`` (no ``configChanged``: the caller already knows)."""
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
        self.configChanged.emit(self._cfg, errors)

    def _on_preset(self, index: int) -> None:
        if index <= 0:
            return
        name = self.preset_combo.itemText(index)
        self.preset_combo.setCurrentIndex(0)
        self.set_config(apply_preset(self._cfg, name))
        self.configChanged.emit(self._cfg, [])

    # -- feedback ---------------------------------------------------------------------------------
    def show_errors(self, errors: list[str]) -> None:
        """The full validation's verdict: listed above the form (and marked on the fields it names)."""
        if errors:
            self.error_label.setText("<b>Cannot start:</b><br>" + "<br>".join(f"• {_escape(e)}" for e in errors))
            self.error_label.show()
        else:
            self.error_label.hide()
        for form in self.forms.values():
            form.mark_errors(errors)

    def set_estimate(self, text: str) -> None:
        self.estimate_label.setText(text)

    def set_preset_info(self, text: str) -> None:
        self.preset_info.setText(text)
        self.preset_info.setVisible(bool(text))

    def set_read_only(self, read_only: bool) -> None:
        """While a run is active the settings are the run's: editing them would mislead."""
        self.body.setEnabled(not read_only)
        for w in (self.preset_combo, self.load_button):
            w.setEnabled(not read_only)
        self.body.setToolTip("Settings are locked while a run is active" if read_only else "")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


__all__ = ["GUI_DEFAULTS", "RUN_PRESETS", "HParamPanel", "apply_preset", "default_config"]
