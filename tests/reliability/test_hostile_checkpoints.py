"""Hostile checkpoint files through the CLI's ``sample`` and ``train --resume``: a clear error, no traceback, nothing run.

(tests/core/test_checkpoint_ema.py covers ``load_checkpoint`` itself; this drives the commands a user types.)
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch

from ddpm_studio.cli import main
from ddpm_studio.core.checkpoint import load_checkpoint, save_checkpoint
from ddpm_studio.services import config as c
from ddpm_studio.services.control import drive
from ddpm_studio.services.runs import RunFolder
from ddpm_studio.services.training import TrainingSession
from tests.reliability.conftest import assert_clean_failure, run_cli


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 2-step tiny checkpoint (16x16 demo shapes)."""
    base = tmp_path_factory.mktemp("good")
    cfg = c.check(c.from_dict({
        "data": {"source": "demo", "image_size": 16}, "model": {"preset": "tiny"}, "diffusion": {"timesteps": 50},
        "optim": {"batch_size": 4, "total_steps": 2, "device": "cpu", "mixed_precision": "off"},
        "schedule": {"preview_every": 0, "checkpoint_every": 0, "checkpoint_minutes": 0},
    }))
    drive(TrainingSession(cfg, runs_dir=base, run_name="good").steps(), lambda e: None)
    return RunFolder(base / "good").latest_checkpoint().path


def _tampered(good: Path, dest: Path, change: Any) -> Path:
    """A copy of the good checkpoint with ``change(data)`` applied, written the normal way (a valid file)."""
    data = load_checkpoint(good)
    change(data)
    for key in ("format", "format_version"):
        data.pop(key, None)
    save_checkpoint(dest, data)
    return dest


