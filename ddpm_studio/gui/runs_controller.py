"""Runs, checkpoints and the Generate panel's model list: reopen a run, continue it, act on checkpoints.

Why together: they share one notion, the *current run* (the one training, or the one reopened),
whose checkpoints fill the Checkpoints panel and the Generate panel's model choices.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QUrl
from PySide6.QtGui import QDesktopServices

from ddpm_studio.gui import background, dialogs
from ddpm_studio.gui.widgets.checkpoints_panel import CheckpointRow, human_bytes
from ddpm_studio.gui.widgets.generate_panel import LIVE
from ddpm_studio.gui.widgets.runs_panel import RunRow
from ddpm_studio.services import config as config_mod
from ddpm_studio.services.metrics import read_metrics
from ddpm_studio.services.runs import CHECKPOINT_RE, RunFolder, list_runs

log = logging.getLogger("ddpm_studio.gui")
MAX_HISTORY_IMAGES = 60


class RunsController(QObject):
    def __init__(self, window: Any, training: Any, config: Any, settings: Any) -> None:
        super().__init__()
        self.w, self.training, self.config, self.settings = window, training, config, settings
        self.current_run: RunFolder | None = None
        self._losses: dict[int, float] = {}
        self.browsed: list[str] = []
        rp, cp = window.runs_panel, window.checkpoints_panel
        rp.openRequested.connect(self.open_run)
        rp.continueRequested.connect(self.continue_run)
        rp.openFolderRequested.connect(lambda p: open_folder(p))
        rp.refreshRequested.connect(self.refresh_runs)
        rp.changeDirRequested.connect(self.change_runs_dir)
        cp.openFolderRequested.connect(lambda: self.current_run and open_folder(self.current_run.checkpoints_dir))
        cp.deleteRequested.connect(self.delete_checkpoint)
        cp.generateRequested.connect(self.load_into_generate)
        cp.resumeRequested.connect(self.resume_from)
        cp.keepLastChanged.connect(self._keep_last_changed)

    # -- runs list --------------------------------------------------------------------------------------
    def refresh_runs(self) -> None:
        runs_dir = self.settings.runs_dir()
        rows = []
        for run in list_runs(runs_dir):
            status = run.read_status()
            latest = run.latest_checkpoint()
            state = "interrupted" if run.is_interrupted() else str(status.get("state", "?"))
            rows.append(RunRow(str(run.path), run.name, state, int(status.get("step", 0) or 0),
                               status.get("total_steps"), latest.step if latest else None,
                               float(status.get("updated", run.path.stat().st_mtime))))
        self.w.runs_panel.set_runs(str(runs_dir), rows)

    def change_runs_dir(self) -> None:
        folder = dialogs.choose_directory(self.w, "Folder for new runs", str(self.settings.runs_dir()))
        if folder:
            self.settings.set("runs/dir", folder)
            self.refresh_runs()

    def open_run(self, path: str, then_continue: bool = False) -> None:
        """Show an earlier run: its settings, loss history, previews and checkpoints (files read off the GUI thread)."""
        run = RunFolder(path)

        def read() -> tuple[list[dict[str, Any]], Any, list[tuple[int, str]]]:
            records = read_metrics(run.metrics_path)
            try:
                cfg: Any = config_mod.load_config_file(run.config_path, saved_run=True)
            except config_mod.ConfigError as exc:
                cfg = exc
            previews = []
            if run.previews_dir.is_dir():
                for p in sorted(run.previews_dir.glob("step_*.png")):
                    try:
                        previews.append((int(p.stem.split("_")[1]), str(p)))
                    except (IndexError, ValueError):
                        continue
            return records, cfg, previews

        def show(result: tuple[list[dict[str, Any]], Any, list[tuple[int, str]]]) -> None:
            records, cfg, previews = result
            if isinstance(cfg, config_mod.ConfigError):
                dialogs.show_error(self.w, "Cannot open run", f"{run.config_path}: " + "; ".join(cfg.errors))
                return
            self.current_run = run
            self._losses = {int(r["step"]): float(r["loss"]) for r in records
                            if isinstance(r.get("step"), int) and isinstance(r.get("loss"), float)}
            self.config.set_config(cfg)
            self.w.loss_plot.load_history(records)
            self.w.trajectory.clear()
            if len(previews) > MAX_HISTORY_IMAGES:
                step = len(previews) / MAX_HISTORY_IMAGES
                previews = [previews[int(i * step)] for i in range(MAX_HISTORY_IMAGES - 1)] + [previews[-1]]
            for step_no, p in previews:
                self.w.trajectory.add_image(step_no, p)
            self.w.checkpoints_panel.set_keep_last(cfg.schedule.keep_last)
            self.refresh_checkpoints()
            self.settings.add_recent_run(str(run.path))
            self.w.runs_panel.select_path(str(run.path))
            status = run.read_status()
            self.w.run_controls.set_progress(int(status.get("step", 0) or 0), int(status.get("total_steps", 0) or 0))
            log.info("Opened run %s (%d logged steps)", run.name, len(records))
            if then_continue:
                self.continue_run(str(run.path))

        background.run_in_background(read, show, lambda e: dialogs.show_error(self.w, "Cannot open run", str(e)))

    def continue_run(self, path: str | None = None) -> None:
        """Resume a run from its newest checkpoint (opening it first, so its history and settings show)."""
        if path is None:
            if self.current_run is None:
                path = dialogs.choose_directory(self.w, "Choose a run folder to continue", str(self.settings.runs_dir()))
                if not path:
                    return
            else:
                path = str(self.current_run.path)
        if self.current_run is None or str(self.current_run.path) != str(Path(path)):
            self.open_run(path, then_continue=True)
            return
        latest = self.current_run.latest_checkpoint()
        if latest is None:
            dialogs.show_error(self.w, "Cannot continue", f"Run {self.current_run.name} has no checkpoint yet.")
            return
        self.resume_from(str(latest.path))

    def resume_from(self, checkpoint: str) -> None:
        cfg = self.config.cfg
        overrides = {"optim": config_mod.to_dict(cfg)["optim"], "schedule": config_mod.to_dict(cfg)["schedule"]}
        match = CHECKPOINT_RE.match(Path(checkpoint).name)
        step = int(match.group(1)) if match else 0
        if step >= cfg.optim.total_steps:
            more = max(1000, cfg.optim.total_steps)
            choice = dialogs.ask(self.w, "Run already complete",
                                 f"This checkpoint is at step {step:,}, and Total steps is {cfg.optim.total_steps:,}.\n"
                                 f"Train {more:,} more steps (to {step + more:,})?", ("Train more", "Cancel"))
            if choice != 0:
                return
            overrides["optim"]["total_steps"] = step + more
        if self.training.start(resume_from=checkpoint, overrides=overrides, runs_dir=self.settings.runs_dir(),
                               continue_plot=True):
            log.info("Continuing from %s", checkpoint)

    def offer_interrupted(self) -> None:
        """At launch: offer to reopen the newest run that was interrupted (crash, kill, power cut)."""
        runs = [r for r in list_runs(self.settings.runs_dir()) if r.is_interrupted()]
        if not runs:
            return
        run = runs[0]
        latest = run.latest_checkpoint()
        step = run.read_status().get("step", 0)
        saved = f"its newest checkpoint is at step {latest.step:,}" if latest else "it has no checkpoint"
        choice = dialogs.ask(self.w, "Interrupted run",
                             f"Run “{run.name}” was interrupted at step {step:,}; {saved}.\nReopen it?",
                             ("Continue training", "Open it", "Ignore"), default=1)
        if choice == 0 and latest is not None:
            self.open_run(str(run.path), then_continue=True)
        elif choice in (0, 1):
            self.open_run(str(run.path))
        elif choice == 2:
            run.write_status(state="interrupted")  # not offered again; still listed and continuable
            self.refresh_runs()

    # -- checkpoints --------------------------------------------------------------------------------------
    def on_run_started(self, event: Any) -> None:
        run = RunFolder(event.run_dir)
        if self.current_run is None or self.current_run.path != run.path:
            self._losses = {}
        self.current_run = run
        self.settings.add_recent_run(str(run.path))
        self.refresh_checkpoints()
        self.refresh_runs()
        self.w.runs_panel.select_path(str(run.path))

    def refresh_checkpoints(self) -> None:
        run = self.current_run
        if run is None:
            self.w.checkpoints_panel.set_checkpoints([], "No run yet")
            self.update_generate_sources()
            return
        rows = []
        for c in run.checkpoints():
            loss = self._losses.get(c.step)
            if loss is None:
                loss = self.w.loss_plot.loss_near(c.step)
            rows.append(CheckpointRow(c.step, str(c.path), c.size_bytes, c.modified, loss))
        used = sum(r.size_bytes for r in rows)
        try:
            free = human_bytes(shutil.disk_usage(run.path).free)
        except OSError:
            free = "?"
        info = f"Run {run.name}: {len(rows)} checkpoint(s), {human_bytes(used)} · {free} free on disk"
        self.w.checkpoints_panel.set_checkpoints(rows, info)
        self.update_generate_sources()

    def delete_checkpoint(self, path: str) -> None:
        if dialogs.ask(self.w, "Delete checkpoint", f"Delete {Path(path).name}? This cannot be undone.",
                       ("Delete", "Cancel"), default=1) != 0:
            return
        from ddpm_studio.services.run_lock import RunLockError, delete_checkpoint

        try:
            delete_checkpoint(path)  # refused while another process trains this run
        except RunLockError as exc:
            dialogs.show_error(self.w, "Cannot delete", str(exc))
        except OSError as exc:
            dialogs.show_error(self.w, "Cannot delete", f"{path}: {exc.strerror or exc}")
        self.refresh_checkpoints()

    def _keep_last_changed(self, n: int) -> None:
        cfg = self.config.cfg
        if cfg.schedule.keep_last != n and not self.training.state.active:
            import dataclasses

            self.config.set_config(dataclasses.replace(cfg, schedule=dataclasses.replace(cfg.schedule, keep_last=n)))
        self.training.set_keep_last(n)

    # -- generate -------------------------------------------------------------------------------------------
    def update_generate_sources(self, select: str | None = None) -> None:
        sources: list[tuple[str, str]] = []
        live = self.training.run_dir  # None while a new run is loading: current_run is then still the previous one
        if self.training.state.active and self.current_run is not None and live and Path(live) == self.current_run.path:
            sources.append((f"Live model ({self.current_run.name}, EMA weights now)", LIVE))
        if self.current_run is not None:
            for c in reversed(self.current_run.checkpoints()):
                sources.append((f"{self.current_run.name} · step {c.step:,}", str(c.path)))
        known = {v for _, v in sources}
        for p in self.browsed:
            if p not in known:
                sources.append((Path(p).name if Path(p).is_file() else f"{Path(p).name} (newest)", p))
        self.w.generate_panel.set_sources(sources, select)

    def load_into_generate(self, path: str) -> None:
        if path not in self.browsed and (self.current_run is None or Path(path).parent != self.current_run.checkpoints_dir):
            self.browsed.insert(0, path)
        self.update_generate_sources(select=path)
        self.w.tabs.setCurrentWidget(self.w.generate_panel)

    def browse_checkpoint(self) -> None:
        path = dialogs.choose_open_file(self.w, "Choose a checkpoint", str(self.settings.runs_dir()),
                                        "Checkpoints (*.pt);;All files (*)")
        if path:
            self.load_into_generate(path)

    def output_dir(self, source: str, cfg: config_mod.SampleConfig, tag: str = "") -> Path:
        """Where a generation's files go: the run's samples/ folder (never the package folder); ``tag``
        ("interp", "eval") names what was made."""
        steps = "" if cfg.sampler == "ddpm" else str(cfg.steps)
        stamp = time.strftime("%Y%m%d-%H%M%S") + (f"-{tag}" if tag else "")
        if source == LIVE and self.current_run is not None:
            return self.current_run.samples_dir / f"live-{stamp}-{cfg.sampler}{steps}-seed{cfg.sample_seed}"
        p = Path(source)
        if p.is_dir():
            return p / "samples" / f"{stamp}-{cfg.sampler}{steps}-seed{cfg.sample_seed}"
        base = p.parent.parent / "samples" if p.parent.name == "checkpoints" else self.settings.runs_dir() / "samples"
        return base / f"{p.stem}-{stamp}-{cfg.sampler}{steps}-seed{cfg.sample_seed}"


def open_folder(path: str | Path) -> None:
    QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))
