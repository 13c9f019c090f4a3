"""The generate presenter: the Generate panel's model choice, sampling, interpolation, evaluation and saving.

The models offered are the live run's (from the training presenter), the current run's checkpoints (from the
runs presenter) and files the user browsed to. A job is a session from the services (sampling, interpolation
or evaluation) run on a SampleWorker thread, built there so torch loads off the GUI thread; one at a time,
sharing the panel's progress bar and Cancel. A live model's copy is asked for on that thread too. Results stay
here so the panel's Save buttons can write them where the user asks.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from ddpm_studio.gui.presenters.messages import LiveModel
from ddpm_studio.gui.presenters.sampler_text import sampling_progress, steps_reason
from ddpm_studio.gui.views.protocols import DialogService, GenerateView
from ddpm_studio.gui.workers import SampleWorker, WorkerThread
from ddpm_studio.services import config as config_mod
from ddpm_studio.services import events as ev
from ddpm_studio.services import outputs
from ddpm_studio.services.control import RunControl

log = logging.getLogger("ddpm_studio.gui")

LIVE = "live"  # the model choice that stands for the running run's model
SAVES = ("selected", "all", "grid", "gif")
MODEL_FILTERS = ("Models (*.pt model_index.json config.json *.safetensors);;DDPM Studio checkpoints (*.pt);;"
                 "diffusers models (model_index.json);;All files (*)")
FAILED_TITLES = {"generate": "Generation failed", "interpolate": "Interpolation failed", "evaluate": "Evaluation failed"}
SNAPSHOT_TIMEOUT = 600.0
EMA_LIVE_REASON = ("The live model samples with the run's own EMA. Choose one of the run's checkpoints to rebuild "
                   "another EMA length (runs trained with EMA kind \"power\").")
EMA_FIXED_REASON = ("This checkpoint's run averaged its weights with a fixed EMA, which keeps one average: other EMA "
                    "lengths can be rebuilt only for runs trained with EMA kind \"power\".")
EMA_NO_MODEL_REASON = "Choose a model first."
EMA_READING_REASON = "Reading the checkpoint…"
EMA_RAW_REASON = "The EMA length applies to the averaged weights: tick Use EMA weights to choose one."


@dataclass(frozen=True)
class ModelInfo:
    """What a model offers the form: its classes (None: unknown yet, (): unconditional) and its run's own EMA length
    when it can rebuild others (a power EMA), else the reason it cannot."""

    classes: tuple[str, ...] | None
    ema_length: float | None
    ema_reason: str = ""


def read_model_info(source: str) -> ModelInfo:
    """A checkpoint's (or a run folder's newest one's) classes and own EMA length (file I/O: off the GUI thread)."""
    from ddpm_studio.services.sampling import checkpoint_class_names, checkpoint_ema_length

    length = checkpoint_ema_length(source)
    return ModelInfo(checkpoint_class_names(source), length, "" if length is not None else EMA_FIXED_REASON)


def new_session(kind: str, model: Any, sample: config_mod.SampleConfig, out_dir: Path, control: RunControl,
                extra: Any = None) -> Any:
    """The services session for a job (imports torch: called on the worker thread)."""
    if kind == "interpolate":
        from ddpm_studio.services.interpolation import InterpolationSession

        return InterpolationSession(model, sample, extra, out_dir, control=control)
    if kind == "evaluate":
        from ddpm_studio.services.evaluation import EvaluationSession

        return EvaluationSession(model, sample, out_dir, fid="auto", reference_images=1000, control=control)
    from ddpm_studio.services.sampling import SamplingSession

    return SamplingSession(model, sample, out_dir, control=control, save_trajectory=True)


