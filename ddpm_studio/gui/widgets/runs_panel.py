"""Runs under the runs folder: state, step, newest checkpoint; open one (history) or continue it."""

from __future__ import annotations

import time
from dataclasses import dataclass

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)


@dataclass(frozen=True)
class RunRow:
    path: str
    name: str
    state: str
    step: int
    total_steps: int | None
    checkpoint_step: int | None
    updated: float


class RunsPanel(QWidget):
    openRequested = Signal(str)
    continueRequested = Signal(str)
    openFolderRequested = Signal(str)
    refreshRequested = Signal()
    changeDirRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.rows: list[RunRow] = []
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        top = QHBoxLayout()
        self.dir_label = QLabel()
        self.dir_label.setObjectName("runs_dir")
        self.dir_label.setWordWrap(True)
        top.addWidget(self.dir_label, 1)
        change = QPushButton("Change…")
        change.setToolTip("Choose the folder new runs are created in")
        change.clicked.connect(self.changeDirRequested)
        refresh = QPushButton("Refresh")
        refresh.clicked.connect(self.refreshRequested)
        top.addWidget(change)
        top.addWidget(refresh)
        layout.addLayout(top)
        self.table = QTableWidget(0, 5)
        self.table.setObjectName("runs_table")
        self.table.setHorizontalHeaderLabels(["Run", "State", "Step", "Checkpoint", "Updated"])
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.doubleClicked.connect(lambda _i: self._emit(self.openRequested))
        self.table.itemSelectionChanged.connect(self._update_buttons)
        layout.addWidget(self.table, 1)
        buttons = QHBoxLayout()
        self.buttons: dict[str, QPushButton] = {}
        for key, text, tip, signal in (
            ("open", "Open", "Show the run's loss history, previews, checkpoints and settings", self.openRequested),
            ("continue", "Continue", "Resume the run from its newest checkpoint", self.continueRequested),
            ("folder", "Open folder", "Show the run folder in the file manager", self.openFolderRequested),
        ):
            button = QPushButton(text)
            button.setObjectName(f"run_{key}")
            button.setToolTip(tip)
            button.clicked.connect(lambda _c=False, s=signal: self._emit(s))
            buttons.addWidget(button)
            self.buttons[key] = button
        layout.addLayout(buttons)
        self._run_active = False
        self._update_buttons()

    def set_runs(self, runs_dir: str, rows: list[RunRow]) -> None:
        selected = self.selected_path()
        self.rows = rows
        self.dir_label.setText(f"Runs folder: {runs_dir}")
        self.dir_label.setToolTip(runs_dir)
        self.table.setRowCount(len(rows))
        for i, row in enumerate(rows):
            step = f"{row.step:,}" + (f" / {row.total_steps:,}" if row.total_steps else "")
            cells = (row.name, row.state, step, "none" if row.checkpoint_step is None else f"{row.checkpoint_step:,}",
                     time.strftime("%b %d %H:%M", time.localtime(row.updated)))
            for j, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(row.path)
                self.table.setItem(i, j, item)
            if row.path == selected:
                self.table.selectRow(i)
        self._update_buttons()

    def set_run_active(self, active: bool) -> None:
        self._run_active = active
        self._update_buttons()

    def selected_path(self) -> str | None:
        model = self.table.selectionModel()
        rows = model.selectedRows() if model else []
        if not rows or not 0 <= rows[0].row() < len(self.rows):
            return None
        return self.rows[rows[0].row()].path

    def select_path(self, path: str) -> None:
        for i, row in enumerate(self.rows):
            if row.path == path:
                self.table.selectRow(i)

    def _emit(self, signal: Signal) -> None:
        path = self.selected_path()
        if path:
            signal.emit(path)  # type: ignore[attr-defined]

    def _update_buttons(self) -> None:
        path = self.selected_path()
        row = next((r for r in self.rows if r.path == path), None)
        self.buttons["open"].setEnabled(row is not None and not self._run_active)
        self.buttons["continue"].setEnabled(row is not None and row.checkpoint_step is not None and not self._run_active)
        self.buttons["folder"].setEnabled(row is not None)
