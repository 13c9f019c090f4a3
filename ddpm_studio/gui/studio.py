"""The composition root: builds the window's views, the presenters and the services they use, and wires them.

Nothing here decides what a button does (the presenters do); it says who hears whom, and owns the app's
lifetime: restoring and saving the layout, warming torch up after the first paint, the memory readout,
and closing (a running run is stopped, with a checkpoint, before the window goes).

Start-up order matters for the "painted in under a second" promise: the window is built from Qt-only
modules, shown, and only then does a background warm-up import torch; until it answers the device
label says so, and the folder scans and size estimates (which need torch or the disk) wait.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from typing import Any

from PySide6.QtCore import QObject, QTimer

from ddpm_studio import __version__
from ddpm_studio.gui import dialogs
from ddpm_studio.gui.preferences import Preferences
from ddpm_studio.gui.presenters.generate import GeneratePresenter
from ddpm_studio.gui.presenters.model_sources import ModelSourcesPresenter
from ddpm_studio.gui.presenters.nearest import NearestPresenter
from ddpm_studio.gui.presenters.notifications import NotificationsPresenter
from ddpm_studio.gui.presenters.runs import RunsPresenter
from ddpm_studio.gui.presenters.save_results import SaveResultsPresenter
from ddpm_studio.gui.presenters.settings import SettingsPresenter
from ddpm_studio.gui.presenters.training import TrainingPresenter
from ddpm_studio.gui.views.main_window import MainWindow
from ddpm_studio.gui.views.notifications import DesktopNotifications
from ddpm_studio.gui.workers import BackgroundTasks, wait_for_threads, warm_up
from ddpm_studio.services.config import SampleConfig
from ddpm_studio.services.run_presets import default_config

log = logging.getLogger("ddpm_studio.gui")
LOGGERS = ("ddpm_studio", "py.warnings")
TRIM_AFTER_MB = 32  # idle and this much above the last trim: malloc is keeping freed memory
RUNS_REFRESH_MS = 10_000  # while training, the Runs list re-reads run.json (the services update its step every ~10 s)


class Studio(QObject):
    """One main window and its presenters."""

    def __init__(self, prefs: Preferences, window: MainWindow | None = None) -> None:
        super().__init__()
        from ddpm_studio.services.memory import limit_malloc_arenas

        limit_malloc_arenas()  # before any worker thread: one arena per thread kept ~50 MB for the first dozen jobs
        self._rss_after_trim = 0.0
        self.prefs = prefs
        self.w = w = window or MainWindow()
        self.torch_ready = False
        self._closing = False
        self.tasks = BackgroundTasks(self)
        ask = dialogs.QtDialogs(w, prefs)
        w.log_panel.attach(*map(logging.getLogger, LOGGERS))

        self.notifications = NotificationsPresenter(DesktopNotifications(w), prefs)
        self.training = TrainingPresenter(w.run_controls, w.loss_plot, w.trajectory, w.status, ask, runs_dir=prefs.runs_dir,
                                          notifier_factory=self.notifications.new_notifier)
        self.settings = SettingsPresenter(w.settings_panel, w.dataset_panel, ask, prefs, self.tasks)
        self.runs = RunsPresenter(w.runs_panel, w.checkpoints_panel, ask, prefs, self.tasks)
        # The Generate tab: one panel, a presenter per part (which model, its sampling jobs, and their results'
        # nearest training images and saving).
        self.models = ModelSourcesPresenter(w.generate_panel, ask, prefs, self.tasks)
        self.generate = GeneratePresenter(w.generate_panel, ask, prefs)
        self.nearest = NearestPresenter(w.generate_panel, ask, self.tasks)
        self.saving = SaveResultsPresenter(w.generate_panel, ask)
        self._wire()
        self._menus()
        w.close_handler = self.can_close
        # The timers touch the window's views: they are its children, so they die with it (a window closed before
        # its first paint still gets after_show, which starts them; a timer of the Studio would then fire on deleted
        # labels).
        self._memory_timer = QTimer(w)
        self._memory_timer.setInterval(2000)
        self._memory_timer.timeout.connect(self._update_memory)
        self.runs_timer = QTimer(w)
        self.runs_timer.setInterval(RUNS_REFRESH_MS)
        self.runs_timer.timeout.connect(self.runs.refresh_runs)
        self.training.stateChanged.connect(lambda state: self.runs_timer.start() if state.active else self.runs_timer.stop())
        self.restore()

    def _wire(self) -> None:
        """Who hears whom: the run state flows out of the training presenter, requests flow into it."""
        training, settings, runs, notifications = self.training, self.settings, self.runs, self.notifications
        models, generate, nearest, saving = self.models, self.generate, self.nearest, self.saving
        wiring: list[tuple[Any, ...]] = [  # (signal, every slot that hears it)
            (settings.verdictChanged, training.set_verdict, lambda verdict: runs.on_config(verdict.cfg)),
            (training.stateChanged, lambda state: settings.set_run_active(state.active),
             lambda state: runs.set_run_active(state.active)),
            (training.runStarted, runs.on_run_started),
            (training.checkpointSaved, runs.on_checkpoint_saved),
            (training.runEnded, runs.on_run_ended, self._on_run_ended),
            (training.liveModelChanged, models.set_live_model, generate.set_live_model, nearest.set_live_model),
            (training.continueRequested, runs.continue_run),
            (training.settingsEdited, settings.set_values),
            (training.notified, notifications.show),
            (runs.runOpened, lambda history: settings.set_config(history.cfg), training.show_history),
            (runs.resumeRequested, training.resume_from),
            (runs.keepLastChanged, settings.set_keep_last, training.set_keep_last),
            (runs.checkpointsChanged, models.set_run_checkpoints),
            (runs.generateRequested, models.add_model),
            (models.revealRequested, self.w.show_generate),
            (models.runImported, lambda _run: runs.refresh_runs()),
            (models.modelChanged, generate.set_model_info),
            (generate.revealRequested, self.w.show_generate),
            (generate.resultsChanged, nearest.set_results, saving.set_results),
        ]
        for signal, *slots in wiring:
            for slot in slots:
                signal.connect(slot)

    def _menus(self) -> None:
        w, m = self.w, self.w.menu_actions
        m["choose_folder"].triggered.connect(self.settings.browse_folder)
        m["open_run"].triggered.connect(self.runs.open_run_dialog)
        m["load_config"].triggered.connect(lambda: self.settings.load_file())
        m["save_config"].triggered.connect(lambda: self.settings.save_file())
        m["runs_dir"].triggered.connect(self.runs.change_runs_dir)
        m["notifications"].triggered.connect(self.notifications.edit_webhook)
        m["quit"].triggered.connect(w.close)
        m["generate"].triggered.connect(self.generate.generate)
        m["reset_layout"].triggered.connect(w.reset_layout)
        m["about"].triggered.connect(lambda: dialogs.show_info(
            w, "About DDPM Studio",
            f"DDPM Studio {__version__}\nTrain and sample denoising diffusion models on your own images."))

    # -- preferences ----------------------------------------------------------------------------------
    def restore(self) -> None:
        p, w = self.prefs, self.w
        for key, restore in (("window/geometry", w.restoreGeometry), ("window/state", w.restoreState),
                             ("window/train_split", w.train_split.restoreState)):
            saved = p.get_bytes(key)
            if saved is not None:
                restore(saved)
        for key, box in w.loss_plot.toggles.items():
            box.setChecked(p.get_bool(f"plot/{key}", box.isChecked()))
        cfg = p.last_config() or default_config()
        if cfg.data.source == "folder" and cfg.data.data_path and not os.path.isdir(cfg.data.data_path):
            # The folder is gone: the demo shapes, saying so, and no stale path in the Folder field.
            w.status.show_message(f"Your last session's data folder {cfg.data.data_path} no longer exists: using the "
                                  "built-in demo shapes", 30_000)
            log.warning("Data folder %s no longer exists; using the demo shapes", cfg.data.data_path)
            cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, source="demo", data_path=""))
        self.settings.set_config(cfg)
        self.generate.set_sample_config(p.last_sample_config() or SampleConfig())

    def save(self) -> None:
        p, w = self.prefs, self.w
        p.set("window/geometry", w.saveGeometry())
        p.set("window/state", w.saveState())
        p.set("window/train_split", w.train_split.saveState())
        for key, box in w.loss_plot.toggles.items():
            p.set(f"plot/{key}", box.isChecked())
        p.save_config(self.settings.cfg)
        sample, errors = w.generate_panel.sample_config()
        if not errors:
            p.save_sample_config(sample)
        p.sync()

    # -- start-up ---------------------------------------------------------------------------------------
    def after_show(self, offer_interrupted: bool = True) -> None:
        """Called once the window is painted: warm torch up off the GUI thread, list runs, offer a crashed one."""
        self.runs.refresh_runs()
        self.runs.refresh_checkpoints()
        self._memory_timer.start()
        self._update_memory()

        def ready(info: dict[str, str]) -> None:
            # Jobs that import torch-backed modules start only now: run beside the import they would
            # fight it for the import locks and the GIL, and stall the window for longer.
            self.torch_ready = True
            self.w.status.set_device(f"Device: {info['reason']}")
            self.settings.go_live()
            self.models.torch_ready()
            if offer_interrupted:
                self.runs.offer_interrupted()

        def failed(exc: BaseException) -> None:
            self.w.status.set_device("Device: PyTorch failed to load")
            dialogs.show_error(self.w, "PyTorch could not be loaded", f"{type(exc).__name__}: {exc}")

        self.w.status.set_device("Device: loading PyTorch…")
        self.tasks.run(warm_up, ready, failed, name="ddpm-warm-up")

    # -- status bar -------------------------------------------------------------------------------------
    def _update_memory(self) -> None:
        """The status bar's memory readout; when the app has just become idle, first hand back what malloc kept."""
        from ddpm_studio.services.memory import process_memory_mb, release_free_memory

        rss = process_memory_mb()
        idle = not self.training.is_running() and not self.generate.is_running() and not self.tasks.running()
        if idle and rss > self._rss_after_trim + TRIM_AFTER_MB:
            release_free_memory()  # (a few ms, only after work freed memory: ~350 MB after a laptop-preset run)
            rss = self._rss_after_trim = process_memory_mb()
        elif rss < self._rss_after_trim:
            self._rss_after_trim = rss
        text = f"RAM {rss:,.0f} MB"
        torch = sys.modules.get("torch")
        if torch is not None and self.training.is_running() and torch.cuda.is_available() and torch.cuda.is_initialized():
            text += f" · GPU {torch.cuda.memory_allocated() / 2**20:,.0f} MB"
        self.w.status.set_memory(text)

    # -- closing ----------------------------------------------------------------------------------------
    def can_close(self) -> bool:
        """Ask when a run is active; then stop it (checkpoint) and close once its thread has ended."""
        if self.training.is_running():
            if not self._closing:
                choice = dialogs.ask(self.w, "Training is running",
                                     "Stop training and quit? A checkpoint is saved first, so the run can be continued.",
                                     ("Stop and quit", "Keep training"), default=1)
                if choice != 0:
                    return False
                self._closing = True
                self.training.stop()
                self.w.status.show_message("Stopping: saving a checkpoint before quitting…")
            return False  # _on_run_ended closes the window again
        self.generate.shutdown()
        self.save()
        self._memory_timer.stop()
        self.w.dataset_panel.thumbs_model.stop()
        self.w.log_panel.detach(*map(logging.getLogger, LOGGERS))
        return True

    def _on_run_ended(self, _ended: object) -> None:
        if self._closing:
            QTimer.singleShot(0, self.w.close)

    def shutdown(self) -> None:
        """aboutToQuit: whatever happened, leave no thread running (and no timer touching a closed window)."""
        self._memory_timer.stop()
        self.runs_timer.stop()
        self.training.shutdown()
        self.generate.shutdown()
        self.w.dataset_panel.thumbs_model.stop()
        wait_for_threads()
