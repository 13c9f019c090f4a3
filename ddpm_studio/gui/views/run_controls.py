"""Start / Pause / Resume / Stop / Continue, the progress bar, and why Start is disabled (RunControlsView).

The buttons are QActions (so keyboard shortcuts work anywhere in the window) whose enabled state is set
only by ``show_state`` from the training presenter's confirmed RunState, never by the click itself.
"""

from __future__ import annotations

from collections.abc import Mapping

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QStyle, QToolButton, QWidget

from ddpm_studio.gui.views.elided_label import ElidedLabel
from ddpm_studio.services.formatting import format_duration


class RunControls(QWidget):
    """The training toolbar."""

    requested = Signal(str)  # the action's name: start, pause, resume, stop or continue

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.actions_by_name: dict[str, QAction] = {}
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 2, 4, 2)
        style = QStyle.StandardPixmap
        for name, text, keys, icon, tip in (
            ("start", "Start", "Ctrl+Return", style.SP_MediaPlay, "Start training a new run with these settings"),
            ("pause", "Pause", "Ctrl+P", style.SP_MediaPause,
             "Pause after the current step (nothing is lost; the model stays in memory)"),
            ("resume", "Resume", "Ctrl+Shift+P", style.SP_MediaSeekForward, "Continue the paused run"),
            ("stop", "Stop", "Ctrl+.", style.SP_MediaStop, "Stop the run after saving a checkpoint (it can be continued later)"),
            ("continue", "Continue…", "Ctrl+Shift+O", style.SP_BrowserReload,
             "Continue an earlier run (the one opened in Runs, or choose a run folder / checkpoint)"),
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
        self.show_state("Idle", {}, "Checking settings…")

    def action(self, name: str) -> QAction:
        return self.actions_by_name[name]

    def show_state(self, label: str, enabled: Mapping[str, bool], reason: str = "") -> None:
        """Enable exactly the actions in ``enabled``; show why Start is off when ``reason`` is given."""
        for name, action in self.actions_by_name.items():
            action.setEnabled(bool(enabled.get(name, False)))
        self.state_label.setText(label)
        self.reason.set_full_text(f"Cannot start: {reason}" if reason else "", tooltip=reason)
        self.reason.setVisible(bool(reason))

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

    def set_position(self, step: int, total: int, text: str) -> None:
        """The bar at ``step`` of ``total``, labelled ``text`` (a paused or finished run)."""
        self.progress.setMaximum(max(1, total))
        self.progress.setValue(min(step, max(1, total)))
        self.progress.setFormat(text)
