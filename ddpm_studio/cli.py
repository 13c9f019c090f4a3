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
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ddpm_studio import __version__
from ddpm_studio.cli_progress import EventPrinter, logging_through
from ddpm_studio.services import config as config_mod

log = logging.getLogger("ddpm_studio")


def add_config_flags(parser: argparse.ArgumentParser, sections: dict[str, type], *, skip: tuple[str, ...] = (),
                     defaults: dict[str, Any] | None = None) -> None:
    """One ``--flag`` per config field, grouped by section, help and range from the field metadata.

    ``skip`` leaves fields out; ``defaults`` are the values the command really starts from, for the help.
    """
    for section, cls in sections.items():
        group = parser.add_argument_group(config_mod.SECTION_TITLES.get(section, section.title()))
        for f in dataclasses.fields(cls):
            if f.name in skip:
                continue
            meta = f.metadata
            extra = []
            if meta["choices"]:
                extra.append("one of " + ", ".join(meta["choices"]))
            if meta["min"] is not None:
                extra.append(f"range {meta['min']:g} to {meta['max']:g}")
            default = f.default if f.default is not dataclasses.MISSING else None
            default = (defaults or {}).get(f.name, default)
            extra.append(f"default {'preset' if default is None else default}")
            help_text = f"{meta['help']} ({'; '.join(extra)})".replace("%", "%%")
            flags = ["--" + f.name.replace("_", "-"), *meta.get("aliases", ())]
            dest = f"{section}.{f.name}"
            if config_mod.field_kind(f) == "bool":
                parser_action: Any = argparse.BooleanOptionalAction
                group.add_argument(*flags, dest=dest, action=parser_action, default=argparse.SUPPRESS, help=help_text)
            else:
                group.add_argument(*flags, dest=dest, default=argparse.SUPPRESS, metavar=f.name.upper(), help=help_text)


