"""The settings presenter against mocked views: the form and the dataset panel never disagree, the verdict says
why Start is off, folder scans wait for torch and report skipped files, fields that do not apply say why."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest.mock import MagicMock

import pytest

from ddpm_studio.gui.presenters.messages import Verdict
from ddpm_studio.gui.presenters.settings import SettingsPresenter
from ddpm_studio.gui.views.protocols import DatasetView, DialogService, SettingsView
from ddpm_studio.services import config as c
from ddpm_studio.services.dataset_scan import ScanSummary
from tests.gui.conftest import write_pngs
from tests.gui.fakes import ImmediateTasks, emit, last, prefs


@pytest.fixture
def setup(qtbot, tmp_path: Path) -> dict[str, Any]:
    form, dataset, dialogs = MagicMock(spec=SettingsView), MagicMock(spec=DatasetView), MagicMock(spec=DialogService)
    tasks = ImmediateTasks()
    presenter = SettingsPresenter(form, dataset, dialogs, prefs(tmp_path / "runs", ["/recent/one"]), tasks)
    verdicts: list[Verdict] = []
    presenter.verdictChanged.connect(verdicts.append)
    return {"p": presenter, "form": form, "dataset": dataset, "dialogs": dialogs, "tasks": tasks, "verdicts": verdicts}


def test_both_editors_show_the_config_and_the_verdict_follows_edits(setup) -> None:
    p, form, dataset, verdicts = setup["p"], setup["form"], setup["dataset"], setup["verdicts"]
    assert last(form.set_presets)[0][0] == "Laptop CPU (default)" and last(dataset.set_recent)[0] == ["/recent/one"]
    cfg = c.from_dict({"optim": {"batch_size": 12}})
    p.set_config(cfg)
    assert last(form.set_config)[0] == cfg and last(dataset.set_data)[0] == cfg.data
    assert verdicts[-1] == Verdict(cfg, True, ())  # the demo data needs no scan: Start is possible at once

    emit(form.configEdited, cfg, ["Batch size must be a whole number (got 'abc')"])  # a field that does not parse
    assert verdicts[-1].ok is False and verdicts[-1].reasons == ("Batch size must be a whole number (got 'abc')",)
    assert last(form.show_errors)[0] == ["Batch size must be a whole number (got 'abc')"]

    bad = c.from_dict({"data": {"image_size": 250}})  # parses, but the U-Net cannot halve it: checked without torch
    emit(form.configEdited, bad, [])
    assert not verdicts[-1].ok and "image size 250 must be divisible by 4" in verdicts[-1].reasons[0]
    assert last(dataset.set_data)[0].image_size == 250  # the dataset panel shows the form's size

    emit(dataset.dataEdited, {"source": "demo", "image_size": 48, "channels": 1})
    assert p.cfg.data.image_size == 48 and p.cfg.data.channels == 1 and last(form.set_config)[0] == p.cfg
    assert verdicts[-1].ok


def test_a_folder_is_scanned_once_torch_is_loaded_and_its_problems_stop_start(setup, tmp_path: Path) -> None:
    p, dataset, tasks, verdicts = setup["p"], setup["dataset"], setup["tasks"], setup["verdicts"]
    folder = write_pngs(tmp_path / "images", 6)
    emit(dataset.folderChosen, str(folder))  # typed, dropped or from Recent
    assert p.cfg.data.source == "folder" and p.cfg.data.data_path == str(folder)
    assert last(dataset.set_data)[0].data_path == str(folder)
    assert not tasks.names and not verdicts[-1].ok and "Still scanning" in verdicts[-1].reasons[0]
    p.go_live()  # torch loaded, window on screen: now the scan runs (and the size estimate)
    assert "ddpm-scan" in tasks.names and "ddpm-estimate" not in tasks.names  # the estimate waits for typing to pause
    summary, stats = last(dataset.show_scan)
    assert summary.usable == 6 and any("notes.txt" in path for path, _ in summary.skipped) and "20×20" in stats
    assert dataset.show_status.call_args.args[0] == "6 usable images · 1 skipped"
    assert dataset.show_status.call_args.kwargs == {"error": False}
    assert verdicts[-1].ok

    empty = tmp_path / "empty"
    empty.mkdir()
    emit(dataset.folderChosen, str(empty))
    assert "No images found" in dataset.show_status.call_args.args[0]
    assert dataset.show_status.call_args.kwargs == {"error": True}
    assert not verdicts[-1].ok and "No images found" in verdicts[-1].reasons[-1]

    setup["dialogs"].choose_directory.return_value = str(folder)
    emit(dataset.browseRequested)
    assert p.cfg.data.data_path == str(folder) and verdicts[-1].ok


def test_fields_that_do_not_apply_say_why_and_a_running_run_locks_the_settings(setup) -> None:
    p, form = setup["p"], setup["form"]
    p.set_config(c.from_dict({"schedule": {"preview_sampler": "ddpm"}}))
    section, name, enabled, reason = last(form.set_field_enabled)
    assert (section, name, enabled) == ("schedule", "preview_steps", False) and "always takes all T steps" in reason
    p.set_config(c.RunConfig())
    assert last(form.set_field_enabled)[2] is True

    p.set_run_active(True)
    form.set_read_only.assert_called_with(True)
    setup["dataset"].set_read_only.assert_called_with(True)
    p.set_keep_last(7)  # the running run's keep-last changes, not the locked settings
    assert p.cfg.schedule.keep_last == 3
    p.browse_folder()  # File > Choose data folder… while the run is active: nothing to choose
    p.choose_folder("/somewhere/else")
    setup["dialogs"].choose_directory.assert_not_called()
    assert p.cfg.data.source == "demo" and p.cfg.data.data_path == ""
    p.set_run_active(False)
    p.set_keep_last(7)
    assert p.cfg.schedule.keep_last == 7


def test_presets_and_config_files(setup, tmp_path: Path) -> None:
    p, form, dialogs = setup["p"], setup["form"], setup["dialogs"]
    emit(form.presetChosen, "Quick pipeline check (tiny model, ~1 min)")
    assert p.cfg.model.preset == "tiny" and p.cfg.data.image_size == 16
    dialogs.choose_save_file.return_value = str(tmp_path / "run.toml")
    emit(form.saveRequested)
    assert 'preset = "tiny"' in (tmp_path / "run.toml").read_text()
    p.set_config(c.RunConfig())
    dialogs.choose_open_file.return_value = str(tmp_path / "run.toml")
    emit(form.loadRequested)
    assert p.cfg.model.preset == "tiny"
    (tmp_path / "bad.toml").write_text("[optim]\nbatch_size = 'many'\n")
    assert not p.load_file(str(tmp_path / "bad.toml"))
    assert last(dialogs.show_error)[0] == "Cannot load settings" and "Batch size" in last(dialogs.show_error)[1]


def test_broken_files_are_counted_and_named_before_start_and_only_good_folders_join_recent(setup, tmp_path: Path) -> None:
    """main: "303 usable images", "Skipped files: none" for 300 good files and three broken ones; an empty folder
    joined Recent."""
    from tests.services.test_dataset_scan import photo_folder

    p, dataset, verdicts, prefs_ = setup["p"], setup["dataset"], setup["verdicts"], setup["p"].prefs
    p.go_live()
    empty = tmp_path / "empty"
    empty.mkdir()
    emit(dataset.folderChosen, str(empty))
    prefs_.add_recent_folder.assert_not_called()  # nothing to train on: not offered again
    assert not verdicts[-1].ok

    folder = photo_folder(tmp_path / "photos", good=20)
    emit(dataset.folderChosen, str(folder))
    summary, _stats = last(dataset.show_scan)
    assert summary.complete and summary.usable == 20
    assert {Path(path).name: reason for path, reason in summary.skipped} == {
        "empty.png": "empty file", "notes.jpg": "not an image", "cut.jpg": "truncated file"}
    assert dataset.show_status.call_args.args[0] == "20 usable images · 3 skipped"
    assert verdicts[-1].ok
    prefs_.add_recent_folder.assert_called_once_with(str(folder))  # once its scan found usable images


class DeferredTasks(ImmediateTasks):
    """Jobs wait until ``finish()``: a scan still running when the user does something else."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[tuple[Any, ...]] = []

    def run_reporting(self, job, on_progress, on_done=None, on_error=None, name="job"):  # type: ignore[no-untyped-def]
        from ddpm_studio.gui.workers import TaskHandle

        handle = TaskHandle()
        handle._emit = on_progress
        self.pending.append((job, handle, on_done))
        return handle


