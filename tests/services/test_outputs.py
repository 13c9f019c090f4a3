"""Names and places of generated files, durations and sizes: one spelling for the CLI and the app."""

from __future__ import annotations

from pathlib import Path

from ddpm_studio.services.config import InterpolationConfig, SampleConfig
from ddpm_studio.services.formatting import format_duration, human_bytes
from ddpm_studio.services.outputs import evaluation_tag, interpolation_tag, output_name, samples_dir_for
from ddpm_studio.services.runs import RunFolder


def test_output_names_say_what_was_made_and_name_steps_only_when_they_apply() -> None:
    ddim = SampleConfig(sampler="ddim", steps=50, sample_seed=3, autoguidance=0)  # the model alone: names as before
    assert output_name("step_00000100", ddim) == "step_00000100-ddim50-seed3"
    assert output_name("step_00000100", SampleConfig(sampler="ddpm", steps=50)) == "step_00000100-ddpm-ag1-seed0"
    assert output_name("step_00000100", SampleConfig(autoguidance=1.5)) == "step_00000100-dpm++2m-sde20-ag1.5-seed0"
    assert output_name("live", ddim, stamp="20260101-120000") == "live-20260101-120000-ddim50-seed3"
    interp = interpolation_tag(InterpolationConfig(seed_from=2, seed_to=7))
    assert output_name("", ddim, what=interp, seed=False) == "interp2-7-ddim50"
    assert output_name("s", ddim, what=evaluation_tag(SampleConfig(num_images=256))) == "s-eval-n256-ddim50-seed3"
    # A rebuilt EMA length is named too, so sweeping lengths never overwrites one length's images with another's.
    assert output_name("s", SampleConfig(ema_length=0.05, autoguidance=1)) == "s-dpm++2m-sde20-ema0.05-ag1-seed0"
    assert output_name("s", SampleConfig(ema_length=0.1, autoguidance=0)) == "s-dpm++2m-sde20-ema0.1-seed0"


def test_samples_go_to_the_models_own_run(tmp_path: Path) -> None:
    run = RunFolder.create(tmp_path / "runs", "r")
    checkpoint = run.checkpoint_path(10)
    assert samples_dir_for(checkpoint, tmp_path / "elsewhere") == run.samples_dir
    assert samples_dir_for(run.path, tmp_path / "elsewhere") == run.samples_dir
    assert samples_dir_for(tmp_path / "loose.pt", tmp_path / "elsewhere") == tmp_path / "elsewhere"


def test_run_state_wording(tmp_path: Path) -> None:
    run = RunFolder.create(tmp_path, "r")
    assert run.state() == "?"
    run.write_status(state="stopped")
    assert run.state() == "stopped"
    run.write_status(state="running", pid=2**22 + 12345)  # no such process: it crashed
    assert run.state() == "interrupted"


def test_durations_and_sizes() -> None:
    assert [format_duration(s) for s in (None, float("nan"), -1, float("inf"))] == ["--:--"] * 4
    assert format_duration(65) == "1:05" and format_duration(3723) == "1:02:03"
    assert human_bytes(512) == "512 B" and human_bytes(1536) == "1.5 KB" and human_bytes(3 * 2**40) == "3.0 TB"
