"""Start / Pause / Resume / Stop / Continue, the progress bar, and why Start is disabled.

The buttons are QActions (so keyboard shortcuts work anywhere in the window) whose enabled state
is set only by ``set_state`` from the confirmed RunState, never by the click itself.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QStyle, QToolButton, QWidget

from ddpm_studio.gui.state import RunState, buttons_for


def format_duration(seconds: float | None) -> str:
    """1:02:03 / 4:05, or --:-- when unknown."""
    if seconds is None or seconds != seconds or seconds < 0 or seconds == float("inf"):
        return "--:--"
    seconds = round(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class RunControls(QWidget):
    """The training toolbar."""

    startRequested = Signal()
    pauseRequested = Signal()
    resumeRequested = Signal()
    stopRequested = Signal()
    continueRequested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = RunState.IDLE
        self.actions_by_name: dict[str, QAction] = {}
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 2, 4, 2)
        specs = (
            ("start", "Start", "Ctrl+Return", "Start training a new run with these settings", self.startRequested),
            ("pause", "Pause", "Ctrl+P", "Pause after the current step (nothing is lost; the model stays in memory)",
             self.pauseRequested),
            ("resume", "Resume", "Ctrl+Shift+P", "Continue the paused run", self.resumeRequested),
            ("stop", "Stop", "Ctrl+.", "Stop the run after saving a checkpoint (it can be continued later)",
             self.stopRequested),
            ("continue", "Continue…", "Ctrl+Shift+O",
             "Continue an earlier run (the one opened in Runs, or choose a run folder / checkpoint)", self.continueRequested),
        )
        icons = {"start": QStyle.StandardPixmap.SP_MediaPlay, "pause": QStyle.StandardPixmap.SP_MediaPause,
                 "resume": QStyle.StandardPixmap.SP_MediaSeekForward, "stop": QStyle.StandardPixmap.SP_MediaStop,
                 "continue": QStyle.StandardPixmap.SP_BrowserReload}
        for name, text, keys, tip, signal in specs:
            action = QAction(self.style().standardIcon(icons[name]), text, self)
            action.setObjectName(f"action_{name}")
            action.setShortcut(QKeySequence(keys))
            action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            shortcut = action.shortcut().toString(QKeySequence.SequenceFormat.NativeText)
            action.setToolTip(f"{tip} ({shortcut})")
            action.triggered.connect(signal)
            button = QToolButton()
            button.setObjectName(f"button_{name}")
            button.setDefaultAction(action)
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
            layout.addWidget(button)
            self.actions_by_name[name] = action
        self.progress = QProgressBar()
        self.progress.setObjectName("train_progress")
        self.progress.setMinimumWidth(150)
        self.progress.setTextVisible(True)
        self.progress.setFormat("No run")
        self.progress.setValue(0)
        layout.addWidget(self.progress, 2)
        self.state_label = QLabel(RunState.IDLE.label)
        self.state_label.setObjectName("run_state")
        layout.addWidget(self.state_label)
        self.reason = QLabel()
        self.reason.setObjectName("start_reason")
        self.reason.setStyleSheet("color: #c62828;")
        self.reason.setMaximumWidth(420)  # one line (the toolbar keeps its height); the full text is the tooltip
        layout.addWidget(self.reason, 1)
        self.set_state(RunState.IDLE, can_start=False, reason="Checking settings…")

    def action(self, name: str) -> QAction:
        return self.actions_by_name[name]

    def set_state(self, state: RunState, can_start: bool, reason: str = "", can_continue: bool = True) -> None:
        """Enable exactly the actions ``state`` allows; show why Start is off when it is."""
        self.state = state
        enabled = buttons_for(state, can_start)
        for name in ("start", "pause", "resume", "stop"):
            self.actions_by_name[name].setEnabled(enabled[name])
        self.actions_by_name["continue"].setEnabled(not state.active and can_continue)
        self.state_label.setText(state.label)
        show_reason = not state.active and not can_start and bool(reason)
        short = reason if len(reason) <= 70 else reason[:67] + "…"
        self.reason.setText(f"Cannot start: {short}" if show_reason else "")
        self.reason.setToolTip(reason if show_reason else "")
        self.reason.setVisible(show_reason)

    def set_progress(self, step: int, total: int, images_per_sec: float | None = None, eta: float | None = None,
                     loss: float | None = None) -> None:
        self.progress.setMaximum(max(1, total))
        self.progress.setValue(min(step, total))
        parts = [f"step {step:,} / {total:,}"]
        if loss is not None:
            parts.append(f"loss {loss:.4f}")
        if images_per_sec:
            parts.append(f"{images_per_sec:,.0f} img/s")
        if eta is not None:
            parts.append(f"ETA {format_duration(eta)}")
        self.progress.setFormat("  ·  ".join(parts))

    def set_message(self, text: str, done: int = 0, total: int = 0) -> None:
        """A phase message during set-up ("Loading images 340 / 1000")."""
        if total:
            self.progress.setMaximum(total)
            self.progress.setValue(done)
            self.progress.setFormat(f"{text} {done:,} / {total:,}")
        else:
            self.progress.setFormat(text)
