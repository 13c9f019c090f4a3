"""A list model of image thumbnails that decodes only what the view asks for.

Qt views request ``DecorationRole`` only for rows near the viewport, so a 100 000-file folder
costs nothing until scrolled. Requests go to one loader thread newest-first, and stale requests
(rows scrolled past) are dropped when the queue grows, so fast scrolling never builds a backlog.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import numpy as np
from PySide6.QtCore import QAbstractListModel, QModelIndex, QPersistentModelIndex, QSize, Qt
from PySide6.QtGui import QColor, QIcon, QImage, QPixmap
from PySide6.QtWidgets import QListView, QWidget

from ddpm_studio.gui import background

CACHE_SIZE = 2000
MAX_QUEUE = 256
ICON = 64

Index = QModelIndex | QPersistentModelIndex


def array_to_pixmap(arr: np.ndarray, size: int = ICON) -> QPixmap:
    """(H, W, 1|3) uint8 → a pixmap scaled to ``size`` (nearest, so tiny images stay crisp)."""
    arr = np.ascontiguousarray(np.repeat(arr, 3, axis=-1) if arr.shape[-1] == 1 else arr)
    h, w, _ = arr.shape
    image = QImage(arr.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
    mode = Qt.TransformationMode.FastTransformation if w < size else Qt.TransformationMode.SmoothTransformation
    return QPixmap.fromImage(image.scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio, mode))


class ThumbnailModel(QAbstractListModel):
    """Rows are files (decoded lazily by ``loader``) or in-memory images (demo set)."""

    def __init__(self, loader: Callable[[str], np.ndarray | str] | None = None, parent: Any = None) -> None:
        super().__init__(parent)
        self._files: tuple[str, ...] = ()
        self._arrays: np.ndarray | None = None
        self._loader = loader
        self._cache: OrderedDict[int, QPixmap | str] = OrderedDict()
        self._queue: deque[tuple[int, int, str]] = deque()
        self._cond = threading.Condition()
        self._generation = 0
        self._thread: threading.Thread | None = None
        self._placeholder = QPixmap(ICON, ICON)
        self._placeholder.fill(QColor("#e0e0e0"))
        self.loads = 0

    # -- contents ---------------------------------------------------------------------------------
    def set_files(self, files: tuple[str, ...]) -> None:
        self.beginResetModel()
        with self._cond:
            self._generation += 1
            self._queue.clear()
        self._files, self._arrays = tuple(files), None
        self._cache.clear()
        self.endResetModel()

    def set_arrays(self, images: np.ndarray) -> None:
        """(N, H, W, C) uint8 images already in memory."""
        self.beginResetModel()
        with self._cond:
            self._generation += 1
            self._queue.clear()
        self._files, self._arrays = (), images
        self._cache.clear()
        self.endResetModel()

    def rowCount(self, parent: Index = QModelIndex()) -> int:
        if parent.isValid():
            return 0
        return len(self._arrays) if self._arrays is not None else len(self._files)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        row = index.row()
        if not index.isValid() or row >= self.rowCount():
            return None
        if role == Qt.ItemDataRole.ToolTipRole:
            if self._files:
                cached = self._cache.get(row)
                return self._files[row] + (f"\n{cached}" if isinstance(cached, str) else "")
            return f"Demo image {row + 1}"
        if role != Qt.ItemDataRole.DecorationRole:
            return None
        if self._arrays is not None:
            cached = self._cache.get(row)
            if cached is None:
                cached = array_to_pixmap(self._arrays[row])
                self._remember(row, cached)
            return QIcon(cached) if isinstance(cached, QPixmap) else None
        cached = self._cache.get(row)
        if cached is None:
            self._request(row)
            return QIcon(self._placeholder)
        if isinstance(cached, str):  # could not decode: show an empty tile, reason in the tooltip
            return QIcon(self._placeholder)
        self._cache.move_to_end(row)
        return QIcon(cached)

    # -- loading ----------------------------------------------------------------------------------
    def _remember(self, row: int, value: QPixmap | str) -> None:
        self._cache[row] = value
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)

    def _request(self, row: int) -> None:
        if self._loader is None:
            return
        with self._cond:
            if any(r == row for r, _, _ in self._queue):
                return
            self._queue.append((row, self._generation, self._files[row]))
            while len(self._queue) > MAX_QUEUE:
                self._queue.popleft()  # oldest request: its row has likely scrolled out of view
            self._cond.notify()
        if self._thread is None or not self._thread.is_alive():
            background.relay()
            self._thread = threading.Thread(target=self._work, name="ddpm-thumbnails", daemon=True)
            self._thread.start()

    def _work(self) -> None:
        while True:
            with self._cond:
                if not self._queue and not self._cond.wait(timeout=5.0) and not self._queue:
                    return  # idle: the thread ends and restarts on the next request
                row, generation, path = self._queue.pop()  # newest first
            assert self._loader is not None
            result = self._loader(path)
            background.post(self._loaded, (row, generation, result))

    def _loaded(self, payload: tuple[int, int, np.ndarray | str]) -> None:
        row, generation, result = payload
        if generation != self._generation or row >= self.rowCount():
            return
        self.loads += 1
        self._remember(row, result if isinstance(result, str) else array_to_pixmap(result))
        index = self.index(row)
        self.dataChanged.emit(index, index, [Qt.ItemDataRole.DecorationRole])


class ThumbnailView(QListView):
    """A wrapping icon grid with uniform item sizes (so Qt never measures 100 000 items)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setViewMode(QListView.ViewMode.IconMode)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setMovement(QListView.Movement.Static)
        self.setUniformItemSizes(True)
        self.setIconSize(QSize(ICON, ICON))
        self.setGridSize(QSize(ICON + 6, ICON + 6))
        self.setSpacing(0)
        self.setLayoutMode(QListView.LayoutMode.Batched)
        self.setBatchSize(500)
        self.setSelectionMode(QListView.SelectionMode.NoSelection)
