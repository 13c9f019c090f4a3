"""A run's settings as files: TOML (or JSON) that a person edits and loads, and the config.toml saved with each run.

config.py holds what the settings are (dataclasses, validation, plain dicts); this module reads and writes
them as files. Settings saved by older versions lack the settings added since: a run's own config.toml (and a
checkpoint's config) is read with :data:`LEGACY_DEFAULTS`, the values those runs used without saying so, while a
file given as a template for a new run gets today's defaults.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path
from typing import Any

from ddpm_studio.core.atomic import atomic_write
from ddpm_studio.services.config import SECTION_TITLES, SECTION_TYPES, ConfigError, RunConfig, from_dict, to_dict


def to_toml(cfg: RunConfig) -> str:
    """A hand-editable TOML file with each setting's help as a comment; None values are left out."""
    lines = ["# DDPM Studio run configuration. Edit and load with: ddpm-studio train --config FILE", ""]
    for name, section_dict in to_dict(cfg).items():
        lines.append(f"[{name}]  # {SECTION_TITLES[name]}")
        fields = {f.name: f for f in dataclasses.fields(SECTION_TYPES[name])}
        for key, value in section_dict.items():
            if value is None:
                lines.append(f"# {key} = (preset default)  # {fields[key].metadata['help']}")
                continue
            if isinstance(value, str) and not _is_utf8(value):
                # A path with non-UTF-8 bytes (os.fsdecode's surrogates) has no TOML spelling; the checkpoints
                # keep the exact value. Left commented out, so loading this file says the setting is missing.
                shown = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                lines.append(f"# {key} = {_toml_value(shown)}  # not valid UTF-8, cannot be written in TOML: set it again")
                continue
            lines.append(f"{key} = {_toml_value(value)}  # {fields[key].metadata['help']}")
        lines.append("")
    return "\n".join(lines)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value), ensure_ascii=False)


def _legacy_loss_weighting(diffusion: dict[str, Any]) -> str:
    """Before the loss-weighting choice, Min-SNR was on exactly when its γ was above 0."""
    gamma = diffusion.get("min_snr_gamma", 0.0)
    return "min-snr" if isinstance(gamma, int | float) and not isinstance(gamma, bool) and gamma > 0 else "uniform"


#: Settings added after runs were first saved, with the value older runs used without saying so. A run's saved
#: config (config.toml or a checkpoint's) that lacks one was made before it existed; a new run gets the default.
#: A value may be a function of the saved section, when the old meaning depended on another setting.
LEGACY_DEFAULTS: dict[str, dict[str, Any]] = {
    "model": {"preset": "laptop"},  # the default until the small preset (issue 17); saved settings name theirs since
    "diffusion": {"prediction": "epsilon", "noise_levels": "uniform", "loss_weighting": _legacy_loss_weighting},
    "optim": {"ema": "fixed", "train_minutes": 0.0, "adam_beta1": 0.9, "adam_beta2": 0.999},
}


def with_legacy_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (a saved run's settings) with :data:`LEGACY_DEFAULTS` filled in where its sections lack them."""
    out = dict(data)
    for section, values in LEGACY_DEFAULTS.items():
        saved = out.get(section)
        if isinstance(saved, dict):
            missing = {k: v(saved) if callable(v) else v for k, v in values.items() if k not in saved}
            out[section] = {**missing, **saved}
    return out


def load_config_file(path: str | Path, base: RunConfig | None = None, *, saved_run: bool = False) -> RunConfig:
    """Read a TOML (or JSON) config file; errors name the file and say what is wrong.

    ``saved_run``: the file is a run's own config.toml, so settings it lacks take their legacy values.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"Cannot read config file {path}: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError:
        raise ConfigError([f"Config file {path} is not UTF-8 text"]) from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        kind = "JSON" if path.suffix.lower() == ".json" else "TOML"
        raise ConfigError([f"Config file {path} is not valid {kind}: {exc}"]) from None
    return from_dict(with_legacy_defaults(data) if saved_run else data, base=base)


def save_config_file(cfg: RunConfig, path: str | Path) -> None:
    """Write ``cfg`` as TOML atomically."""
    atomic_write(path, lambda fh: fh.write(to_toml(cfg).encode("utf-8")))
