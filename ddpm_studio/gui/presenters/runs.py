"""The runs presenter: the Runs list and the current run's Checkpoints; open, continue, delete.

The *current run* is the one training, or the one the user opened: its checkpoints fill the
Checkpoints panel and, through ``checkpointsChanged``, the Generate panel's model list. Reading a run
(its metrics, settings and preview images) happens in the background; training it is the training
presenter's business, asked for with ``resumeRequested``.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Signal

from ddpm_studio.gui.presenters.messages import RunHistory
from ddpm_studio.gui.views.protocols import CheckpointRow, CheckpointsView, DialogService, RunRow, RunsListView
from ddpm_studio.services import config as config_mod
from ddpm_studio.services import config_files
from ddpm_studio.services.events import RunStarted
from ddpm_studio.services.formatting import human_bytes
from ddpm_studio.services.metrics import read_metrics
from ddpm_studio.services.run_lock import RunLockError
from ddpm_studio.services.runs import RunFolder, list_runs, plan_continue

log = logging.getLogger("ddpm_studio.gui")
MAX_HISTORY_IMAGES = 60


def read_history(run: RunFolder) -> RunHistory:
    """A run's settings, loss records and (up to MAX_HISTORY_IMAGES) preview grids; ConfigError if unreadable."""
    from PIL import Image

    cfg = config_files.load_config_file(run.config_path, saved_run=True)
    records = read_metrics(run.metrics_path)
    found = []
    if run.previews_dir.is_dir():
        for p in sorted(run.previews_dir.glob("step_*.png")):
            try:
                found.append((int(p.stem.split("_")[1]), p))
            except (IndexError, ValueError):
                continue
    if len(found) > MAX_HISTORY_IMAGES:
        every = len(found) / MAX_HISTORY_IMAGES
        found = [found[int(i * every)] for i in range(MAX_HISTORY_IMAGES - 1)] + [found[-1]]
    previews = []
    for step, path in found:
        try:
            with Image.open(path) as im:
                previews.append((step, np.asarray(im.convert("RGB"))))
        except OSError:
            continue
    status = run.read_status()
    return RunHistory(str(run.path), cfg, records, previews, int(status.get("step", 0) or 0),
                      int(status.get("total_steps", 0) or 0), train_seconds_of(status, records))


def train_seconds_of(status: dict[str, Any], records: list[dict[str, Any]]) -> float:
    """The running time a run used: run.json's, or for runs from before it was kept there, the last loss record's
    ``elapsed`` (the last session's active time: the same for a run that was never resumed)."""
    if isinstance(status.get("train_seconds"), (int, float)):
        return float(status["train_seconds"])
    for r in reversed(records):
        if isinstance(r.get("elapsed"), (int, float)):
            return float(r["elapsed"])
    return 0.0


def loss_at(records: list[dict[str, Any]], step: int) -> float | None:
    """The logged loss at the last record at or before ``step`` (a checkpoint's loss in the table)."""
    best = None
    for r in records:
        s, loss = r.get("step"), r.get("loss")
        if isinstance(s, int) and isinstance(loss, float) and s <= step and (best is None or s >= best[0]):
            best = (s, loss)
    return best[1] if best else None


def continue_target(run: RunFolder) -> str:
    """What Continue resumes from: the run's newest checkpoint, or the run folder itself when it has none (it
    crashed or was stopped before its first one), which TrainingSession starts again from step 0 with its saved
    settings. Raises CannotContinue (a ValueError, saying what to do), or RunLockError naming the process that trains the run now
    (checked by taking its lock for a moment: nothing is written to the run). File I/O: off the GUI thread."""
    from ddpm_studio.services.run_lock import acquire

    plan = plan_continue(run.path)
    acquire(run.path, "checking the run before continuing").release()
    return str(run.path if plan.checkpoint is None else plan.checkpoint)


