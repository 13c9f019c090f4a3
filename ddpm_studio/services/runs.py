"""Run folders: where a run's config, metrics, checkpoints, previews and samples live.

Layout::

    <runs_dir>/<name>/
        config.toml        the settings (hand-editable, re-loadable)
        run.json           status, step, timestamps, pid (an interrupted run is still "running")
        metrics.jsonl      one JSON object per line, appended
        checkpoints/step_00001000.pt
        previews/step_00001000.png
        samples/
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ddpm_studio.core.atomic import atomic_write, pid_alive, remove_stale_temp_files

log = logging.getLogger(__name__)

CHECKPOINT_RE = re.compile(r"^step_(\d{8,})\.pt$")


def default_runs_dir() -> Path:
    """Platform data folder (e.g. ~/.local/share/ddpm-studio/runs); DDPM_STUDIO_RUNS_DIR overrides it."""
    env = os.environ.get("DDPM_STUDIO_RUNS_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs  # here, not at the top: a run given its folder needs no platformdirs (e.g. on a GPU server)

    return platformdirs.user_data_path("ddpm-studio") / "runs"


@dataclass(frozen=True)
class CheckpointInfo:
    step: int
    path: Path
    size_bytes: int
    modified: float


class RunFolder:
    """One run's folder and the files in it; knows names and retention, not training."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def create(cls, runs_dir: str | Path | None = None, name: str | None = None) -> RunFolder:
        """Make a new, uniquely named run folder (name-2, name-3 … if taken)."""
        runs_dir = Path(runs_dir) if runs_dir else default_runs_dir()
        base = _safe_name(name) if name else time.strftime("run-%Y%m%d-%H%M%S")
        for i in range(1, 10_000):
            candidate = runs_dir / (base if i == 1 else f"{base}-{i}")
            try:
                candidate.mkdir(parents=True, exist_ok=False)
            except FileExistsError:
                continue
            run = cls(candidate)
            for sub in ("checkpoints", "previews", "samples"):
                (candidate / sub).mkdir()
            return run
        raise RuntimeError(f"Could not create a run folder under {runs_dir}")

    # -- files -------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.toml"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def previews_dir(self) -> Path:
        return self.path / "previews"

    @property
    def samples_dir(self) -> Path:
        return self.path / "samples"

    @property
    def name(self) -> str:
        return self.path.name

    def checkpoint_path(self, step: int) -> Path:
        return self.checkpoints_dir / f"step_{step:08d}.pt"

    def checkpoints(self) -> list[CheckpointInfo]:
        """Complete checkpoints, oldest first (temp files of an interrupted write are ignored)."""
        found = []
        if self.checkpoints_dir.is_dir():
            for entry in self.checkpoints_dir.iterdir():
                match = CHECKPOINT_RE.match(entry.name)
                if match and entry.is_file():
                    st = entry.stat()
                    found.append(CheckpointInfo(int(match.group(1)), entry, st.st_size, st.st_mtime))
        return sorted(found, key=lambda c: c.step)

    def latest_checkpoint(self) -> CheckpointInfo | None:
        found = self.checkpoints()
        return found[-1] if found else None

    def apply_retention(self, keep_last: int, protect: Path | None = None) -> list[Path]:
        """Delete all but the newest ``keep_last`` checkpoints; call only after a new one is safely written.

        Also removes the temp files of checkpoint writes whose process was killed (they are never loaded,
        but each is a checkpoint's worth of disk).
        """
        for stale in remove_stale_temp_files(self.checkpoints_dir, ".step_*.tmp"):
            log.info("Removed %s, left by an interrupted checkpoint write", stale.name)
        doomed = self.checkpoints()[:-keep_last] if keep_last > 0 else []
        deleted = []
        for info in doomed:
            if protect is not None and info.path == protect:
                continue
            with contextlib.suppress(FileNotFoundError):
                info.path.unlink()
                deleted.append(info.path)
        return deleted

    # -- status --------------------------------------------------------------------------
    def read_status(self) -> dict[str, Any]:
        try:
            return json.loads((self.path / "run.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def write_status(self, **fields: Any) -> None:
        """Merge ``fields`` into run.json atomically."""
        status = self.read_status()
        status.update(fields, updated=time.time())
        atomic_write(self.path / "run.json", lambda fh: fh.write(json.dumps(status, indent=1).encode()))

    def is_interrupted(self) -> bool:
        """True when run.json says running but its process is gone (a crash or a kill)."""
        status = self.read_status()
        return status.get("state") == "running" and not pid_alive(status.get("pid"))

    def state(self) -> str:
        """The run's state in one word, as the CLI and the app show it: run.json's (running, paused, completed,
        stopped, failed), "interrupted" when it says running but its process is gone, "?" when unknown."""
        return "interrupted" if self.is_interrupted() else str(self.read_status().get("state", "?"))


def _safe_name(name: str) -> str:
    cleaned = re.sub(r"[^\w.-]+", "-", name).strip(".-")
    return cleaned or "run"


def list_runs(runs_dir: str | Path | None = None) -> list[RunFolder]:
    """Run folders under ``runs_dir``, newest first."""
    runs_dir = Path(runs_dir) if runs_dir else default_runs_dir()
    if not runs_dir.is_dir():
        return []
    runs = [RunFolder(p) for p in runs_dir.iterdir() if p.is_dir() and (p / "config.toml").exists()]
    return sorted(runs, key=lambda r: r.path.stat().st_mtime, reverse=True)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run folder's newest complete checkpoint; ValueError when there is none.

    For a run folder, a newest file that is not a complete checkpoint (cut short by a full disk or a
    copy, outside this app's atomic writes) is passed over with a warning, never deleted.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        run = RunFolder(path)
        found = run.checkpoints()
        if not found:
            if (path / "model_index.json").is_file() or (path / "unet" / "config.json").is_file():
                raise ValueError(f"{path} is a diffusers folder, not a run: import it first with ddpm-studio import {path}")
            raise ValueError(f"Run folder {path} has no checkpoints yet")
        for info in reversed(found):
            problem = _incomplete(info.path)
            if problem is None:
                return info.path
            log.warning("Skipping checkpoint %s: %s; using an older one", info.path.name, problem)
        raise ValueError(f"None of the {len(found)} checkpoints in {path} is complete (newest: {found[-1].path.name})")
    if not path.exists():
        raise ValueError(f"No checkpoint or run folder at {path}")
    return path


def _incomplete(path: Path) -> str | None:
    """Why ``path`` is not a complete checkpoint file, or None. Cheap: reads only the zip's central directory."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            if not any(name.endswith("/data.pkl") or name == "data.pkl" for name in zf.namelist()):
                return "not a PyTorch checkpoint"
    except (OSError, zipfile.BadZipFile, ValueError) as exc:
        return f"damaged or incomplete file ({exc})"
    return None
