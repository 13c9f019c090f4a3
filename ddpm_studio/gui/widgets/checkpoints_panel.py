"""Checkpoints of the current run: step, loss, time, size; disk use; keep-last-N; actions on one.

A pure view: the controller fills it from ``RunFolder.checkpoints()`` and acts on its signals
(each carries the selected checkpoint's path).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)


@dataclass(frozen=True)
class CheckpointRow:
    step: int
    path: str
    size_bytes: int
    modified: float
    loss: float | None


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


class CheckpointsPanel(QWidget):
    openFolderRequested = Signal()
    deleteRequested = Signal(str)
    generateRequested = Signal(str)
    resumeRequested = Signal(str)
    keepLastChanged = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.rows: list[CheckpointRow] = []
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        self.info = QLabel("No run yet")
        self.info.setObjectName("checkpoint_info")
        self.info.setWordWrap(True)
        layout.addWidget(self.info)
        top = QHBoxLayout()
        top.addWidget(QLabel("Keep the last"))
        self.keep_last = QSpinBox()
        self.keep_last.setRange(1, 1000)
        self.keep_last.setToolTip("How many of the newest checkpoints to keep; older ones are deleted after a new one is "
                                  "safely written. Applies to the running run too.")
        self.keep_last.valueChanged.connect(self.keepLastChanged)
        top.addWidget(self.keep_last)
        top.addWidget(QLabel("checkpoints"))
        top.addStretch(1)
        layout.addLayout(top)

        self.table = QTableWidget(0, 4)
        self.table.setObjectName("checkpoint_table")
        self.table.setHorizontalHeaderLabels(["Step", "Loss", "Saved", "Size"])
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.table.doubleClicked.connect(lambda _i: self._emit(self.generateRequested))
        layout.addWidget(self.table, 1)

        buttons = QGridLayout()
        self.buttons: dict[str, QPushButton] = {}
        for i, (key, text, tip) in enumerate((
            ("generate", "Load into Generate", "Sample images from the selected checkpoint"),
            ("resume", "Resume from it", "Continue training from the selected checkpoint"),
            ("delete", "Delete", "Delete the selected checkpoint file"),
            ("folder", "Open folder", "Show the checkpoints folder in the file manager"),
        )):
            button = QPushButton(text)
            button.setObjectName(f"checkpoint_{key}")
            button.setToolTip(tip)
            buttons.addWidget(button, i // 2, i % 2)
            self.buttons[key] = button
        self.buttons["generate"].clicked.connect(lambda: self._emit(self.generateRequested))
        self.buttons["resume"].clicked.connect(lambda: self._emit(self.resumeRequested))
        self.buttons["delete"].clicked.connect(lambda: self._emit(self.deleteRequested))
        self.buttons["folder"].clicked.connect(self.openFolderRequested)
        layout.addLayout(buttons)
        self._run_active = False
        self._update_buttons()

    def set_checkpoints(self, rows: list[CheckpointRow], info: str) -> None:
        """Newest first; keeps the selection when the same checkpoint is still listed."""
        selected = self.selected_path()
        self.rows = sorted(rows, key=lambda r: r.step, reverse=True)
        self.table.setRowCount(len(self.rows))
        for i, row in enumerate(self.rows):
            cells = (f"{row.step:,}", "" if row.loss is None else f"{row.loss:.4f}",
                     time.strftime("%b %d %H:%M:%S", time.localtime(row.modified)), human_bytes(row.size_bytes))
            for j, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter if j != 2
                                      else Qt.AlignmentFlag.AlignCenter)
                item.setToolTip(row.path)
                self.table.setItem(i, j, item)
            if row.path == selected:
                self.table.selectRow(i)
        self.info.setText(info)
        self._update_buttons()

    def set_keep_last(self, n: int) -> None:
        self.keep_last.blockSignals(True)
        self.keep_last.setValue(n)
        self.keep_last.blockSignals(False)

    def set_run_active(self, active: bool) -> None:
        self._run_active = active
        self._update_buttons()

    def selected_path(self) -> str | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        if not rows:
            return None
        i = rows[0].row()
        return self.rows[i].path if 0 <= i < len(self.rows) else None

    def select_step(self, step: int) -> None:
        for i, row in enumerate(self.rows):
            if row.step == step:
                self.table.selectRow(i)

    def _emit(self, signal: Signal) -> None:
        path = self.selected_path()
        if path:
            signal.emit(path)  # type: ignore[attr-defined]

    def _update_buttons(self) -> None:
        has = self.selected_path() is not None
        newest = bool(self.rows) and self.selected_path() == self.rows[0].path
        self.buttons["generate"].setEnabled(has)
        self.buttons["resume"].setEnabled(has and not self._run_active)
        # The running run's newest checkpoint is its safety net: not deletable while it runs.
        self.buttons["delete"].setEnabled(has and not (self._run_active and newest))
        self.buttons["folder"].setEnabled(bool(self.rows) or self.info.text() != "No run yet")
