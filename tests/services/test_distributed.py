"""Multi-process training: ``ddpm-studio train`` under torchrun with 2 CPU processes (gloo).

The 2-process run must leave identical weights on both ranks, match one process that trains on
the same global batch (to float rounding), write its run folder from rank 0 only, and its
checkpoint must resume in a single process.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ddpm_studio.services import config as c
from ddpm_studio.services.batches import BatchCursor, BatchStream
from ddpm_studio.services.control import drive
from ddpm_studio.services.distributed import Distributed, launched_by_torchrun, start
from ddpm_studio.services.runs import RunFolder
from ddpm_studio.services.training import TrainingSession

WORKER = Path(__file__).with_name("dist_worker.py")
REPO = Path(__file__).resolve().parents[2]
PER_RANK_BATCH, ACCUM, STEPS = 4, 2, 4
SETTINGS = {  # dropout 0 and float32: the two runs must agree to rounding; dropout masks are per rank by design
    "data": {"source": "demo", "image_size": 16},
    "model": {"preset": "tiny", "dropout": 0.0},
    "diffusion": {"timesteps": 100},
    "optim": {"batch_size": PER_RANK_BATCH, "grad_accum": ACCUM, "total_steps": STEPS, "warmup_steps": 2, "lr": 1e-3,
              "device": "cpu", "mixed_precision": "off"},
    "schedule": {"preview_every": 0, "checkpoint_every": 2, "checkpoint_minutes": 0, "log_every": 2},
}


def cli_flags(settings):
    return [arg for section in settings.values() for name, value in section.items()
            for arg in (f"--{name.replace('_', '-')}", str(value))]


def single_process(tmp_path, name, **optim):
    cfg = c.from_dict({**SETTINGS, "optim": {**SETTINGS["optim"], **optim}})
    session = TrainingSession(c.check(cfg), runs_dir=tmp_path / "single", run_name=name)
    drive(session.steps(), lambda e: None)
    return session


def test_cursor_in_global_samples_resumes_under_another_world_size():
    size, batch, seed = 37, 3, 5
    one = BatchStream(size, 2 * batch, seed, hflip=True)
    ranks = [BatchStream(size, batch, seed, hflip=True, rank=r, world=2) for r in range(2)]
    for _ in range(4):  # 4 steps of 2 x 3 = 24 global samples
        expected, _ = one.next()
        got = torch.stack([s.next()[0] for s in ranks], dim=1).flatten()  # rank r holds global rows r, r + 2, …
        assert torch.equal(got, expected)
    state = ranks[0].cursor.global_state(2)
    assert state == one.cursor.state_dict() == {"epoch": 0, "position": 24}
    resumed = BatchStream(size, 2 * batch, seed, hflip=True, cursor=BatchCursor.from_global_state(state, 1))
    assert torch.equal(resumed.next()[0], one.next()[0])


def test_a_single_process_joins_nothing(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    assert not launched_by_torchrun()
    solo, device = start(torch.device("cpu"))
    assert solo == Distributed() and device == torch.device("cpu")
    rows = torch.arange(6)
    assert not solo.enabled and solo.is_main and solo.share(rows) is rows and solo.broadcast("x") == "x"
    model = torch.nn.Linear(2, 2)
    assert solo.wrap(model) is model


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path):
    out = tmp_path / "ddp"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    # --standalone: a local rendezvous on a free port, so parallel test runs do not collide.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER), str(out),
           "train", "--runs-dir", str(tmp_path / "runs"), "--name", "ddp", *cli_flags(SETTINGS)]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=150)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log

    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert [(r["code"], r["world"], r["step"]) for r in ranks] == [(0, 2, STEPS)] * 2
    for key in ranks[0]["model"]:  # DDP keeps the replicas bit-identical
        assert torch.equal(ranks[0]["model"][key], ranks[1]["model"][key]), key
        assert torch.equal(ranks[0]["ema"][key], ranks[1]["ema"][key]), key

    # Rank 0 alone wrote the run folder and reported; the effective batch is per device x world x accumulation.
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["ddp"]
    run = RunFolder(tmp_path / "runs" / "ddp")
    assert [ck.step for ck in run.checkpoints()] == [2, STEPS]
    assert [line.count('"step"') for line in run.metrics_path.read_text().splitlines()] == [1, 1]
    assert log.count("effective batch 16 = 4 per device × 2 processes × 2 accumulation steps") == 1, log
    saved = torch.load(run.checkpoint_path(STEPS), weights_only=True)
    for key in saved["model"]:
        assert torch.equal(saved["model"][key], ranks[0]["model"][key]), key

    # One process with the global batch (2 x 4) sees the same samples and noise: equal up to float rounding
    # (any other batch, order or noise moves the weights by ~1e-3 per coordinate at this learning rate).
    single = single_process(tmp_path, "one", batch_size=2 * PER_RANK_BATCH).model.state_dict()
    for key in single:
        torch.testing.assert_close(ranks[0]["model"][key], single[key], rtol=0, atol=2e-4, msg=key)

    # Saved by 2 processes, resumed by 1 (world size 2 -> 1): the data cursor is in global samples.
    mid = tmp_path / "mid.pt"
    shutil.copy(run.checkpoint_path(2), mid)
    resumed = TrainingSession(resume_from=mid, runs_dir=tmp_path / "resumed",
                              overrides={"optim": {"batch_size": 2 * PER_RANK_BATCH}})
    drive(resumed.steps(), lambda e: None)
    assert resumed.step == STEPS
    for key, value in resumed.model.state_dict().items():
        torch.testing.assert_close(value, single[key], rtol=0, atol=2e-4, msg=key)
