"""What each presenter needs of its views: the contract between ``gui/presenters`` and ``gui/views``.

Why in one module: a presenter imports these Protocols (and the row types below), never a widget, so it
can be tested against ``MagicMock(spec=RunControlsView)`` and a widget can change freely behind its
Protocol. Signals are declared as in the widgets (``Signal()`` objects, so a spec'd mock has them too), with
what they carry; presenters connect to a view's signals (its user's requests) and call its methods (what to
show). A view with several buttons says which was pressed in one ``requested`` signal, as QButtonGroup does.
Nothing here imports torch; the widgets implementing these live next to this file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from PySide6.QtCore import Signal

from ddpm_studio.services.config import DataConfig, InterpolationConfig, RunConfig, SampleConfig
from ddpm_studio.services.dataset_scan import ScanSummary


# -- rows that presenters hand to list views ----------------------------------------------------------------
@dataclass(frozen=True)
class RunRow:
    path: str
    name: str
    state: str
    step: int
    total_steps: int | None
    checkpoint_step: int | None
    updated: float


@dataclass(frozen=True)
class CheckpointRow:
    step: int
    path: str
    size_bytes: int
    modified: float
    loss: float | None
    val_loss: float | None = None  # validation loss of its EMA weights (run.json), None when not measured
    best: bool = False  # the run's checkpoint with the lowest validation loss (retention keeps it)


# -- every presenter --------------------------------------------------------------------------------------
class DialogService(Protocol):
    """Messages, questions and file choosers (tests answer them without a window)."""

    def show_error(self, title: str, text: str, detail: str = "") -> None: ...
    def show_info(self, title: str, text: str) -> None: ...
    def ask(self, title: str, text: str, buttons: tuple[str, ...], default: int = 0) -> int: ...
    # File choosers are asked for by purpose (data_folder, settings_file, checkpoint, run_folder, runs_dir, images,
    # grid, gif): each starts in the folder last used for it, else in ``hint``, else in Pictures / Documents / home.
    def choose_directory(self, title: str, purpose: str, hint: str = "") -> str: ...
    def choose_open_file(self, title: str, purpose: str, filters: str = "", hint: str = "") -> str: ...
    def choose_save_file(self, title: str, purpose: str, name: str, filters: str = "") -> str: ...
    def open_folder(self, path: str) -> None: ...


# -- training: toolbar, loss plot, trajectory, status bar ---------------------------------------------------
class RunControlsView(Protocol):
    # start, pause, resume, stop, continue, preview (Sample now), checkpoint (Checkpoint now): a button, a menu item
    # or its shortcut; use_cpu: the device warning's "Train on the CPU instead"
    requested = Signal(str)
    budgetEdited = Signal(float)  # the "Train for" box: minutes, 0 = until Total steps

    def show_state(self, label: str, enabled: Mapping[str, bool], reason: str = "") -> None:
        """Enable exactly the actions in ``enabled`` (the names ``requested`` carries); say why Start is off."""

    def show_progress(self, fraction: float, text: str) -> None:
        """The bar ``fraction`` (0-1) full, with ``text`` (where the run stands: running, paused, ended)."""

    def set_message(self, text: str, done: int = 0, total: int = 0) -> None:
        """A phase message on the progress bar ("Loading images 340 / 1000"), or where the run stands."""

    def set_budget(self, minutes: float, editable: bool) -> None:
        """The time budget the settings hold (0 = until Total steps); not editable while a run is active."""

    def show_device_warning(self, text: str) -> None:
        """The accelerator self-check's warning, offering the CPU ("" hides it)."""


class LossPlotView(Protocol):
    diverged = Signal(int)  # the step of the first loss that is NaN or infinite

    def append_batch(self, batch: Any) -> None: ...
    def load_history(self, records: list[dict[str, Any]]) -> None: ...
    def truncate_after(self, step: int) -> None: ...
    def clear(self) -> None: ...


class TrajectoryView(Protocol):
    def add_preview(self, preview: Any) -> None: ...
    def add_image(self, step: int, image: np.ndarray) -> None: ...
    def clear(self) -> None: ...


class NotificationsView(Protocol):
    def notify(self, title: str, text: str) -> None:
        """A desktop notification where the system has a tray to show it; nothing (and no error) otherwise."""

    def ask_webhook_url(self, url: str, error: str = "") -> str | None:
        """The webhook URL edited by the user ("" = none), or None when cancelled; ``error`` says why it is asked again."""


class StatusView(Protocol):
    def set_device(self, text: str) -> None: ...
    def set_memory(self, text: str) -> None: ...
    def show_message(self, text: str, timeout_ms: int = 0) -> None: ...


# -- settings: the form and the dataset choice -------------------------------------------------------------
class SettingsView(Protocol):
    configEdited = Signal(object, object)  # (RunConfig as the form reads it, the fields' parse and range errors)
    presetChosen = Signal(str)  # a name of services.run_presets.RUN_PRESETS
    loadRequested = Signal()  # Load… (a config file)
    saveRequested = Signal()  # Save… (a config file)

    def set_presets(self, names: Sequence[str]) -> None: ...
    def set_config(self, cfg: RunConfig) -> None: ...
    def show_errors(self, errors: list[str]) -> None: ...
    def set_estimate(self, text: str) -> None: ...
    def set_preset_info(self, text: str) -> None: ...
    def set_read_only(self, read_only: bool) -> None: ...
    def set_field_enabled(self, section: str, name: str, enabled: bool, reason: str = "") -> None: ...


