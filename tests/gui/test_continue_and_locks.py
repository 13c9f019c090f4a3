"""Continue and Delete in the real window: a run that crashed before its first checkpoint trains again from step 0
(issue 14 defect 5), and a run another process trains refuses both with the holder named (issue 18)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from ddpm_studio.gui.presenters.run_state import RunState
from ddpm_studio.services import config_files
from ddpm_studio.services.runs import RunFolder
from tests.gui.conftest import tiny_config
from tests.reliability.test_run_lock import Holder, fingerprint

LONG = 90_000


@pytest.fixture(scope="module")
def trained(tmp_path_factory: Any) -> Path:
    """A tiny demo run with checkpoints at steps 1 and 2."""
    from ddpm_studio.services.control import drive
    from ddpm_studio.services.training import TrainingSession

    base = tmp_path_factory.mktemp("locked")
    cfg = tiny_config(data={"source": "demo"}, optim={"total_steps": 2},
                      schedule={"preview_every": 0, "checkpoint_every": 1, "keep_last": 5})
    drive(TrainingSession(cfg, runs_dir=base, run_name="held").steps(), lambda _e: None)
    return base / "held"


def select_run(w: Any, run: RunFolder) -> None:
    w.runs_panel.table.select_path(str(run.path))
    assert w.runs_panel.buttons["continue"].isEnabled()


def test_continue_a_run_that_crashed_before_its_first_checkpoint_trains_it_from_step_0(app_handle, dialogs, qtbot) -> None:
    studio, w = app_handle.studio, app_handle.window
    run = RunFolder.create(os.environ["DDPM_STUDIO_RUNS_DIR"], "early-crash")
    config_files.save_config_file(tiny_config(data={"source": "demo"}, optim={"total_steps": 6, "seed": 7}), run.config_path)
    (run.path / "run.json").write_text(json.dumps({"state": "running", "pid": 2**22 + 12345, "step": 3}))
    studio.runs.refresh_runs()
    select_run(w, run)
    w.runs_panel.buttons["continue"].click()
    qtbot.waitUntil(lambda: studio.training.run is not None, timeout=LONG)
    assert Path(studio.training.run.run_dir) == run.path and studio.training.run.step == 0  # its own folder, step 0
    assert studio.settings.cfg.optim.seed == 7  # with its saved settings
    qtbot.waitUntil(lambda: not studio.training.is_running(), timeout=LONG)
    assert studio.training.state is RunState.FINISHED and run.latest_checkpoint().step == 6
    assert not dialogs_errors()


def test_continue_and_delete_on_a_run_another_process_trains_name_the_holder_and_change_nothing(
        app_handle, dialogs, qtbot, trained: Path, tmp_path: Path) -> None:
    studio, w = app_handle.studio, app_handle.window
    run = RunFolder(Path(os.environ["DDPM_STUDIO_RUNS_DIR"]) / "held")
    shutil.copytree(trained, run.path)
    holder = Holder(tmp_path, run)
    try:
        before = fingerprint(run)
        studio.runs.refresh_runs()
        select_run(w, run)
        w.runs_panel.buttons["continue"].click()
        qtbot.waitUntil(lambda: bool(dialogs_errors()), timeout=LONG)
        title, text = dialogs_errors()[-1]
        assert title == "Cannot continue" and f"process {holder.proc.pid} on host" in text and " since " in text
        assert not studio.training.is_running() and studio.training.state is RunState.IDLE

        newest = run.latest_checkpoint().path
        w.checkpoints_panel.table.select_path(str(newest))
        dialogs.answers = [0]  # "Delete"
        w.checkpoints_panel.buttons["delete"].click()
        title, text = dialogs_errors()[-1]
        assert title == "Cannot delete" and f"process {holder.proc.pid} on host" in text and newest.exists()
        assert fingerprint(run) == before
    finally:
        holder.release()


def dialogs_errors() -> list[tuple[str, str]]:
    from ddpm_studio.gui import dialogs as dlg

    return list(dlg.shown_errors)
