"""The desktop app (PySide6 + pyqtgraph). The only package that imports Qt.

``main`` is resolved lazily so ``import ddpm_studio.gui`` stays cheap and the CLI can import it
to launch the window without paying for Qt when a subcommand is used.
"""

from __future__ import annotations

from typing import Any

from ddpm_studio.gui import qt_compat

qt_compat.apply()  # before any widget exists: PySide6 6.12.0 on Python < 3.12 drops references (see qt_compat)


def main(argv: list[str] | None = None) -> int:
    """Open the main window and run until it closes (the bare ``ddpm-studio`` command)."""
    from ddpm_studio.gui.app import main as app_main

    return app_main(argv)


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from ddpm_studio.gui.app import create_app

        return create_app
    raise AttributeError(name)
