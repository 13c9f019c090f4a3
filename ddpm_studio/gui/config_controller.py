"""Keeps the settings form and the dataset panel in sync and decides whether Start is allowed.

Why a separate presenter: the run config has two editors (the dataset panel owns source, folder,
size and mode; the settings form shows every field), and the full ``config.validate`` needs the
U-Net layout (torch). Field errors show instantly; the full check and the model-size estimate run
on a background thread, debounced, and only the newest answer counts.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

from ddpm_studio.gui import background, dialogs
from ddpm_studio.services import config as config_mod

log = logging.getLogger("ddpm_studio.gui")
DEBOUNCE_MS = 150


def describe_model(cfg: config_mod.RunConfig) -> tuple[str, str]:
    """(estimate text, preset description), computed off the GUI thread."""
    from ddpm_studio.gui.estimate import check_config

    _errors, estimate, info = check_config(cfg, validate=False)
    return estimate, info


class ConfigController(QObject):
    """Owns the current RunConfig; emits ``verdict(ok, reasons)`` whenever what Start may do changes."""

    verdict = Signal(bool, list)

    def __init__(self, hparams: Any, dataset: Any, parent_widget: Any = None) -> None:
        super().__init__()
        self.hparams, self.dataset, self.parent_widget = hparams, dataset, parent_widget
        self.cfg: config_mod.RunConfig = hparams.config()
        self.field_errors: list[str] = []
        self.full_errors: list[str] | None = None  # None until the background check answered
        self.ok = False
        self.reasons: list[str] = ["Checking settings…"]
        self._generation = 0
        self._estimate_generation = 0
        self._torch_ready = False
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self._check_now)
        hparams.configChanged.connect(self._on_form)
        hparams.loadRequested.connect(self.load_file)
        hparams.saveRequested.connect(self.save_file)
        dataset.dataChanged.connect(self._on_dataset)
        dataset.problemChanged.connect(lambda _p: self._publish())

    # -- inputs ---------------------------------------------------------------------------------------
    def set_config(self, cfg: config_mod.RunConfig) -> None:
        """Show ``cfg`` in both editors (settings restore, config file, reopened run)."""
        self.cfg = cfg
        self.field_errors = []
        self.hparams.set_config(cfg)
        self.dataset.set_data(cfg.data)
        self.schedule_check()

    def torch_ready(self) -> None:
        """The warm-up imported torch: the full validation can now run."""
        self._torch_ready = True
        self.schedule_check()

    def _on_form(self, cfg: config_mod.RunConfig, errors: list[str]) -> None:
        data_changed = cfg.data != self.cfg.data
        self.cfg, self.field_errors = cfg, list(errors)
        if data_changed:
            self.dataset.set_data(cfg.data)
        self.schedule_check()

    def _on_dataset(self, values: dict[str, Any]) -> None:
        self.cfg = dataclasses.replace(self.cfg, data=dataclasses.replace(self.cfg.data, **values))
        self.hparams.set_config(self.cfg)
        self.field_errors = []
        self.schedule_check()

    # -- checking ---------------------------------------------------------------------------------------
    def schedule_check(self) -> None:
        self._generation += 1
        self.full_errors = None
        self._publish()
        self._timer.start()

    def _check_now(self) -> None:
        if self.field_errors or not self._torch_ready:
            return  # parse errors already say what is wrong; the full check waits for torch
        generation, cfg = self._generation, self.cfg

        def job() -> list[str]:
            return config_mod.validate(cfg)

        def done(errors: list[str]) -> None:
            if generation != self._generation:
                return  # settings changed meanwhile: a newer check is on its way
            self.full_errors = errors
            self._publish()
            # The size estimate (a forward pass on the meta device) comes second: Start need not wait for it.
            background.run_in_background(lambda: describe_model(cfg), shown, name="ddpm-estimate")

        def shown(result: tuple[str, str]) -> None:
            # Shown even if the settings changed since: it describes the last valid settings, and a newer
            # estimate (if any) replaces it; never let an older one overwrite a newer one.
            if generation >= self._estimate_generation:
                self._estimate_generation = generation
                self.hparams.set_estimate(result[0])
                self.hparams.set_preset_info(result[1])

        def failed(exc: BaseException) -> None:
            if generation == self._generation:
                self.full_errors = [f"Could not check the settings: {exc}"]
                self._publish()

        background.run_in_background(job, done, failed, name="ddpm-config-check")

    def _publish(self) -> None:
        reasons: list[str] = list(self.field_errors)
        if not reasons and self.full_errors:
            reasons = list(self.full_errors)
        problem = self.dataset.problem
        if problem and self.cfg.data.source != "demo":
            reasons.append(problem)
        reasons = list(dict.fromkeys(reasons))  # the folder problem may also be a validation error
        pending = not reasons and self.full_errors is None
        self.hparams.show_errors(reasons)
        self.ok = not reasons and not pending
        self.reasons = reasons or (["Checking settings…"] if pending else [])
        self.verdict.emit(self.ok, self.reasons)

    # -- files ----------------------------------------------------------------------------------------
    def load_file(self, path: str | None = None) -> bool:
        if not path:
            path = dialogs.choose_open_file(self.parent_widget, "Load settings", "",
                                            "Config files (*.toml *.json);;All files (*)")
        if not path:
            return False
        try:
            cfg = config_mod.load_config_file(path, base=self.cfg)
        except config_mod.ConfigError as exc:
            dialogs.show_error(self.parent_widget, "Cannot load settings", "\n".join(exc.errors))
            return False
        self.set_config(cfg)
        log.info("Loaded settings from %s", path)
        return True

    def save_file(self, path: str | None = None) -> bool:
        if not path:
            path = dialogs.choose_save_file(self.parent_widget, "Save settings", "ddpm-run.toml", "TOML files (*.toml)")
        if not path:
            return False
        try:
            Path(path).write_text(config_mod.to_toml(self.cfg), encoding="utf-8")
        except OSError as exc:
            dialogs.show_error(self.parent_widget, "Cannot save settings", f"{path}: {exc.strerror or exc}")
            return False
        log.info("Saved settings to %s", path)
        return True
