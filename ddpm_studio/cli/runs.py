"""The commands that drive no session: ``export``, ``import``, ``demo-data`` and ``runs`` read or write run folders
and files in one call, and ``info`` reports the version, device, folders and model presets.

Services (and torch, for ``info``) are imported inside the commands so ``--help`` does not load them.
"""

from __future__ import annotations

import argparse
import sys

from ddpm_studio import __version__


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
