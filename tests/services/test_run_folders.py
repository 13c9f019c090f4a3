"""Run folders: the best checkpoint (issue 15 item 2), continuing a run that has no checkpoint (issue 14 defect 5),
readable default names (defect 10), and the CLI's side of them."""

import io
import json
import re

import pytest

from ddpm_studio.services import config as config_mod
from ddpm_studio.services import config_files
from ddpm_studio.services import events as ev
from ddpm_studio.services.control import drive
from ddpm_studio.services.preview import Previewer
from ddpm_studio.services.runs import (
    CannotContinue,
    RunFolder,
    default_run_name,
    plan_continue,
    resolve_checkpoint,
)
from ddpm_studio.services.training import TrainingError, TrainingSession


def collect(session, on_event=None):
    events = []
    drive(session.steps(), lambda e: (events.append(e), on_event and on_event(e)))
    return events


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory):
    """8 steps, a checkpoint every 2, keep 1; validation losses scripted by step so step 4 is the best."""
    base = tmp_path_factory.mktemp("best")
    script = {2: 0.5, 4: 0.2, 6: 0.4, 8: 0.3}
    calls = []

    def validation_loss(self, model):
        calls.append(model)
        return script[len(calls) * 2]

    cfg = config_mod.check(config_mod.from_dict({
        "data": {"source": "demo", "image_size": 16}, "model": {"preset": "tiny"}, "diffusion": {"timesteps": 50},
        "optim": {"batch_size": 4, "total_steps": 8, "device": "cpu"},
        "schedule": {"preview_every": 0, "checkpoint_every": 2, "checkpoint_minutes": 0, "keep_last": 1},
    }))
    session = TrainingSession(cfg, runs_dir=base, run_name="b")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Previewer, "validation_loss", validation_loss)
        events = collect(session)
    assert len(calls) == 4 and all(model is session.ema.model for model in calls)  # the EMA weights: samples' own
    return RunFolder(base / "b"), events


def test_the_best_checkpoint_is_kept_recorded_and_marked(scored_run):
    run, events = scored_run
    deleted = [p for e in events if isinstance(e, ev.CheckpointSaved) for p in e.deleted]
    assert [c.step for c in run.checkpoints()] == [4, 8]  # keep_last 1, plus the best, which retention never deletes
    assert any(p.endswith("step_00000002.pt") for p in deleted) and any(p.endswith("step_00000006.pt") for p in deleted)
    best = run.best_checkpoint()
    assert best is not None and best.step == 4 and best.val_loss == pytest.approx(0.2) and best.best
    assert [(c.step, c.best, c.val_loss) for c in run.checkpoints()] == [(4, True, 0.2), (8, False, 0.3)]
    status = run.read_status()
    assert status["best_checkpoint"]["step"] == 4 and status["checkpoint_val_losses"] == {"4": 0.2, "8": 0.3}
    assert resolve_checkpoint(run.path, best=True) == run.checkpoint_path(4)
    assert resolve_checkpoint(run.path) == run.checkpoint_path(8)


def test_a_deleted_best_checkpoint_is_not_offered(scored_run, tmp_path):
    import shutil

    run = RunFolder(shutil.copytree(scored_run[0].path, tmp_path / "copy"))
    run.checkpoint_path(4).unlink()
    assert run.best_checkpoint().step == 8  # the lowest loss among the checkpoints still on disk


def test_cli_runs_marks_the_best_and_sample_best_uses_it(scored_run, tmp_path, capsys):
    from ddpm_studio.cli import main

    run, _ = scored_run
    assert main(["runs", "--runs-dir", str(run.path.parent)]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("b "))
    assert "best step_00000004.pt (validation loss 0.2000)" in line and "last checkpoint step_00000008.pt" in line
    out = tmp_path / "out"
    assert main(["sample", str(run.path), "--best", "--num-images", "2", "--steps", "2", "--out", str(out)]) == 0
    assert next(p.name for p in out.iterdir()).startswith("step_00000004")
    evaluated = tmp_path / "eval"
    assert main(["evaluate", str(run.path), "--best", "--num-images", "2", "--sample-batch-size", "2", "--steps", "2",
                 "--fid", "off", "--out", str(evaluated)]) == 0
    assert next(p.name for p in evaluated.iterdir()).startswith("step_00000004")
    assert main(["sample", str(run.checkpoint_path(8)), "--best", "--num-images", "2", "--out", str(out)]) == 1
    assert "give a run folder" in capsys.readouterr().err


