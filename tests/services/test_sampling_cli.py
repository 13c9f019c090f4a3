import subprocess
import sys

import pytest
from PIL import Image

from ddpm_studio.cli import main
from ddpm_studio.core.checkpoint import CheckpointError
from ddpm_studio.services import config as c
from ddpm_studio.services import events as ev
from ddpm_studio.services.control import RunControl, drive
from ddpm_studio.services.runs import RunFolder
from ddpm_studio.services.sampling import SamplingSession
from ddpm_studio.services.training import TrainingSession


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    cfg = c.from_dict({
        "data": {"source": "demo", "image_size": 16}, "model": {"preset": "tiny"}, "diffusion": {"timesteps": 50},
        "optim": {"batch_size": 8, "total_steps": 3, "device": "cpu"},
        "schedule": {"preview_every": 0, "checkpoint_every": 0, "checkpoint_minutes": 0},
    })
    drive(TrainingSession(cfg, runs_dir=base, run_name="t").steps(), lambda e: None)
    return RunFolder(base / "t")


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_sampling_session_writes_pngs_grid_and_gif(trained_run, tmp_path, sampler):
    sample = c.SampleConfig(sampler=sampler, steps=10, num_images=5, sample_batch_size=2)
    events = []
    drive(SamplingSession(trained_run.path, sample, tmp_path, save_trajectory=True).steps(), events.append)
    done = events[-1]
    assert isinstance(done, ev.SamplesReady)
    assert len(done.paths) == 5 and done.images.shape == (5, 16, 16, 3)
    assert Image.open(done.paths[0]).size == (16, 16)
    assert Image.open(done.grid_path).size[0] > 16
    gif = Image.open(done.trajectory_path)
    assert gif.n_frames > 2
    progress = [e for e in events if isinstance(e, ev.SamplingProgress)]
    per_batch = 50 if sampler == "ddpm" else 10
    assert progress[-1].done == progress[-1].total == 3 * per_batch


def test_sampling_is_seeded(trained_run, tmp_path):
    def sample(seed, out):
        events = []
        cfg = c.SampleConfig(steps=5, num_images=2, sample_seed=seed)
        drive(SamplingSession(trained_run.path, cfg, tmp_path / out).steps(), events.append)
        return events[-1].images

    a, b, other = sample(1, "a"), sample(1, "b"), sample(2, "c")
    assert (a == b).all() and not (a == other).all()


def test_sampling_cancel_writes_nothing(trained_run, tmp_path):
    control = RunControl()
    seen = []

    def sink(e):
        seen.append(e)
        if isinstance(e, ev.SamplingProgress) and e.done == 3:
            control.stop()

    drive(SamplingSession(trained_run.path, c.SampleConfig(steps=10), tmp_path / "x", control=control).steps(), sink)
    assert not any(isinstance(e, ev.SamplesReady) for e in seen)
    assert not list((tmp_path / "x").glob("*.png"))


def test_wrong_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"nope")
    with pytest.raises(CheckpointError):
        drive(SamplingSession(bad, c.SampleConfig(), tmp_path).steps(), lambda e: None)


def test_cli_demo_train_sample(tmp_path, capsys):
    demo = tmp_path / "shapes"
    assert main(["demo-data", str(demo), "--count", "40", "--image-size", "16"]) == 0
    runs = tmp_path / "runs"
    code = main(["train", "--source", "folder", "--data-path", str(demo), "--image-size", "16", "--preset", "tiny",
                 "--timesteps", "50", "--total-steps", "4", "--batch-size", "4", "--preview-every", "2",
                 "--preview-steps", "3", "--device", "cpu", "--runs-dir", str(runs), "--name", "cli"])
    assert code == 0
    err = capsys.readouterr().err
    assert "step 4 / 4" in err and "Checkpoint saved" in err
    assert main(["sample", str(runs / "cli"), "--num-images", "3", "--steps", "3", "--out", str(tmp_path / "out")]) == 0
    out_dirs = list((tmp_path / "out").iterdir())
    assert len(out_dirs) == 1 and len(list(out_dirs[0].glob("sample_0000*.png"))) == 3
    assert (out_dirs[0] / "sample_grid.png").exists()
    # Resume to a longer run from the run folder.
    assert main(["train", "--resume", str(runs / "cli"), "--total-steps", "6"]) == 0
    assert RunFolder(runs / "cli").latest_checkpoint().step == 6


def test_cli_reports_bad_settings(tmp_path, capsys):
    assert main(["train", "--batch-size", "0", "--runs-dir", str(tmp_path)]) == 2
    assert "Batch size must be between 1 and 4096 (got 0)" in capsys.readouterr().err
    assert main(["train", "--source", "folder", "--data-path", str(tmp_path / "missing")]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", "--source", "folder", "--data-path", str(empty), "--runs-dir", str(tmp_path / "r")]) == 1
    assert "No images" in capsys.readouterr().err
    assert main(["sample", str(tmp_path / "nothing-here")]) == 1


def test_core_and_services_import_no_qt():
    code = (
        "import sys, ddpm_studio, ddpm_studio.cli, ddpm_studio.core.unet, ddpm_studio.core.datasets, "
        "ddpm_studio.services.training, ddpm_studio.services.sampling;"
        "bad = [m for m in sys.modules if m.startswith(('PySide6', 'pyqtgraph', 'ddpm_studio.gui'))];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_config_import_does_not_load_torch():
    """The GUI builds its settings form before torch finishes loading."""
    code = "import sys, ddpm_studio.services.config; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
