import sys

from ddpm_studio.cli import main

sys.exit(main())
