"""The generate presenter: the Generate panel's sampling jobs (generate, interpolate, evaluate) and its sampler form.

A job samples the model chosen in the panel (offered by the model sources presenter) with the form's settings. It
is a session from the services (sampling, interpolation or evaluation) run on a SampleWorker thread, built there so
torch loads off the GUI thread; one at a time, sharing the panel's progress bar and Cancel. A live model's copy
is asked for on that thread too. The images a job made go out in ``resultsChanged`` (the save and nearest-images
presenters work on them). The form's fields that do not apply are off, saying why (Steps for a sampler that always
takes T steps, the EMA length for a model that keeps one average, from ``set_model_info``); choosing another EMA
length samples the shown images again with it.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from ddpm_studio.gui.presenters.messages import LiveModel, ModelInfo, ShownResults
from ddpm_studio.gui.presenters.model_sources import EMA_NO_MODEL_REASON, LIVE
from ddpm_studio.gui.presenters.sampler_text import sampling_progress, steps_reason
from ddpm_studio.gui.views.protocols import DialogService, SamplingView
from ddpm_studio.gui.workers import SampleWorker, WorkerThread
from ddpm_studio.services import config as config_mod
from ddpm_studio.services import events as ev
from ddpm_studio.services import outputs
from ddpm_studio.services.control import RunControl

log = logging.getLogger("ddpm_studio.gui")

FAILED_TITLES = {"generate": "Generation failed", "interpolate": "Interpolation failed", "evaluate": "Evaluation failed"}
SNAPSHOT_TIMEOUT = 600.0
EMA_RAW_REASON = "The EMA length applies to the averaged weights: tick Use EMA weights to choose one."


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


class GeneratePresenter(QObject):
    """Runs one sampling job at a time on the chosen model; says what it made; keeps the form's fields apt."""

    revealRequested = Signal()  # show the Generate panel (a job started)
    resultsChanged = Signal(object)  # the images shown now (ShownResults), or None once a job starts

    def __init__(self, view: SamplingView, dialogs: DialogService, prefs: Any, *,
                 session_factory: Callable[..., Any] = new_session) -> None:
        super().__init__()
        self.view, self.dialogs, self.prefs = view, dialogs, prefs
        self._session_factory = session_factory
        self.live: LiveModel | None = None
        self.model_info = ModelInfo(None, None, EMA_NO_MODEL_REASON)  # what the chosen model offers the form
        self.kind = "generate"
        self.job_sample: config_mod.SampleConfig | None = None
        self.result: ev.SamplesReady | None = None
        self.report: ev.EvaluationReady | None = None
        self._control: RunControl | None = None
        self._thread: WorkerThread | None = None
        self._result_source = ""  # the model the shown results came from
        self._resample = False  # the EMA length changed during a generate job: sample again when it ends
        self._requests: dict[str, Callable[[], Any]] = {
            "generate": self.generate, "interpolate": self.interpolate, "evaluate": self.evaluate, "cancel": self.cancel}
        view.requested.connect(lambda action: self._requests[action]())
        view.settingsChanged.connect(self._sync_fields)
        view.emaLengthChanged.connect(self._ema_length_chosen)

    def set_live_model(self, live: LiveModel | None) -> None:
        self.live = live

    # -- settings -----------------------------------------------------------------------------------------
    def set_sample_config(self, cfg: config_mod.SampleConfig) -> None:
        self.view.set_sample_config(cfg)
        self._sync_fields()

    def set_model_info(self, info: ModelInfo) -> None:
        """What the chosen model offers (the model sources presenter read it): the EMA length field follows."""
        self.model_info = info
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
        self.view.set_autoguidance_enabled(not info.guide_reason, info.guide_reason)

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
        self.resultsChanged.emit(None)
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
            self.resultsChanged.emit(ShownResults(self.kind, event, self._result_source))
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