def wait_for(snapshot: concurrent.futures.Future[Any], control: RunControl, timeout: float = SNAPSHOT_TIMEOUT) -> Any:
    """The live model's copy, waiting for the training thread's next step; Cancel (or quitting) stops the wait."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return snapshot.result(timeout=0.2)
        except concurrent.futures.TimeoutError:
            if control.stop_requested:
                raise RuntimeError("Cancelled while waiting for the live model") from None
            if time.monotonic() > deadline:
                raise RuntimeError("The training run did not hand over its live model in time") from None


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


class GeneratePresenter(QObject):
    """Runs one sampling job at a time; offers the models; saves the results where the user asks."""

    revealRequested = Signal()  # show the Generate panel (a model was chosen elsewhere, a job started)
    runImported = Signal(str)  # a diffusers folder became this run folder (the Runs list shows it)

    def __init__(self, view: GenerateView, dialogs: DialogService, prefs: Any, tasks: Any, *,
                 session_factory: Callable[..., Any] = new_session) -> None:
        super().__init__()
        self.view, self.dialogs, self.prefs, self.tasks = view, dialogs, prefs, tasks
        self._session_factory = session_factory
        self.live: LiveModel | None = None
        self.run_dir: str | None = None  # the current run (its checkpoints are offered)
        self.run_checkpoints: list[tuple[int, str]] = []
        self.best_checkpoint: str | None = None  # the current run's checkpoint with the lowest validation loss
        self.browsed: list[str] = []
        self.kind = "generate"
        self.job_sample: config_mod.SampleConfig | None = None
        self.result: ev.SamplesReady | None = None
        self.report: ev.EvaluationReady | None = None
        self._control: RunControl | None = None
        self._thread: WorkerThread | None = None
        self._torch_ready = False
        self._models: dict[tuple[str, int], ModelInfo] = {}  # what each model file offers, by (path, mtime)
        self.model_info = ModelInfo(None, None, EMA_NO_MODEL_REASON)
        self._result_source = ""  # the model the shown results came from
        self._resample = False  # the EMA length changed during a generate job: sample again when it ends
        self._searching: Any = None  # the nearest-training-images search in flight (its TaskHandle)
        self._importing = False
        self._reading: set[str] = set()
        self._requests: dict[str, Callable[[], Any]] = {
            "generate": self.generate, "interpolate": self.interpolate, "evaluate": self.evaluate, "cancel": self.cancel,
            "browse": self.browse, "nearest": self.nearest, **{f"save_{what}": lambda w=what: self.save(w) for what in SAVES}}
        view.requested.connect(lambda action: self._requests[action]())
        view.sourceChanged.connect(lambda _value: self.refresh_model())
        view.settingsChanged.connect(self._sync_fields)
        view.emaLengthChanged.connect(self._ema_length_chosen)
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
        self.model_info = info
        self.view.set_model_classes(info.classes)
        self._sync_fields()

    # -- settings -----------------------------------------------------------------------------------------
    def set_sample_config(self, cfg: config_mod.SampleConfig) -> None:
        self.view.set_sample_config(cfg)
        self._sync_fields()

    def _sync_fields(self) -> None:
        """Fields that do not apply are off, saying why (Steps for a sampler that always takes T steps, EMA length
        for a model that keeps one average, or when sampling the raw weights)."""
        cfg, _errors = self.view.sample_config()
        reason = steps_reason(cfg.sampler)
        self.view.set_steps_enabled(not reason, reason)
        info = self.model_info
        ema_reason = info.ema_reason or ("" if cfg.use_ema else EMA_RAW_REASON)
        self.view.set_ema_length(None if ema_reason else info.ema_length, ema_reason)

    def _ema_length_chosen(self) -> None:
        """A new EMA length: sample the shown images again with it (same model and seed, so they compare)."""
        if self.kind != "generate" or self._result_source != self.view.source_value():
            return
        if self.is_running():
            self._resample = True  # once this job ends
        elif self.result is not None:
            self.generate()

    # -- jobs ---------------------------------------------------------------------------------------------
    def generate(self) -> bool:
        job = self._prepare()
        if job is None:
            return False
        cfg, source = job
        return self._start("generate", cfg, source, self._output_dir(source, cfg))

    def interpolate(self) -> bool:
        interp, errors = self.view.interp_config()
        if errors:
            return False
        job = self._prepare()
        if job is None:
            return False
        cfg, source = job
        out = self._output_dir(source, cfg, what=outputs.interpolation_tag(interp), seed=False)
        return self._start("interpolate", cfg, source, out, interp)

    def evaluate(self) -> bool:
        job = self._prepare()
        if job is None:
            return False
        cfg, source = job
        # The evaluation protocol's sampler (fixed, so scores compare between checkpoints); class, guidance, EMA,
        # batch and seed from the form.
        overrides = {"num_images": self.view.evaluation_images(), "class_label": cfg.class_label,
                     "guidance_scale": cfg.guidance_scale, "use_ema": cfg.use_ema, "ema_length": cfg.ema_length,
                     "sample_batch_size": cfg.sample_batch_size, "sample_seed": cfg.sample_seed}
        sample = dataclasses.replace(config_mod.SampleConfig(), **{**config_mod.EVALUATION_SAMPLE_DEFAULTS, **overrides})
        return self._start("evaluate", sample, source, self._output_dir(source, sample, what=outputs.evaluation_tag(sample)))

    def _prepare(self) -> tuple[config_mod.SampleConfig, str] | None:
        """The settings and the chosen model; None (having said why) when a job cannot start."""
        cfg, errors = self.view.sample_config()
        if errors or self.is_running():
            return None
        source = self.view.source_value()
        if not source:
            self.dialogs.show_error("No model", "Train a model first, or Browse… for a checkpoint or run folder.")
            return None
        if source == LIVE and self.live is None:
            self.dialogs.show_error("No live model", "The run is still loading its images, or has ended; "
                                    "choose one of its checkpoints instead.")
            return None
        self.prefs.save_sample_config(cfg)
        return cfg, source

    def _output_dir(self, source: str, cfg: config_mod.SampleConfig, what: str = "", seed: bool = True) -> Path:
        """Where a job's files go: the model's run's samples/ folder, in a folder named after what is made."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        if source == LIVE and self.live is not None:
            return Path(self.live.run_dir) / "samples" / outputs.output_name("live", cfg, what=what, stamp=stamp, seed=seed)
        path = Path(source)
        base = outputs.samples_dir_for(path, self.prefs.runs_dir() / "samples")
        return base / outputs.output_name("" if path.is_dir() else path.stem, cfg, what=what, stamp=stamp, seed=seed)

    def _start(self, kind: str, sample: config_mod.SampleConfig, source: str, out_dir: Path, extra: Any = None) -> bool:
        self._control = control = RunControl()
        self.kind, self.job_sample, self.result, self.report = kind, sample, None, None
        self._result_source = source
        live, make = (self.live if source == LIVE else None), self._session_factory

        def factory() -> Any:  # on the worker thread: the live model's copy is asked for (and waited for) here
            model = source if live is None else wait_for(live.snapshot(), control)
            return make(kind, model, sample, out_dir, control, extra)

        worker = SampleWorker(factory, control)
        worker.progress.connect(self._on_progress)
        worker.event.connect(self._on_event)
        self._thread = WorkerThread(worker, self)
        self._thread.done.connect(self._on_done)
        self.view.set_busy(True)
        self.view.set_message("Loading the model…")
        self.revealRequested.emit()
        self._thread.start()
        return True

    def cancel(self) -> None:
        if self._control is not None and self._thread is not None:
            self._control.stop()
            self.view.set_message("Cancelling…")

    def is_running(self) -> bool:
        """True from the click until the GUI thread has handled the worker thread's end."""
        return self._thread is not None

    def shutdown(self, timeout_ms: int = 60_000) -> bool:
        self.cancel()
        if self._thread is not None and self._thread.is_running():
            return self._thread.wait(timeout_ms)
        return True

    # -- worker events (GUI thread) ------------------------------------------------------------------
    def _on_progress(self, p: ev.SamplingProgress) -> None:
        sampler = self.job_sample.sampler if self.job_sample is not None else "?"
        self.view.show_progress(sampling_progress(sampler, p.done, p.total, p.batch, p.batches, p.eta_seconds),
                                p.done, p.total, p.frame)

    def _on_event(self, event: Any) -> None:
        if isinstance(event, ev.Status):
            self.view.set_message(event.message)
        elif isinstance(event, ev.SamplesReady):
            self.result = event
            if self.kind == "interpolate":
                self.view.show_strip(event.images, event.grid_path, int(event.extra.get("frames", len(event.images))))
                log.info("Interpolation strip of %d images: %s", len(event.images), event.grid_path)
            else:
                self.view.show_results(event.images, event.paths, event.trajectory_path is not None)
                log.info("Generated %d images in %s", len(event.images), Path(event.paths[0]).parent if event.paths else "?")
        elif isinstance(event, ev.EvaluationReady):
            self.report = event
            self.view.show_report(event.lines, event.path, event.report.get("grid"))
            for line in event.lines:
                log.info("%s", line)
        elif isinstance(event, ev.RunFailed):
            title = FAILED_TITLES[self.kind]
            self.view.show_failure(title, event.message)
            self.dialogs.show_error(title, event.message, event.detail)

    def _on_done(self) -> None:
        cancelled = self._control is not None and self._control.stop_requested
        self._thread = None
        self.view.set_busy(False)
        resample, self._resample = self._resample, False
        if cancelled:
            self.view.set_message("Cancelled")
        elif resample and self.result is not None:
            self.generate()  # the EMA length was changed while these images were made

    # -- the memorization check of one sample ---------------------------------------------------------------
    def nearest(self) -> None:
        """The selected sample's nearest training images and the copy verdict (found in the background)."""
        result, picked = self.result, self.view.selected_indices()
        if result is None or self.kind != "generate" or not picked or self._searching is not None:
            return
        index = picked[0]
        sample = result.images[index]
        source = self._result_source
        if source == LIVE:
            model: str = self.live.run_dir if self.live is not None else ""
        else:
            model = str(result.extra.get("checkpoint", source))
        self.view.show_task("Nearest training images: reading the run's settings…")

        def job(handle: Any) -> Any:
            from ddpm_studio.services.nearest import nearest_of_sample

            return nearest_of_sample(sample, model, progress=lambda text, done, total: handle.report((text, done, total)),
                                     cancel=handle.cancelled)

        def progress(report: tuple[str, int, int]) -> None:
            text, done, total = report
            self.view.show_task(f"{text} {done:,} / {total:,}" if total else text, done, total)

        def done(found: Any) -> None:
            self._searching = None
            if self.result is not result:  # other images are shown now
                self.view.end_task("Ready")
                return
            captions = [f"#{int(i)} · {d:.3f}" + (" (mirrored)" if m else "")
                        for i, d, m in zip(found.indices, found.distances, found.mirrored, strict=True)]
            self.view.show_neighbours(index, sample, found.images, captions, found.verdict, found.copy)
            self.view.end_task("Copy of a training image" if found.copy else "Not a copy")
            log.info("Sample #%d: %s", index + 1, found.verdict)

        def failed(exc: BaseException) -> None:
            self._searching = None
            self.view.end_task("Nearest training images: not available")
            self.dialogs.show_error("Nearest training images", ev.user_message(exc))

        self._searching = self.tasks.run_reporting(job, progress, done, failed, name="ddpm-nearest")

    # -- saving ---------------------------------------------------------------------------------------
    def save(self, what: str) -> Any:
        """Save the result: ``selected`` / ``all`` images into a folder, the ``grid`` or the ``gif`` into a file."""
        result = self.result
        if result is None:
            return None
        if what in ("selected", "all"):
            indices = self.view.selected_indices() if what == "selected" else None
            folder = self.dialogs.choose_directory("Save images to folder", "images")
            if not folder:
                return None
            return self._guarded("Cannot save images", lambda: outputs.save_images(result, indices, folder))
        if what == "grid":
            path = self.dialogs.choose_save_file("Save grid image", "grid", "samples_grid.png", "PNG images (*.png)")
            indices = self.view.selected_indices() or None
            return self._guarded("Cannot save the grid", lambda: outputs.save_grid(result, path, indices)) if path else None
        path = self.dialogs.choose_save_file("Save trajectory GIF", "gif", "trajectory.gif", "GIF animations (*.gif)")
        return self._guarded("Cannot save the GIF", lambda: outputs.save_gif(result, path)) if path else None

    def _guarded(self, title: str, action: Callable[[], Any]) -> Any:
        try:
            result = action()
        except OSError as exc:
            self.dialogs.show_error(title, f"{exc.filename or ''}: {exc.strerror or exc}")
            return None
        log.info("Saved %s", result if not isinstance(result, list) else f"{len(result)} file(s)")
        return result


def _mtime(path: str) -> int:
    try:
        return Path(path).stat().st_mtime_ns
    except OSError:
        return 0