class DatasetView(Protocol):
    dataEdited = Signal(dict)  # {source, image_size, channels}, from the combo boxes
    folderChosen = Signal(str)  # a folder typed, dropped or picked from Recent
    browseRequested = Signal()  # Browse… (the presenter opens the dialog)

    def set_data(self, data: DataConfig) -> None: ...
    def set_recent(self, folders: list[str]) -> None: ...
    def show_status(self, text: str, error: bool = False) -> None: ...
    def show_scan(self, summary: ScanSummary | None, stats: str) -> None:
        """The folder's files (thumbnails decoded lazily), skipped files and statistics; None clears them."""

    def show_stats(self, text: str) -> None: ...
    def show_images(self, images: np.ndarray) -> None: ...
    def set_read_only(self, read_only: bool) -> None: ...


# -- runs: the runs list and the current run's checkpoints ------------------------------------------------
class RunsListView(Protocol):
    requested = Signal(str, str)  # (open, continue or folder, with the selected run; refresh or change_dir, with "")

    def set_runs(self, runs_dir: str, rows: list[RunRow]) -> None: ...
    def select_path(self, path: str) -> None: ...
    def set_run_active(self, active: bool) -> None: ...


class CheckpointsView(Protocol):
    requested = Signal(str, str)  # (generate, resume or delete, with the selected checkpoint; folder)
    keepLastChanged = Signal(int)  # the Keep-the-last box

    def set_checkpoints(self, rows: list[CheckpointRow], info: str) -> None: ...
    def set_keep_last(self, n: int) -> None: ...
    def set_run_active(self, active: bool) -> None: ...


# -- generate: one panel, a view per presenter (model sources, sampling, nearest images, saving) ---------------
class PanelTaskView(Protocol):
    def show_task(self, text: str, done: int = 0, total: int = 0) -> None:
        """A background task of the panel (importing a model, finding nearest images) on the progress bar;
        ``total`` 0: how far is unknown. Browse… is off until :meth:`end_task`."""

    def end_task(self, text: str) -> None: ...


class ModelSourcesView(PanelTaskView, Protocol):
    browseRequested = Signal()  # Browse… (the presenter opens the dialog)
    sourceChanged = Signal(str)  # the model chosen: a checkpoint or run folder, LIVE, or "" (none)

    def set_sources(self, sources: list[tuple[str, str]], select: str | None = None) -> None: ...
    def source_value(self) -> str: ...
    def set_model_classes(self, classes: tuple[str, ...] | None) -> None: ...


class SamplingView(Protocol):
    requested = Signal(str)  # a job (generate, interpolate, evaluate) or cancel
    settingsChanged = Signal()  # any sampler setting edited
    emaLengthChanged = Signal()  # the user chose another EMA length (the presenter may sample again with it)

    def source_value(self) -> str: ...  # the model chosen (ModelSourcesView's), which a job samples
    def sample_config(self) -> tuple[SampleConfig, list[str]]: ...
    def set_sample_config(self, cfg: SampleConfig) -> None: ...
    def interp_config(self) -> tuple[InterpolationConfig, list[str]]: ...
    def evaluation_images(self) -> int: ...
    def set_steps_enabled(self, enabled: bool, reason: str = "") -> None: ...
    def set_autoguidance_enabled(self, enabled: bool, reason: str = "") -> None: ...
    def set_ema_length(self, own: float | None, reason: str = "") -> None:
        """The EMA length control: from 0.01 to 0.28 (every length a run can be trained with), starting at the run's
        ``own`` length; None: off, saying ``reason``."""
    def set_busy(self, busy: bool) -> None: ...
    def show_progress(self, text: str, done: int, total: int, frame: np.ndarray | None) -> None: ...
    def set_message(self, text: str) -> None: ...
    def show_failure(self, title: str, message: str) -> None: ...
    def show_results(self, images: np.ndarray, paths: tuple[str, ...], has_gif: bool) -> None: ...
    def show_strip(self, images: np.ndarray, strip_path: str | None, frames: int) -> None: ...
    def show_report(self, lines: tuple[str, ...], path: str | None, grid: str | None = None) -> None: ...


class NearestView(PanelTaskView, Protocol):
    nearestRequested = Signal()  # Nearest training images (of the first selected sample)

    def selected_indices(self) -> list[int]: ...
    def show_neighbours(self, index: int, sample: np.ndarray, images: np.ndarray, captions: list[str], verdict: str,
                        copy: bool) -> None:
        """Sample ``index`` (H, W, C) beside its nearest training images (k, H, W, C), each with a caption, and the
        copy verdict in words."""


class SaveResultsView(Protocol):
    saveRequested = Signal(str)  # what to save: selected, all, grid or gif

    def selected_indices(self) -> list[int]: ...


class GenerateView(ModelSourcesView, SamplingView, NearestView, SaveResultsView, Protocol):
    """The Generate panel: one widget, the view of each of its presenters."""