def overrides_from(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Nested {section: {field: value}} of the config flags the user actually gave."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in vars(args).items():
        if "." in key:
            section, name = key.split(".", 1)
            out.setdefault(section, {})[name] = value
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ddpm-studio", description="Train and sample DDPM diffusion models on your own images.",
        epilog="Run `ddpm-studio` with no command to open the desktop app; no command below opens a window.")
    parser.add_argument("--version", action="version", version=f"DDPM Studio {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="Show debug logging")
    parser.add_argument("--self-test", action="store_true",
                        help="Without a display: train a tiny model for a few steps, sample, build the window offscreen, "
                             "in a temporary folder; exit 0 when all works (smoke test of an installed or bundled app)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = sub.add_parser(
        "train", help="Train a model (Ctrl-C saves a checkpoint and exits)", epilog=TRAIN_SIGNALS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("--config", type=Path, help="TOML (or JSON) config file; flags override it")
    train.add_argument("--resume", type=Path, metavar="RUN_OR_CHECKPOINT",
                       help="Continue a run from its newest (or this) checkpoint; a run folder with no checkpoint yet "
                            "(it stopped or crashed before the first) starts again from step 0 with its saved settings")
    train.add_argument("--runs-dir", type=Path, help="Where run folders go (default: the platform data folder)")
    train.add_argument("--name", help="Name of the new run folder (default: the data set and the date, e.g. "
                                      "shapes-20261201-1432)")
    train.add_argument("--force-unlock", action="store_true",
                       help="With --resume: take the run over although its lock record names a process on another "
                            "computer (when that process no longer trains it); a running process's lock cannot be forced")
    train.add_argument("--find-batch-size", action="store_true",
                       help="Before a new run, find the largest micro-batch that fits in the device's memory: halve it "
                            "and raise gradient accumulation until a training step fits, keeping the effective batch")
    train.add_argument("--webhook-url", metavar="URL",
                       help="POST a JSON notification (run, state, step, loss, newest checkpoint, message) to this URL when "
                            "the run completes, fails, or pauses because a checkpoint could not be written (default: "
                            "$DDPM_STUDIO_WEBHOOK_URL). Not saved with the run: a webhook URL is a secret")
    add_config_flags(train, config_mod.SECTION_TYPES)

    sample = sub.add_parser("sample", help="Generate images from a checkpoint or a run folder")
    sample.add_argument("checkpoint", type=Path, help="A checkpoint .pt file or a run folder (its newest checkpoint)")
    sample.add_argument("--best", action="store_true",
                       help="With a run folder: its best checkpoint (lowest validation loss) instead of the newest")
    sample.add_argument("--out", type=Path, help="Output folder (default: the run's samples/ folder)")
    sample.add_argument("--trajectory", action="store_true", help="Also save the denoising trajectory as an animated GIF")
    sample.add_argument("--device", default="auto", choices=config_mod.DEVICE_CHOICES)
    sample.add_argument("--precision", default="auto", choices=config_mod.PRECISION_CHOICES)
    add_config_flags(sample, {"sample": config_mod.SampleConfig})

    interp = sub.add_parser("interpolate", help="Images between two seeds (slerp of their noise), saved as a strip")
    interp.add_argument("checkpoint", type=Path, help="A checkpoint .pt file or a run folder (its newest checkpoint)")
    interp.add_argument("--best", action="store_true",
                       help="With a run folder: its best checkpoint (lowest validation loss) instead of the newest")
    interp.add_argument("--out", type=Path, help="Output folder (default: the run's samples/ folder)")
    interp.add_argument("--device", default="auto", choices=config_mod.DEVICE_CHOICES)
    interp.add_argument("--precision", default="auto", choices=config_mod.PRECISION_CHOICES)
    add_config_flags(interp, {"interp": config_mod.InterpolationConfig})
    add_config_flags(interp, {"sample": config_mod.SampleConfig}, skip=("num_images", "sample_seed"))

    evaluate = sub.add_parser("evaluate", help="Generate images and score them (demo shape score; FID/KID if available)")
    evaluate.add_argument("checkpoint", type=Path, help="A checkpoint .pt file or a run folder (its newest checkpoint)")
    evaluate.add_argument("--best", action="store_true",
                       help="With a run folder: its best checkpoint (lowest validation loss) instead of the newest")
    evaluate.add_argument("--out", type=Path, help="Folder for the report and a grid (default: the run's samples/ folder)")
    evaluate.add_argument("--fid", default="auto", choices=("auto", "on", "off"),
                          help="FID/KID against the training images: auto = when the Inception weights are on this computer")
    evaluate.add_argument("--memorization", default=True, action=argparse.BooleanOptionalAction,
                          help="Report the share of samples that copy a training image (the rule is in the README); "
                               "default on when the training images can be loaded")
    evaluate.add_argument("--reference-images", type=int, default=1000,
                          help="Training images FID/KID compare with (default 1000)")
    evaluate.add_argument("--download-inception", action="store_true",
                          help="Download torchvision's Inception-v3 weights (104 MB) once into the torch cache first")
    evaluate.add_argument("--device", default="auto", choices=config_mod.DEVICE_CHOICES)
    evaluate.add_argument("--precision", default="auto", choices=config_mod.PRECISION_CHOICES)
    add_config_flags(evaluate, {"sample": config_mod.SampleConfig}, defaults=config_mod.EVALUATION_SAMPLE_DEFAULTS)

    export = sub.add_parser("export", help="Write a run's model as a diffusers DDPMPipeline folder (unet/ + scheduler/)")
    export.add_argument("checkpoint", type=Path, help="A checkpoint .pt file or a run folder (its newest checkpoint)")
    export.add_argument("out", type=Path, help="The folder to write (must not exist yet, or be empty)")
    export.add_argument("--format", default="diffusers", choices=("diffusers",), help="Only diffusers for now")
    export.add_argument("--ema", default=True, action=argparse.BooleanOptionalAction,
                        help="Export the EMA weights, the ones samples come from (default); --no-ema: the training weights")

    imp = sub.add_parser("import", help="Make a run from a local diffusers folder (UNet2DModel + DDPMScheduler), "
                                        "e.g. a downloaded google/ddpm-cifar10-32, to sample from and train further")
    imp.add_argument("folder", type=Path, help="The diffusers pipeline folder (with unet/ and scheduler/)")
    imp.add_argument("--runs-dir", type=Path, help="Where run folders go (default: the platform data folder)")
    imp.add_argument("--name", help="Name of the new run folder (default: the diffusers folder's name)")

    demo = sub.add_parser("demo-data", help="Write the built-in demo dataset (coloured shapes) as PNG files")
    demo.add_argument("out_dir", type=Path)
    demo.add_argument("--count", type=int, default=4096)
    demo.add_argument("--image-size", type=int, default=32)
    demo.add_argument("--seed", type=int, default=0)

    runs = sub.add_parser("runs", help="List training runs")
    runs.add_argument("--runs-dir", type=Path)
    sub.add_parser("info", help="Show version, device, folders and model presets")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        return _launch_gui()
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


TRAIN_SIGNALS_HELP = """\
While training (POSIX: Linux, macOS), from another terminal:
  kill -USR1 PID   save a checkpoint now (training goes on)
  kill -USR2 PID   make a preview now (samples of the fixed noise and the validation loss)
PID is the training process's id (shown when training starts). Ctrl-C saves a checkpoint and exits."""


def _request_signals(control: Any) -> dict[int, Any]:
    """SIGUSR1 = checkpoint now, SIGUSR2 = preview now (POSIX); returns the handlers they replace."""
    if not hasattr(signal, "SIGUSR1"):
        return {}

    def on_usr1(signum: int, frame: Any) -> None:
        control.request_checkpoint()

    def on_usr2(signum: int, frame: Any) -> None:
        control.request_preview()

    return {signal.SIGUSR1: signal.signal(signal.SIGUSR1, on_usr1), signal.SIGUSR2: signal.signal(signal.SIGUSR2, on_usr2)}


def _run_with_ctrl_c(session: Any, printer: EventPrinter, also_sigterm: bool = False,
                     retry_failed_saves: float | None = None, requests: bool = False,
                     observers: Sequence[Callable[[Any], Any]] = ()) -> None:
    """Drive ``session`` with the printer; the first Ctrl-C stops gracefully (checkpoint), a second aborts.

    ``observers`` see every event after the printer (e.g. a :class:`~ddpm_studio.services.notifications.Notifier`).

    ``retry_failed_saves``: when a checkpoint cannot be written (disk full) the session pauses; resume it after
    this many seconds to retry the save, again and again until it works or Ctrl-C stops the run.
    ``also_sigterm``: SIGTERM stops gracefully too (torchrun passes Ctrl-C to its workers as one SIGINT, and a
    cluster's or torchrun's shutdown as SIGTERM, then waits 30 s before SIGKILL).
    ``requests``: SIGUSR1 asks for a checkpoint now, SIGUSR2 for a preview now (training only, POSIX only).
    """
    from ddpm_studio.services.control import drive

    def on_signal(signum: int, frame: Any) -> None:
        if session.control.stop_requested:
            signal.default_int_handler(signum, frame)
        printer.note("Stopping: saving a checkpoint (press Ctrl-C again to abort without saving)")
        session.control.stop()

    import threading

    from ddpm_studio.services import events as ev

    timers: list[threading.Timer] = []
    last: list[Any] = [None]

    def sink(event: Any) -> None:
        printer(event)
        for observe in observers:
            observe(event)
        if retry_failed_saves is not None and isinstance(event, ev.RunPaused) and isinstance(last[0], ev.CheckpointFailed):
            printer.note(f"Paused: free some disk space; the checkpoint is retried in {retry_failed_saves:g} s "
                         "(Ctrl-C stops without it)")
            timer = threading.Timer(retry_failed_saves, session.control.resume)
            timer.daemon = True
            timer.start()
            timers.append(timer)
        last[0] = event

    signums = (signal.SIGINT, signal.SIGTERM) if also_sigterm else (signal.SIGINT,)
    previous = {signum: signal.signal(signum, on_signal) for signum in signums}
    if requests:
        previous.update(_request_signals(session.control))
    try:
        with logging_through(printer):
            drive(session.steps(), sink)
    finally:
        for timer in timers:
            timer.cancel()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        printer.close()


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
        base = config_mod.load_config_file(args.config) if args.config else config_mod.RunConfig()
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
        _run_with_ctrl_c(session, printer, also_sigterm=distributed, retry_failed_saves=retry, requests=not distributed,
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


def cmd_sample(args: argparse.Namespace) -> int:
    from ddpm_studio.services.outputs import output_name
    from ddpm_studio.services.runs import resolve_checkpoint
    from ddpm_studio.services.sampling import SamplingSession

    ckpt = resolve_checkpoint(args.checkpoint, best=args.best)
    sample_cfg = config_mod.update_section(config_mod.SampleConfig(), overrides_from(args).get("sample", {}), name="sample")
    out = _output_dir(args, ckpt, output_name(ckpt.stem, sample_cfg))
    session = SamplingSession(ckpt, sample_cfg, out, device=args.device, precision=args.precision,
                              save_trajectory=args.trajectory)
    printer = EventPrinter()
    _run_with_ctrl_c(session, printer)
    return 0 if printer.outcome == "samples" else 1


def _output_dir(args: argparse.Namespace, ckpt: Path, name: str) -> Path:
    """``--out`` or the run's samples/ folder, plus a sub-folder named after what is made."""
    from ddpm_studio.services.outputs import samples_dir_for

    return (args.out or samples_dir_for(ckpt, Path.cwd() / "samples")) / name


def cmd_interpolate(args: argparse.Namespace) -> int:
    from ddpm_studio.services.interpolation import InterpolationSession
    from ddpm_studio.services.outputs import interpolation_tag, output_name
    from ddpm_studio.services.runs import resolve_checkpoint

    ckpt = resolve_checkpoint(args.checkpoint, best=args.best)
    given = overrides_from(args)
    sample_cfg = config_mod.update_section(config_mod.SampleConfig(), given.get("sample", {}), name="sample")
    interp_cfg = config_mod.update_section(config_mod.InterpolationConfig(), given.get("interp", {}), name="interp")
    out = _output_dir(args, ckpt, output_name(ckpt.stem, sample_cfg, what=interpolation_tag(interp_cfg), seed=False))
    session = InterpolationSession(ckpt, sample_cfg, interp_cfg, out, device=args.device, precision=args.precision)
    printer = EventPrinter()
    _run_with_ctrl_c(session, printer)
    return 0 if printer.outcome == "samples" else 1


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ddpm_studio.services.evaluation import EvaluationSession, evaluation_sample_config
    from ddpm_studio.services.outputs import evaluation_tag, output_name
    from ddpm_studio.services.runs import resolve_checkpoint

    ckpt = resolve_checkpoint(args.checkpoint, best=args.best)
    if args.download_inception:
        from ddpm_studio.core.fid import download_inception_weights

        print(f"Inception weights: {download_inception_weights()}")
    sample_cfg = config_mod.update_section(evaluation_sample_config(), overrides_from(args).get("sample", {}), name="sample")
    out = _output_dir(args, ckpt, output_name(ckpt.stem, sample_cfg, what=evaluation_tag(sample_cfg)))
    session = EvaluationSession(ckpt, sample_cfg, out, fid=args.fid, reference_images=args.reference_images,
                                memorization=args.memorization,
                                device=args.device, precision=args.precision)
    printer = EventPrinter()
    _run_with_ctrl_c(session, printer)
    return 0 if printer.outcome == "evaluated" else 1


def cmd_export(args: argparse.Namespace) -> int:
    from ddpm_studio.services.diffusers_interop import export_diffusers

    result = export_diffusers(args.checkpoint, args.out, use_ema=args.ema)
    print(f"Wrote the {result.weights} weights of step {result.step} as a diffusers folder: {result.out_dir}")
    print(f"Load it with: diffusers.DDPMPipeline.from_pretrained({str(result.out_dir)!r})")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from ddpm_studio.services.diffusers_interop import import_diffusers

    result = import_diffusers(args.folder, runs_dir=args.runs_dir, name=args.name)
    print(f"Imported {args.folder} as the run {result.run_dir} (step {result.step})")
    for note in result.notes:
        print(f"  note: {note}")
    print(f"Sample:   ddpm-studio sample {result.run_dir}")
    if result.cfg.data.source == "folder" and not result.cfg.data.data_path:
        print(f"Train on: ddpm-studio train --resume {result.run_dir} --data-path YOUR_IMAGES --total-steps N")
    return 0


def cmd_demo_data(args: argparse.Namespace) -> int:
    from ddpm_studio.core.demo_data import write_demo_folder

    count = write_demo_folder(args.out_dir, n=args.count, image_size=args.image_size, seed=args.seed)
    print(f"Wrote {count} demo images to {args.out_dir}")
    print(f"Train on them with: ddpm-studio train --source folder --data-path {args.out_dir}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from ddpm_studio.services.runs import default_runs_dir, list_runs

    runs = list_runs(args.runs_dir)
    print(f"Runs in {args.runs_dir or default_runs_dir()}:")
    for run in runs:
        found = run.checkpoints()
        newest = f"last checkpoint {found[-1].path.name}" if found else "no checkpoint"
        best = next((c for c in found if c.best), None)
        if best is not None:
            newest += f", best {best.path.name} (validation loss {best.val_loss:.4f})"
        print(f"  {run.name:32s} {run.state():11s} step {run.read_status().get('step', 0):>8}  {newest}")
    if not runs:
        print("  (none yet)")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    import platformdirs
    import torch

    from ddpm_studio.core.device import choose_device
    from ddpm_studio.core.unet import UNet, preset_config, preset_names
    from ddpm_studio.services.runs import default_runs_dir

    choice = choose_device()
    print(f"DDPM Studio {__version__}, PyTorch {torch.__version__}, Python {sys.version.split()[0]}")
    print(f"Device: {choice.device} ({choice.reason})")
    print(f"Runs folder: {default_runs_dir()}")
    print(f"Cache folder: {platformdirs.user_cache_path('ddpm-studio')}")
    print("Model presets:")
    for name in preset_names():
        ucfg = preset_config(name)
        with torch.device("meta"):
            params = sum(p.numel() for p in UNet(ucfg).parameters())
        print(f"  {name:10s} {ucfg.image_size:>3}x{ucfg.image_size:<3} {params / 1e6:6.1f}M parameters")
    return 0


def _launch_gui() -> int:
    try:
        from ddpm_studio.gui import main as gui_main
    except ImportError as exc:
        print(f"The desktop app is not available ({exc}). Use a subcommand, e.g. `ddpm-studio train --help`.", file=sys.stderr)
        build_parser().print_help()
        return 1
    return int(gui_main() or 0)


if __name__ == "__main__":
    sys.exit(main())
