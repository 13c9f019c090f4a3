"""The nearest-images presenter: the memorization check of one generated sample ("Nearest training images").

The first selected sample of the images a generate job made (the generate presenter's ``resultsChanged``) is
compared, in the background, with the training images of the run its model came from (the services find them from
the run's settings); the panel shows the nearest ones with their distances and says whether the sample is a copy of
one. Why a presenter of its own: it only reads the shown images, and its search is a background task, not a job.
"""

from __future__ import annotations

import logging
from typing import Any

from PySide6.QtCore import QObject

from ddpm_studio.gui.presenters.messages import LiveModel, ShownResults
from ddpm_studio.gui.presenters.model_sources import LIVE
from ddpm_studio.gui.views.protocols import DialogService, NearestView
from ddpm_studio.services import events as ev

log = logging.getLogger("ddpm_studio.gui")


class NearestPresenter(QObject):
    """Finds a generated sample's nearest training images and the copy verdict, one search at a time."""

    def __init__(self, view: NearestView, dialogs: DialogService, tasks: Any) -> None:
        super().__init__()
        self.view, self.dialogs, self.tasks = view, dialogs, tasks
        self.shown: ShownResults | None = None
        self.live: LiveModel | None = None
        self._searching = False  # a search is in flight: one at a time
        view.nearestRequested.connect(self.nearest)

    def set_results(self, shown: ShownResults | None) -> None:
        self.shown = shown

    def set_live_model(self, live: LiveModel | None) -> None:
        """The running run's model (None once it ends): images from the live model are compared with its run's."""
        self.live = live

    def nearest(self) -> None:
        """The selected sample's nearest training images and the copy verdict (found in the background)."""
        shown, picked = self.shown, self.view.selected_indices()
        if shown is None or shown.kind != "generate" or not picked or self._searching:
            return
        result, index = shown.result, picked[0]
        sample = result.images[index]
        if shown.source == LIVE:
            model: str = self.live.run_dir if self.live is not None else ""
        else:
            model = str(result.extra.get("checkpoint", shown.source))
        self.view.show_task("Nearest training images: reading the run's settings…")

        def job(handle: Any) -> Any:
            from ddpm_studio.services.nearest import nearest_of_sample

            return nearest_of_sample(sample, model, progress=lambda text, done, total: handle.report((text, done, total)),
                                     cancel=handle.cancelled)

        def progress(report: tuple[str, int, int]) -> None:
            text, done, total = report
            self.view.show_task(f"{text} {done:,} / {total:,}" if total else text, done, total)

        def done(found: Any) -> None:
            self._searching = False
            if self.shown is None or self.shown.result is not result:  # other images are shown now
                self.view.end_task("Ready")
                return
            captions = [f"#{int(i)} · {d:.3f}" + (" (mirrored)" if m else "")
                        for i, d, m in zip(found.indices, found.distances, found.mirrored, strict=True)]
            self.view.show_neighbours(index, sample, found.images, captions, found.verdict, found.copy)
            self.view.end_task("Copy of a training image" if found.copy else "Not a copy")
            log.info("Sample #%d: %s", index + 1, found.verdict)

        def failed(exc: BaseException) -> None:
            self._searching = False
            self.view.end_task("Nearest training images: not available")
            self.dialogs.show_error("Nearest training images", ev.user_message(exc))

        self._searching = True  # before the call: a task runner that finishes at once clears it in done / failed
        self.tasks.run_reporting(job, progress, done, failed, name="ddpm-nearest")
