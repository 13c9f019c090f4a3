"""Application factory and entry point.

``create_app(exec_app=False)`` builds and shows the window and returns it (tests, benchmarks);
``main()`` runs the event loop. Nothing here imports torch: the window paints first, then a
background warm-up loads it (see ``Studio.after_show``; ``studio.py`` is the composition root).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtWidgets import QApplication

from ddpm_studio.gui import dialogs
from ddpm_studio.gui.preferences import Preferences, open_settings
from ddpm_studio.gui.resources import APP_NAME, app_icon
from ddpm_studio.gui.studio import Studio

log = logging.getLogger("ddpm_studio.gui")
_T0 = time.perf_counter()
WARM_UP_DELAY_MS = 200


class FirstPaint(QObject):
    """Calls ``then`` right after the window's first paint (or after 1 s, whichever comes first)."""

    def __init__(self, window: QObject, then: Callable[[], None]) -> None:
        super().__init__(window)
        self.seconds: float | None = None  # from the app module's import to the first paint
        self.torch_loaded = False  # was torch in sys.modules at that moment (it must not be)
        self._then: Callable[[], None] | None = then
        window.installEventFilter(self)
        QTimer.singleShot(1000, self._fire)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Paint and self.seconds is None:
            self.seconds = time.perf_counter() - _T0
            self.torch_loaded = "torch" in sys.modules
            log.debug("Window painted %.2f s after the app module was imported", self.seconds)
            QTimer.singleShot(WARM_UP_DELAY_MS, self._fire)  # let the first frames settle first
        return False

    def _fire(self) -> None:
        if self._then is not None:
            then, self._then = self._then, None
            self.parent().removeEventFilter(self)  # one Python call per window event is not free
            then()


@dataclass
class AppHandle:
    """What ``create_app(exec_app=False)`` returns."""

    app: QApplication
    studio: Studio
    first_paint: FirstPaint | None = None

    @property
    def window(self):
        return self.studio.w


def _excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    """An exception escaping a slot: report it and keep the app running (Qt would otherwise abort)."""
    detail = "".join(traceback.format_exception(exc_type, exc, tb))
    sys.stderr.write(detail)
    app = QApplication.instance()
    if app is not None and not isinstance(exc, KeyboardInterrupt):
        dialogs.show_error(app.activeWindow(), "Unexpected error", f"{exc_type.__name__}: {exc}", detail)


def create_app(exec_app: bool = True, argv: list[str] | None = None, settings_path: str | None = None,
               offer_interrupted: bool = True) -> int | AppHandle:
    """Build the QApplication and the main window, show it, and run (or return the handle)."""
    app = QApplication.instance()
    if app is None:
        app = QApplication([sys.argv[0], *(argv or [])])
    assert isinstance(app, QApplication)
    app.setApplicationName(APP_NAME)
    app.setOrganizationName("ddpm-studio")
    app.setApplicationDisplayName(APP_NAME)
    app.setWindowIcon(app_icon())  # type: ignore[arg-type]
    logging.captureWarnings(True)
    if exec_app:
        sys.excepthook = _excepthook
    studio = Studio(Preferences(open_settings(settings_path)))
    app.aboutToQuit.connect(studio.shutdown)
    handle = AppHandle(app, studio)
    # Heavy work (torch) starts only once the window has painted, so the first paint never waits for it.
    handle.first_paint = FirstPaint(studio.w, lambda: studio.after_show(offer_interrupted))
    studio.w.show()
    if not exec_app:
        return handle
    demo = os.environ.get("DDPM_STUDIO_GUI_DEMO")
    if demo:
        from ddpm_studio.gui.demo import run_demo

        run_demo(handle, demo)
    return app.exec()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ddpm-studio", description="DDPM Studio desktop app")
    parser.add_argument("--demo", choices=("idle", "settings", "training", "generate"),
                        help="Script the window (for screenshots; see gui/demo.py)")
    parser.add_argument("--settings", help="INI file for the app's settings (default: the platform's settings store)")
    args, qt_args = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if args.demo:
        os.environ["DDPM_STUDIO_GUI_DEMO"] = args.demo
    result = create_app(True, qt_args, args.settings, offer_interrupted=not args.demo)
    assert isinstance(result, int)
    return result
