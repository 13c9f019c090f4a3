"""Shared helpers of the reliability suites: tiny CLI training runs in child processes, and reading their results."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HOOKS = Path(__file__).resolve().parent / "hooks"

#: ``ddpm_studio train`` flags of a run that takes ~0.1 s a step on one CPU thread (tiny U-Net, 16x16 demo shapes).
TINY_TRAIN_FLAGS = (
    "--source", "demo", "--image-size", "16", "--preset", "tiny", "--timesteps", "50", "--batch-size", "8",
    "--warmup-steps", "2", "--preview-every", "0", "--checkpoint-minutes", "0", "--log-every", "1", "--device", "cpu",
    "--mixed-precision", "off",
)


def child_env(tmp: Path, **extra: str) -> dict[str, str]:
    """Environment of a child ``python -m ddpm_studio``: its own runs/cache folders, one thread, the fault hooks."""
    env = dict(os.environ)
    env.update(
        DDPM_STUDIO_RUNS_DIR=str(tmp / "runs"),
        XDG_CACHE_HOME=str(tmp / "cache"),
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(HOOKS), str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        PYTHONUNBUFFERED="1",
        PYTHONIOENCODING="utf-8",
    )
    env.update(extra)
    return env


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "ddpm_studio", *args]


def run_cli(tmp: Path, *args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m ddpm_studio ARGS`` to the end (a hang fails the test after ``timeout`` seconds)."""
    return subprocess.run(cli_command(*args), env=env or child_env(tmp), cwd=tmp, capture_output=True, text=True,
                          encoding="utf-8", errors="replace", timeout=timeout)


def assert_clean_failure(code: int, err: str, *needles: str, expected_code: int | None = None) -> None:
    """A user error: a non-zero exit, each of ``needles`` in the message, and no Python traceback."""
    assert code != 0, err
    if expected_code is not None:
        assert code == expected_code, (code, err)
    assert "Traceback" not in err, err
    for needle in needles:
        assert needle.lower() in err.lower(), (needle, err)


@pytest.fixture(autouse=True)
def _isolated_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process CLI calls write under the test's folder, never the user's runs or cache."""
    monkeypatch.setenv("DDPM_STUDIO_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