def test_checkpoints_without_a_score_have_no_best(tmp_path):
    run = RunFolder.create(tmp_path, "old")
    run.checkpoint_path(10).write_bytes(b"x")
    assert run.best_checkpoint() is None and run.checkpoints()[0].val_loss is None
    with pytest.raises(ValueError, match="no checkpoint with a validation loss"):
        resolve_checkpoint(run.path, best=True)


def _crashed_before_first_checkpoint(tmp_path, tiny_cfg, monkeypatch):
    """A run that fails at step 2, before any checkpoint: its folder has config.toml and no weights."""
    def boom(self):
        raise RuntimeError("power cut")

    with monkeypatch.context() as m:
        m.setattr(TrainingSession, "_train_step", boom)
        with pytest.raises(RuntimeError):
            collect(TrainingSession(tiny_cfg(optim={"total_steps": 4, "seed": 7}), runs_dir=tmp_path, run_name="crashed"))
    run = RunFolder(tmp_path / "crashed")
    assert run.config_path.exists() and not run.checkpoints()
    return run


def test_continue_a_run_with_no_checkpoint_starts_it_again_from_step_0(tmp_path, tiny_cfg, monkeypatch):
    run = _crashed_before_first_checkpoint(tmp_path, tiny_cfg, monkeypatch)
    plan = plan_continue(run.path)
    assert plan.from_scratch and plan.settings.optim.seed == 7
    events = collect(TrainingSession(resume_from=run.path, overrides={"optim": {"total_steps": 3}}))
    status = [e.message for e in events if isinstance(e, ev.Status)]
    assert any("no checkpoint yet: starting it again from step 0 with its saved settings" in m for m in status)
    started = next(e for e in events if isinstance(e, ev.RunStarted))
    assert started.run_dir == str(run.path) and started.step == 0 and started.resumed_from is None
    assert events[-1].reason == "completed" and [c.step for c in run.checkpoints()] == [3]
    saved = config_files.load_config_file(run.config_path, saved_run=True)
    assert saved.optim.seed == 7 and saved.optim.total_steps == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crashed"]  # the same folder, no new one


def test_cli_resume_of_a_run_with_no_checkpoint(tmp_path, tiny_cfg, monkeypatch, capsys):
    from ddpm_studio.cli import main

    run = _crashed_before_first_checkpoint(tmp_path, tiny_cfg, monkeypatch)
    assert main(["train", "--resume", str(run.path), "--total-steps", "2"]) == 0
    err = capsys.readouterr().err
    assert "has no checkpoint yet: starting it again from step 0" in err
    assert [c.step for c in run.checkpoints()] == [2]


def test_continue_explains_when_the_saved_settings_cannot_be_read(tmp_path, tiny_cfg, monkeypatch, capsys):
    from ddpm_studio.cli import main

    run = _crashed_before_first_checkpoint(tmp_path, tiny_cfg, monkeypatch)
    run.config_path.write_text("[optim]\nbatch_size = 'many'\n", encoding="utf-8")
    with pytest.raises(CannotContinue, match=r"cannot be used: Batch size must be a whole number.*start a new run"):
        plan_continue(run.path)
    with pytest.raises(TrainingError, match="Fix that file, or start a new run"):
        collect(TrainingSession(resume_from=run.path))
    assert main(["train", "--resume", str(run.path)]) == 1
    err = capsys.readouterr().err
    assert "has no checkpoint yet" in err and "config.toml" in err and "start a new run" in err
    assert run.config_path.read_text(encoding="utf-8") == "[optim]\nbatch_size = 'many'\n"  # left as it was


