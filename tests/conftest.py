"""Settings for the whole test run.

The README's test command runs the suite in parallel processes (pytest-xdist, ``-n auto``: one per core). Torch
would start as many threads as there are cores in every one of them, and on a 2-core machine four threads fighting
over two cores make each small model step slower than one thread alone. So each worker gets its share of the cores,
set here before any test module imports torch (and inherited by the processes tests start).
"""

import os

_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _workers)))
