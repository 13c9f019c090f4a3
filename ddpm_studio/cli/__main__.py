"""``python -m ddpm_studio.cli``: the same as ``ddpm-studio`` (and ``python -m ddpm_studio``)."""

import sys

from ddpm_studio.cli import main

sys.exit(main())
