"""Log panel: Python logging from any thread, shown on the GUI thread through a queued Qt signal."""

from __future__ import annotations

import contextlib
import logging
import time

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QTextCursor
from PySide6.QtWidgets import QPlainTextEdit, QVBoxLayout, QWidget

MAX_LINES = 5000


class _Emitter(QObject):
    record = Signal(str, int)


class QtLogHandler(logging.Handler):
    """A logging handler that forwards formatted records as a Qt signal (thread-safe: queued delivery)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.emitter = _Emitter()
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(RuntimeError):  # the panel is gone (shutdown)
            self.emitter.record.emit(self.format(record), record.levelno)


class LogPanel(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.text = QPlainTextEdit()
        self.text.setObjectName("log_text")
        self.text.setReadOnly(True)
        self.text.setMaximumBlockCount(MAX_LINES)
        self.text.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        layout.addWidget(self.text)
        self.handler = QtLogHandler()
        self.handler.emitter.record.connect(self._append_record)
        self._levels: dict[str, int] = {}

    def attach(self, *loggers: logging.Logger) -> None:
        for logger in loggers:
            logger.addHandler(self.handler)
            if logger.level == logging.NOTSET or logger.level > logging.INFO:
                self._levels[logger.name] = logger.level
                logger.setLevel(logging.INFO)

    def detach(self, *loggers: logging.Logger) -> None:
        for logger in loggers:
            logger.removeHandler(self.handler)
            if logger.name in self._levels:
                logger.setLevel(self._levels.pop(logger.name))

    def add(self, message: str, level: int = logging.INFO) -> None:
        """A line from the GUI itself (run events, errors)."""
        self._append_record(f"{time.strftime('%H:%M:%S')} {logging.getLevelName(level)} {message}", level)

    def _append_record(self, line: str, level: int) -> None:
        colour = "#c62828" if level >= logging.ERROR else "#ef6c00" if level >= logging.WARNING else "#222"
        escaped = line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\n", "<br>")
        self.text.appendHtml(f'<span style="color:{colour}; white-space: pre-wrap">{escaped}</span>')
        self.text.moveCursor(QTextCursor.MoveOperation.End)

    def plain_text(self) -> str:
        return self.text.toPlainText()
