"""Kill tests: ``python -m ddpm_studio train`` is SIGKILLed at seeded random moments, then resumed.

Every kill must leave only readable checkpoints, the next ``train --resume RUN`` must continue from the
newest one, and no more than one checkpoint interval of steps may be lost. A third of the kills wait for
a checkpoint's temp file to appear, so they land in the middle of a checkpoint write; the child writes
through ``tests/reliability/hooks/sitecustomize.py``, which only slows each ``write()`` of the real
writer (torch.save into a temp file, fsync, rename) so that the window is wide enough to hit.

Trials: ``DDPM_STUDIO_KILL_TRIALS`` (CI default 5; the full trial is 20), seed ``DDPM_STUDIO_KILL_SEED``.
The numbers are printed (``-s``) and written to ``$DDPM_STUDIO_KILL_REPORT`` as JSON when set.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path

from ddpm_studio.core.checkpoint import load_checkpoint
from ddpm_studio.services.metrics import read_metrics
from ddpm_studio.services.runs import RunFolder
from tests.reliability.conftest import TINY_TRAIN_FLAGS, child_env, cli_command

TRIALS = int(os.environ.get("DDPM_STUDIO_KILL_TRIALS", "5"))
SEED = int(os.environ.get("DDPM_STUDIO_KILL_SEED", "0"))
CHECKPOINT_EVERY = 4
SLOW_WRITE = "0.0003"  # seconds per write() call: a 11 MB checkpoint (~3200 writes) takes ~1 s to write
RESUMED = re.compile(r"Resuming from (\S+) at step (\d+)")


def _temp_files(run: RunFolder) -> list[Path]:
    return [p for p in run.checkpoints_dir.glob(".*.tmp")] if run.checkpoints_dir.is_dir() else []


def _wait_for(predicate, timeout: float, proc: subprocess.Popen) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    return False


def _check_checkpoints(run: RunFolder) -> list[int]:
    """Load every checkpoint under its final name (each must be complete); their steps, oldest first."""
    steps = []
    for info in run.checkpoints():
        data = load_checkpoint(info.path)  # raises CheckpointError on a half-written file
        assert data["step"] == info.step, info.path
        steps.append(info.step)
    return steps


def test_sigkill_at_random_moments_then_resume(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    env = child_env(tmp_path, DDPM_STUDIO_TEST_SLOW_WRITE=SLOW_WRITE)
    run = RunFolder(tmp_path / "runs" / "killed")
    new_run = cli_command("train", *TINY_TRAIN_FLAGS, "--total-steps", "100000", "--checkpoint-every", str(CHECKPOINT_EVERY),
                          "--keep-last", "3", "--name", "killed")
    resume = cli_command("train", "--resume", str(run.path))
    report: dict = {"trials": TRIALS, "seed": SEED, "checkpoint_every": CHECKPOINT_EVERY, "kills": []}
    started = time.monotonic()
    expected_resume_step: int | None = None
    for trial in range(TRIALS):
        mode = ("during-write", "after-start", "anytime")[trial % 3]
        log_path = tmp_path / f"trial{trial}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(new_run if trial == 0 else resume, env=env, cwd=tmp_path, stdout=log,
                                    stderr=subprocess.STDOUT)
        try:
            before = {p.name for p in run.checkpoints_dir.glob("*")} if run.checkpoints_dir.is_dir() else set()
            if trial == 0:  # the first run must have a checkpoint before anything can be resumed
                assert _wait_for(lambda: bool(run.checkpoints()), 120, proc), log_path.read_text(errors="replace")
            if mode == "during-write":
                # A checkpoint write of this process (not a stale temp file left by an earlier kill).
                landed = _wait_for(lambda before=before: any(p.name not in before for p in _temp_files(run)), 120, proc)
                assert landed, log_path.read_text(errors="replace")
                time.sleep(rng.uniform(0.0, 0.8))
            elif mode == "after-start":
                first = (read_metrics(run.metrics_path) or [{"step": 0}])[-1]["step"]
                newer = lambda first=first: any(r["step"] > first for r in read_metrics(run.metrics_path)[-1:])  # noqa: E731
                assert _wait_for(newer, 120, proc), \
                    log_path.read_text(errors="replace")
                time.sleep(rng.uniform(0.0, 2.5))
            else:
                time.sleep(rng.uniform(0.5, 8.0))  # may land while importing, loading images, or training
            writing = [p.name for p in _temp_files(run) if p.name not in before]
            assert proc.poll() is None, f"the child ended on its own:\n{log_path.read_text(errors='replace')}"
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(30) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        text = log_path.read_text(errors="replace")
        assert "Traceback" not in text, text
        match = RESUMED.search(text)
        if trial > 0 and match:  # it got as far as loading: from the newest checkpoint there was
            assert int(match.group(2)) == expected_resume_step, text
        done = max((r["step"] for r in read_metrics(run.metrics_path) if "loss" in r), default=0)
        steps = _check_checkpoints(run)
        assert steps, "a kill must never leave a run without a checkpoint"
        lost = done - steps[-1]
        assert 0 <= lost <= CHECKPOINT_EVERY, (done, steps)
        expected_resume_step = steps[-1]
        report["kills"].append({"trial": trial, "mode": mode, "steps_done": done, "newest_checkpoint": steps[-1],
                                "steps_lost": lost, "checkpoints": steps, "temp_files_at_kill": writing,
                                "resumed": bool(match)})

    # The last resume runs to the end: it starts at the newest checkpoint and trains a few more steps.
    target = expected_resume_step + 6
    final = subprocess.run([*resume, "--total-steps", str(target)], env=child_env(tmp_path), cwd=tmp_path,
                           capture_output=True, text=True, timeout=180)
    assert final.returncode == 0, final.stderr
    assert "Traceback" not in final.stderr
    assert f"at step {expected_resume_step}" in RESUMED.search(final.stderr).group(0)
    assert f"Training completed at step {target}" in final.stderr
    steps = _check_checkpoints(run)
    assert steps[-1] == target
    assert not _temp_files(run), "temp files of killed writes must be cleaned up after the next good save"
    logged = [r["step"] for r in read_metrics(run.metrics_path) if "loss" in r]
    assert logged == list(range(1, target + 1)), "the loss log has no gap and no duplicate step after the resumes"

    kills = report["kills"]
    report.update(
        survived=sum(1 for _ in kills), tried=TRIALS, max_steps_lost=max(k["steps_lost"] for k in kills),
        kills_during_write=sum(1 for k in kills if k["temp_files_at_kill"]), seconds=round(time.monotonic() - started, 1),
    )
    print(f"\nkill trials: {report['survived']}/{report['tried']} survived, "
          f"{report['kills_during_write']} during a checkpoint write, max steps lost {report['max_steps_lost']} "
          f"(interval {CHECKPOINT_EVERY}), {report['seconds']} s")
    out = os.environ.get("DDPM_STUDIO_KILL_REPORT")
    if out:
        Path(out).write_text(json.dumps(report, indent=1))


def test_stale_temp_files_of_dead_writers_are_removed_and_others_kept(tmp_path: Path) -> None:
    """What lets the kill test end with no temp file: retention removes the leftovers of killed writes, only those."""
    import sys

    from ddpm_studio.core.atomic import atomic_write, remove_stale_temp_files

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    stale = folder / f".step_00000008.pt.{dead.pid}.k2j4h5g6.tmp"
    live = folder / f".step_00000012.pt.{os.getpid()}.a1b2c3d4.tmp"  # a write in progress (this process)
    other = folder / ".step_00000004.pt.1.zzzzzzzz.tmp"  # pid 1 is alive (init): kept
    unnamed_new = folder / ".step_00000002.pt.abcdefgh.tmp"  # no pid, recent: kept
    unnamed_old = folder / ".step_00000001.pt.hgfedcba.tmp"  # no pid, two days old: removed
    user_file = folder / "notes.tmp"
    for p in (stale, live, other, unnamed_new, unnamed_old, user_file):
        p.write_bytes(b"PK\x03\x04partial")
    old = time.time() - 2 * 24 * 3600
    os.utime(unnamed_old, (old, old))
    removed = remove_stale_temp_files(folder, ".step_*.tmp")
    assert sorted(p.name for p in removed) == sorted([stale.name, unnamed_old.name])
    assert live.exists() and other.exists() and unnamed_new.exists() and user_file.exists()
    # The temp names atomic_write makes carry this process's pid.
    seen = []
    atomic_write(folder / "x.bin", lambda fh: seen.extend(p.name for p in folder.glob(".x.bin.*.tmp")))
    assert len(seen) == 1 and f".x.bin.{os.getpid()}." in seen[0]


def test_retention_removes_leftovers_only_after_a_good_save(tmp_path: Path) -> None:
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = RunFolder.create(tmp_path, "r")
    for step in (1, 2, 3):
        run.checkpoint_path(step).write_bytes(b"x")
    leftover = run.checkpoints_dir / f".step_00000004.pt.{dead.pid}.qqqqqqqq.tmp"
    leftover.write_bytes(b"partial")
    assert [i.step for i in run.checkpoints()] == [1, 2, 3], "a temp file is never taken for a checkpoint"
    deleted = run.apply_retention(2, protect=run.checkpoint_path(3))
    assert [p.name for p in deleted] == ["step_00000001.pt"]
    assert not leftover.exists()
