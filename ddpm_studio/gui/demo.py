"""Scripted scenarios for screenshots and demos: ``--demo idle|settings|training|generate``.

Launched as ``python -m ddpm_studio.gui --demo training`` (or with ``DDPM_STUDIO_GUI_DEMO``).
``DDPM_STUDIO_DEMO_RUN=<run folder>`` makes "training" continue that run (so the plot has history
and the previews show shapes) and "generate" sample from its newest checkpoint; without it,
"training" starts a fresh run on the demo dataset. Everything goes through the same presenters
a click would use.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QTimer

log = logging.getLogger("ddpm_studio.gui")


def _when(condition: Callable[[], bool], then: Callable[[], None], every_ms: int = 200) -> None:
    """Call ``then`` once ``condition()`` holds (polled on the GUI thread)."""

    def poll() -> None:
        if condition():
            then()
        else:
            QTimer.singleShot(every_ms, poll)

    QTimer.singleShot(every_ms, poll)


def run_demo(handle: Any, scenario: str) -> None:
    studio = handle.studio
    w = studio.w
    run = os.environ.get("DDPM_STUDIO_DEMO_RUN", "")
    w.resize(1280, 800)
    if scenario == "idle":
        w.docks["dataset"].raise_()
        return
    if scenario == "settings":  # the generated settings form, with one invalid value and its reason
        w.docks["settings"].raise_()

        def break_it() -> None:
            editor = w.settings_panel.field_editor("optim", "batch_size")
            editor.setText("0")
            editor.textEdited.emit("0")
            def reveal() -> None:
                from PySide6.QtCore import QPoint

                y = editor.mapTo(w.settings_panel.body, QPoint(0, 0)).y()
                w.settings_panel.scroll.verticalScrollBar().setValue(y - 150)

            QTimer.singleShot(500, reveal)

        _when(lambda: studio.settings.ok, break_it)
        return
    if scenario == "training":
        w.tabs.setCurrentWidget(w.train_split)
        w.docks["settings"].raise_()
        w.docks["checkpoints"].raise_()
        if run:
            def continue_it() -> None:
                cfg = studio.settings.cfg
                studio.settings.set_config(dataclasses.replace(
                    cfg, schedule=dataclasses.replace(cfg.schedule, preview_every=20, preview_steps=25)))
                studio.runs.continue_run(run)

            _when(lambda: studio.torch_ready, lambda: studio.runs.open_run(run))
            _when(lambda: studio.torch_ready and studio.runs.current_run is not None, continue_it)
        else:
            from ddpm_studio.services import config as config_mod

            cfg = config_mod.from_dict({"schedule": {"preview_every": 20, "preview_steps": 25}})
            studio.settings.set_config(cfg)
            _when(lambda: studio.settings.ok, studio.training.start)
        return
    if scenario == "generate":
        if not run:
            log.error("The generate demo needs DDPM_STUDIO_DEMO_RUN=<run folder with a checkpoint>")
            return
        w.docks["checkpoints"].raise_()

        def generate() -> None:
            from ddpm_studio.services.config import SampleConfig

            latest = studio.runs.current_run.latest_checkpoint()
            studio.models.add_model(str(latest.path))
            studio.generate.set_sample_config(SampleConfig(num_images=24, sample_batch_size=24, steps=50))
            studio.generate.generate()

        _when(lambda: studio.torch_ready, lambda: studio.runs.open_run(run))
        _when(lambda: studio.torch_ready and studio.runs.current_run is not None, generate)
        return
    raise ValueError(f"Unknown demo {scenario!r}: choose idle, settings, training or generate")