def test_a_scan_is_cancelled_by_a_newer_choice_and_by_start_and_resumes_after_the_run(qtbot, tmp_path: Path) -> None:
    form, dataset = MagicMock(spec=SettingsView), MagicMock(spec=DatasetView)
    tasks = DeferredTasks()
    p = SettingsPresenter(form, dataset, MagicMock(spec=DialogService), prefs(tmp_path / "runs"), tasks)
    p.go_live()
    one, two = write_pngs(tmp_path / "one", 3), write_pngs(tmp_path / "two", 4)
    p.choose_folder(str(one))
    p.choose_folder(str(two))
    (_job, first, _done), (_job2, second, _done2) = tasks.pending
    assert first.cancelled() and not second.cancelled()  # the newer choice supersedes the first scan
    second.report(ScanSummary(str(two), ("a.png",), (), (), checked=1, total=4))  # a first part is checked
    assert "checking 1 / 4" in dataset.show_status.call_args.args[0]
    p.set_run_active(True)
    assert second.cancelled()  # the run decodes the folder itself
    p.set_run_active(False)
    assert len(tasks.pending) == 3 and not tasks.pending[-1][1].cancelled()  # checking again (from its cache)


def test_other_views_change_fields_through_set_values_but_not_during_a_run(setup) -> None:
    p, form, verdicts = setup["p"], setup["form"], setup["verdicts"]
    p.set_values("optim", {"train_minutes": 15.0})  # the toolbar's "Train for" box
    assert p.cfg.optim.train_minutes == 15.0 and last(form.set_config)[0] == p.cfg
    assert verdicts[-1].ok and verdicts[-1].cfg.optim.train_minutes == 15.0
    p.set_run_active(True)
    p.set_values("optim", {"device": "cpu"})
    assert p.cfg.optim.device == "auto"  # a running run's settings are its own
    p.set_run_active(False)
    p.set_values("optim", {"device": "cpu"})  # Train on the CPU instead, once the run has ended
    assert verdicts[-1].cfg.optim.device == "cpu" and verdicts[-1].cfg.optim.train_minutes == 15.0
