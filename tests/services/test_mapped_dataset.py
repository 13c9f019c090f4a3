"""Training reads its batches from the memory-mapped decoded cache of a folder (never writing into it)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ddpm_studio.core.demo_data import write_demo_folder
from ddpm_studio.services import config as c
from ddpm_studio.services.control import drive
from ddpm_studio.services.training import TrainingSession


def test_training_previews_and_resume_on_a_memory_mapped_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    write_demo_folder(tmp_path / "shapes", n=40, image_size=16, seed=0)
    cfg = c.check(c.from_dict({
        "data": {"source": "folder", "data_path": str(tmp_path / "shapes"), "image_size": 16, "cache": True, "hflip": True},
        "model": {"preset": "tiny"}, "diffusion": {"timesteps": 50},
        "optim": {"batch_size": 8, "total_steps": 4, "device": "cpu", "mixed_precision": "off"},
        "schedule": {"preview_every": 2, "preview_steps": 2, "preview_images": 2, "checkpoint_every": 2,
                     "checkpoint_minutes": 0, "log_every": 1},
    }))
    session = TrainingSession(cfg, runs_dir=tmp_path / "runs", run_name="mapped")
    drive(session.steps(), lambda e: None)
    backing = session.data.backing_file
    assert backing is not None and Path(backing).parent == tmp_path / "cache" / "ddpm-studio" / "datasets"
    before = Path(backing).read_bytes()
    resumed = TrainingSession(resume_from=tmp_path / "runs" / "mapped" / "checkpoints" / "step_00000002.pt")
    drive(resumed.steps(), lambda e: None)
    assert resumed.data.backing_file == backing and resumed.step == 4
    for key, value in resumed.model.state_dict().items():  # exact resume from the same mapped rows
        assert torch.equal(value, session.model.state_dict()[key]), key
    assert Path(backing).read_bytes() == before  # the cache file is never written into
