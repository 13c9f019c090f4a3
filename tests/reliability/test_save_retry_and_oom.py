"""Faults whose handling lives in services/training.py and cli.py (docs/reliability.md, "Changes to
training and the CLI").

- A full disk pauses the run (instead of training on with no checkpoint), and resuming retries the save;
  the CLI retries by itself every DDPM_STUDIO_SAVE_RETRY_SECONDS.
- Out of memory names the batch size to try (same effective batch, more accumulation).
- ``train --find-batch-size`` finds the largest micro-batch that fits before a new run.
- A non-finite gradient (with a finite loss) is called a gradient, not a loss.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from ddpm_studio.cli import main
from ddpm_studio.core.checkpoint import load_checkpoint
from ddpm_studio.core.unet import UNet
from ddpm_studio.services import events as ev
from ddpm_studio.services.control import RunControl, drive
from ddpm_studio.services.runs import RunFolder
from ddpm_studio.services.training import TrainingSession
from tests.reliability.conftest import assert_clean_failure
from tests.reliability.test_faults import DiskFull, _oom_after, snapshot, tiny_cfg, train_args


def test_disk_full_pauses_and_resume_retries_the_save(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    disk = DiskFull(monkeypatch, failing={2})  # the save at step 4 fails once; space is freed while paused
    control = RunControl()
    events: list[Any] = []
    kept: dict[str, bytes] = {}

    def sink(e: Any) -> None:
        events.append(e)
        if isinstance(e, ev.RunPaused):
            kept.update(snapshot(RunFolder(tmp_path / "r")))
            disk.failing = set()  # the user frees some space...
            control.resume()  # ...and presses Resume

    drive(TrainingSession(tiny_cfg(total_steps=6), runs_dir=tmp_path, run_name="r", control=control).steps(), sink)
    kinds = [(type(e).__name__, getattr(e, "step", None)) for e in events
             if not isinstance(e, ev.TrainProgress | ev.MetricsLogged | ev.Status)]
    i = kinds.index(("CheckpointFailed", 4))
    assert kinds[i:i + 4] == [("CheckpointFailed", 4), ("RunPaused", 4), ("RunResumed", 4), ("CheckpointSaved", 4)]
    failed = next(e for e in events if isinstance(e, ev.CheckpointFailed))
    assert "Disk full" in failed.message and "paused" in failed.message
    assert list(kept) == ["step_00000002.pt"], "while paused, the earlier checkpoint is there and nothing was deleted"
    steps = [e.step for e in events if isinstance(e, ev.TrainProgress)]
    assert steps == list(range(1, 7)), "no step was trained while paused, none skipped"
    run = RunFolder(tmp_path / "r")
    assert [i.step for i in run.checkpoints()] == [4, 6]
    assert events[-1].reason == "completed"


def test_disk_full_then_stop_while_paused_keeps_earlier_checkpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    DiskFull(monkeypatch, failing={2, 3, 4, 5})
    control = RunControl()
    events: list[Any] = []

    def sink(e: Any) -> None:
        events.append(e)
        if isinstance(e, ev.RunPaused):
            control.stop()

    drive(TrainingSession(tiny_cfg(total_steps=10), runs_dir=tmp_path, run_name="r", control=control).steps(), sink)
    assert events[-1].reason == "stopped" and events[-1].step == 4 and events[-1].checkpoint is None
    assert [i.step for i in RunFolder(tmp_path / "r").checkpoints()] == [2]


def test_cli_retries_a_failed_save_by_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DDPM_STUDIO_SAVE_RETRY_SECONDS", "0.2")
    DiskFull(monkeypatch, failing={2, 3})  # step 4 fails twice, the third try works
    code = main(train_args(tmp_path / "runs", "cli", 6))
    err = capsys.readouterr().err
    assert code == 0, err
    assert err.count("Could not save checkpoint at step 4: Disk full") == 2
    assert "free some disk space" in err and "Paused at step 4" in err
    assert "step_00000004.pt" in err.split("Paused at step 4")[-1], "saved after the retry"
    run = RunFolder(tmp_path / "runs" / "cli")
    assert [i.step for i in run.checkpoints()] == [4, 6]


def test_out_of_memory_names_a_batch_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    _oom_after(monkeypatch, calls_ok=4, exc=RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried"))
    code = main(train_args(tmp_path / "runs", "oom", 10))
    err = capsys.readouterr().err
    assert_clean_failure(code, err, "Out of memory at step 5", "try --batch-size 4 --grad-accum 2 (the same 8 images per step)",
                         "last checkpoint is kept", expected_code=1)


def test_find_batch_size_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    real = UNet.forward

    def forward(self: UNet, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.training and x.shape[0] > 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return real(self, x, *args, **kwargs)

    monkeypatch.setattr(UNet, "forward", forward)
    args = train_args(tmp_path / "runs", "fit", 2)
    args[args.index("--batch-size") + 1] = "24"
    code = main([*args, "--find-batch-size"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "Batch: 3 per micro-batch x 8 accumulation = 24 images per step" in err
    ckpt = load_checkpoint(RunFolder(tmp_path / "runs" / "fit").latest_checkpoint().path)
    assert (ckpt["config"]["optim"]["batch_size"], ckpt["config"]["optim"]["grad_accum"]) == (3, 8)


def test_non_finite_gradient_is_called_a_gradient(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    real_clip = torch.nn.utils.clip_grad_norm_

    def clip(parameters: Any, max_norm: float, *args: Any, **kwargs: Any) -> torch.Tensor:
        params = list(parameters)
        params[0].grad.view(-1)[0] = float("inf")
        return real_clip(params, max_norm, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    code = main(train_args(tmp_path / "runs", "grad", 4))
    assert_clean_failure(code, capsys.readouterr().err, "The gradient became", "at step 1", expected_code=1)
