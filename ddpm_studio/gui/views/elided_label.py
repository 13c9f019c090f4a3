"""A one-line label that shortens its text to the width it is given, at a word boundary, with the whole text as tooltip.

Why: a QLabel asks for the width of its whole text, so a long message (a toolbar's "Cannot start: …", a
model-size line) either widens its panel past the window's edge, where the text is cut mid-word, or changes
the height of everything below it when wrapped. This label asks for little width, keeps one line, and
shows as many whole words as fit, then "…"; hovering shows everything.
"""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QFontMetrics, QResizeEvent
from PySide6.QtWidgets import QLabel, QSizePolicy, QWidget

ELLIPSIS = "…"


def elide_words(text: str, metrics: QFontMetrics, width: int) -> str:
    """``text`` if it fits in ``width`` pixels, else its longest run of whole words that fits with "…" after it."""
    if metrics.horizontalAdvance(text) <= width:
        return text
    words = text.split(" ")
    lo, hi = 0, len(words)  # the answer keeps words[:k] for the largest k that fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if metrics.horizontalAdvance(" ".join(words[:mid]).rstrip(" ,;:·—-") + ELLIPSIS) <= width:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo]).rstrip(" ,;:·—-") + ELLIPSIS


class ElidedLabel(QLabel):
    """Plain text on one line, elided at a word boundary to the label's width; the full text is the tooltip."""

    def __init__(self, text: str = "", parent: QWidget | None = None, min_width: int = 60) -> None:
        super().__init__(parent)
        self._full = ""
        self._tooltip = ""
        self._min_width = min_width
        self.setTextFormat(Qt.TextFormat.PlainText)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.set_full_text(text)

    def set_full_text(self, text: str, tooltip: str | None = None) -> None:
        """Show ``text`` (elided as needed); the tooltip is ``tooltip``, or the full text when it does not fit."""
        self._full, self._tooltip = text, tooltip or ""
        self._elide()

    def full_text(self) -> str:
        return self._full

    def sizeHint(self) -> QSize:
        hint = super().sizeHint()
        return QSize(self.fontMetrics().horizontalAdvance(self._full) + 2 * self.margin() + 4, hint.height())

    def minimumSizeHint(self) -> QSize:
        return QSize(self._min_width, super().minimumSizeHint().height())

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        shown = elide_words(self._full, self.fontMetrics(), self.contentsRect().width() - 2 * self.margin())
        if shown != self.text():
            super().setText(shown)
        tip = self._tooltip or (self._full if shown != self._full else "")
        if tip != self.toolTip():
            self.setToolTip(tip)