class RunsPresenter(QObject):
    runOpened = Signal(object)  # RunHistory of a run the user opened
    resumeRequested = Signal(str)  # continue training from this checkpoint
    keepLastChanged = Signal(int)
    # the current run's folder (str or None), [(step, path)] oldest first, the best checkpoint's path (or None)
    checkpointsChanged = Signal(object, object, object)
    generateRequested = Signal(str)  # load this checkpoint into Generate

    def __init__(self, runs_view: RunsListView, checkpoints_view: CheckpointsView, dialogs: DialogService,
                 prefs: Any, tasks: Any) -> None:
        super().__init__()
        self.runs_view, self.checkpoints_view, self.dialogs, self.prefs, self.tasks = (
            runs_view, checkpoints_view, dialogs, prefs, tasks)
        self.current_run: RunFolder | None = None
        self._records: list[dict[str, Any]] = []  # the opened run's loss records (for its checkpoints' losses)
        self._losses: dict[int, float] = {}  # losses at the live run's checkpoints, as they were saved
        self._run_active = False
        on_run: dict[str, Callable[[str], Any]] = {
            "open": self.open_run, "continue": self.continue_run, "folder": dialogs.open_folder,
            "refresh": lambda _: self.refresh_runs(), "change_dir": lambda _: self.change_runs_dir()}
        on_checkpoint: dict[str, Callable[[str], Any]] = {
            "generate": self.generateRequested.emit, "resume": self.resumeRequested.emit, "delete": self.delete_checkpoint,
            "folder": lambda _: self._open_checkpoints_folder()}
        runs_view.requested.connect(lambda action, path: on_run[action](path))
        checkpoints_view.requested.connect(lambda action, path: on_checkpoint[action](path))
        checkpoints_view.keepLastChanged.connect(self.keepLastChanged)

    # -- the runs list -----------------------------------------------------------------------------------
    def refresh_runs(self) -> None:
        runs_dir = self.prefs.runs_dir()
        rows = []
        for run in list_runs(runs_dir):
            status = run.read_status()
            latest = run.latest_checkpoint()
            rows.append(RunRow(str(run.path), run.name, run.state(), int(status.get("step", 0) or 0),
                               status.get("total_steps"), latest.step if latest else None,
                               float(status.get("updated", run.path.stat().st_mtime))))
        self.runs_view.set_runs(str(runs_dir), rows)

    def change_runs_dir(self) -> None:
        folder = self.dialogs.choose_directory("Folder for new runs", "runs_dir", str(self.prefs.runs_dir()))
        if folder:
            self.prefs.set("runs/dir", folder)
            self.refresh_runs()

    def open_run_dialog(self) -> None:
        path = self.dialogs.choose_directory("Open a run folder", "run_folder", str(self.prefs.runs_dir()))
        if path:
            self.open_run(path)

    def open_run(self, path: str, then_continue: bool = False) -> None:
        """Show an earlier run: its settings, loss history, previews and checkpoints (read off the GUI thread);
        ``then_continue``: then continue it (what from is worked out in the same background job)."""
        run = RunFolder(path)

        def read() -> tuple[RunHistory, str | BaseException | None]:
            history = read_history(run)
            if not then_continue:
                return history, None
            try:
                return history, continue_target(run)
            except (ValueError, RunLockError) as exc:  # CannotContinue, or no complete checkpoint
                return history, exc

        def show(result: tuple[RunHistory, str | BaseException | None]) -> None:
            history, target = result
            self.current_run, self._records, self._losses = run, history.records, {}
            self.runOpened.emit(history)
            self.checkpoints_view.set_keep_last(history.cfg.schedule.keep_last)
            self.refresh_checkpoints()
            self.runs_view.select_path(str(run.path))
            log.info("Opened run %s (%d logged steps)", run.name, len(history.records))
            if then_continue:
                self._continue(run, target)

        def failed(exc: BaseException) -> None:
            errors = exc.errors if isinstance(exc, config_mod.ConfigError) else [str(exc)]
            self.dialogs.show_error("Cannot open run", f"{run.config_path}: " + "; ".join(errors))

        self.tasks.run(read, show, failed, name="ddpm-open-run")

    def continue_run(self, path: str | None = None) -> None:
        """Resume a run (opening it first, so its history and settings show): from its newest checkpoint, or, when
        it has none, from step 0 with its saved settings; refused with the reason while another process trains it."""
        if path is None:
            if self.current_run is None:
                path = self.dialogs.choose_directory("Choose a run folder to continue", "run_folder",
                                                     str(self.prefs.runs_dir()))
                if not path:
                    return
            else:
                path = str(self.current_run.path)
        if self.current_run is None or self.current_run.path != Path(path):
            self.open_run(path, then_continue=True)
            return
        run = self.current_run

        def target() -> str | BaseException:
            try:
                return continue_target(run)
            except (ValueError, RunLockError) as exc:  # CannotContinue, or no complete checkpoint
                return exc

        self.tasks.run(target, lambda found: self._continue(run, found), name="ddpm-continue-run")

    def _continue(self, run: RunFolder, target: str | BaseException | None) -> None:
        """Ask the training presenter to resume from ``target``, or say why Continue cannot (GUI thread)."""
        if isinstance(target, BaseException) or target is None:
            self.dialogs.show_error("Cannot continue", str(target))
            return
        if Path(target) == run.path:
            text = (f"Run {run.name} has no checkpoint yet (it stopped before its first one), so it starts again "
                    "from step 0 with its saved settings, in the same folder.")
            log.info("%s", text)
            self.dialogs.show_info("Starting again from step 0", text)
        self.resumeRequested.emit(target)

    def offer_interrupted(self) -> None:
        """At launch: offer to reopen the newest run that was interrupted (crash, kill, power cut)."""
        runs = [r for r in list_runs(self.prefs.runs_dir()) if r.is_interrupted()]
        if not runs:
            return
        run = runs[0]
        latest = run.latest_checkpoint()
        step = run.read_status().get("step", 0)
        saved = (f"its newest checkpoint is at step {latest.step:,}" if latest else
                 "it has no checkpoint, so Continue starts it again from step 0 with its saved settings")
        choice = self.dialogs.ask("Interrupted run", f"Run “{run.name}” was interrupted at step {step:,}; {saved}.\nReopen it?",
                                  ("Continue training", "Open it", "Ignore"), default=1)
        if choice in (0, 1):
            self.open_run(str(run.path), then_continue=choice == 0)
        elif choice == 2:
            run.write_status(state="interrupted")  # not offered again; still listed and continuable
            self.refresh_runs()

    # -- the live run (from the training presenter) ---------------------------------------------------------
    def on_run_started(self, event: RunStarted) -> None:
        run = RunFolder(event.run_dir)
        if self.current_run is None or self.current_run.path != run.path:
            self._records, self._losses = [], {}
        self.current_run = run
        self.refresh_checkpoints()
        self.refresh_runs()
        self.runs_view.select_path(str(run.path))

    def on_checkpoint_saved(self, step: int, loss: float | None) -> None:
        if loss is not None:
            self._losses[step] = loss
        self.refresh_checkpoints()

    def on_run_ended(self, _ended: Any = None) -> None:
        self.refresh_checkpoints()
        self.refresh_runs()

    def set_run_active(self, active: bool) -> None:
        self._run_active = active
        self.runs_view.set_run_active(active)
        self.checkpoints_view.set_run_active(active)

    def on_config(self, cfg: config_mod.RunConfig) -> None:
        """The settings changed: the keep-last box shows theirs (a running run keeps the box's own value)."""
        if not self._run_active:
            self.checkpoints_view.set_keep_last(cfg.schedule.keep_last)

    # -- checkpoints --------------------------------------------------------------------------------------
    def refresh_checkpoints(self) -> None:
        run = self.current_run
        if run is None:
            self.checkpoints_view.set_checkpoints([], "No run yet")
            self.checkpointsChanged.emit(None, [], None)
            return
        found = run.checkpoints()
        rows = [CheckpointRow(c.step, str(c.path), c.size_bytes, c.modified,
                              self._losses.get(c.step, loss_at(self._records, c.step)), c.val_loss, c.best) for c in found]
        try:
            free = human_bytes(shutil.disk_usage(run.path).free)
        except OSError:
            free = "?"
        used = human_bytes(sum(r.size_bytes for r in rows))
        best = next((c for c in found if c.best), None)
        best_text = f" · ★ best: step {best.step:,}" if best is not None else ""
        self.checkpoints_view.set_checkpoints(
            rows, f"Run {run.name}: {len(rows)} checkpoint(s), {used} · {free} free on disk{best_text}")
        self.checkpointsChanged.emit(str(run.path), [(c.step, str(c.path)) for c in found],
                                     None if best is None else str(best.path))

    def delete_checkpoint(self, path: str) -> None:
        if self.dialogs.ask("Delete checkpoint", f"Delete {Path(path).name}? This cannot be undone.",
                            ("Delete", "Cancel"), default=1) != 0:
            return
        from ddpm_studio.services.run_lock import delete_checkpoint

        try:
            delete_checkpoint(path)  # refused, naming the holder, while another process trains this run
        except RunLockError as exc:
            self.dialogs.show_error("Cannot delete", str(exc))
        except OSError as exc:
            self.dialogs.show_error("Cannot delete", f"{path}: {exc.strerror or exc}")
        self.refresh_checkpoints()

    def _open_checkpoints_folder(self) -> None:
        if self.current_run is not None:
            self.dialogs.open_folder(str(self.current_run.checkpoints_dir))
