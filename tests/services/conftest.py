import pytest

from ddpm_studio.services import config as c
from ddpm_studio.services.control import drive
from ddpm_studio.services.runs import RunFolder
from ddpm_studio.services.training import TrainingSession


@pytest.fixture
def tiny_cfg():
    """A run that takes well under a second per step on CPU: tiny U-Net, 16x16 demo shapes."""

    def make(**sections):
        base = {
            "data": {"source": "demo", "image_size": 16},
            "model": {"preset": "tiny", "dropout": 0.1},
            "diffusion": {"timesteps": 100},
            "optim": {"batch_size": 8, "total_steps": 10, "warmup_steps": 2, "lr": 1e-3, "device": "cpu"},
            "schedule": {"preview_every": 0, "checkpoint_every": 0, "checkpoint_minutes": 0, "log_every": 2,
                         "preview_steps": 5, "preview_images": 4, "preview_budget": 1.0},  # previews at their exact steps
        }
        for name, values in sections.items():
            base.setdefault(name, {}).update(values)
        return c.check(c.from_dict(base))

    return make


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory):
    """A 2-step class-conditional tiny model on the 16x16 demo shapes (its newest checkpoint's path)."""
    base = tmp_path_factory.mktemp("cond")
    cfg = c.from_dict({
        "data": {"source": "demo", "image_size": 16, "conditional": True}, "model": {"preset": "tiny"},
        "diffusion": {"timesteps": 50}, "optim": {"batch_size": 8, "total_steps": 2, "device": "cpu"},
        "schedule": {"preview_every": 0, "checkpoint_every": 0, "checkpoint_minutes": 0},
    })
    drive(TrainingSession(cfg, runs_dir=base, run_name="c").steps(), lambda e: None)
    return RunFolder(base / "c").latest_checkpoint().path
