"""One trainer per run folder (services/run_lock.py), with real second processes.

A run folder that another process trains refuses a second ``train --resume``, the app's Continue (the same
``TrainingSession`` call) and a checkpoint delete, with a message naming the holder, and changes nothing;
reading (sample, the Runs list, loading a checkpoint) is never blocked. A lock left by a killed process of
this host is taken over with a note; one from another host is refused until forced.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ddpm_studio import cli
from ddpm_studio.core.checkpoint import load_checkpoint
from ddpm_studio.services import config as c
from ddpm_studio.services import run_lock
from ddpm_studio.services.control import drive
from ddpm_studio.services.run_lock import HOLDER_FILE, RunLockError, acquire, delete_checkpoint, training_holder
from ddpm_studio.services.runs import RunFolder, list_runs, resolve_checkpoint
from ddpm_studio.services.training import TrainingSession
from tests.reliability.conftest import TINY_TRAIN_FLAGS, assert_clean_failure, child_env, cli_command

HOLD_SCRIPT = """
import sys, time
from ddpm_studio.services.run_lock import acquire
lock = acquire(sys.argv[1], "training")
print("locked", flush=True)
sys.stdin.read()  # hold until the test closes our stdin (or kills us)
lock.release()
"""


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run with checkpoints at steps 2 and 4 (copied per test: the tests lock, delete and resume it)."""
    base = tmp_path_factory.mktemp("lock-run")
    cfg = c.check(c.from_dict({
        "data": {"source": "demo", "image_size": 16}, "model": {"preset": "tiny"}, "diffusion": {"timesteps": 50},
        "optim": {"batch_size": 4, "total_steps": 4, "device": "cpu", "mixed_precision": "off"},
        "schedule": {"preview_every": 0, "checkpoint_every": 2, "checkpoint_minutes": 0, "log_every": 1, "keep_last": 5},
    }))
    drive(TrainingSession(cfg, runs_dir=base, run_name="run").steps(), lambda e: None)
    return base / "run"


@pytest.fixture
def run(trained_run: Path, tmp_path: Path) -> RunFolder:
    path = tmp_path / "runs" / "run"
    shutil.copytree(trained_run, path)
    return RunFolder(path)


def fingerprint(run: RunFolder) -> dict[str, str]:
    """Every file of the run folder (but the lock files) and a hash of its bytes: 'nothing changed' is this equal."""
    return {str(p.relative_to(run.path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.path.rglob("*")) if p.is_file() and p.name not in (run_lock.LOCK_FILE, HOLDER_FILE)}


class Holder:
    """Another process holding the run's lock (only run_lock imported: starts in well under a second)."""

    def __init__(self, tmp_path: Path, run: RunFolder) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", HOLD_SCRIPT, str(run.path)], env=child_env(tmp_path),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "locked"

    def release(self) -> None:
        self.proc.stdin.close()
        assert self.proc.wait(30) == 0

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)


def test_a_second_trainer_continue_and_delete_are_refused_while_another_process_holds_the_run(
        tmp_path: Path, run: RunFolder) -> None:
    holder = Holder(tmp_path, run)
    try:
        before = fingerprint(run)
        newest = run.latest_checkpoint().path
        with pytest.raises(RunLockError) as refused:
            acquire(run.path)
        text = str(refused.value)
        assert f"process {holder.proc.pid} on host \"{socket.gethostname()}\" since " in text, text
        assert "Nothing was changed" in text

        # The app's Continue builds exactly this session; it is refused before any image is loaded or file written.
        session = TrainingSession(resume_from=newest, overrides={"optim": {"total_steps": 8}})
        with pytest.raises(RunLockError, match=f"process {holder.proc.pid} on host"):
            drive(session.steps(), lambda e: None)
        assert session.run is None and not hasattr(session, "data")  # refused before the images load

        with pytest.raises(RunLockError, match=rf"Cannot delete {newest.name}: .*process {holder.proc.pid}"):
            delete_checkpoint(newest)
        assert newest.exists()

        # Readers take no lock: the Runs list, the holder shown in it, resolving and loading checkpoints.
        assert [r.path for r in list_runs(run.path.parent)] == [run.path]
        assert training_holder(run.path).pid == holder.proc.pid
        assert load_checkpoint(resolve_checkpoint(run.path))["step"] == 4
        assert fingerprint(run) == before
    finally:
        holder.release()
    assert not (run.path / HOLDER_FILE).exists()  # released cleanly: its record went with it
    assert training_holder(run.path) is None
    delete_checkpoint(run.checkpoint_path(2))  # free again
    assert not run.checkpoint_path(2).exists()


