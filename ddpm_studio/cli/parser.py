"""The ``ddpm-studio`` argument parser: every command's flags, and the config flags made from the dataclasses.

Only the parser lives here, so ``ddpm-studio --help`` and ``train --help`` need nothing but the config module
(no torch); the commands read their ``--flag`` values back as config overrides with :func:`overrides_from`.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from ddpm_studio import __version__
from ddpm_studio.cli.signals import TRAIN_SIGNALS_HELP
from ddpm_studio.services import config as config_mod


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
    """Every command and flag; the training, sampling and interpolation flags come from the config dataclasses."""
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
