"""Finds the top-level ``resources/`` folder from a source checkout, an installed package or a bundle.

``resources/`` sits outside the package (so the icon sources are not shipped inside every wheel
import path), hence three places to look: a PyInstaller bundle (``sys._MEIPASS/resources``), the
source checkout next to the package, and ``<prefix>/share/ddpm-studio/resources`` for installs
that ship it as data files. When none has it, the icon is drawn in memory so the app never lacks one.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP_NAME = "DDPM Studio"
ICON_PNG = "icon.png"
ICON_ICNS = "icon.icns"


def candidate_dirs() -> list[Path]:
    """Where ``resources/`` may be, most specific first (DDPM_STUDIO_RESOURCES overrides all)."""
    dirs: list[Path] = []
    env = os.environ.get("DDPM_STUDIO_RESOURCES")
    if env:
        dirs.append(Path(env))
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        dirs.append(Path(bundle) / "resources")
    package_root = Path(__file__).resolve().parents[2]  # <checkout>/ddpm_studio/gui/resources.py
    dirs.append(package_root / "resources")
    dirs.append(Path(sys.prefix) / "share" / "ddpm-studio" / "resources")
    return dirs


def resource_dir() -> Path | None:
    """The first existing ``resources/`` folder that holds the icon, or None."""
    for d in candidate_dirs():
        if (d / ICON_PNG).is_file():
            return d
    return None


def resource_path(name: str) -> Path | None:
    """A file in ``resources/`` or None when it is not shipped."""
    for d in candidate_dirs():
        p = d / name
        if p.is_file():
            return p
    return None


def app_icon() -> object:
    """The application QIcon: the shipped PNG, else one drawn with QPainter."""
    from PySide6.QtGui import QIcon, QPixmap

    path = resource_path(ICON_PNG)
    if path is not None:
        icon = QIcon(str(path))
        if not icon.isNull():
            return icon
    return QIcon(QPixmap.fromImage(draw_icon(256)))


def draw_icon(size: int = 1024) -> object:
    """The icon drawn with QPainter: a rounded tile where noise resolves into a clean disc (denoising)."""
    import random

    from PySide6.QtCore import QPointF, QRectF, Qt
    from PySide6.QtGui import QBrush, QColor, QImage, QLinearGradient, QPainter, QPainterPath, QRadialGradient

    img = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    img.fill(Qt.GlobalColor.transparent)
    p = QPainter(img)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    s = float(size)
    tile = QRectF(s * 0.06, s * 0.06, s * 0.88, s * 0.88)
    path = QPainterPath()
    path.addRoundedRect(tile, s * 0.2, s * 0.2)
    bg = QLinearGradient(tile.topLeft(), tile.bottomRight())
    bg.setColorAt(0.0, QColor(28, 32, 64))
    bg.setColorAt(1.0, QColor(58, 28, 96))
    p.fillPath(path, QBrush(bg))
    p.setClipPath(path)
    # Noise on the left fading out to the right: pixels of random colour whose density falls with x.
    rng = random.Random(7)
    cell = s / 48
    for i in range(48):
        density = max(0.0, 1.0 - i / 30)
        for j in range(48):
            if rng.random() < density * 0.85:
                shade = rng.randint(90, 255)
                colour = QColor(shade, rng.randint(80, shade), rng.randint(140, 255), 170)
                p.fillRect(QRectF(i * cell, j * cell, cell, cell), colour)
    # The "denoised" disc on the right.
    centre = QPointF(s * 0.62, s * 0.5)
    glow = QRadialGradient(centre, s * 0.3)
    glow.setColorAt(0.0, QColor(255, 190, 60))
    glow.setColorAt(0.7, QColor(245, 120, 40))
    glow.setColorAt(1.0, QColor(245, 120, 40, 0))
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(QBrush(glow))
    p.drawEllipse(centre, s * 0.27, s * 0.27)
    p.setBrush(QColor(255, 214, 102))
    p.drawEllipse(centre, s * 0.19, s * 0.19)
    p.end()
    return img
