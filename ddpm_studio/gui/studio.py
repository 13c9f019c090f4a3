"""Wires the main window's panels to the controllers, and owns the app's lifetime concerns.

Start-up order matters for the "painted in under 2 s" promise: the window is built from Qt-only
modules, shown, and only then does a background warm-up import torch; until it answers, the device
label says "detecting" and Start waits for the full settings check.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from PySide6.QtCore import QObject, QTimer

from ddpm_studio import __version__
from ddpm_studio.gui import background, dialogs
from ddpm_studio.gui.config_controller import ConfigController
from ddpm_studio.gui.controllers import TrainingController
from ddpm_studio.gui.generate_actions import GenerateActions
from ddpm_studio.gui.main_window import MainWindow
from ddpm_studio.gui.runs_controller import RunsController
from ddpm_studio.gui.sampling_controller import SamplingController
from ddpm_studio.gui.settings import AppSettings
from ddpm_studio.gui.state import RunState
from ddpm_studio.gui.widgets.hparam_panel import default_config

log = logging.getLogger("ddpm_studio.gui")


class Studio(QObject):
    """The application's presenter: one per main window."""

    def __init__(self, settings: AppSettings, window: MainWindow | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.w = w = window or MainWindow()
        self.torch_ready = False
        self._closing = False
        w.log_panel.attach(logging.getLogger("ddpm_studio"), logging.getLogger("py.warnings"))
        self.config = ConfigController(w.hparam_panel, w.dataset_panel, w)
        self.training = TrainingController(w.run_controls, w.loss_plot, w.trajectory, w)
        self.sampling = SamplingController(w.generate_panel, w)
        self.runs = RunsController(w, self.training, self.config, settings)

        self.config.verdict.connect(self._on_verdict)
        w.run_controls.startRequested.connect(self.start)
        w.run_controls.continueRequested.connect(lambda: self.runs.continue_run(None))
        self.training.stateChanged.connect(self._on_state)
        self.training.runStarted.connect(self._on_run_started)
        self.training.checkpointEvent.connect(lambda _e: self.runs.refresh_checkpoints())
        self.training.runEnded.connect(self._on_run_ended)
        w.dataset_panel.folderChosen.connect(self._on_folder_chosen)
        w.loss_plot.diverged.connect(lambda step: log.warning("The loss became NaN or infinite at step %d", step))
        self.generating = GenerateActions(w, self.sampling, self.training, self.runs, settings, lambda: self.torch_ready)
        self.sampling.busyChanged.connect(lambda _b: self.runs.update_generate_sources())

        m = w.menu_actions
        m["choose_folder"].triggered.connect(w.dataset_panel._browse)
        m["open_run"].triggered.connect(self._open_run_dialog)
        m["load_config"].triggered.connect(lambda: self.config.load_file())
        m["save_config"].triggered.connect(lambda: self.config.save_file())
        m["runs_dir"].triggered.connect(self.runs.change_runs_dir)
        m["quit"].triggered.connect(w.close)
        m["generate"].triggered.connect(self.generate)
        m["reset_layout"].triggered.connect(w.reset_layout)
        m["about"].triggered.connect(lambda: dialogs.show_info(
            w, "About DDPM Studio",
            f"DDPM Studio {__version__}\nTrain and sample denoising diffusion models on your own images."))
        w.close_handler = self.can_close
        self._memory_timer = QTimer(self)
        self._memory_timer.setInterval(2000)
        self._memory_timer.timeout.connect(self._update_memory)
        self.restore()

    # -- settings -------------------------------------------------------------------------------------
    def restore(self) -> None:
        s, w = self.settings, self.w
        geometry = s.get_bytes("window/geometry")
        if geometry is not None:
            w.restoreGeometry(geometry)
        state = s.get_bytes("window/state")
        if state is not None:
            w.restoreState(state)
        split = s.get_bytes("window/train_split")
        if split is not None:
            w.train_split.restoreState(split)
        for key, box in w.loss_plot.toggles.items():
            box.setChecked(s.get_bool(f"plot/{key}", box.isChecked()))
        w.dataset_panel.set_recent(s.recent_folders())
        cfg = s.last_config() or default_config()
        if cfg.data.source == "folder" and cfg.data.data_path and not os.path.isdir(cfg.data.data_path):
            import dataclasses

            cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, source="demo"))  # the folder is gone
        self.config.set_config(cfg)
        w.checkpoints_panel.set_keep_last(cfg.schedule.keep_last)
        sample = s.last_sample_config()
        if sample is not None:
            w.generate_panel.set_sample_config(sample)
        else:
            from ddpm_studio.services.config import SampleConfig

            w.generate_panel.set_sample_config(SampleConfig())

    def save(self) -> None:
        s, w = self.settings, self.w
        s.set("window/geometry", w.saveGeometry())
        s.set("window/state", w.saveState())
        s.set("window/train_split", w.train_split.saveState())
        for key, box in w.loss_plot.toggles.items():
            s.set(f"plot/{key}", box.isChecked())
        s.save_config(self.config.cfg)
        sample, errors = w.generate_panel.sample_config()
        if not errors:
            s.save_sample_config(sample)
        s.sync()

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
            self.w.device_label.setText(f"Device: {info['reason']}")
            self.w.dataset_panel.go_live()
            self.config.torch_ready()
            self.generating.refresh_classes()
            if offer_interrupted:
                self.runs.offer_interrupted()

        def failed(exc: BaseException) -> None:
            self.w.device_label.setText("Device: PyTorch failed to load")
            dialogs.show_error(self.w, "PyTorch could not be loaded", f"{type(exc).__name__}: {exc}")

        self.w.device_label.setText("Device: loading PyTorch…")
        background.run_in_background(background.warm_up, ready, failed, name="ddpm-warm-up")

    # -- training ---------------------------------------------------------------------------------------
    def start(self) -> None:
        if not self.config.ok:
            return
        cfg = self.config.cfg
        self.settings.save_config(cfg)
        self.training.start(cfg, runs_dir=self.settings.runs_dir())

    def _on_verdict(self, ok: bool, reasons: list[str]) -> None:
        self.training.set_can_start(ok, reasons[0] if reasons else "")

    def _on_state(self, state: RunState) -> None:
        w = self.w
        w.hparam_panel.set_read_only(state.active)
        w.dataset_panel.set_read_only(state.active)
        w.checkpoints_panel.set_run_active(state.active)
        w.runs_panel.set_run_active(state.active)
        self.runs.update_generate_sources()
        w.statusBar().showMessage(state.label, 5000)

    def _on_run_started(self, event: Any) -> None:
        self.w.device_label.setText(f"Device: {event.device_reason}")
        self.runs.on_run_started(event)

    def _on_run_ended(self, ended: Any) -> None:
        self.runs.refresh_checkpoints()
        self.runs.refresh_runs()
        if self._closing:
            QTimer.singleShot(0, self.w.close)

    def _on_folder_chosen(self, folder: str) -> None:
        self.w.dataset_panel.set_recent(self.settings.add_recent_folder(folder))

    def _open_run_dialog(self) -> None:
        path = dialogs.choose_directory(self.w, "Open a run folder", str(self.settings.runs_dir()))
        if path:
            self.runs.open_run(path)

    # -- generating -------------------------------------------------------------------------------------
    def generate(self) -> None:
        self.generating.generate()

    # -- status bar -------------------------------------------------------------------------------------
    def _update_memory(self) -> None:
        text = f"RAM {process_memory_mb():,.0f} MB"
        torch = sys.modules.get("torch")
        if torch is not None and self.training.is_running() and torch.cuda.is_available() and torch.cuda.is_initialized():
            text += f" · GPU {torch.cuda.memory_allocated() / 2**20:,.0f} MB"
        self.w.memory_label.setText(text)

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
                self.w.statusBar().showMessage("Stopping: saving a checkpoint before quitting…")
            return False  # _on_run_ended closes the window again
        self.sampling.shutdown()
        self.save()
        self._memory_timer.stop()
        self.w.log_panel.detach(logging.getLogger("ddpm_studio"), logging.getLogger("py.warnings"))
        return True

    def shutdown(self) -> None:
        """aboutToQuit: whatever happened, leave no thread running."""
        self.training.shutdown()
        self.sampling.shutdown()
        background.wait_for_jobs()


def process_memory_mb() -> float:
    """Resident memory of this process (Linux /proc, else the peak from resource, else psutil)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, AttributeError):
        pass
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024
    except ImportError:
        return 0.0

