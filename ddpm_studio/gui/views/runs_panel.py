"""Runs under the runs folder (RunsListView): state, step, newest checkpoint; open one (history) or continue it."""

from __future__ import annotations

import time

from PySide6.QtWidgets import QHBoxLayout, QLabel, QVBoxLayout, QWidget

from ddpm_studio.gui.views.path_table import PathPanel, PathTable, action_buttons
from ddpm_studio.gui.views.protocols import RunRow


class RunsPanel(PathPanel):
    """``requested``: open, continue or folder (the selected run), refresh or change_dir."""

    GLOBAL_ACTIONS = ("refresh", "change_dir")

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
        folder_buttons = action_buttons("runs", (
            ("change_dir", "Change…", "Choose the folder new runs are created in"),
            ("refresh", "Refresh", "List the runs again"),
        ), self._request)
        for button in folder_buttons.values():
            top.addWidget(button)
        layout.addLayout(top)
        # Four short columns leave the run's name its whole width in the 400-pixel dock; when it was updated and
        # where it is are in each row's tooltip.
        self.table = PathTable(["Run", "State", "Step", "Saved"], stretch_column=0)
        self.table.horizontalHeaderItem(3).setToolTip(
            "Step of the newest checkpoint (none: Continue starts the run again from step 0)")
        self.table.setObjectName("runs_table")
        self.table.doubleClicked.connect(lambda _i: self._request("open"))
        self.table.itemSelectionChanged.connect(self._update_buttons)
        layout.addWidget(self.table, 1)
        self.buttons = action_buttons("run", (
            ("open", "Open", "Show the run's loss history, previews, checkpoints and settings"),
            ("continue", "Continue", "Resume the run from its newest checkpoint (a run with none starts again from "
                                     "step 0 with its saved settings)"),
            ("folder", "Open folder", "Show the run folder in the file manager"),
        ), self._request)
        buttons = QHBoxLayout()
        for button in self.buttons.values():
            buttons.addWidget(button)
        layout.addLayout(buttons)
        self._update_buttons()

    def set_runs(self, runs_dir: str, rows: list[RunRow]) -> None:
        self.rows = rows
        self.dir_label.setText(f"Runs folder: {runs_dir}")
        self.dir_label.setToolTip(runs_dir)
        self.table.set_rows([(r.path, (r.name, r.state, f"{r.step:,}" + (f" / {r.total_steps:,}" if r.total_steps else ""),
                                       "none" if r.checkpoint_step is None else f"{r.checkpoint_step:,}"))
                             for r in rows],
                            tips=[f"{r.name}\nUpdated {time.strftime('%Y-%m-%d %H:%M', time.localtime(r.updated))}\n{r.path}"
                                  for r in rows])
        self._update_buttons()

    def _update_buttons(self) -> None:
        path = self.table.selected_path()
        row = next((r for r in self.rows if r.path == path), None)
        self.buttons["open"].setEnabled(row is not None and not self._run_active)
        self.buttons["continue"].setEnabled(row is not None and not self._run_active)
        self.buttons["folder"].setEnabled(row is not None)
