"""The app's named starting points for a run, and what it starts with on a fresh machine.

Each preset overlays only the settings it lists (the dataset choice is kept); the model overrides are
cleared so the preset's layout shows.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ddpm_studio.services import config as config_mod

#: Named starting points; each overlays only the settings it lists (the dataset choice is kept).
RUN_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "Laptop CPU (default)": {
        "model": {"preset": "laptop"}, "data": {"image_size": 32}, "diffusion": {"timesteps": 1000},
        "optim": {"batch_size": 32, "lr": 2e-3, "warmup_steps": 100, "total_steps": 20_000, "ema_decay": 0.999},
        "schedule": {"preview_every": 250, "preview_minutes": 1.0, "checkpoint_every": 2000},
    },
    "Quick pipeline check (tiny model, ~1 min)": {
        "model": {"preset": "tiny"}, "data": {"image_size": 16}, "diffusion": {"timesteps": 200},
        "optim": {"batch_size": 16, "lr": 1e-3, "warmup_steps": 20, "total_steps": 300, "ema_decay": 0.99},
        "schedule": {"preview_every": 50, "preview_steps": 20, "checkpoint_every": 100},
    },
    "Paper CIFAR-10 (GPU, days)": {
        "model": {"preset": "cifar10", "dropout": 0.1}, "data": {"image_size": 32},
        "diffusion": {"timesteps": 1000, "schedule": "linear", "prediction": "epsilon"},
        "optim": {"batch_size": 128, "lr": 2e-4, "warmup_steps": 5000, "total_steps": 800_000, "ema_decay": 0.9999,
                  "grad_clip": 1.0},
        "schedule": {"preview_every": 5000, "checkpoint_every": 10_000},
    },
    "64x64 images (GPU)": {
        "model": {"preset": "ddpm-64"}, "data": {"image_size": 64}, "diffusion": {"timesteps": 1000, "schedule": "cosine"},
        "optim": {"batch_size": 64, "lr": 2e-4, "warmup_steps": 5000, "total_steps": 300_000, "ema_decay": 0.9999},
        "schedule": {"preview_every": 5000, "checkpoint_every": 10_000},
    },
}

#: What the app starts with on a fresh machine: the engine's defaults, previewing often enough to watch.
GUI_DEFAULTS: dict[str, dict[str, Any]] = {"schedule": {"preview_every": 250, "preview_minutes": 1.0}}


def default_config() -> config_mod.RunConfig:
    return config_mod.from_dict(GUI_DEFAULTS)


def apply_preset(cfg: config_mod.RunConfig, name: str) -> config_mod.RunConfig:
    """``cfg`` with the preset's settings; the model overrides are cleared so the preset's layout shows."""
    model_reset = {f.name: None for f in dataclasses.fields(config_mod.ModelConfig) if f.name != "preset"}
    values = {k: dict(v) for k, v in RUN_PRESETS[name].items()}
    values["model"] = {**model_reset, **values.get("model", {})}
    sections = {s: config_mod.update_section(getattr(cfg, s), values.get(s, {}), name=s) for s in config_mod.SECTION_TYPES}
    return config_mod.RunConfig(**sections)
