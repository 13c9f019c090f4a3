"""Where generated images go and what their folder is called, the same from the CLI and the app.

A generation's folder sits in the samples/ folder of the run its model came from (never in the current
directory or the package), and its name says what was made and how, so two folders are never confused:
``step_00002000-ddim50-seed0``, ``step_00002000-interp3-7-dpm++2m20``, ``step_00002000-eval-n256-dpm++2m-sde20-seed0``.
The app adds a time stamp so that generating again never overwrites the last result.
"""

from __future__ import annotations

from pathlib import Path

from ddpm_studio.core.sampler_catalog import steps_label
from ddpm_studio.services.config import InterpolationConfig, SampleConfig


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
    step count only when it uses one (DDPM always takes T steps).
    """
    parts = [source, stamp, what, steps_label(sample.sampler, sample.steps)]
    if seed:
        parts.append(f"seed{sample.sample_seed}")
    return "-".join(p for p in parts if p)


def interpolation_tag(interp: InterpolationConfig) -> str:
    return f"interp{interp.seed_from}-{interp.seed_to}"


def evaluation_tag(sample: SampleConfig) -> str:
    return f"eval-n{sample.num_images}"