class _WritesFile:
    """Unpickling this would create a file: the payload a malicious checkpoint would carry."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.target, "w"))


def _evil(dest: Path, marker: Path) -> Path:
    """A torch-zip-shaped file whose pickle calls open(marker, 'w') if anything unpickles it unsafely."""
    payload = {"format": "ddpm-studio", "format_version": 1, "config": {}, "model": {}, "step": 0,
               "x": _WritesFile(str(marker))}
    with zipfile.ZipFile(dest, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps(payload, protocol=2))
        zf.writestr("archive/version", "3\n")
        zf.writestr("archive/byteorder", "little")
    return dest


def _raw(data: Any) -> Any:
    return lambda good, dest: (dest.write_bytes(data(good.read_bytes())), dest)[1]


def _torch(obj: Any) -> Any:
    return lambda good, dest: (torch.save(obj, dest), dest)[1]


def _edit(change: Any) -> Any:
    return lambda good, dest: _tampered(good, dest, change)


def _set(key: str, value: Any) -> Any:
    return _edit(lambda d: d.__setitem__(key, value))


def _nan_ema(d: dict[str, Any]) -> None:
    for v in d["ema"]["model"].values():
        if v.is_floating_point():
            v.fill_(float("nan"))


#: name -> (build(good checkpoint, destination) -> hostile file, words the error must contain)
BAD: dict[str, tuple[Any, list[str]]] = {
    "truncated_half": (_raw(lambda b: b[: len(b) // 2]), ["truncated or corrupt"]),
    "truncated_tail": (_raw(lambda b: b[:-100]), ["truncated or corrupt"]),
    "zero_bytes": (_raw(lambda b: b""), ["empty"]),
    "random_bytes": (_raw(lambda b: os.urandom(4096)), ["not a readable"]),
    "png_renamed": (_raw(lambda b: b"\x89PNG\r\n\x1a\n" + os.urandom(200)), ["not a readable"]),
    "foreign_torch_file": (_torch({"state_dict": {"fc.weight": torch.zeros(2, 2)}}), ["not a DDPM Studio checkpoint"]),
    "future_version": (_torch({"format": "ddpm-studio", "format_version": 99, "config": {}, "model": {}, "step": 0}),
                       ["format version 99", "newer"]),
    "other_architecture": (_edit(lambda d: d["config"]["model"].update(base_channels=64)), ["do not fit", "in the file but"]),
    "other_model_weights": (_edit(lambda d: d.update(model={"conv1.weight": torch.zeros(64, 3, 7, 7)},
                                                     ema={"model": {"conv1.weight": torch.zeros(1)}})),
                            ["do not fit", "differences in all"]),
    "config_not_a_table": (_set("config", "rm -rf /"), ["settings"]),
    "config_wrong_types": (_edit(lambda d: d["config"]["model"].update(base_channels="wide")), ["Base channels"]),
    # Settings of a network of billions of parameters over a tiny one's weights: must be refused before building it.
    "giant_model_settings": (_edit(lambda d: (d["config"]["model"].update(base_channels=512, channel_mults=[16] * 6),
                                              d["config"]["data"].update(image_size=256))), ["do not fit"]),
    "weights_not_tensors": (_set("ema", {"model": "weights"}), ["weights"]),
    "ema_not_a_dict": (_set("ema", [1, 2, 3]), ["weights"]),
    "step_not_a_number": (_set("step", "ten"), ["step"]),
    "nan_weights": (_edit(_nan_ema), ["NaN"]),
}


def bad_file(good: Path, tmp: Path, case: str) -> tuple[Path, list[str]]:
    build, needles = BAD[case]
    return build(good, tmp / f"{case}.pt"), needles


CASES = list(BAD)


@pytest.mark.parametrize("case", CASES)
def test_sample_refuses_hostile_checkpoint(good_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           case: str) -> None:
    path, needles = bad_file(good_checkpoint, tmp_path, case)
    before = path.read_bytes()
    out = tmp_path / "out"
    code = main(["sample", str(path), "--num-images", "2", "--steps", "2", "--device", "cpu", "--out", str(out)])
    err = capsys.readouterr().err
    assert_clean_failure(code, err, *needles)
    assert path.name in err or case in ("config_not_a_table",), "the message names the file"
    assert not out.exists() or not list(out.rglob("*.png")), "no images from a refused checkpoint"
    assert path.read_bytes() == before, "a damaged checkpoint is never changed or deleted"


# Resume refuses these without a traceback. Refusing giant_model_settings and nan_weights, and naming the problem
# for the last four, come from training.py running the same checks as sample: see test_resume_checks.py.
RESUME_CASES = ["truncated_half", "zero_bytes", "random_bytes", "future_version", "other_architecture", "other_model_weights",
                "config_wrong_types", "config_not_a_table", "step_not_a_number", "ema_not_a_dict", "weights_not_tensors"]


@pytest.mark.parametrize("case", RESUME_CASES)
def test_resume_refuses_hostile_checkpoint(good_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           case: str) -> None:
    path, _ = bad_file(good_checkpoint, tmp_path, case)
    code = main(["train", "--resume", str(path), "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert_clean_failure(code, err)
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("*.pt"))


@pytest.mark.parametrize("command", ["sample", "train", "interpolate", "evaluate"])
def test_crafted_pickle_is_never_executed(tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    marker = tmp_path / "pwned.txt"
    evil = _evil(tmp_path / "evil.pt", marker)
    args = ["train", "--resume", str(evil)] if command == "train" else [command, str(evil), "--device", "cpu"]
    code = main(args)
    err = capsys.readouterr().err
    assert_clean_failure(code, err, "would run code when loaded", "evil.pt")
    assert not marker.exists(), "the pickle's payload ran"


def test_crafted_pickle_in_a_run_folder_in_a_real_process(tmp_path: Path) -> None:
    """As the newest checkpoint of a run folder, through ``python -m ddpm_studio sample RUN`` (no traceback on stderr)."""
    marker = tmp_path / "pwned.txt"
    run = RunFolder.create(tmp_path / "runs", "r")
    _evil(run.checkpoint_path(5), marker)
    done = run_cli(tmp_path, "sample", str(run.path), "--device", "cpu")
    assert_clean_failure(done.returncode, done.stderr, "would run code when loaded")
    assert not marker.exists()


def test_damaged_newest_checkpoint_of_a_run_falls_back_to_an_older_one(good_checkpoint: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str],
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    """A run folder whose newest file was cut short (copied, or a full disk outside the app) resumes from the one before."""
    run = RunFolder.create(tmp_path / "runs", "r")
    older = run.checkpoint_path(2)
    older.write_bytes(good_checkpoint.read_bytes())
    newest = run.checkpoint_path(4)
    newest.write_bytes(good_checkpoint.read_bytes()[:5000])
    code = main(["sample", str(run.path), "--num-images", "1", "--steps", "2", "--device", "cpu", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "Skipping checkpoint step_00000004.pt: damaged or incomplete file" in caplog.text
    assert "step_00000002" in err, "sampled from the older checkpoint"
    assert newest.read_bytes() == good_checkpoint.read_bytes()[:5000], "never deleted or rewritten"
