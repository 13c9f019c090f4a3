"""Run folders: where a run's config, metrics, checkpoints, previews and samples live.

Layout::

    <runs_dir>/<name>/
        config.toml        the settings (hand-editable, re-loadable)
        run.json           status, step (brought up to date while training), timestamps, pid (an interrupted run is
                           still "running"), each checkpoint's validation loss and the best checkpoint
        metrics.jsonl      one JSON object per line, appended
        checkpoints/step_00001000.pt
        previews/step_00001000.png
        samples/
"""

from __future__ import annotations

import contextlib
import dataclasses
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
    """A complete checkpoint file; ``val_loss`` is its validation loss (None for checkpoints saved before it was
    measured), and ``best`` marks the run's checkpoint with the lowest one, which retention keeps."""

    step: int
    path: Path
    size_bytes: int
    modified: float
    val_loss: float | None = None
    best: bool = False


def default_run_name(source: str, data_path: str = "", when: float | None = None) -> str:
    """A readable name for a new run: what it trains on and when, e.g. ``shapes-20261201-1432`` for the demo set,
    the folder's own name for a folder of images (``RunFolder.create`` adds -2, -3 … if it is taken)."""
    if source == "folder":
        what = Path(data_path).expanduser().name if data_path else ""
        what = _safe_name(what)[:40].strip(".-") if what else ""
        what = what or "folder"
    else:
        what = {"demo": "shapes", "fashion_mnist": "fashion-mnist"}.get(source, _safe_name(source))
    return f"{what}-{time.strftime('%Y%m%d-%H%M', time.localtime(when))}"


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
        """Complete checkpoints, oldest first (temp files of an interrupted write are ignored), with their
        validation loss and the best one marked."""
        found = []
        if self.checkpoints_dir.is_dir():
            for entry in self.checkpoints_dir.iterdir():
                match = CHECKPOINT_RE.match(entry.name)
                if match and entry.is_file():
                    st = entry.stat()
                    found.append(CheckpointInfo(int(match.group(1)), entry, st.st_size, st.st_mtime))
        found.sort(key=lambda c: c.step)
        scores = self.checkpoint_scores()
        best = _lowest({c.step: scores[c.step] for c in found if c.step in scores})
        return [dataclasses.replace(c, val_loss=scores.get(c.step), best=c.step == best) for c in found]

    def latest_checkpoint(self) -> CheckpointInfo | None:
        found = self.checkpoints()
        return found[-1] if found else None

    def best_checkpoint(self) -> CheckpointInfo | None:
        """The checkpoint with the lowest validation loss (of its EMA weights), or None when none was scored."""
        return next((c for c in self.checkpoints() if c.best), None)

    def checkpoint_scores(self) -> dict[int, float]:
        """Each checkpoint's validation loss as run.json records it (step → loss)."""
        raw = self.read_status().get("checkpoint_val_losses", {})
        scores = {}
        if isinstance(raw, dict):
            for step, value in raw.items():
                with contextlib.suppress(TypeError, ValueError):
                    if isinstance(value, int | float) and value == value:
                        scores[int(step)] = float(value)
        return scores

    def best_of(self, scores: dict[int, float]) -> CheckpointInfo | None:
        """Of the checkpoints on disk, the one with the lowest score in ``scores``."""
        on_disk = {s: v for s, v in scores.items() if self.checkpoint_path(s).is_file()}
        step = _lowest(on_disk)
        if step is None:
            return None
        path = self.checkpoint_path(step)
        st = path.stat()
        return CheckpointInfo(step, path, st.st_size, st.st_mtime, on_disk[step], True)

    def scores_record(self, scores: dict[int, float]) -> dict[str, Any]:
        """The run.json fields for ``scores``: every checkpoint's validation loss and the best checkpoint."""
        best = self.best_of(scores)
        return {
            "checkpoint_val_losses": {str(s): v for s, v in sorted(scores.items())},
            "best_checkpoint": None if best is None else {"step": best.step, "path": str(best.path),
                                                          "val_loss": best.val_loss},
        }

    def apply_retention(self, keep_last: int, protect: Path | None = None) -> list[Path]:
        """Delete all but the newest ``keep_last`` checkpoints, never ``protect`` (the one just written) nor the
        best one run.json records; call only after a new one is safely written.

        Also removes the temp files of checkpoint writes whose process was killed (they are never loaded,
        but each is a checkpoint's worth of disk).
        """
        for stale in remove_stale_temp_files(self.checkpoints_dir, ".step_*.tmp"):
            log.info("Removed %s, left by an interrupted checkpoint write", stale.name)
        found = self.checkpoints()
        doomed = found[:-keep_last] if keep_last > 0 else []
        deleted = []
        for info in doomed:
            if info.path == protect or info.best:
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


def _lowest(scores: dict[int, float]) -> int | None:
    """The step with the lowest score (the earlier one on a tie), or None."""
    return min(scores, key=lambda step: (scores[step], step)) if scores else None


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


def resolve_checkpoint(path: str | Path, *, best: bool = False) -> Path:
    """A checkpoint file, or a run folder's newest complete checkpoint (``best``: its best one); ValueError when
    there is none.

    For a run folder, a newest file that is not a complete checkpoint (cut short by a full disk or a
    copy, outside this app's atomic writes) is passed over with a warning, never deleted.
    """
    path = Path(path).expanduser()
    if best:
        if not path.is_dir():
            raise ValueError(f"The best checkpoint is a run folder's: give a run folder, not {path}")
        chosen = RunFolder(path).best_checkpoint()
        if chosen is None:
            raise ValueError(f"Run folder {path} has no checkpoint with a validation loss yet (runs record it "
                             "from this version on); leave out --best to use its newest checkpoint")
        problem = _incomplete(chosen.path)
        if problem is not None:
            raise ValueError(f"The best checkpoint {chosen.path} cannot be used: {problem}")
        return chosen.path
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


class CannotContinue(ValueError):
    """A run cannot be continued; the message says why and what to do instead."""


@dataclass(frozen=True)
class Continuation:
    """How to continue the run in ``run``: from ``checkpoint``, or, when it has none (it stopped or crashed
    before its first one), from step 0 with its saved ``settings`` (a RunConfig), in the same folder."""

    run: RunFolder
    checkpoint: Path | None
    settings: Any = None

    @property
    def from_scratch(self) -> bool:
        return self.checkpoint is None


def plan_continue(path: str | Path) -> Continuation:
    """What "Continue" means for the run folder ``path``; :class:`CannotContinue` with what to do otherwise."""
    from ddpm_studio.services import config as config_mod  # local: config imports nothing heavy, but keep it lazy
    from ddpm_studio.services import config_files

    run = RunFolder(Path(path).expanduser())
    if not run.path.is_dir():
        raise CannotContinue(f"No run folder at {run.path}")
    if run.checkpoints():
        return Continuation(run, resolve_checkpoint(run.path))
    if not run.config_path.exists():
        raise CannotContinue(f"{run.path} is not a run folder: it has no checkpoint and no settings (config.toml). "
                             "Start a new run instead")
    try:
        settings = config_mod.check(config_files.load_config_file(run.config_path, saved_run=True))
    except config_mod.ConfigError as exc:
        raise CannotContinue(
            f"Run {run.name} has no checkpoint yet, so it would start again from step 0, but its settings "
            f"({run.config_path}) cannot be used: {'; '.join(exc.errors)}. Fix that file, or start a new run "
            "with the settings you want (nothing of this run is lost: it has no trained weights)") from None
    return Continuation(run, None, settings)


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
