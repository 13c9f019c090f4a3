import pytest

from ddpm_studio.services import config as c


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
                         "preview_steps": 5, "preview_images": 4},
        }
        for name, values in sections.items():
            base.setdefault(name, {}).update(values)
        return c.check(c.from_dict(base))

    return make
