"""The settings presenter: the run's settings (the Settings form and the Dataset panel) and whether Start may use them.

Why one presenter for two views: the config has two editors (the dataset panel edits source, folder, size
and mode; the form shows every field), and they must never disagree. The checks are torch-free and run as
the user types (``config.validate``); what needs torch or the disk runs in the background: the folder scan,
the demo thumbnails and the model-size estimate, each answered only if nothing newer was asked meanwhile.

The folder scan decodes every file (services/dataset_scan.py) and reports as it goes: Start is possible once
image files are found (training skips the same broken files), and the count, the skipped files and the warnings
fill in as they are checked. A newer choice cancels the scan; so does Start (the run decodes the folder itself),
and the scan resumes from its cache when the run ends. A folder joins Recent once its scan found usable images.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

from ddpm_studio.core.unet_config import preset_description
from ddpm_studio.gui.presenters.messages import Verdict
from ddpm_studio.gui.presenters.sampler_text import steps_reason
from ddpm_studio.gui.views.protocols import DatasetView, DialogService, SettingsView
from ddpm_studio.services import config as config_mod
from ddpm_studio.services import config_files
from ddpm_studio.services.dataset_scan import ScanSummary, describe_stats
from ddpm_studio.services.run_presets import RUN_PRESETS, apply_preset, default_config

log = logging.getLogger("ddpm_studio.gui")
ESTIMATE_DELAY_MS = 150  # the size estimate waits for typing to pause
DEMO_STATUS = "4,096 built-in demo images: one coloured shape on white (learnable on a CPU in minutes)"
STANDARD_STATUS = "Point Folder at the dataset's files already on disk (nothing is downloaded)"


class SettingsPresenter(QObject):
    """Owns the current RunConfig; emits ``verdictChanged(Verdict)`` whenever what Start may do changes."""

    verdictChanged = Signal(object)  # Verdict

    def __init__(self, form: SettingsView, dataset: DatasetView, dialogs: DialogService, prefs: Any, tasks: Any) -> None:
        super().__init__()
        self.form, self.dataset, self.dialogs, self.prefs, self.tasks = form, dataset, dialogs, prefs, tasks
        self.cfg = default_config()
        self.field_errors: list[str] = []
        self.summary: ScanSummary | None = None  # the scan of the chosen folder, once it answered
        self.problem: str | None = None  # why the chosen data cannot be trained on (None: it can)
        self.verdict = Verdict(self.cfg, False, ("Checking settings…",))
        self._read_only = False  # a run is active: its settings are shown, locked
        self._live = False  # scans and estimates (torch, disk) wait until the window is on screen and torch loaded
        self._scan_id = 0
        self._scan_task: Any = None  # the running scan's TaskHandle (cancel it when superseded or a run starts)
        self._estimate_id = 0
        self._estimate_timer = QTimer(self)
        self._estimate_timer.setSingleShot(True)
        self._estimate_timer.setInterval(ESTIMATE_DELAY_MS)
        self._estimate_timer.timeout.connect(self._estimate)
        form.set_presets(list(RUN_PRESETS))
        form.configEdited.connect(self._on_form)
        form.presetChosen.connect(lambda name: self.set_config(apply_preset(self.cfg, name), rescan=False))
        form.loadRequested.connect(self.load_file)
        form.saveRequested.connect(self.save_file)
        dataset.dataEdited.connect(self._on_data_edited)
        dataset.folderChosen.connect(self.choose_folder)
        dataset.browseRequested.connect(self.browse_folder)
        dataset.set_recent(prefs.recent_folders())

    @property
    def ok(self) -> bool:
        return self.verdict.ok

    # -- inputs ---------------------------------------------------------------------------------------
    def set_config(self, cfg: config_mod.RunConfig, rescan: bool = True) -> None:
        """Show ``cfg`` in both editors (restored settings, a config file, a reopened run, a preset)."""
        data_moved = (cfg.data.source, cfg.data.data_path) != (self.cfg.data.source, self.cfg.data.data_path)
        self.cfg, self.field_errors = cfg, []
        self.form.set_config(cfg)
        self.dataset.set_data(cfg.data)
        if data_moved or (rescan and self.summary is None):
            self._refresh_data()
        else:
            self._update_stats()
        self._publish()

    def set_keep_last(self, n: int) -> None:
        """The Checkpoints panel's keep-last box (the settings are the run's, and locked, while one is active)."""
        if self.cfg.schedule.keep_last != n and not self._read_only:
            self.set_config(dataclasses.replace(self.cfg, schedule=dataclasses.replace(self.cfg.schedule, keep_last=n)),
                            rescan=False)

    def set_values(self, section: str, values: dict[str, Any]) -> None:
        """Change some fields of one section from elsewhere in the window (the toolbar's time budget, Train on the
        CPU instead); ignored while a run is active, whose settings these are."""
        current = getattr(self.cfg, section)
        if self._read_only or all(getattr(current, k) == v for k, v in values.items()):
            return
        self.set_config(dataclasses.replace(self.cfg, **{section: dataclasses.replace(current, **values)}), rescan=False)

    def set_run_active(self, active: bool) -> None:
        """While a run is active the settings are the run's: editing them would mislead. The run decodes the folder
        itself, so a scan still checking files stops (its results are cached) and resumes when the run ends."""
        was = self._read_only
        self._read_only = active
        self.form.set_read_only(active)
        self.dataset.set_read_only(active)
        if active and self._scan_task is not None:
            self._scan_task.cancel()
            self._scan_task = None
        elif was and not active and self.summary is not None and not self.summary.complete:
            self._refresh_data()

    def go_live(self) -> None:
        """Torch is loaded and the window is on screen: scan the data, estimate the model's size."""
        if not self._live:
            self._live = True
            self._refresh_data()
            self._estimate_timer.start()

    def choose_folder(self, folder: str) -> None:
        """Train on ``folder`` (from the dialog, a drop, the recent list or typing) and scan it."""
        if not folder or self._read_only:
            return
        source = "folder" if self.cfg.data.source == "demo" else self.cfg.data.source
        self.cfg = dataclasses.replace(self.cfg, data=dataclasses.replace(self.cfg.data, source=source, data_path=folder))
        self.dataset.set_data(self.cfg.data)
        self.form.set_config(self.cfg)
        self._refresh_data()
        self._publish()

    def browse_folder(self) -> None:
        if self._read_only:  # (the menu's Choose data folder… while a run is active)
            return
        recent = self.prefs.recent_folders()
        folder = self.dialogs.choose_directory("Choose a folder of images", "data_folder",
                                               self.cfg.data.data_path or (recent[0] if recent else ""))
        if folder:
            self.choose_folder(folder)

    def _on_form(self, cfg: config_mod.RunConfig, errors: list[str]) -> None:
        data_moved = (cfg.data.source, cfg.data.data_path) != (self.cfg.data.source, self.cfg.data.data_path)
        data_changed = cfg.data != self.cfg.data
        self.cfg, self.field_errors = cfg, list(errors)
        if data_changed:
            self.dataset.set_data(cfg.data)
        if data_moved:
            self._refresh_data()
        elif data_changed:
            self._update_stats()
        self._publish()

    def _on_data_edited(self, values: dict[str, Any]) -> None:
        before = self.cfg.data
        self.cfg = dataclasses.replace(self.cfg, data=dataclasses.replace(before, **values))
        self.form.set_config(self.cfg)
        self.field_errors = []
        if self.cfg.data.source != before.source or (self.cfg.data.source == "demo" and self.cfg.data != before):
            self._refresh_data()  # (the demo thumbnails are drawn at the chosen size and mode)
        else:
            self._update_stats()
        self._publish()

    # -- the data: scans and thumbnails ------------------------------------------------------------------
    def _refresh_data(self) -> None:
        self._scan_id += 1
        if self._scan_task is not None:
            self._scan_task.cancel()
            self._scan_task = None
        self.summary = None
        data = self.cfg.data
        self.dataset.show_scan(None, "")
        if data.source == "demo":
            self.dataset.show_status(DEMO_STATUS)
            self.problem = None
            if self._live:
                self._load_demo()
        elif data.source == "folder":
            if not data.data_path:
                self.dataset.show_status("Choose a folder of images (any subfolders become classes)")
                self.problem = "Choose a data folder"
            else:
                self.dataset.show_status(f"Scanning {data.data_path}…")
                self.problem = f"Still scanning {data.data_path}"
                if self._live:
                    self._scan(data.data_path)
        else:
            text = STANDARD_STATUS
            if data.source == "cifar10" and self._live:
                from ddpm_studio.core.standard_datasets import CIFAR_PICKLE_WARNING  # (torch is loaded by now)

                text += "\n⚠ " + CIFAR_PICKLE_WARNING
            self.dataset.show_status(text)
            self.problem = None

    def _scan(self, folder: str) -> None:
        from ddpm_studio.services.dataset_scan import scan_folder

        scan_id = self._scan_id
        self._scan_task = self.tasks.run_reporting(
            lambda task: scan_folder(folder, report=task.report, cancelled=task.cancelled),
            lambda s: self._scanned(scan_id, s), lambda s: self._scanned(scan_id, s),
            lambda e: self._scanned(scan_id, ScanSummary(folder, (), (), (), error=f"Cannot scan {folder}: {e}")),
            name="ddpm-scan")

    def _scanned(self, scan_id: int, summary: ScanSummary) -> None:
        """A scan's report (partial while it checks files) or its end."""
        if scan_id != self._scan_id:
            return  # a newer choice superseded this scan
        self.summary = summary
        ok = summary.error is None and summary.usable > 0  # (files not checked yet count as usable)
        self.dataset.show_status(summary.message(), error=not ok)
        self.dataset.show_scan(summary, describe_stats(summary.stats, self.cfg.data.image_size))
        self.problem = None if ok else summary.message()
        if ok and summary.complete and not summary.cancelled:
            self._scan_task = None
            self.dataset.set_recent(self.prefs.add_recent_folder(summary.root))
        self._publish()

    def _update_stats(self) -> None:
        if self.summary is not None:
            self.dataset.show_stats(describe_stats(self.summary.stats, self.cfg.data.image_size))

    def _load_demo(self) -> None:
        from ddpm_studio.services.dataset_scan import demo_thumbnails

        scan_id, data = self._scan_id, self.cfg.data

        def show(images: Any) -> None:
            if scan_id == self._scan_id:
                self.dataset.show_images(images)

        self.tasks.run(lambda: demo_thumbnails(48, max(16, data.image_size), data.channels), show, name="ddpm-demo-thumbs")

    # -- the verdict ------------------------------------------------------------------------------------
    def _publish(self) -> None:
        """Check the settings (torch-free, instant) and say whether Start may use them, and why not."""
        reasons = list(self.field_errors) or config_mod.validate(self.cfg)
        if self.problem and self.cfg.data.source != "demo":
            reasons.append(self.problem)
        reasons = list(dict.fromkeys(reasons))  # the folder problem may also be a validation error
        self.form.show_errors(reasons)
        self.form.set_field_enabled("schedule", "preview_steps", not steps_reason(self.cfg.schedule.preview_sampler),
                                    steps_reason(self.cfg.schedule.preview_sampler))
        try:
            self.form.set_preset_info(preset_description(self.cfg.model.preset))
        except ValueError:
            self.form.set_preset_info("")
        self.verdict = Verdict(self.cfg, not reasons, tuple(reasons))
        self.verdictChanged.emit(self.verdict)
        if self._live:
            self._estimate_timer.start()

    def _estimate(self) -> None:
        """Parameters and training memory (a forward pass on the meta device: torch, so in the background)."""
        if self.field_errors:
            return
        from ddpm_studio.services.model_size import estimate_text

        self._estimate_id += 1
        estimate_id, cfg = self._estimate_id, self.cfg

        def shown(text: str) -> None:
            if estimate_id == self._estimate_id:  # an older estimate never overwrites a newer one
                self.form.set_estimate(text)

        self.tasks.run(lambda: estimate_text(cfg), shown, name="ddpm-estimate")

    # -- files ----------------------------------------------------------------------------------------
    def load_file(self, path: str | None = None) -> bool:
        """Settings from a TOML or JSON file (a dialog asks which when ``path`` is None); False if none was loaded."""
        path = path or self.dialogs.choose_open_file("Load settings", "settings_file",
                                                     "Config files (*.toml *.json);;All files (*)")
        try:
            cfg = config_files.load_config_file(path, base=self.cfg) if path else None
        except config_mod.ConfigError as exc:
            self.dialogs.show_error("Cannot load settings", "\n".join(exc.errors))
            return False
        if cfg is not None:
            self.set_config(cfg)
            log.info("Loaded settings from %s", path)
        return cfg is not None

    def save_file(self, path: str | None = None) -> bool:
        """The settings as a TOML file (usable with ``ddpm-studio train --config``); False if not saved."""
        path = path or self.dialogs.choose_save_file("Save settings", "settings_file", "ddpm-run.toml",
                                                     "TOML files (*.toml)")
        if not path:
            return False
        try:
            config_files.save_config_file(self.cfg, path)
        except OSError as exc:
            self.dialogs.show_error("Cannot save settings", f"{path}: {exc.strerror or exc}")
            return False
        log.info("Saved settings to %s", path)
        return True
