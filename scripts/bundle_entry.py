"""Entry point of the bundled app (see build_app.spec): the ``ddpm-studio`` command, frozen by PyInstaller.

No arguments opens the window; ``--self-test`` checks the bundle without a display; any
subcommand (``train``, ``sample`` …) works as with the installed command.
"""

import multiprocessing
import sys

if __name__ == "__main__":
    # First, before parsing arguments: a child process that multiprocessing starts in a frozen app (spawn, the
    # default on macOS) re-runs this executable with its own arguments; freeze_support() makes it that child and
    # exits, instead of opening a second app. DDPM Studio's data loading needs no worker processes (images are
    # decoded in-process into memory), so this guards libraries that may start one.
    multiprocessing.freeze_support()
    from ddpm_studio.cli import main

    sys.exit(main())
