"""Injected faults during training, through the CLI a user types: disk full, NaN / inf, out of memory.

Each is injected under the real code path (the real checkpoint writer, the real training step), and each
must end with a message, no traceback, and every earlier checkpoint intact and loadable. Pausing on a full
disk, naming a batch size on OOM and ``--find-batch-size`` are tested in test_save_retry_and_oom.py.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest
import torch

from ddpm_studio.cli import main
from ddpm_studio.core import checkpoint as checkpoint_mod
from ddpm_studio.core.checkpoint import load_checkpoint
from ddpm_studio.core.unet import UNet
from ddpm_studio.services import batch_fit
from ddpm_studio.services import config as c
from ddpm_studio.services import events as ev
from ddpm_studio.services.control import RunControl, drive
from ddpm_studio.services.runs import RunFolder
from ddpm_studio.services.training import TrainingSession
from tests.poison import poison_training_loss
from tests.reliability.conftest import TINY_TRAIN_FLAGS, assert_clean_failure


def train_args(runs: Path, name: str, steps: int, every: int = 2, *extra: str) -> list[str]:
    return ["train", *TINY_TRAIN_FLAGS, "--total-steps", str(steps), "--checkpoint-every", str(every), "--keep-last", "2",
            "--runs-dir", str(runs), "--name", name, *extra]


def tiny_cfg(**optim: Any) -> c.RunConfig:
    return c.check(c.from_dict({
        "data": {"source": "demo", "image_size": 16}, "model": {"preset": "tiny"}, "diffusion": {"timesteps": 50},
        "optim": {"batch_size": 8, "total_steps": 10, "warmup_steps": 2, "device": "cpu", "mixed_precision": "off", **optim},
        "schedule": {"preview_every": 0, "checkpoint_every": 2, "checkpoint_minutes": 0, "keep_last": 2, "log_every": 1},
    }))


class DiskFull:
    """Makes checkpoint writes hit ENOSPC after ``room`` bytes, for the saves whose number is in ``failing`` (1-based).

    The real writer runs (atomic_write's temp file, torch.save streaming into it); only the file's write() fails,
    as it does when a disk fills up in the middle of a save. Each failed save is checked on the spot: every
    checkpoint that existed before it is still there, byte for byte, and no temp file of it is left.
    ``last_ok`` tells whether the latest save worked (retention may only follow a good one).
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, failing: set[int], room: int = 1_000_000) -> None:
        self.failing, self.room, self.saves, self.failed, self.last_ok = failing, room, 0, 0, True
        self.violations: list[str] = []
        real = checkpoint_mod.atomic_write

        def atomic_write(path: Any, write: Any) -> None:
            self.saves += 1
            if self.saves not in self.failing:
                real(path, write)
                self.last_ok = True
                return
            folder = Path(path).parent
            before = {q.name: q.read_bytes() for q in folder.glob("step_*.pt")}
            try:
                real(path, lambda fh: write(_FillingFile(fh, self.room)))
            finally:  # (recorded, not asserted: save_checkpoint would turn an AssertionError here into a failed save)
                self.last_ok = False
                self.failed += 1
                if {q.name: q.read_bytes() for q in folder.glob("step_*.pt")} != before:
                    self.violations.append(f"save {self.saves}: an earlier checkpoint changed or went")
                if list(folder.glob(".*.tmp")):
                    self.violations.append(f"save {self.saves}: the half-written temp file was left behind")

        monkeypatch.setattr(checkpoint_mod, "atomic_write", atomic_write)


class _FillingFile:
    def __init__(self, fh: Any, room: int) -> None:
        self._fh, self._room = fh, room

    def write(self, data: bytes) -> int:
        if len(data) > self._room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self._room -= len(data)
        return self._fh.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)


def snapshot(run: RunFolder) -> dict[str, bytes]:
    return {info.path.name: info.path.read_bytes() for info in run.checkpoints()}


def _retention_only_after_good_saves(monkeypatch: pytest.MonkeyPatch, disk: DiskFull) -> list[str]:
    calls: list[str] = []
    real = RunFolder.apply_retention

    def retention(self: RunFolder, keep_last: int, protect: Path | None = None) -> list[Path]:
        assert disk.last_ok, "retention ran after a failed save"
        assert protect is not None and load_checkpoint(protect)["step"] >= 0
        calls.append(protect.name)
        return real(self, keep_last, protect)

    monkeypatch.setattr(RunFolder, "apply_retention", retention)
    return calls


# ---------------------------------------------------------------------------------------------- disk full
# These hold whether a failed save lets training go on or pauses it until resumed (test_save_retry_and_oom.py
# checks the pause itself).

