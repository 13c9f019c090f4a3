"""A form generated from a config dataclass's field metadata (label, help, range, choices, optional).

Why generated: the same metadata drives the CLI flags and validation, so a new setting appears in
the GUI with its tooltip and range check without touching this file. Numbers are typed into line
edits rather than spin boxes so an out-of-range value can be shown *with its reason* instead of
being silently clamped.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QCheckBox, QComboBox, QFormLayout, QLineEdit, QWidget

from ddpm_studio.services import config as config_mod

INVALID_STYLE = "border: 1px solid #d33; background: #fff0f0;"


def field_tooltip(f: dataclasses.Field[Any]) -> str:
    """Help text plus range, choices and default, for a field's tooltip."""
    meta = f.metadata
    parts = [meta["help"]]
    if meta["choices"]:
        parts.append("Choices: " + ", ".join(meta["choices"]))
    if meta["min"] is not None and meta["max"] is not None:
        parts.append(f"Range: {meta['min']:g} to {meta['max']:g}")
    if f.default is not dataclasses.MISSING:
        parts.append("Default: " + ("the preset's value" if f.default is None else format_value(f.default)))
    return "\n".join(parts)


def format_value(value: Any) -> str:
    """A config value as the text a line edit shows."""
    if value is None:
        return ""
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class ConfigForm(QWidget):
    """Editors for one config section; ``edited`` fires on every user change."""

    edited = Signal()

    def __init__(self, section_type: type, skip: tuple[str, ...] = (), parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.section_type = section_type
        self.fields = {f.name: f for f in dataclasses.fields(section_type) if f.name not in skip}
        self.editors: dict[str, QWidget] = {}
        self._tooltips: dict[str, str] = {}
        layout = QFormLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        layout.setRowWrapPolicy(QFormLayout.RowWrapPolicy.DontWrapRows)
        for name, f in self.fields.items():
            editor = self._make_editor(f)
            if not isinstance(editor, QCheckBox):  # the error outline (a style sheet) must not change a row's height
                editor.setFixedHeight(editor.sizeHint().height())
            editor.setObjectName(f"field_{name}")
            tip = field_tooltip(f)
            editor.setToolTip(tip)
            self._tooltips[name] = tip
            self.editors[name] = editor
            layout.addRow(f.metadata["label"].replace("&", "&&"), editor)  # "&" would be a mnemonic
            label = layout.labelForField(editor)
            if label is not None:
                label.setToolTip(tip)
        self.form_layout = layout

    def _make_editor(self, f: dataclasses.Field[Any]) -> QWidget:
        kind = config_mod.field_kind(f)
        if kind == "bool":
            box = QCheckBox()
            box.toggled.connect(self.edited)
            return box
        if f.metadata["choices"]:
            combo = QComboBox()
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(8)
            combo.addItems(list(f.metadata["choices"]))
            combo.currentIndexChanged.connect(self.edited)
            return combo
        edit = QLineEdit()
        edit.setMinimumWidth(70)
        if f.metadata["optional"]:
            edit.setPlaceholderText("preset default")
        edit.textEdited.connect(self.edited)
        return edit

    # -- values ------------------------------------------------------------------------------------
    def raw_value(self, name: str) -> Any:
        editor = self.editors[name]
        if isinstance(editor, QCheckBox):
            return editor.isChecked()
        if isinstance(editor, QComboBox):
            return editor.currentText()
        assert isinstance(editor, QLineEdit)
        return editor.text()

    def set_section(self, section: Any) -> None:
        """Show ``section``'s values without emitting ``edited`` (a two-way binding must not loop)."""
        for name, editor in self.editors.items():
            value = getattr(section, name)
            editor.blockSignals(True)
            try:
                if isinstance(editor, QCheckBox):
                    editor.setChecked(bool(value))
                elif isinstance(editor, QComboBox):
                    index = editor.findText(str(value))
                    if index >= 0:
                        editor.setCurrentIndex(index)
                elif isinstance(editor, QLineEdit):
                    current = editor.text()
                    try:
                        same = config_mod.coerce(self.fields[name], current) == value
                    except ValueError:
                        same = False
                    if not same:
                        editor.setText(format_value(value))
            finally:
                editor.blockSignals(False)
        self.mark_errors([])

    def read(self, base: Any) -> tuple[Any, list[str]]:
        """``base`` updated with every editor that parses, and the problems (parse + range) as sentences."""
        errors: list[str] = []
        updates: dict[str, Any] = {}
        for name, f in self.fields.items():
            try:
                updates[name] = config_mod.coerce(f, self.raw_value(name))
            except ValueError as exc:
                errors.append(str(exc))
        section = dataclasses.replace(base, **updates)
        errors += [e for e in config_mod.field_errors(section) if self._owner(e) is not None]
        return section, errors

    def _owner(self, message: str) -> str | None:
        for name, f in self.fields.items():
            if message.startswith(f.metadata["label"]):
                return name
        return None

    def mark_errors(self, errors: list[str]) -> None:
        """Outline the editors that an error names, with the reason in their tooltip."""
        bad: dict[str, list[str]] = {}
        for message in errors:
            owner = self._owner(message)
            if owner is not None:
                bad.setdefault(owner, []).append(message)
        for name, editor in self.editors.items():
            if name in bad:
                editor.setStyleSheet(INVALID_STYLE)
                editor.setToolTip("\n".join(bad[name]) + "\n\n" + self._tooltips[name])
            elif editor.styleSheet():
                editor.setStyleSheet("")
                editor.setToolTip(self._tooltips[name])

    def set_field_enabled(self, name: str, enabled: bool, reason: str = "") -> None:
        """Enable a field, or disable it with ``reason`` first in its tooltip (a setting that does not apply)."""
        editor = self.editors[name]
        tip = self._tooltips[name] if enabled or not reason else f"{reason}\n\n{self._tooltips[name]}"
        editor.setEnabled(enabled)
        editor.setToolTip(tip)
        label = self.form_layout.labelForField(editor)
        if label is not None:
            label.setEnabled(enabled)
            label.setToolTip(tip)

    def set_placeholder(self, name: str, text: str) -> None:
        editor = self.editors.get(name)
        if isinstance(editor, QLineEdit):
            editor.setPlaceholderText(text)