def test_continue_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CannotContinue, match="not a run folder"):
        plan_continue(tmp_path / "empty")


def test_default_run_names_say_what_and_when(tmp_path, tiny_cfg):
    when = 1_800_000_000.0  # 2027-01-15 in UTC; the name uses local time
    stamp = __import__("time").strftime("%Y%m%d-%H%M", __import__("time").localtime(when))
    assert default_run_name("demo", "", when) == f"shapes-{stamp}"
    assert default_run_name("folder", "/home/me/My Cats/", when) == f"My-Cats-{stamp}"
    assert default_run_name("fashion_mnist", "/data", when) == f"fashion-mnist-{stamp}"
    events = collect(TrainingSession(tiny_cfg(optim={"total_steps": 1}), runs_dir=tmp_path))
    name = RunFolder(next(e for e in events if isinstance(e, ev.RunStarted)).run_dir).name
    assert re.fullmatch(r"shapes-\d{8}-\d{4}", name), name
    assert RunFolder.create(tmp_path, name).name == f"{name}-2"  # still unique


def test_cli_help_says_no_command_opens_the_window(capsys):
    from ddpm_studio.cli import main

    with pytest.raises(SystemExit):
        main(["--help"])
    assert "with no command to open the desktop app" in capsys.readouterr().out


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_fits_the_terminal_so_redraws_leave_no_lines(monkeypatch):
    """`sample` printed blank lines after "Loading checkpoint…": a 100-character bar wraps on an 80-column
    terminal, and each "\\r" redraw then leaves a line of spaces behind."""
    from ddpm_studio.cli_progress import EventPrinter

    monkeypatch.setenv("COLUMNS", "80")
    stream = FakeTerminal()
    printer = EventPrinter(stream=stream, interval=0.0)
    printer(ev.Status("Loading checkpoint"))
    for done in range(1, 21):
        printer(ev.SamplingProgress(done, 20, 1, 1, 3.0))
    printer.close()
    text = stream.getvalue()
    lines = text.split("\n")
    assert lines[0] == "Loading checkpoint…"
    assert all(len(part) < 80 for line in lines for part in line.split("\r")), max(map(len, re.split("[\r\n]", text)))
    assert lines[1].split("\r")[-1].startswith("[") and lines[2:] == [""]  # one bar line, redrawn in place


def test_progress_bar_erases_a_longer_previous_line(monkeypatch):
    from ddpm_studio.cli_progress import EventPrinter

    monkeypatch.setenv("COLUMNS", "200")
    stream = FakeTerminal()
    printer = EventPrinter(stream=stream, interval=0.0)
    printer(ev.Status("Loading images", 5, 1000))
    printer(ev.Status("Loading images", 6, 10))
    first, second = stream.getvalue().split("\r")[1:]
    assert len(second) >= len(first)


def test_log_lines_do_not_land_inside_the_bar(monkeypatch):
    import logging

    from ddpm_studio.cli_progress import EventPrinter, logging_through

    monkeypatch.setenv("COLUMNS", "80")
    stream = FakeTerminal()
    printer = EventPrinter(stream=stream, interval=0.0)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with logging_through(printer):
            printer(ev.TrainProgress(1, 10, 0.5, 1e-3, 10.0, 5.0, 1.0))
            logging.getLogger("ddpm_studio.services.training").warning("Paused at step 1")
        assert "\nWARNING: Paused at step 1\n" in stream.getvalue()
        assert root.handlers[-1] is handler  # put back
    finally:
        root.removeHandler(handler)


def test_run_json_is_valid_json_after_every_write(tmp_path):
    run = RunFolder.create(tmp_path, "j")
    for step in range(5):
        run.write_status(step=step, **run.scores_record({step: 0.1 * (5 - step)}))
    assert json.loads((run.path / "run.json").read_text())["step"] == 4
