"""``ddpm-studio train``: a new run, a resumed one, or (under torchrun) one rank of a distributed run.

Services are imported inside the command so ``--help`` and the other commands do not load torch.
"""

from __future__ import annotations

import argparse
import signal
import sys

from ddpm_studio.cli.parser import overrides_from
from ddpm_studio.cli.signals import run_with_ctrl_c
from ddpm_studio.cli_progress import EventPrinter
from ddpm_studio.services import config as config_mod
from ddpm_studio.services import config_files


def cmd_train(args: argparse.Namespace) -> int:
    from ddpm_studio.services.distributed import env_rank, launched_by_torchrun
    from ddpm_studio.services.notifications import Notifier, webhook_url_from_env
    from ddpm_studio.services.training import TrainingSession

    overrides = overrides_from(args)
    distributed = launched_by_torchrun()  # torchrun --nproc_per_node N: DDP, rank 0 writes the run folder
    url = args.webhook_url or webhook_url_from_env()
    notifier = Notifier(url) if url and env_rank() == 0 else None  # a bad URL stops here, before any work
    resume = args.resume.expanduser() if args.resume else None
    if resume is None and distributed:  # restarted by torchrun --max-restarts: continue the run the job was training
        from ddpm_studio.services.elastic import run_to_resume

        resume = run_to_resume(args.runs_dir)
    if args.force_unlock and resume is None:
        print("error: --force-unlock goes with --resume RUN", file=sys.stderr)
        return 2
    if resume:
        if not resume.exists():
            print(f"error: No checkpoint or run folder at {resume}", file=sys.stderr)
            return 1
        run_dir = resume if resume.is_dir() else resume.parent.parent
        if args.force_unlock and env_rank() == 0 and (run_dir / "checkpoints").is_dir():
            from ddpm_studio.services.run_lock import force_unlock

            removed = force_unlock(run_dir)
            if removed is not None:
                print(f"Removed the lock record of {removed.describe()}", file=sys.stderr)
        # A run folder: its newest complete checkpoint, or from step 0 when it has none (the session says which).
        session = TrainingSession(resume_from=resume, overrides=overrides, runs_dir=args.runs_dir, distributed=distributed)
    else:
        base = config_files.load_config_file(args.config) if args.config else config_mod.RunConfig()
        cfg = config_mod.check(config_mod.from_dict(overrides, base=base))
        if args.find_batch_size:
            from ddpm_studio.services.batch_fit import BatchFitError, fit_config

            try:
                cfg, fit = fit_config(cfg)
            except BatchFitError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            tried = ", ".join(f"{m} {'fits' if ok else 'too large'}" for m, ok in fit.tried)
            print(f"Batch: {fit.batch_size} per micro-batch x {fit.grad_accum} accumulation = {fit.effective} images "
                  f"per step ({tried})", file=sys.stderr)
        session = TrainingSession(cfg, runs_dir=args.runs_dir, run_name=args.name, distributed=distributed)
    printer = EventPrinter(quiet=env_rank() != 0)
    import os

    retry = None if distributed else float(os.environ.get("DDPM_STUDIO_SAVE_RETRY_SECONDS", "60"))
    if not distributed and hasattr(signal, "SIGUSR1"):
        pid = os.getpid()
        printer.note(f"Process {pid}: `kill -USR1 {pid}` saves a checkpoint now, `kill -USR2 {pid}` makes a preview now")
    try:
        run_with_ctrl_c(session, printer, also_sigterm=distributed, retry_failed_saves=retry, requests=not distributed,
                        observers=[notifier.observe] if notifier else [])
    except Exception as exc:
        if notifier is not None:
            from ddpm_studio.services.events import RunFailed

            notifier.observe(RunFailed.from_session(exc, session))
        raise
    finally:
        if notifier is not None:
            notifier.close()  # give the last POST its few seconds before the process exits
    return 0 if printer.outcome in ("completed", "stopped") else 1
