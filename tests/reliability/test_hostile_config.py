"""Hostile config files and flags through the CLI: each ends with exit code 2, a message naming the problem, no traceback.

(tests/services/test_config.py covers the parser itself; this drives ``ddpm_studio train`` end to end.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ddpm_studio.cli import main
from tests.reliability.conftest import assert_clean_failure, run_cli

# (file name, content, words the message must contain)
BAD_FILES = [
    ("wrong_type.toml", '[optim]\nbatch_size = "big"\n', ["Batch size must be a whole number", "'big'"]),
    ("bool_for_int.toml", "[optim]\nbatch_size = true\n", ["Batch size must be a whole number"]),
    ("float_for_int.toml", "[optim]\ntotal_steps = 10.5\n", ["Total steps must be a whole number"]),
    ("inf_for_int.toml", "[optim]\ntotal_steps = inf\n", ["Total steps must be a whole number"]),
    ("string_for_bool.toml", '[data]\nhflip = "sometimes"\n', ["Random horizontal flip must be true or false"]),
    ("number_for_text.toml", "[data]\ndata_path = 5\n", ["Data folder must be text"]),
    ("list_for_number.toml", "[optim]\nlr = [1, 2]\n", ["Learning rate must be a number"]),
    ("table_for_number.toml", "[optim]\nlr = {a = 1}\n", ["Learning rate must be a number"]),
    ("bad_ints.toml", '[model]\nchannel_mults = [1, "two"]\n', ["Channel multipliers must be a list of whole numbers"]),
    ("nested_ints.toml", "[model]\nchannel_mults = [[1, 2]]\n", ["Channel multipliers must be a list of whole numbers"]),
    ("scalar_for_ints.toml", "[model]\nchannel_mults = 4\n", ["Channel multipliers must be a list of whole numbers"]),
    ("unknown_key.toml", "[optim]\nbach_size = 8\n", ["Unknown setting 'bach_size' in [optim]", "did you mean 'batch_size'"]),
    ("unknown_section.toml", "[optimiser]\nlr = 0.1\n", ["Unknown section [optimiser]"]),
    ("section_not_table.toml", "optim = 3\n", ["[optim] must be a section"]),
    ("too_large.toml", "[optim]\nlr = 5.0\n", ["Learning rate must be between"]),
    ("negative.toml", "[optim]\nseed = -1\n", ["Seed must be between 0"]),
    ("huge_int.toml", "[optim]\ntotal_steps = 99999999999999999999999999\n", ["Total steps must be between"]),
    ("nan.toml", "[optim]\nlr = nan\n", ["Learning rate must be a number (got NaN)"]),
    ("bad_choice.toml", '[diffusion]\nschedule = "quadratic"\n', ["Noise schedule must be one of"]),
    ("bad_channels.toml", "[data]\nchannels = 2\n", ["Channels must be 1 (grayscale) or 3"]),
    ("odd_width.toml", "[model]\nbase_channels = 48\n", ["multiple of 32"]),
    ("not_toml.toml", "[optim\nlr = ", ["is not valid TOML"]),
    ("not_json.json", "{'optim': 1}", ["is not valid JSON"]),
    ("json_list.json", "[1, 2, 3]", ["must contain sections"]),
    ("json_wrong_type.json", '{"optim": {"batch_size": null}}', ["Batch size needs a value"]),
    ("empty_string_size.toml", '[data]\nimage_size = ""\n', ["Image size"]),
]


@pytest.mark.parametrize(("name", "content", "needles"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_config_file_through_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: str,
                                     needles: list[str]) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    code = main(["train", "--config", str(path), "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert_clean_failure(code, err, "invalid settings", *needles, expected_code=2)
    assert not (tmp_path / "runs").exists(), "nothing is written for a config that was refused"


def test_every_problem_is_listed_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "many.toml"
    path.write_text('[optim]\nbatch_size = 0\nlr = "fast"\nwhatever = 1\n[schedule]\nkeep_last = 0\n', encoding="utf-8")
    code = main(["train", "--config", str(path)])
    err = capsys.readouterr().err
    assert_clean_failure(code, err, "Learning rate must be a number", "Unknown setting 'whatever'", expected_code=2)


@pytest.mark.parametrize(
    ("make", "needles"),
    [
        (lambda p: p.write_bytes(b"[optim]\nlr = 0.001 # caf\xe9\n"), ["is not UTF-8"]),
        (lambda p: p.mkdir(), ["Cannot read config file"]),
        (lambda p: None, ["Cannot read config file"]),  # missing
        (lambda p: p.write_bytes(b"\x00\x01\x02" * 100), ["is not valid TOML"]),
    ],
    ids=["non_utf8", "directory", "missing", "binary"],
)
def test_unreadable_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], make, needles: list[str]) -> None:
    path = tmp_path / "cfg.toml"
    make(path)
    code = main(["train", "--config", str(path)])
    assert_clean_failure(code, capsys.readouterr().err, *needles, expected_code=2)


@pytest.mark.parametrize(
    ("flags", "needles"),
    [
        (["--batch-size", "abc"], ["Batch size must be a whole number"]),
        (["--lr", "inf"], ["Learning rate must be between"]),
        (["--lr", "nan"], ["Learning rate must be a number (got NaN)"]),
        (["--image-size", "1e9"], ["Image size must be a whole number"]),
        (["--channel-mults", "1,x"], ["Channel multipliers must be a list of whole numbers"]),
        (["--total-steps", "-5"], ["Total steps must be between"]),
        (["--preview-steps", "500", "--timesteps", "100"], ["Preview sampler steps (500) cannot exceed timesteps T (100)"]),
        (["--image-size", "18", "--preset", "laptop"], ["18"]),  # 3 levels need a multiple of 4
        (["--device", "tpu"], ["Device must be one of"]),
    ],
    ids=["text", "inf", "nan", "float", "ints", "negative", "cross_field", "indivisible_size", "choice"],
)
def test_bad_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], needles: list[str]) -> None:
    # At most one step, so a flag that became valid fails fast instead of training to the timeout.
    code = main(["train", "--total-steps", "1", *flags, "--runs-dir", str(tmp_path / "runs")])
    assert_clean_failure(code, capsys.readouterr().err, *needles, expected_code=2)
    assert not (tmp_path / "runs").exists()


def test_bad_config_in_a_real_process_has_no_traceback(tmp_path: Path) -> None:
    """The same through ``python -m ddpm_studio`` (logging and the exit code as a user sees them)."""
    path = tmp_path / "bad.toml"
    path.write_text('[optim]\nbatch_size = "big"\n[nope]\n', encoding="utf-8")
    done = run_cli(tmp_path, "train", "--config", str(path))
    assert_clean_failure(done.returncode, done.stderr, "Batch size must be a whole number", "Unknown section [nope]",
                         expected_code=2)
    path.write_text("[optim]\nlr = 99\n", encoding="utf-8")
    done = run_cli(tmp_path, "train", "--config", str(path))
    assert_clean_failure(done.returncode, done.stderr, "Learning rate must be between", expected_code=2)


def test_non_utf8_data_path_is_saved_without_crashing(tmp_path: Path) -> None:
    """os.fsdecode gives surrogates for non-UTF-8 bytes; TOML cannot hold them, so the setting is left out, not a crash."""
    import os

    from ddpm_studio.services import config as c
    from ddpm_studio.services import config_files

    folder = os.fsdecode(os.fsencode(str(tmp_path)) + b"/imgs-\xff")
    os.mkdir(folder)
    cfg = c.from_dict({"data": {"source": "folder", "data_path": folder}})
    path = tmp_path / "config.toml"
    config_files.save_config_file(cfg, path)
    text = path.read_text(encoding="utf-8")
    assert "# data_path = " in text and "imgs-\ufffd" in text and "set it again" in text
    with pytest.raises(c.ConfigError, match="Choose a data folder"):
        c.check(config_files.load_config_file(path))
