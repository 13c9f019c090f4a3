"""A read-only table whose rows each stand for a file or folder (runs, checkpoints), one row selected at a time,
the buttons that act on the selected row, and the panel that holds them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QPushButton, QTableWidget, QTableWidgetItem, QWidget


class PathTable(QTableWidget):
    """Rows are (path, cells); the selection is remembered by path across refreshes."""

    def __init__(self, headers: Sequence[str], stretch_column: int, parent: QWidget | None = None) -> None:
        super().__init__(0, len(headers), parent)
        self.paths: list[str] = []
        self.setHorizontalHeaderLabels(list(headers))
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.verticalHeader().setVisible(False)
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # names differ at the end (dates, steps): keep it
        self.setWordWrap(False)
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(stretch_column, QHeaderView.ResizeMode.Stretch)

    def set_rows(self, rows: Sequence[tuple[str, Sequence[str]]], align: Sequence[Qt.AlignmentFlag] = (),
                 tips: Sequence[str] = ()) -> None:
        """Replace the rows (each cell's tooltip: ``tips[row]``, else the path); the selected path stays selected."""
        selected = self.selected_path()
        self.paths = [path for path, _ in rows]
        self.setRowCount(len(rows))
        for i, (path, cells) in enumerate(rows):
            for j, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if j < len(align):
                    item.setTextAlignment(align[j])
                item.setToolTip(tips[i] if i < len(tips) else path)
                self.setItem(i, j, item)
        if selected is not None:
            self.select_path(selected)

    def selected_path(self) -> str | None:
        model = self.selectionModel()
        rows = model.selectedRows() if model else []
        if not rows or not 0 <= rows[0].row() < len(self.paths):
            return None
        return self.paths[rows[0].row()]

    def select_path(self, path: str) -> None:
        if path in self.paths:
            self.selectRow(self.paths.index(path))



def action_buttons(prefix: str, specs: Sequence[tuple[str, str, str]], clicked: Callable[[str], None]) -> dict[str, QPushButton]:
    """One button per (action, text, tooltip), named ``{prefix}_{action}``; a click calls ``clicked(action)``."""
    buttons = {}
    for action, text, tip in specs:
        button = QPushButton(text)
        button.setObjectName(f"{prefix}_{action}")
        button.setToolTip(tip)
        button.clicked.connect(lambda _checked=False, a=action: clicked(a))
        buttons[action] = button
    return buttons


class PathPanel(QWidget):
    """A panel around a PathTable (``self.table``, made by the subclass): ``requested(action, selected path)``
    for its buttons, and whether a run is active (some actions are off then)."""

    requested = Signal(str, str)
    #: Actions that need no selected row (their path is "").
    GLOBAL_ACTIONS: tuple[str, ...] = ()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.table: PathTable
        self._run_active = False

    def set_run_active(self, active: bool) -> None:
        self._run_active = active
        self._update_buttons()

    def selected_path(self) -> str | None:
        return self.table.selected_path()

    def select_path(self, path: str) -> None:
        self.table.select_path(path)

    def _request(self, action: str) -> None:
        path = self.table.selected_path()
        if path or action in self.GLOBAL_ACTIONS:
            self.requested.emit(action, path or "")

    def _update_buttons(self) -> None:
        """Enable the buttons for the selection and the run state (each panel knows its own)."""
