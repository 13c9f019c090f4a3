"""Weights & Biases logging: offline run files, one W&B run across a resume, and training that never stops for W&B."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from ddpm_studio.services import events as ev
from ddpm_studio.services.control import drive
from ddpm_studio.services.runs import RunFolder
from ddpm_studio.services.training import TrainingSession

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    """W&B's own settings and caches inside the test folder, never the user's home."""
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    return monkeypatch


def settled(path, timeout=30.0):
    """The bytes of a W&B offline file once its records are in: wandb's service closes the file a moment after
    run.finish() returns (milliseconds, longer on a loaded machine), so the test waits for that, bounded."""
    deadline = time.monotonic() + timeout
    while b"loss" not in (data := path.read_bytes()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return data


def train(cfg, runs_dir, name="w", resume=None):
    events = []
    if resume is None:
        session = TrainingSession(cfg, runs_dir=runs_dir, run_name=name)
    else:
        session = TrainingSession(resume_from=resume, overrides={"optim": {"total_steps": cfg.optim.total_steps}})
    drive(session.steps(), events.append)
    assert isinstance(events[-1], ev.RunFinished) and events[-1].reason == "completed"
    return RunFolder(runs_dir / name)


def test_offline_run_logs_metrics_and_previews_and_a_resume_continues_it(tiny_cfg, tmp_path, wandb_env):
    cfg = tiny_cfg(optim={"total_steps": 4}, schedule={"wandb": True, "preview_every": 2, "log_every": 2})
    run = train(cfg, tmp_path)
    run_id = run.read_status()["wandb_run_id"]
    files = sorted((run.path / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(files) == 1
    data = settled(files[0])
    for key in (b"loss", b"lr", b"loss_q0", b"val_loss", b"images_per_sec", b"preview", b"ddpm-studio"):
        assert key in data, key
    assert list(files[0].parent.glob("files/media/images/preview_*.png"))

    longer = tiny_cfg(optim={"total_steps": 6}, schedule={"wandb": True, "preview_every": 2, "log_every": 2})
    train(longer, tmp_path, resume=run.latest_checkpoint().path)
    assert run.read_status()["wandb_run_id"] == run_id
    assert len(sorted((run.path / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))) == 2
    assert all(p.name == f"run-{run_id}.wandb" for p in (run.path / "wandb").glob("offline-run-*/run-*.wandb"))


def test_missing_package_warns_once_and_training_goes_on(tiny_cfg, tmp_path, wandb_env, caplog):
    wandb_env.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    with caplog.at_level(logging.WARNING):
        run = train(tiny_cfg(schedule={"wandb": True}), tmp_path)
    warnings = [r for r in caplog.records if "wandb package is not installed" in r.getMessage()]
    assert len(warnings) == 1
    assert run.latest_checkpoint().step == 10 and "wandb_run_id" not in run.read_status()


def test_failed_login_warns_once_and_training_goes_on(tmp_path, wandb_env):
    """The real wandb, online, with no API key: it refuses to start. In a fresh process, because wandb reads its
    mode once per process; through the CLI, which is where a user meets it."""
    env = {**os.environ, "WANDB_MODE": "online", "WANDB_BASE_URL": "http://127.0.0.1:9", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(
        [sys.executable, "-m", "ddpm_studio", "train", "--wandb", "--preset", "tiny", "--image-size", "16",
         "--timesteps", "50", "--total-steps", "3", "--batch-size", "4", "--preview-every", "0", "--device", "cpu",
         "--runs-dir", str(tmp_path), "--name", "w"],
        env=env, capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("Weights & Biases logging is off") == 1, proc.stderr
    assert "wandb login" in proc.stderr and "Training completed at step 3" in proc.stderr
    assert "wandb_run_id" not in RunFolder(tmp_path / "w").read_status()


def test_a_failure_while_logging_warns_once_and_training_goes_on(tiny_cfg, tmp_path, wandb_env, caplog):
    calls = []

    class BrokenRun:
        id = "broken1"
        config = types.SimpleNamespace(update=lambda *a, **k: None)

        def define_metric(self, *args, **kwargs):
            pass

        def log(self, values):
            calls.append(values)
            raise ConnectionError("network gone")

        def finish(self):
            calls.append("finish")

    fake = types.SimpleNamespace(init=lambda **kwargs: BrokenRun(), Settings=lambda **kwargs: None, Image=object)
    wandb_env.setitem(sys.modules, "wandb", fake)
    with caplog.at_level(logging.WARNING):
        run = train(tiny_cfg(schedule={"wandb": True, "log_every": 1}), tmp_path)
    warnings = [r for r in caplog.records if "logging stopped" in r.getMessage()]
    assert len(warnings) == 1 and "network gone" in warnings[0].getMessage()
    assert len(calls) == 1  # after the failure nothing more is sent, not even finish
    assert run.latest_checkpoint().step == 10
