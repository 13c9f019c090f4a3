"""The model sources presenter: which model the Generate panel samples from, and what that model offers.

The models offered are the live run's (from the training presenter), the current run's checkpoints (from the
runs presenter) and files the user browsed to; a diffusers folder browsed to is first imported as a run. What
the chosen model offers the sampler form (its classes, whether it can rebuild other EMA lengths) is read from its
file in the background, once per file version: the Class field is filled here, and ``modelChanged`` tells the
generate presenter, whose other form fields depend on it. Why apart from the jobs: offering, importing and reading
models needs no job, and a job needs only the model chosen in the view (and the live model, from training).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from ddpm_studio.gui.presenters.messages import LiveModel, ModelInfo
from ddpm_studio.gui.views.protocols import DialogService, ModelSourcesView
from ddpm_studio.services import events as ev

log = logging.getLogger("ddpm_studio.gui")

LIVE = "live"  # the model choice that stands for the running run's model
MODEL_FILTERS = ("Models (*.pt model_index.json config.json *.safetensors);;DDPM Studio checkpoints (*.pt);;"
                 "diffusers models (model_index.json);;All files (*)")
EMA_LIVE_REASON = ("The live model samples with the run's own EMA. Choose one of the run's checkpoints to rebuild "
                   "another EMA length (runs trained with EMA kind \"power\").")
EMA_FIXED_REASON = ("This checkpoint's run averaged its weights with a fixed EMA, which keeps one average: other EMA "
                    "lengths can be rebuilt only for runs trained with EMA kind \"power\".")
EMA_NO_MODEL_REASON = "Choose a model first."
NO_GUIDE_REASON = ("This checkpoint keeps no weights of its run from about half-way through to guide with (saved by a "
                   "version of DDPM Studio before autoguidance, imported, saved in its first steps, or soon after "
                   "resuming such a run): it samples without autoguidance.")
EMA_READING_REASON = "Reading the checkpoint…"


def read_model_info(source: str) -> ModelInfo:
    """A checkpoint's (or a run folder's newest one's) classes, own EMA length and guide (file I/O: off the GUI thread)."""
    from ddpm_studio.services.sampling import checkpoint_offer

    offer = checkpoint_offer(source)
    return ModelInfo(offer.class_names, offer.ema_length, "" if offer.ema_length is not None else EMA_FIXED_REASON,
                     "" if offer.guide_step is not None else NO_GUIDE_REASON)


def import_if_diffusers(path: str, runs_dir: Path) -> Any:
    """Import ``path`` as a run when it is a diffusers folder or a file in one (its ImportResult), else None (a
    checkpoint or run folder of ours). Reads files: off the GUI thread."""
    from ddpm_studio.services.diffusers_interop import import_diffusers, is_diffusers_folder

    chosen = Path(path)
    if chosen.suffix == ".pt":
        return None
    candidates = (chosen,) if chosen.is_dir() else (chosen.parent, chosen.parent.parent)
    folder = next((c for c in candidates if is_diffusers_folder(c)), None)
    return None if folder is None else import_diffusers(folder, runs_dir)


