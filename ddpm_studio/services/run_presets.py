"""The app's named starting points for a run, and what it starts with on a fresh machine.

A preset governs every setting but the dataset choice: applying one starts from the app's defaults
(:func:`default_config`) and sets the values it lists, so nothing of an earlier preset is left behind
("Laptop CPU (default)" after "Paper CIFAR-10" restores the cosine schedule and v-prediction), while the
user's data (source, folder, channels, flips, cache, labels) is kept.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ddpm_studio.services import config as config_mod

#: Named starting points: the app's defaults with these values (the dataset choice is kept).
RUN_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "Laptop CPU (default)": {},  # the defaults themselves: the fast U-Net, 32x32, cosine schedule, v-prediction, 10 minutes
    "Quick pipeline check (tiny model, ~1 min)": {
        "model": {"preset": "tiny"}, "data": {"image_size": 16}, "diffusion": {"timesteps": 200},
        "optim": {"batch_size": 16, "lr": 1e-3, "warmup_steps": 20, "total_steps": 300, "train_minutes": 0.0, "ema": "fixed",
                  "ema_decay": 0.99},
        "schedule": {"preview_every": 50, "preview_steps": 20, "checkpoint_every": 100},
    },
    "Paper CIFAR-10 (GPU, days)": {
        "model": {**config_mod.PAPER_RECIPE["model"], "preset": "cifar10"}, "data": {"image_size": 32},
        "diffusion": {**config_mod.PAPER_RECIPE["diffusion"], "timesteps": 1000},
        "optim": {**config_mod.PAPER_RECIPE["optim"], "batch_size": 128, "lr": 2e-4, "warmup_steps": 5000,
                  "total_steps": 800_000},
        "schedule": {"preview_every": 5000, "checkpoint_every": 10_000},
    },
    "64x64 images (GPU)": {
        "model": {"preset": "ddpm-64"}, "data": {"image_size": 64}, "diffusion": {"timesteps": 1000, "schedule": "cosine"},
        "optim": {"batch_size": 64, "lr": 2e-4, "warmup_steps": 5000, "total_steps": 300_000, "train_minutes": 0.0,
                  "ema": "fixed", "ema_decay": 0.9999},
        "schedule": {"preview_every": 5000, "checkpoint_every": 10_000},
    },
}

#: What the app starts with on a fresh machine: the engine's defaults, previewing often enough to watch.
GUI_DEFAULTS: dict[str, dict[str, Any]] = {"schedule": {"preview_every": 250, "preview_minutes": 1.0}}

#: The data settings that are the user's choice of dataset, which a preset keeps (it sets the image size).
DATASET_CHOICE: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(config_mod.DataConfig) if f.name != "image_size")


def default_config() -> config_mod.RunConfig:
    return config_mod.from_dict(GUI_DEFAULTS)


def apply_preset(cfg: config_mod.RunConfig, name: str) -> config_mod.RunConfig:
    """The app's defaults with the preset's values, keeping ``cfg``'s dataset choice (:data:`DATASET_CHOICE`)."""
    base = config_mod.from_dict(RUN_PRESETS[name], base=default_config())
    kept = {f: getattr(cfg.data, f) for f in DATASET_CHOICE}
    return dataclasses.replace(base, data=dataclasses.replace(base.data, **kept))
