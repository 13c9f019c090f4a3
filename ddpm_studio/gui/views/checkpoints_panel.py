"""Checkpoints of the current run (CheckpointsView): step (★ the best), loss, validation loss, time, size; disk use;
keep-last-N; actions on one.

A view: the runs presenter fills it and acts on ``requested(action, selected checkpoint's path)``.
"""

from __future__ import annotations

import time

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QGridLayout, QHBoxLayout, QLabel, QSpinBox, QVBoxLayout, QWidget

from ddpm_studio.gui.views.path_table import PathPanel, PathTable, action_buttons
from ddpm_studio.gui.views.protocols import CheckpointRow
from ddpm_studio.services.formatting import human_bytes

RIGHT = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
BEST = "★ best"
VAL_LOSS_TIP = ("Validation loss of the checkpoint's EMA weights on held-out images, measured when it was saved: a proxy "
                "for sample quality (lower is better), not a guarantee. ★ best marks the lowest; retention always keeps it.")


class CheckpointsPanel(PathPanel):
    """``requested``: generate, resume or delete (the selected checkpoint), folder."""

    keepLastChanged = Signal(int)
    GLOBAL_ACTIONS = ("folder",)

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

        self.table = PathTable(["Step", "Loss", "Val. loss", "Saved", "Size"], stretch_column=3)
        self.table.horizontalHeaderItem(2).setToolTip(VAL_LOSS_TIP)
        self.table.setObjectName("checkpoint_table")
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.table.doubleClicked.connect(lambda _i: self._request("generate"))
        layout.addWidget(self.table, 1)

        self.buttons = action_buttons("checkpoint", (
            ("generate", "Load into Generate", "Sample images from the selected checkpoint"),
            ("resume", "Resume from it", "Continue training from the selected checkpoint"),
            ("delete", "Delete", "Delete the selected checkpoint file"),
            ("folder", "Open folder", "Show the checkpoints folder in the file manager"),
        ), self._request)
        buttons = QGridLayout()
        for i, button in enumerate(self.buttons.values()):
            buttons.addWidget(button, i // 2, i % 2)
        layout.addLayout(buttons)
        self._update_buttons()

    def set_checkpoints(self, rows: list[CheckpointRow], info: str) -> None:
        """Newest first; keeps the selection when the same checkpoint is still listed."""
        self.rows = sorted(rows, key=lambda r: r.step, reverse=True)
        self.table.set_rows([(r.path, (f"{BEST} {r.step:,}" if r.best else f"{r.step:,}", _loss(r.loss), _loss(r.val_loss),
                                       time.strftime("%b %d %H:%M:%S", time.localtime(r.modified)), human_bytes(r.size_bytes)))
                             for r in self.rows], align=(RIGHT, RIGHT, RIGHT, Qt.AlignmentFlag.AlignCenter, RIGHT),
                            tips=[f"{r.path}\n{VAL_LOSS_TIP}" if r.best else r.path for r in self.rows])
        self.info.setText(info)
        self._update_buttons()

    def set_keep_last(self, n: int) -> None:
        self.keep_last.blockSignals(True)
        self.keep_last.setValue(n)
        self.keep_last.blockSignals(False)

    def _update_buttons(self) -> None:
        selected = self.table.selected_path()
        newest = bool(self.rows) and selected == self.rows[0].path
        self.buttons["generate"].setEnabled(selected is not None)
        self.buttons["resume"].setEnabled(selected is not None and not self._run_active)
        # The running run's newest checkpoint is its safety net: not deletable while it runs.
        self.buttons["delete"].setEnabled(selected is not None and not (self._run_active and newest))
        self.buttons["folder"].setEnabled(bool(self.rows) or self.info.text() != "No run yet")


def _loss(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"
