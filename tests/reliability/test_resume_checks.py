"""``train --resume`` runs the same checks as ``sample`` before building a model from a checkpoint.

``training_state.load_resume_point`` calls ``services.checkpoint_check.check_checkpoint``. Without it, a checkpoint
whose settings describe a network of billions of parameters makes ``train --resume`` allocate it (the child below is capped at
6 GB of address space so the test cannot exhaust the machine), NaN weights are trained on, and a
damaged step or EMA entry gives a Python error text instead of a sentence.
"""

from __future__ import annotations

import resource
import subprocess
import time
from pathlib import Path

import pytest

from ddpm_studio.cli import main
from tests.reliability.conftest import assert_clean_failure, child_env, cli_command
from tests.reliability.test_hostile_checkpoints import bad_file, good_checkpoint  # noqa: F401 (fixture)


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))


def test_resume_refuses_giant_model_settings_before_allocating(good_checkpoint: Path, tmp_path: Path) -> None:  # noqa: F811
    path, _ = bad_file(good_checkpoint, tmp_path, "giant_model_settings")
    started = time.monotonic()
    done = subprocess.run(cli_command("train", "--resume", str(path)), env=child_env(tmp_path), cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, preexec_fn=_cap_memory)
    assert_clean_failure(done.returncode, done.stderr, "do not fit")
    assert time.monotonic() - started < 60


@pytest.mark.parametrize("case", ["nan_weights", "step_not_a_number", "ema_not_a_dict", "weights_not_tensors",
                                  "config_not_a_table"])
def test_resume_names_the_problem(good_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],  # noqa: F811
                                  case: str) -> None:
    path, needles = bad_file(good_checkpoint, tmp_path, case)
    code = main(["train", "--resume", str(path), "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert_clean_failure(code, err, path.name, *needles)
    assert "Resuming from" not in err, "refused before training"
