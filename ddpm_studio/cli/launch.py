"""The bare ``ddpm-studio``: open the desktop app. The only module of the CLI that imports the gui package.

The import happens inside :func:`launch_gui`, so no subcommand pays for Qt, and an install without PySide6 (a
headless server) still runs every subcommand: the bare command then says why no window opens and shows the help.
"""

from __future__ import annotations

import sys

from ddpm_studio.cli.parser import build_parser


def launch_gui() -> int:
    """Open the window and return its exit code; 1 with the help when the app cannot be imported (no PySide6)."""
    try:
        from ddpm_studio.gui import main as gui_main
    except ImportError as exc:
        print(f"The desktop app is not available ({exc}). Use a subcommand, e.g. `ddpm-studio train --help`.", file=sys.stderr)
        build_parser().print_help()
        return 1
    return int(gui_main() or 0)
