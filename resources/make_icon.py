"""Regenerate the app icon: resources/icon.png (1024x1024), icon.ico and icon.icns (macOS).

Run from the repository root: ``QT_QPA_PLATFORM=offscreen python resources/make_icon.py``.
The drawing lives in ddpm_studio/gui/resources.py so the app can draw it at run time too.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def main() -> None:
    from PIL import Image
    from PySide6.QtGui import QGuiApplication

    from ddpm_studio.gui.resources import draw_icon

    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])  # noqa: F841 - QPainter needs an app
    png = HERE / "icon.png"
    draw_icon(1024).save(str(png), "PNG")
    im = Image.open(png).convert("RGBA")
    sizes = [(16, 16), (32, 32), (64, 64), (128, 128), (256, 256), (512, 512), (1024, 1024)]
    im.save(HERE / "icon.icns", format="ICNS", sizes=sizes)
    im.save(HERE / "icon.ico", format="ICO", sizes=[(16, 16), (32, 32), (48, 48), (64, 64), (128, 128), (256, 256)])
    print("wrote", png, HERE / "icon.icns", HERE / "icon.ico")


if __name__ == "__main__":
    main()
