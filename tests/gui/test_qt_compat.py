"""The PySide6 6.12.0 reference-count work-around (without it the app aborts after a minute of training)."""

from __future__ import annotations

import sys

import ddpm_studio.gui  # noqa: F401 - importing the package applies the fix
from ddpm_studio.gui import qt_compat


def test_many_qt_calls_never_exhaust_none_or_true(qtbot) -> None:
    from PySide6.QtCore import QObject, Signal
    from PySide6.QtWidgets import QLabel

    class Sender(QObject):
        value = Signal(object)

    sender, label = Sender(), QLabel()
    qtbot.addWidget(label)
    received = []
    sender.value.connect(received.append)
    for i in range(20_000):
        sender.value.emit(i)
        label.setText(str(i))
    assert len(received) == 20_000
    # Either the binding is correct, or the singletons were made immortal enough (2**40 references).
    assert not qt_compat.binding_drops_references() or (qt_compat._applied and sys.getrefcount(None) > 2**39)
    assert sys.getrefcount(True) > 1000 and sys.getrefcount(None) > 1000
