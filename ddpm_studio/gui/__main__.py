"""``python -m ddpm_studio.gui [--demo idle|settings|training|generate]``: open the window (demos script it for screenshots)."""

import sys

from ddpm_studio.gui.app import main

sys.exit(main())