@pytest.mark.timeout(240)
def test_two_real_train_processes_on_one_run_folder(tmp_path: Path, run: RunFolder) -> None:
    """``train --resume RUN`` twice: the second exits at once with the first one's pid; the first trains on."""
    env = child_env(tmp_path)
    first_log = tmp_path / "first.log"
    with open(first_log, "wb") as log:
        first = subprocess.Popen(cli_command("train", "--resume", str(run.path), "--total-steps", "100000",
                                             "--checkpoint-every", "0", "--log-every", "1"),
                                 env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 150
        while training_holder(run.path) is None or '"step": 5' not in run.metrics_path.read_text():
            assert first.poll() is None and time.monotonic() < deadline, first_log.read_text(errors="replace")
            time.sleep(0.2)
        checkpoints = [ck.path.name for ck in run.checkpoints()]
        second = subprocess.run(cli_command("train", "--resume", str(run.path)), env=env, cwd=tmp_path,
                                capture_output=True, text=True, timeout=150)
        assert_clean_failure(second.returncode, second.stderr, f"process {first.pid} on host", "is in use by",
                             expected_code=1)
        assert [ck.path.name for ck in run.checkpoints()] == checkpoints
        assert first.poll() is None  # the first trainer was not disturbed
    finally:
        first.send_signal(signal.SIGINT)  # Ctrl-C: a checkpoint, then exit
        first.wait(120)
    assert first.returncode == 0, first_log.read_text(errors="replace")
    assert run.latest_checkpoint().step > 4 and not (run.path / HOLDER_FILE).exists()


def test_a_lock_left_by_a_killed_process_is_taken_over_with_a_note(
        tmp_path: Path, run: RunFolder, caplog: pytest.LogCaptureFixture) -> None:
    holder = Holder(tmp_path, run)
    holder.kill()  # SIGKILL: the OS drops its flock, its record stays
    left = json.loads((run.path / HOLDER_FILE).read_text())
    assert left["pid"] == holder.proc.pid
    caplog.set_level(logging.WARNING, logger="ddpm_studio.services.run_lock")
    session = TrainingSession(resume_from=run.latest_checkpoint().path, overrides={"optim": {"total_steps": 5}})
    drive(session.steps(), lambda e: None)
    assert session.step == 5 and run.latest_checkpoint().step == 5
    notes = [r.getMessage() for r in caplog.records]
    assert any(f"Taking over the lock of run run from process {holder.proc.pid}" in n and "no longer running" in n
               for n in notes), notes
    assert not (run.path / HOLDER_FILE).exists()


def test_a_record_from_another_host_is_refused_until_forced(tmp_path: Path, run: RunFolder,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    record = {"pid": 4242, "host": "cluster-node-7", "since": time.time() - 3600, "purpose": "training",
              "command": "ddpm-studio train --resume run", "token": "abc"}
    (run.path / HOLDER_FILE).write_text(json.dumps(record))
    before = fingerprint(run)
    code = cli.main(["train", "--resume", str(run.path)])
    err = capsys.readouterr().err
    assert_clean_failure(code, err, 'process 4242 on host "cluster-node-7"', "cannot tell whether",
                         f"--resume {run.path} --force-unlock", f"delete {run.path / HOLDER_FILE}", expected_code=1)
    assert fingerprint(run) == before and json.loads((run.path / HOLDER_FILE).read_text()) == record
    with pytest.raises(RunLockError, match="cluster-node-7"):
        delete_checkpoint(run.checkpoint_path(2))
    assert run.checkpoint_path(2).exists()

    code = cli.main(["train", "--resume", str(run.path), "--force-unlock", "--total-steps", "5"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert 'Removed the lock record of process 4242 on host "cluster-node-7"' in err
    assert run.latest_checkpoint().step == 5 and not (run.path / HOLDER_FILE).exists()


def test_a_running_holder_cannot_be_forced(tmp_path: Path, run: RunFolder) -> None:
    holder = Holder(tmp_path, run)
    try:
        with pytest.raises(RunLockError, match=f"process {holder.proc.pid}"):
            run_lock.force_unlock(run.path)
        assert json.loads((run.path / HOLDER_FILE).read_text())["pid"] == holder.proc.pid
    finally:
        holder.release()


def test_this_process_may_delete_while_it_trains_the_run(run: RunFolder) -> None:
    """The window deletes an older checkpoint of the run its own training thread holds (as before the lock)."""
    with acquire(run.path) as lock:
        assert run_lock.held_here(run.path) is lock
        delete_checkpoint(run.checkpoint_path(2))
        with pytest.raises(RunLockError, match="already in use in this process"):
            acquire(run.path)  # but a second trainer in this process is refused like any other
    assert not run.checkpoint_path(2).exists() and run_lock.held_here(run.path) is None


def test_without_os_locks_the_record_and_its_pid_decide(tmp_path: Path, run: RunFolder,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """A file system without flock (some NFS mounts): the record is created exclusively and judged by its pid."""
    monkeypatch.setattr(run_lock, "_os_lock", lambda fd: None)
    caplog.set_level(logging.WARNING, logger="ddpm_studio.services.run_lock")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = {"pid": sleeper.pid, "host": socket.gethostname(), "since": time.time(), "purpose": "training"}
        (run.path / HOLDER_FILE).write_text(json.dumps(live))
        with pytest.raises(RunLockError, match=f"process {sleeper.pid} on host"):
            acquire(run.path)
        assert any("does not support file locks" in r.getMessage() for r in caplog.records)
    finally:
        sleeper.kill()
        sleeper.wait()
    lock = acquire(run.path)  # the same record, its pid now gone: taken over
    assert not lock.os_locked and json.loads((run.path / HOLDER_FILE).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (run.path / HOLDER_FILE).exists()
    # Two processes creating the record at once: the link of a complete file succeeds for one of them only.
    run_lock._create_exclusively(run.path / HOLDER_FILE, b"{}", replace=False)
    with pytest.raises(RunLockError):
        run_lock._create_exclusively(run.path / HOLDER_FILE, b"{}", replace=False)
    assert not list(run.path.glob(".*.tmp"))


def test_torchrun_ranks_share_rank_0s_refusal() -> None:
    """Under torchrun rank 0 alone takes the lock; the others raise its refusal instead of waiting at a collective."""

    class Rank1:
        is_main = False

        @staticmethod
        def broadcast(value: object) -> object:
            assert value is None  # rank 1 never tries the lock itself
            return "Run x is in use by process 7"

    with pytest.raises(RunLockError, match="in use by process 7"):
        run_lock.claim_for_training("/nonexistent/never/touched", Rank1())


def test_new_runs_are_locked_while_they_train(tmp_path: Path) -> None:
    session = TrainingSession(c.check(c.from_dict({
        "data": {"source": "demo", "image_size": 16}, "model": {"preset": "tiny"}, "diffusion": {"timesteps": 50},
        "optim": {"batch_size": 4, "total_steps": 2, "device": "cpu"},
        "schedule": {"preview_every": 0, "checkpoint_every": 0, "checkpoint_minutes": 0}})), runs_dir=tmp_path, run_name="new")
    seen = []
    for _event in session.steps():
        if session.run is not None and not seen:
            seen.append(json.loads((session.run.path / HOLDER_FILE).read_text()))
    assert seen and seen[0]["pid"] == os.getpid() and seen[0]["purpose"] == "training"
    assert not (tmp_path / "new" / HOLDER_FILE).exists()


def test_cli_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["train", *TINY_TRAIN_FLAGS, "--force-unlock"]) == 2
    assert "--force-unlock goes with --resume" in capsys.readouterr().err
