"""numpy images to Qt images: the one conversion every view uses (thumbnails, results, previews)."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QPixmap


def rgb(images: np.ndarray) -> np.ndarray:
    """Grayscale (…, 1) → RGB (…, 3), so every image has the same layout."""
    return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images


def to_qimage(image: np.ndarray) -> QImage:
    """(H, W, 1|3) uint8 → a QImage that owns its pixels (the array may go away)."""
    arr = np.ascontiguousarray(rgb(image))
    h, w, _ = arr.shape
    return QImage(arr.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


def to_pixmap(image: np.ndarray, size: int) -> QPixmap:
    """(H, W, 1|3) uint8 → a pixmap scaled to fit ``size`` (nearest when enlarging, so tiny images stay crisp)."""
    qimage = to_qimage(image)
    mode = Qt.TransformationMode.FastTransformation if qimage.width() < size else Qt.TransformationMode.SmoothTransformation
    return QPixmap.fromImage(qimage.scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio, mode))
