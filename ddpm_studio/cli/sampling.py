"""The commands that generate from a checkpoint: ``sample``, ``interpolate`` and ``evaluate``.

Each resolves a checkpoint (or a run folder's newest or best), builds its session from the flags and drives it like
training, so Ctrl-C stops it cleanly; the output goes to ``--out`` or the run's samples/ folder.
Services are imported inside the commands so ``--help`` does not load torch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ddpm_studio.cli.parser import overrides_from
from ddpm_studio.cli.signals import run_with_ctrl_c
from ddpm_studio.cli_progress import EventPrinter
from ddpm_studio.services import config as config_mod


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
    run_with_ctrl_c(session, printer)
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
    run_with_ctrl_c(session, printer)
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
    run_with_ctrl_c(session, printer)
    return 0 if printer.outcome == "evaluated" else 1
