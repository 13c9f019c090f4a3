"""Where generated images go and what their folder is called, the same from the CLI and the app.

A generation's folder sits in the samples/ folder of the run its model came from (never in the current
directory or the package), and its name says what was made and how, so two folders are never confused:
``step_00002000-ddim50-seed0``, ``step_00002000-interp3-7-dpm++2m20``, ``step_00002000-eval-n256-dpm++2m-sde20-seed0``.
The app adds a time stamp so that generating again never overwrites the last result, and saves copies of a
result where the user asks (:func:`save_images`, :func:`save_grid`, :func:`save_gif`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ddpm_studio.core.sampler_catalog import steps_label
from ddpm_studio.services.config import InterpolationConfig, SampleConfig
from ddpm_studio.services.events import SamplesReady


def samples_dir_for(model: str | Path, fallback: str | Path) -> Path:
    """The samples/ folder of the run ``model`` belongs to (a run folder, or a checkpoint in a run's
    checkpoints/ folder); ``fallback`` for a checkpoint that lives anywhere else."""
    path = Path(model)
    if path.is_dir():
        return path / "samples"
    if path.parent.name == "checkpoints":
        return path.parent.parent / "samples"
    return Path(fallback)


def output_name(source: str, sample: SampleConfig, *, what: str = "", stamp: str = "", seed: bool = True) -> str:
    """``source-stamp-what-sampler[steps]-seedN`` without the empty parts.

    ``source`` names the model (a checkpoint's stem, ``live``, or "" for a run's newest checkpoint); ``what``
    is "" for images, ``interpolation_tag`` / ``evaluation_tag`` for the others; the sampler is named with its
    step count only when it uses one (DDPM always takes T steps), then an EMA length asked for (``ema0.05``; none for
    the run's own), then the autoguidance weight asked for (``ag1``; none for the model alone, as the names were before
    autoguidance), so that the images of two lengths or weights, or ones made before these settings, are not
    overwritten by another's.
    """
    parts = [source, stamp, what, steps_label(sample.sampler, sample.steps)]
    if sample.ema_length:
        parts.append(f"ema{sample.ema_length:g}")
    if sample.autoguidance:
        parts.append(f"ag{sample.autoguidance:g}")
    if seed:
        parts.append(f"seed{sample.sample_seed}")
    return "-".join(p for p in parts if p)


def interpolation_tag(interp: InterpolationConfig) -> str:
    return f"interp{interp.seed_from}-{interp.seed_to}"


def evaluation_tag(sample: SampleConfig) -> str:
    return f"eval-n{sample.num_images}"


# -- copies of a result, where the user asks ------------------------------------------------------------------
def is_strip(result: SamplesReady) -> bool:
    """An interpolation: its images are the frames of the strip file(s) in ``paths``, not one file each."""
    return len(result.paths) != len(result.images)


def save_images(result: SamplesReady, indices: list[int] | None, folder: str | Path) -> list[Path]:
    """The chosen (or all) images into ``folder`` as PNGs (plus the strip itself for all of a strip)."""
    from ddpm_studio.services.imaging import save_png

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chosen = range(len(result.images)) if indices is None else indices
    strip = is_strip(result)
    stem = Path(result.paths[0]).stem if result.paths else "image"
    written = [save_png(result.images[i], folder / f"{stem}_{i:05d}.png") if strip else _copy(result.paths[i], folder)
               for i in chosen]
    if strip and indices is None:
        written += [_copy(p, folder) for p in result.paths]
    return written


def save_grid(result: SamplesReady, path: str | Path, indices: list[int] | None = None) -> Path:
    """The chosen (or all) images tiled in one PNG; a whole strip keeps its rows of ``frames`` images."""
    from ddpm_studio.services.imaging import make_grid, save_png

    images = result.images if not indices else result.images[indices]
    ncols = int(result.extra.get("frames", 0)) or None if is_strip(result) and not indices else None
    return save_png(make_grid(images, ncols), Path(path))


def save_gif(result: SamplesReady, path: str | Path) -> Path | None:
    """The first batch's denoising as an animated GIF (None when the result has none)."""
    if not result.trajectory_path:
        return None
    shutil.copyfile(result.trajectory_path, path)
    return Path(path)


def _copy(src: str | Path, folder: Path) -> Path:
    src = Path(src)
    dst = folder / src.name
    if dst.resolve() != src.resolve():
        shutil.copyfile(src, dst)
    return dst
