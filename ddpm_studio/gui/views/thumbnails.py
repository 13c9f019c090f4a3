"""A list model of image thumbnails that decodes only what the view asks for.

Qt views request ``DecorationRole`` only for rows near the viewport, so a 100 000-file folder costs
nothing until scrolled. Requests go to one loader worker thread (a :class:`~ddpm_studio.gui.workers.WorkerThread`)
newest-first, and stale requests (rows scrolled past) are dropped when the queue grows, so fast scrolling
never builds a backlog. The loader ends after a second without requests and starts again on the next.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import numpy as np
from PySide6.QtCore import QAbstractListModel, QModelIndex, QObject, QPersistentModelIndex, QSize, Qt, Signal, Slot
from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import QListView, QWidget

from ddpm_studio.gui.views.images import to_pixmap
from ddpm_studio.gui.workers import WorkerThread

CACHE_SIZE = 2000
MAX_QUEUE = 256
ICON = 64
IDLE_SECONDS = 1.0

Index = QModelIndex | QPersistentModelIndex


class _Loader(QObject):
    """Decodes queued files on its own thread; each result comes back as ``loaded`` (queued to the GUI thread)."""

    loaded = Signal(int, int, object)  # row, generation, (H, W, C) uint8 or the reason it failed
    finished = Signal()

    def __init__(self, load: Callable[[str], np.ndarray | str], queue: deque[tuple[int, int, str]],
                 cond: threading.Condition) -> None:
        super().__init__()
        self._load, self._queue, self._cond = load, queue, cond
        self.idle = False  # set under ``cond`` when it stops taking requests
        self.stopping = False

    @Slot()
    def run(self) -> None:
        try:
            while True:
                with self._cond:
                    if not self._queue and not self.stopping:
                        self._cond.wait(IDLE_SECONDS)
                    if not self._queue or self.stopping:
                        self.idle = True
                        return
                    row, generation, path = self._queue.pop()  # newest first
                self.loaded.emit(row, generation, self._load(path))
        finally:
            self.finished.emit()


class ThumbnailModel(QAbstractListModel):
    """Rows are files (decoded lazily by ``loader``) or in-memory images (demo set)."""

    def __init__(self, loader: Callable[[str], np.ndarray | str] | None = None, parent: Any = None) -> None:
        super().__init__(parent)
        self._files: tuple[str, ...] = ()
        self._arrays: np.ndarray | None = None
        self._load = loader
        self._cache: OrderedDict[int, QPixmap | str] = OrderedDict()
        self._queue: deque[tuple[int, int, str]] = deque()
        self._cond = threading.Condition()
        self._generation = 0
        self._worker: _Loader | None = None
        self._thread: WorkerThread | None = None
        self._placeholder = QPixmap(ICON, ICON)
        self._placeholder.fill(QColor("#e0e0e0"))
        self.loads = 0

    # -- contents ---------------------------------------------------------------------------------
    @property
    def files(self) -> tuple[str, ...]:
        return self._files

    def set_files(self, files: tuple[str, ...]) -> None:
        self._reset(tuple(files), None)

    def set_arrays(self, images: np.ndarray) -> None:
        """(N, H, W, C) uint8 images already in memory."""
        self._reset((), images)

    def _reset(self, files: tuple[str, ...], arrays: np.ndarray | None) -> None:
        self.beginResetModel()
        with self._cond:
            self._generation += 1
            self._queue.clear()
        self._files, self._arrays = files, arrays
        self._cache.clear()
        self.endResetModel()

    def stop(self) -> None:
        """Drop queued requests and let the loader end (the window is closing)."""
        with self._cond:
            self._queue.clear()
            if self._worker is not None:
                self._worker.stopping = True
            self._cond.notify_all()

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
        cached = self._cache.get(row)
        if self._arrays is not None:
            if cached is None:
                cached = to_pixmap(self._arrays[row], ICON)
                self._remember(row, cached)
            return QIcon(cached) if isinstance(cached, QPixmap) else None
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
        if self._load is None:
            return
        with self._cond:
            if any(r == row for r, _, _ in self._queue):
                return
            self._queue.append((row, self._generation, self._files[row]))
            while len(self._queue) > MAX_QUEUE:
                self._queue.popleft()  # oldest request: its row has likely scrolled out of view
            self._cond.notify_all()
            need_loader = self._worker is None or self._worker.idle
        if need_loader:
            self._worker = _Loader(self._load, self._queue, self._cond)
            self._worker.loaded.connect(self._loaded)
            self._thread = WorkerThread(self._worker, self)
            self._thread.thread.setObjectName("ddpm-thumbnails")
            self._thread.start()

    @Slot(int, int, object)
    def _loaded(self, row: int, generation: int, result: np.ndarray | str) -> None:
        if generation != self._generation or row >= self.rowCount():
            return
        self.loads += 1
        self._remember(row, result if isinstance(result, str) else to_pixmap(result, ICON))
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