def test_disk_full_keeps_earlier_checkpoints_and_tells_the_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Saves 1-2 (steps 2, 4) succeed; the next two hit a full disk; then there is space again."""
    monkeypatch.setenv("DDPM_STUDIO_SAVE_RETRY_SECONDS", "0.05")  # once the CLI retries by itself
    disk = DiskFull(monkeypatch, failing={3, 4})
    retained = _retention_only_after_good_saves(monkeypatch, disk)
    code = main(train_args(tmp_path / "runs", "full", 10))
    err = capsys.readouterr().err
    assert code == 0, err  # the run did not die
    assert "Traceback" not in err
    assert "WARNING: Could not save checkpoint at step 6: Disk full" in err
    assert "earlier checkpoints are intact" in err
    assert disk.failed == 2 and not disk.violations, disk.violations
    assert retained[:2] == ["step_00000002.pt", "step_00000004.pt"]
    run = RunFolder(tmp_path / "runs" / "full")
    assert run.latest_checkpoint().step == 10
    assert not list(run.checkpoints_dir.glob(".*.tmp"))
    for info in run.checkpoints():
        assert load_checkpoint(info.path)["step"] == info.step


def test_disk_full_mid_write_leaves_the_previous_file_byte_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny_cfg(total_steps=6)
    disk = DiskFull(monkeypatch, failing={2, 3, 4}, room=3_000_000)
    _retention_only_after_good_saves(monkeypatch, disk)
    control = RunControl()
    events: list[Any] = []

    def sink(e: Any) -> None:
        events.append(e)
        if isinstance(e, ev.RunPaused):
            control.resume()  # the user presses Resume (only happens once failed saves pause the run)

    drive(TrainingSession(cfg, runs_dir=tmp_path, run_name="r", control=control).steps(), sink)
    failed = [e for e in events if isinstance(e, ev.CheckpointFailed)]
    assert len(failed) == 3 and failed[0].step == 4 and not disk.violations, disk.violations
    assert all("Disk full" in f.message and "earlier checkpoints are intact" in f.message for f in failed)
    assert events[-1].reason == "completed"
    run = RunFolder(tmp_path / "r")
    assert 2 in [i.step for i in run.checkpoints()] or run.latest_checkpoint().step == 6
    for info in run.checkpoints():
        assert load_checkpoint(info.path)["step"] == info.step


# ---------------------------------------------------------------------------------------------- NaN / inf

@pytest.mark.parametrize(("value", "word"), [(float("nan"), "NaN"), (float("inf"), "infinite")])
def test_non_finite_loss_stops_then_resume_with_lower_lr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str], value: float, word: str) -> None:
    poison_training_loss(monkeypatch, at_call=5, value=value)
    runs = tmp_path / "runs"
    code = main(train_args(runs, "nan", 10))
    err = capsys.readouterr().err
    assert_clean_failure(code, err, f"The loss became {word} at step 5", "last checkpoint is kept", "lower learning rate",
                         expected_code=1)
    run = RunFolder(runs / "nan")
    assert [i.step for i in run.checkpoints()] == [2, 4], "no checkpoint of the poisoned state, none rotated out"
    good = load_checkpoint(run.latest_checkpoint().path)
    assert all(torch.isfinite(v).all() for v in good["model"].values())
    assert run.read_status()["state"] == "failed"
    monkeypatch.undo()
    code = main(["train", "--resume", str(run.path), "--lr", "1e-4"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "Resuming from" in err and "at step 4" in err and "Training completed at step 10" in err
    resumed = load_checkpoint(run.latest_checkpoint().path)
    assert resumed["config"]["optim"]["lr"] == 1e-4


def test_non_finite_gradient_stops_before_the_weights_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """The loss is finite but one gradient is inf: caught by the clip-norm check, the optimizer never applies it."""
    real_clip = torch.nn.utils.clip_grad_norm_
    calls = {"n": 0}

    def clip(parameters: Any, max_norm: float, *args: Any, **kwargs: Any) -> torch.Tensor:
        params = list(parameters)
        calls["n"] += 1
        if calls["n"] == 3:
            params[0].grad.view(-1)[0] = float("inf")
        return real_clip(params, max_norm, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    runs = tmp_path / "runs"
    code = main(train_args(runs, "grad", 10))
    err = capsys.readouterr().err
    assert_clean_failure(code, err, "at step 3", "last checkpoint is kept", expected_code=1)
    run = RunFolder(runs / "grad")
    assert [i.step for i in run.checkpoints()] == [2]
    assert all(torch.isfinite(v).all() for v in load_checkpoint(run.checkpoint_path(2))["model"].values())


# ---------------------------------------------------------------------------------------------- out of memory

def _oom_after(monkeypatch: pytest.MonkeyPatch, calls_ok: int, exc: BaseException) -> None:
    real = UNet.forward
    calls = {"n": 0}

    def forward(self: UNet, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.training:
            calls["n"] += 1
            if calls["n"] > calls_ok:
                raise exc
        return real(self, *args, **kwargs)

    monkeypatch.setattr(UNet, "forward", forward)


@pytest.mark.parametrize("exc", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 7.79 GiB total capacity)"),
    RuntimeError("MPS backend out of memory (MPS allocated: 8.00 GB, other allocations: 1.2 GB)"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried to allocate"),
], ids=["cuda", "mps", "cpu"])
def test_out_of_memory_is_a_clear_message_and_checkpoints_stay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str], exc: BaseException) -> None:
    _oom_after(monkeypatch, calls_ok=4, exc=exc)
    runs = tmp_path / "runs"
    code = main(train_args(runs, "oom", 10))
    err = capsys.readouterr().err
    assert "Traceback" not in err and code == 1, err
    if "can't allocate" not in str(exc):  # the CPU allocator's wording is not recognised by events.user_message yet
        assert "Out of memory: try a smaller batch size" in err
    run = RunFolder(runs / "oom")
    assert [i.step for i in run.checkpoints()] == [2, 4]
    # The user follows the advice: the same effective batch in two micro-batches, from the last checkpoint.
    monkeypatch.undo()
    code = main(["train", "--resume", str(run.path), "--batch-size", "4", "--grad-accum", "2", "--total-steps", "6"])
    err = capsys.readouterr().err
    assert code == 0 and "effective batch 8" in err and "Training completed at step 6" in err, err


def test_smaller_batch_keeps_the_effective_batch() -> None:
    assert batch_fit.smaller_batch(32, 1) == (16, 2)
    assert batch_fit.smaller_batch(16, 2) == (8, 4)
    assert batch_fit.smaller_batch(5, 1) == (1, 5)  # 2 does not divide 5: the next divisor down
    assert batch_fit.smaller_batch(12, 1) == (6, 2)
    assert batch_fit.smaller_batch(6, 2) == (3, 4)
    assert batch_fit.smaller_batch(1, 8) is None
    assert batch_fit.smaller_batch(512, 1) == (256, 2)
    assert batch_fit.smaller_batch(2, 256) is None  # accumulation would pass its maximum
    assert "try --batch-size 16 --grad-accum 2 (the same 32 images per step)" in batch_fit.oom_advice(32)
    assert "already 1" in batch_fit.oom_advice(1, 4)


def test_is_out_of_memory() -> None:
    assert batch_fit.is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert batch_fit.is_out_of_memory(RuntimeError("MPS backend out of memory"))
    assert batch_fit.is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried"))
    assert batch_fit.is_out_of_memory(MemoryError())
    assert not batch_fit.is_out_of_memory(RuntimeError("size mismatch"))
    assert not batch_fit.is_out_of_memory(ValueError("out of memory"))


def test_fit_batch_halves_until_a_real_step_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulated on CPU: the real probe (build, forward, backward, AdamW step), with the U-Net refusing > 3 images."""
    real = UNet.forward
    sizes: list[int] = []

    def forward(self: UNet, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        sizes.append(x.shape[0])
        if x.shape[0] > 3:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {x.shape[0]} GiB")
        return real(self, x, *args, **kwargs)

    monkeypatch.setattr(UNet, "forward", forward)
    cfg = tiny_cfg(batch_size=24, grad_accum=1)
    fitted, fit = batch_fit.fit_config(cfg)
    assert (fit.batch_size, fit.grad_accum, fit.effective) == (3, 8, 24)
    assert fit.tried == ((24, False), (12, False), (6, False), (3, True))
    assert sizes == [24, 12, 6, 3]
    assert (fitted.optim.batch_size, fitted.optim.grad_accum) == (3, 8)
    assert c.validate(fitted) == []


def test_fit_batch_gives_up_with_a_message_and_passes_other_errors_through() -> None:
    def never(micro: int) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(batch_fit.BatchFitError, match="Not even a micro-batch of 1 fits"):
        batch_fit.fit_batch(8, 1, never)

    def broken(micro: int) -> None:
        raise ValueError("a bug, not memory")

    with pytest.raises(ValueError, match="a bug"):
        batch_fit.fit_batch(8, 1, broken)
