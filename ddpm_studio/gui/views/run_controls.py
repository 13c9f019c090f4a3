"""The training toolbar (RunControlsView): Start / Pause / Resume / Stop / Continue, Sample now / Checkpoint now,
the time budget ("Train for 10 min"), the progress bar, why Start is disabled, and the device warning.

The buttons are QActions (so keyboard shortcuts work anywhere in the window) whose enabled state is set
only by ``show_state`` from the training presenter's confirmed RunState, never by the click itself.
The bar shows what the presenter computed (``show_progress``): its fraction and its words.
"""

from __future__ import annotations

from collections.abc import Mapping

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QKeySequence, QResizeEvent
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QStyle,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from ddpm_studio.gui.views.elided_label import ElidedLabel

BAR_STEPS = 1000  # the bar's resolution: it shows a fraction, of steps or of the time budget
COMPACT_BELOW = 1180  # px: a narrower toolbar shows the buttons' icons only (names in their tooltips and the Run menu)


class RunControls(QWidget):
    """The training toolbar."""

    requested = Signal(str)  # an action's name (start, pause, resume, stop, continue, preview, checkpoint) or use_cpu
    budgetEdited = Signal(float)  # the "Train for" box: minutes of training, 0 = until Total steps

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.actions_by_name: dict[str, QAction] = {}
        self.buttons: dict[str, QToolButton] = {}
        rows = QVBoxLayout(self)
        rows.setContentsMargins(0, 0, 0, 0)
        rows.setSpacing(0)
        layout = QHBoxLayout()
        layout.setContentsMargins(4, 2, 4, 2)
        rows.addLayout(layout)
        style = QStyle.StandardPixmap
        for name, text, keys, icon, tip in (
            ("start", "Start", "Ctrl+Return", style.SP_MediaPlay, "Start training a new run with these settings"),
            ("pause", "Pause", "Ctrl+P", style.SP_MediaPause,
             "Pause after the current step (nothing is lost; the model stays in memory)"),
            ("resume", "Resume", "Ctrl+Shift+P", style.SP_MediaSeekForward, "Continue the paused run"),
            ("stop", "Stop", "Ctrl+.", style.SP_MediaStop, "Stop the run after saving a checkpoint (it can be continued later)"),
            ("continue", "Continue…", "Ctrl+Shift+O", style.SP_BrowserReload,
             "Continue an earlier run (the one opened in Runs, or choose a run folder / checkpoint)"),
            ("preview", "Sample now", "Ctrl+Shift+G", style.SP_FileDialogContentsView,
             "Make a preview of the model now (the trajectory and the validation loss), also while paused"),
            ("checkpoint", "Checkpoint now", "Ctrl+Shift+S", style.SP_DialogSaveButton,
             "Save a checkpoint of the model now, also while paused (the run goes on, or stays paused)"),
        ):
            action = QAction(self.style().standardIcon(icon), text, self)
            action.setObjectName(f"action_{name}")
            action.setShortcut(QKeySequence(keys))
            action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            shortcut = action.shortcut().toString(QKeySequence.SequenceFormat.NativeText)
            action.setToolTip(f"{tip} ({shortcut})")
            action.triggered.connect(lambda _checked=False, n=name: self.requested.emit(n))
            button = QToolButton()
            button.setObjectName(f"button_{name}")
            button.setDefaultAction(action)
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
            layout.addWidget(button)
            self.actions_by_name[name] = action
            self.buttons[name] = button
        layout.addWidget(QLabel("Train for"))
        self.budget = QDoubleSpinBox()
        self.budget.setObjectName("train_minutes")
        self.budget.setRange(0.0, 1_000_000.0)
        self.budget.setDecimals(2)
        self.budget.setSuffix(" min")
        self.budget.setSpecialValueText("all steps")  # 0: no time budget, train for Total steps
        self.budget.setMaximumWidth(self.budget.fontMetrics().horizontalAdvance("9999.99 min") + 30)
        self.budget.setToolTip("Train for this many minutes (pauses do not count), with the learning-rate decay fitted "
                               "to it; or, at 0, for Total steps (Settings). With both, the run ends at whichever comes "
                               "first.")
        self.budget.valueChanged.connect(self.budgetEdited.emit)
        layout.addWidget(self.budget)
        self.progress = QProgressBar()
        self.progress.setObjectName("train_progress")
        self.progress.setMinimumWidth(150)
        self.progress.setTextVisible(True)
        self.progress.setFormat("No run")
        self.progress.setValue(0)
        layout.addWidget(self.progress, 2)
        self.state_label = QLabel("Idle")
        self.state_label.setObjectName("run_state")
        layout.addWidget(self.state_label)
        self.reason = ElidedLabel()  # one line, whole words (the toolbar keeps its height); the full text is the tooltip
        self.reason.setObjectName("start_reason")
        self.reason.setStyleSheet("color: #c62828;")
        layout.addWidget(self.reason, 2)
        self.warning_bar = QWidget()  # a second row, only while the device warning is shown
        self.warning_bar.setObjectName("device_warning_bar")
        warning_row = QHBoxLayout(self.warning_bar)
        warning_row.setContentsMargins(4, 0, 4, 2)
        self.warning = QLabel()
        self.warning.setObjectName("device_warning")
        self.warning.setWordWrap(True)
        self.warning.setStyleSheet("color: #b71c1c;")
        self.use_cpu = QPushButton("Train on the CPU instead")
        self.use_cpu.setObjectName("use_cpu")
        self.use_cpu.setToolTip("Stop this run and start it again with Device: cpu")
        self.use_cpu.clicked.connect(lambda: self.requested.emit("use_cpu"))
        warning_row.addWidget(self.warning, 1)
        warning_row.addWidget(self.use_cpu)
        rows.addWidget(self.warning_bar)
        self.warning_bar.hide()
        self.show_state("Idle", {}, "Checking settings…")

    def resizeEvent(self, event: QResizeEvent) -> None:
        """Narrow windows keep room for the progress bar and Start's reason: the buttons drop their names."""
        super().resizeEvent(event)
        compact = event.size().width() < COMPACT_BELOW
        style = Qt.ToolButtonStyle.ToolButtonIconOnly if compact else Qt.ToolButtonStyle.ToolButtonTextBesideIcon
        for button in self.buttons.values():
            button.setToolButtonStyle(style)

    def action(self, name: str) -> QAction:
        return self.actions_by_name[name]

    def show_state(self, label: str, enabled: Mapping[str, bool], reason: str = "") -> None:
        """Enable exactly the actions in ``enabled``; show why Start is off when ``reason`` is given."""
        for name, action in self.actions_by_name.items():
            action.setEnabled(bool(enabled.get(name, False)))
        self.state_label.setText(label)
        self.reason.set_full_text(f"Cannot start: {reason}" if reason else "", tooltip=reason)
        self.reason.setVisible(bool(reason))

    def show_progress(self, fraction: float, text: str) -> None:
        """The bar ``fraction`` (0-1) full, labelled ``text``."""
        self.progress.setMaximum(BAR_STEPS)
        self.progress.setValue(round(max(0.0, min(1.0, fraction)) * BAR_STEPS))
        self.progress.setFormat(text)

    def set_budget(self, minutes: float, editable: bool) -> None:
        """The "Train for" box shows the settings' time budget; it is read-only while a run is active."""
        if self.budget.value() != minutes:
            self.budget.blockSignals(True)  # showing the value is not the user editing it
            self.budget.setValue(minutes)
            self.budget.blockSignals(False)
        self.budget.setEnabled(editable)

    def show_device_warning(self, text: str) -> None:
        """The accelerator self-check's warning with its "Train on the CPU instead" button; "" hides both."""
        self.warning.setText(text)
        self.warning_bar.setVisible(bool(text))

    def set_message(self, text: str, done: int = 0, total: int = 0) -> None:
        """A phase message during set-up ("Loading images 340 / 1000")."""
        if total:
            self.progress.setMaximum(total)
            self.progress.setValue(done)
            self.progress.setFormat(f"{text} {done:,} / {total:,}")
        else:
            self.progress.setFormat(text)
