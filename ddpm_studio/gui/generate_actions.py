"""What the Generate panel's buttons do: resolve the chosen model, launch generate / interpolate /
evaluate on the sampling controller, save the results, and look up the chosen model's classes.

The class list of a checkpoint is read on a background thread (checkpoints can be gigabytes) and
cached per file; the live model's comes from the running session.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject

from ddpm_studio.gui import background, dialogs
from ddpm_studio.gui.widgets.generate_panel import LIVE
from ddpm_studio.services import config as config_mod

log = logging.getLogger("ddpm_studio.gui")


class GenerateActions(QObject):
    def __init__(self, window: Any, sampling: Any, training: Any, runs: Any, settings: Any,
                 torch_ready: Callable[[], bool]) -> None:
        super().__init__()
        self.w, self.sampling, self.training, self.runs, self.settings = window, sampling, training, runs, settings
        self.panel = gp = window.generate_panel
        self._torch_ready = torch_ready
        self._classes: dict[tuple[str, int], tuple[str, ...]] = {}
        self._reading: set[str] = set()
        gp.generateRequested.connect(self.generate)
        gp.interpolateRequested.connect(self.interpolate)
        gp.evaluateRequested.connect(self.evaluate)
        gp.browseRequested.connect(runs.browse_checkpoint)
        gp.saveSelectedRequested.connect(lambda: self.save_images(selected=True))
        gp.saveAllRequested.connect(lambda: self.save_images(selected=False))
        gp.saveGridRequested.connect(self.save_grid)
        gp.saveGifRequested.connect(self.save_gif)
        gp.sourceChanged.connect(lambda _value: self.refresh_classes())

    # -- jobs -------------------------------------------------------------------------------------------
    def generate(self) -> None:
        job = self._prepare()
        if job is not None:
            cfg, source, snapshot = job
            self.sampling.generate(source, cfg, self.runs.output_dir(source, cfg), snapshot)

    def interpolate(self) -> None:
        interp, errors = self.panel.interpolate_box.interp_config()
        if errors:
            self.panel.error_label.setText("\n".join(errors))
            return
        job = self._prepare()
        if job is not None:
            cfg, source, snapshot = job
            out = self.runs.output_dir(source, cfg, tag=f"interp{interp.seed_from}-{interp.seed_to}")
            self.sampling.interpolate(source, cfg, interp, out, snapshot)

    def evaluate(self) -> None:
        job = self._prepare()
        if job is not None:
            cfg, source, snapshot = job
            overrides = {"num_images": self.panel.evaluate_box.images.value(), "class_label": cfg.class_label,
                         "guidance_scale": cfg.guidance_scale, "use_ema": cfg.use_ema,
                         "sample_batch_size": cfg.sample_batch_size, "sample_seed": cfg.sample_seed}
            # The sampler of evaluation_sample_config() (a fixed protocol, so scores compare between checkpoints).
            named = dataclasses.replace(cfg, **{**config_mod.EVALUATION_SAMPLE_DEFAULTS, **overrides})
            out = self.runs.output_dir(source, named, tag=f"eval-n{named.num_images}")
            self.sampling.evaluate(source, overrides, out, snapshot)

    def _prepare(self) -> tuple[config_mod.SampleConfig, str, Any] | None:
        """The settings, model and (for the live model) a Future of its copy; None (having said why) if not possible."""
        panel = self.panel
        cfg, errors = panel.sample_config()
        if errors or self.sampling.is_running():
            return None
        source = panel.source_value()
        if not source:
            dialogs.show_error(self.w, "No model", "Train a model first, or Browse… for a checkpoint or run folder.")
            return None
        snapshot = None
        if source == LIVE:
            snapshot = self.training.live_snapshot()
            if snapshot is None:
                dialogs.show_error(self.w, "No live model", "The run is still loading its images, or has ended; "
                                   "choose one of its checkpoints instead.")
                return None
        self.settings.save_sample_config(cfg)
        self.w.tabs.setCurrentWidget(panel)
        return cfg, source, snapshot

    # -- the chosen model's classes -----------------------------------------------------------------------
    def refresh_classes(self) -> None:
        """Show the chosen model's classes in the Class field (unknown until read; disabled if unconditional)."""
        source = self.panel.source_value()
        if not source:
            self.panel.set_model_classes(None)
            return
        if source == LIVE:
            self.panel.set_model_classes(self.training.live_class_names())
            return
        key = (source, _mtime(source))
        if key in self._classes:
            self.panel.set_model_classes(self._classes[key])
            return
        self.panel.set_model_classes(None)
        if not self._torch_ready() or source in self._reading:
            return  # Studio calls again once torch is loaded; a read in flight calls again when done

        def read() -> tuple[str, ...]:
            from ddpm_studio.services.sampling import checkpoint_class_names

            return checkpoint_class_names(source)

        def done(names: tuple[str, ...]) -> None:
            self._reading.discard(source)
            self._classes[key] = names
            if self.panel.source_value() == source:
                self.refresh_classes()

        def failed(exc: BaseException) -> None:  # stays "unknown"; generating from it will say what is wrong
            self._reading.discard(source)
            log.debug("Cannot read the classes of %s: %s", source, exc)

        self._reading.add(source)
        background.run_in_background(read, done, failed, name="ddpm-model-classes")

    # -- saving ---------------------------------------------------------------------------------------------
    def save_images(self, selected: bool) -> list[Any]:
        indices = self.panel.selected_indices() if selected else None
        folder = dialogs.choose_directory(self.w, "Save images to folder", self.settings.get_str("generate/save_dir"))
        if not folder:
            return []
        self.settings.set("generate/save_dir", folder)
        return self._guarded("Cannot save images", lambda: self.sampling.save_images(indices, folder)) or []

    def save_grid(self) -> None:
        path = dialogs.choose_save_file(self.w, "Save grid image", "samples_grid.png", "PNG images (*.png)")
        if path:
            indices = self.panel.selected_indices() or None
            self._guarded("Cannot save the grid", lambda: self.sampling.save_grid(path, indices))

    def save_gif(self) -> None:
        path = dialogs.choose_save_file(self.w, "Save trajectory GIF", "trajectory.gif", "GIF animations (*.gif)")
        if path:
            self._guarded("Cannot save the GIF", lambda: self.sampling.save_gif(path))

    def _guarded(self, title: str, action: Any) -> Any:
        try:
            result = action()
        except OSError as exc:
            dialogs.show_error(self.w, title, f"{exc.filename or ''}: {exc.strerror or exc}")
            return None
        log.info("Saved %s", result if not isinstance(result, list) else f"{len(result)} file(s)")
        return result


def _mtime(path: str) -> int:
    try:
        return Path(path).stat().st_mtime_ns
    except OSError:
        return 0
