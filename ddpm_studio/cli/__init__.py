"""Command line: ``ddpm-studio [train|sample|interpolate|evaluate|export|import|demo-data|runs|info]``; the bare command
opens the app.

Examples::

    ddpm-studio demo-data ~/shapes                      # write the built-in demo set as PNGs
    ddpm-studio train --source folder --data-path ~/shapes --total-steps 5000
    ddpm-studio train --resume ~/.local/share/ddpm-studio/runs/run-20261123-120000
    ddpm-studio sample RUN_OR_CHECKPOINT --num-images 64 --sampler dpm++2m --steps 20
    ddpm-studio sample RUN_OR_CHECKPOINT --class-label circle --guidance-scale 2   # conditional runs
    ddpm-studio interpolate RUN_OR_CHECKPOINT --seed-from 3 --seed-to 7 --frames 9
    ddpm-studio evaluate RUN_OR_CHECKPOINT --num-images 500
    ddpm-studio export RUN_OR_CHECKPOINT --format diffusers OUT/   # a folder diffusers.DDPMPipeline loads
    ddpm-studio import ~/ddpm-cifar10-32                 # a local diffusers folder becomes a run
    torchrun --nproc_per_node 4 -m ddpm_studio train --batch-size 32   # 4 GPUs (DDP); effective batch 128
    ddpm-studio --self-test                              # train, sample, exit 0 (smoke test of a built app)

Every training flag is generated from the config dataclasses (``services/config.py``), so
``ddpm-studio train --help`` always lists every setting with its range.

The package, one job a module (``main`` here parses, sets up logging and dispatches):

- ``parser.py``: the argparse parser, the config flags generated from the dataclasses, and ``overrides_from``,
  which turns the flags the user gave back into config overrides;
- ``signals.py``: driving a session from the terminal (Ctrl-C/SIGTERM stop with a checkpoint, SIGUSR1/SIGUSR2
  requests, retried saves), shared by every command that runs a session;
- ``train.py``: ``train`` (new, resumed and torchrun runs);
- ``sampling.py``: ``sample``, ``interpolate`` and ``evaluate``, the commands that generate from a checkpoint;
- ``runs.py``: ``export``, ``import``, ``demo-data``, ``runs`` and ``info``, the commands that drive no session;
- ``launch.py``: the bare command, opening the desktop app (the CLI's only import of the gui package).
- ``__main__.py``: ``python -m ddpm_studio.cli``, the same as ``ddpm-studio``.

Every module imports services and torch inside its commands, so ``ddpm-studio --help`` and the window's start
load neither (the console entry point is ``ddpm_studio.cli:main``; ``python -m ddpm_studio`` calls it too).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from ddpm_studio.cli.launch import launch_gui
from ddpm_studio.cli.parser import build_parser
from ddpm_studio.cli.runs import cmd_demo_data, cmd_export, cmd_import, cmd_info, cmd_runs
from ddpm_studio.cli.sampling import cmd_evaluate, cmd_interpolate, cmd_sample
from ddpm_studio.cli.train import cmd_train
from ddpm_studio.services import config as config_mod

log = logging.getLogger("ddpm_studio")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit code: 0 done, 1 failed (a one-line reason on stderr), 2 invalid settings.

    No arguments opens the desktop app; the services' errors become messages here, not tracebacks (``-v`` logs them).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        return launch_gui()
    parser = build_parser()
    args = parser.parse_args(argv)
    from ddpm_studio.services.distributed import env_rank

    rank = env_rank()  # under torchrun, the other ranks log warnings and errors only, marked with their rank
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO if rank == 0 else logging.WARNING,
                        format="%(levelname)s: %(message)s" if rank == 0 else f"[rank {rank}] %(levelname)s: %(message)s")
    if args.self_test:
        from ddpm_studio.selftest import run_self_test

        return run_self_test()
    if args.command is None:
        parser.print_help()
        return 0
    handler = {"train": cmd_train, "sample": cmd_sample, "interpolate": cmd_interpolate, "evaluate": cmd_evaluate,
               "export": cmd_export, "import": cmd_import, "demo-data": cmd_demo_data, "runs": cmd_runs, "info": cmd_info}
    try:
        return handler[args.command](args)
    except config_mod.ConfigError as exc:
        print("error: invalid settings:", file=sys.stderr)
        for message in exc.errors:
            print(f"  - {message}", file=sys.stderr)
        return 2
    except Exception as exc:
        from ddpm_studio.services.events import user_message

        log.debug("details", exc_info=True)
        print(f"error: {user_message(exc)}", file=sys.stderr)
        return 1
