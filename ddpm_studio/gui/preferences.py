"""What the app remembers between launches (its preferences): geometry, layout, folders, runs, last settings.

Stored with QSettings (the platform's native place). ``DDPM_STUDIO_SETTINGS=/path/file.ini``
points it at an INI file instead, so tests, benchmarks and screenshot scripts never touch the
user's real settings.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QSettings

from ddpm_studio.services import config as config_mod

MAX_RECENT = 8
ORG, APP = "ddpm-studio", "DDPM Studio"


def open_settings(path: str | os.PathLike[str] | None = None) -> QSettings:
    """QSettings at ``path`` (INI), at $DDPM_STUDIO_SETTINGS, or the platform default."""
    path = path or os.environ.get("DDPM_STUDIO_SETTINGS")
    if path:
        return QSettings(str(path), QSettings.Format.IniFormat)
    return QSettings(ORG, APP)


class Preferences:
    """Typed accessors over QSettings, so keys and defaults live in one place."""

    def __init__(self, qsettings: QSettings) -> None:
        self.q = qsettings

    # -- generic -----------------------------------------------------------------------------
    def get_str(self, key: str, default: str = "") -> str:
        value = self.q.value(key, default)
        return value if isinstance(value, str) else default

    def get_bool(self, key: str, default: bool = False) -> bool:
        value = self.q.value(key, default)
        if isinstance(value, str):
            return value.lower() in ("true", "1", "yes")
        return bool(value)

    def get_bytes(self, key: str) -> QByteArray | None:
        value = self.q.value(key)
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    def set(self, key: str, value: Any) -> None:
        self.q.setValue(key, value)

    def get_json(self, key: str, default: Any = None) -> Any:
        try:
            return json.loads(self.get_str(key)) if self.get_str(key) else default
        except ValueError:
            return default

    def set_json(self, key: str, value: Any) -> None:
        self.q.setValue(key, json.dumps(value))

    # -- lists of recent things ----------------------------------------------------------------
    def recent(self, key: str) -> list[str]:
        items = self.get_json(key, [])
        return [s for s in items if isinstance(s, str)] if isinstance(items, list) else []

    def push_recent(self, key: str, item: str) -> list[str]:
        items = [item] + [s for s in self.recent(key) if s != item]
        items = items[:MAX_RECENT]
        self.set_json(key, items)
        return items

    def recent_folders(self) -> list[str]:
        return [f for f in self.recent("data/recent_folders") if Path(f).is_dir()]

    def add_recent_folder(self, folder: str) -> list[str]:
        return self.push_recent("data/recent_folders", folder)

    # -- where each kind of file dialog was last pointed ---------------------------------------------------
    def dialog_folder(self, purpose: str) -> str:
        """The folder last chosen in a ``purpose`` dialog, if it still exists ("" otherwise)."""
        folder = self.get_str(f"dialogs/{purpose}")
        return folder if folder and Path(folder).is_dir() else ""

    def remember_dialog_folder(self, purpose: str, folder: str) -> None:
        self.set(f"dialogs/{purpose}", folder)

    # -- the run configuration -------------------------------------------------------------------
    def last_config(self) -> config_mod.RunConfig | None:
        """The settings of the last session, or None (unreadable settings fall back to defaults)."""
        data = self.get_json("config/last")
        if not isinstance(data, dict):
            return None
        try:
            return config_mod.from_dict(data, strict=False)
        except config_mod.ConfigError:
            return None

    def save_config(self, cfg: config_mod.RunConfig) -> None:
        self.set_json("config/last", config_mod.to_dict(cfg))

    def last_sample_config(self) -> config_mod.SampleConfig | None:
        data = self.get_json("generate/last")
        if not isinstance(data, dict):
            return None
        try:
            return config_mod.update_section(config_mod.SampleConfig(), data, strict=False)
        except config_mod.ConfigError:
            return None

    def save_sample_config(self, cfg: config_mod.SampleConfig) -> None:
        import dataclasses

        self.set_json("generate/last", dataclasses.asdict(cfg))

    # -- notifications ----------------------------------------------------------------------------------
    def webhook_url(self) -> str:
        """Where run outcomes are POSTed ("" = nowhere): a preference, not a run setting (it holds a secret)."""
        return self.get_str("notifications/webhook_url")

    def set_webhook_url(self, url: str) -> None:
        self.set("notifications/webhook_url", url)

    def runs_dir(self) -> Path:
        """The runs folder: $DDPM_STUDIO_RUNS_DIR, else the one chosen in the app, else the platform default."""
        from ddpm_studio.services.runs import default_runs_dir

        if os.environ.get("DDPM_STUDIO_RUNS_DIR"):
            return default_runs_dir()
        chosen = self.get_str("runs/dir")
        return Path(chosen) if chosen else default_runs_dir()

    def sync(self) -> None:
        self.q.sync()