class ModelSourcesPresenter(QObject):
    """Offers the models, imports a diffusers folder browsed to, and says what the chosen model offers."""

    revealRequested = Signal()  # show the Generate panel (a model was chosen elsewhere)
    runImported = Signal(str)  # a diffusers folder became this run folder (the Runs list shows it)
    modelChanged = Signal(object)  # the chosen model's ModelInfo, as now known (also while still unknown)

    def __init__(self, view: ModelSourcesView, dialogs: DialogService, prefs: Any, tasks: Any) -> None:
        super().__init__()
        self.view, self.dialogs, self.prefs, self.tasks = view, dialogs, prefs, tasks
        self.live: LiveModel | None = None
        self.run_dir: str | None = None  # the current run (its checkpoints are offered)
        self.run_checkpoints: list[tuple[int, str]] = []
        self.best_checkpoint: str | None = None  # the current run's checkpoint with the lowest validation loss
        self.browsed: list[str] = []
        self._torch_ready = False
        self._models: dict[tuple[str, int], ModelInfo] = {}  # what each model file offers, by (path, mtime)
        self._importing = False
        self._reading: set[str] = set()
        view.browseRequested.connect(self.browse)
        view.sourceChanged.connect(lambda _value: self.refresh_model())
        self._show_sources()

    # -- the models offered ------------------------------------------------------------------------------
    def set_live_model(self, live: LiveModel | None) -> None:
        self.live = live
        self._show_sources()

    def set_run_checkpoints(self, run_dir: str | None, checkpoints: list[tuple[int, str]], best: str | None = None) -> None:
        """The current run's checkpoints (oldest first) and its best one (lowest validation loss), marked ★ best."""
        self.run_dir, self.run_checkpoints, self.best_checkpoint = run_dir, list(checkpoints), best
        self._show_sources()

    def add_model(self, path: str) -> None:
        """Offer ``path`` (a checkpoint or run folder) and choose it; shows the Generate panel."""
        if path not in self.browsed and path not in {p for _, p in self.run_checkpoints}:
            self.browsed.insert(0, path)
        self._show_sources(select=path)
        self.revealRequested.emit()

    def browse(self) -> None:
        path = self.dialogs.choose_open_file("Choose a checkpoint, or a diffusers model's model_index.json", "checkpoint",
                                             MODEL_FILTERS, hint=str(self.prefs.runs_dir()))
        if path:
            self.open_model(path)

    def open_model(self, path: str) -> None:
        """Offer a checkpoint or run folder as it is; a diffusers UNet2DModel + DDPMScheduler folder (or a file in it)
        is first imported as a run, in the background, and its checkpoint offered; a refusal says why."""
        if self._importing:
            return
        runs_dir = self.prefs.runs_dir()
        self._importing = True
        self.view.show_task(f"Opening {Path(path).name}…")

        def done(result: Any) -> None:
            self._importing = False
            if result is None:
                self.view.end_task("Ready")
                self.add_model(path)
                return
            for note in result.notes:
                log.info("Imported %s: %s", result.run_dir.name, note)
            log.info("Imported the diffusers model %s as run %s (step %s)", path, result.run_dir, f"{result.step:,}")
            self.view.end_task(f"Imported as run {result.run_dir.name}")
            self.runImported.emit(str(result.run_dir))
            self.add_model(str(result.checkpoint))

        def failed(exc: BaseException) -> None:
            self._importing = False
            self.view.end_task("Import failed")
            self.dialogs.show_error("Cannot import the diffusers model", ev.user_message(exc))

        self.tasks.run(lambda: import_if_diffusers(path, runs_dir), done, failed, name="ddpm-import-diffusers")

    def _show_sources(self, select: str | None = None) -> None:
        sources: list[tuple[str, str]] = []
        live_here = self.live is not None and self.run_dir is not None and Path(self.live.run_dir) == Path(self.run_dir)
        if live_here:
            sources.append((f"Live model ({Path(self.run_dir).name}, EMA weights now)", LIVE))  # type: ignore[arg-type]
        if self.run_dir is not None:
            name = Path(self.run_dir).name
            sources += [(f"{name} · step {step:,}" + (" · ★ best" if path == self.best_checkpoint else ""), path)
                        for step, path in reversed(self.run_checkpoints)]
        known = {v for _, v in sources}
        for p in self.browsed:
            if p not in known:
                sources.append((Path(p).name if Path(p).is_file() else f"{Path(p).name} (newest)", p))
        self.view.set_sources(sources, select)

    # -- what the chosen model offers: its classes and EMA lengths ------------------------------------------------
    def torch_ready(self) -> None:
        self._torch_ready = True
        self.refresh_model()

    def refresh_model(self) -> None:
        """Show the chosen model's classes in the Class field and whether it can rebuild other EMA lengths (both
        unknown until its file is read, in the background, once per file version)."""
        source = self.view.source_value()
        if not source or source == LIVE:
            self._show_model(ModelInfo(self.live.class_names if source == LIVE and self.live is not None else None,
                                       None, EMA_LIVE_REASON if source == LIVE else EMA_NO_MODEL_REASON))
            return
        key = (source, _mtime(source))
        if key in self._models:
            self._show_model(self._models[key])
            return
        self._show_model(ModelInfo(None, None, EMA_READING_REASON))
        if not self._torch_ready or source in self._reading:
            return  # called again once torch is loaded; a read in flight calls again when done

        def done(info: ModelInfo) -> None:
            self._reading.discard(source)
            self._models[key] = info
            if self.view.source_value() == source:
                self.refresh_model()

        def failed(exc: BaseException) -> None:  # stays "unknown"; generating from it will say what is wrong
            self._reading.discard(source)
            log.debug("Cannot read %s: %s", source, exc)

        self._reading.add(source)
        self.tasks.run(lambda: read_model_info(source), done, failed, name="ddpm-model-info")

    def _show_model(self, info: ModelInfo) -> None:
        self.view.set_model_classes(info.classes)
        self.modelChanged.emit(info)


def _mtime(path: str) -> int:
    try:
        return Path(path).stat().st_mtime_ns
    except OSError:
        return 0
