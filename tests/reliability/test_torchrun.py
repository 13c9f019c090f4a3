"""torchrun fault tolerance: a killed rank and ``--max-restarts 1``; and a 2-node job simulated on localhost.

The restart test kills one process of a 2-process gloo job (SIGKILL, right after a step between two checkpoints);
torchrun restarts the group with the same command line, which finds the run folder of its job
(services/elastic.py) and resumes from its newest checkpoint: at most one checkpoint interval is lost, the loss
log has every step once, and the weights end bit for bit as the same job's without the kill.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch

from ddpm_studio.core.demo_data import write_demo_folder
from ddpm_studio.services.metrics import read_metrics
from ddpm_studio.services.runs import RunFolder

WORKER = Path(__file__).with_name("torchrun_worker.py")
ROOT = Path(__file__).resolve().parents[2]
PER_RANK_BATCH, STEPS, CHECKPOINT_EVERY, KILL_AT = 4, 10, 4, 6
SETTINGS = {  # dropout 0: a resumed rank reseeds its dropout stream per step, which an uninterrupted one does not
    "data": {"source": "demo", "image_size": 16},
    "model": {"preset": "tiny", "dropout": 0.0},
    "diffusion": {"timesteps": 50},
    "optim": {"batch_size": PER_RANK_BATCH, "total_steps": STEPS, "warmup_steps": 2, "lr": 1e-3, "device": "cpu",
              "mixed_precision": "off"},
    "schedule": {"preview_every": 0, "checkpoint_every": CHECKPOINT_EVERY, "checkpoint_minutes": 0, "log_every": 1,
                 "keep_last": 10},
}


def cli_flags(settings: dict) -> list[str]:
    return [arg for section in settings.values() for name, value in section.items()
            for arg in (f"--{name.replace('_', '-')}", str(value))]


def torchrun_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID",
                "TORCHELASTIC_RESTART_COUNT"):
        env.pop(key, None)
    env.update(extra)
    return env


def ranks(out: Path, world: int = 2) -> list[dict]:
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(world)]


def run_torchrun(tmp_path: Path, name: str, **env: str) -> tuple[Path, str]:
    """``train`` under ``torchrun --standalone --nproc-per-node 2 --max-restarts 1``; (its out folder, its log)."""
    out, runs = tmp_path / name / "out", tmp_path / name / "runs"
    out.mkdir(parents=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "--max-restarts", "1",
           "--monitor-interval", "0.2", str(WORKER), str(out),
           "train", "--runs-dir", str(runs), "--name", "elastic", *cli_flags(SETTINGS)]
    proc = subprocess.run(cmd, env=torchrun_env(tmp_path, **env), cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    return out, log


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The same 2-process job without a kill: rank 0's outcome."""
    out, _ = run_torchrun(tmp_path_factory.mktemp("torchrun"), "uninterrupted")
    return ranks(out)[0]


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.parametrize("kill_rank", [0, 1])
def test_a_killed_rank_restarts_the_group_from_the_newest_checkpoint(tmp_path: Path, kill_rank: int,
                                                                     uninterrupted: dict) -> None:
    mark = tmp_path / "kill.mark"
    out, log = run_torchrun(tmp_path, "killed", KILL_RANK=str(kill_rank), KILL_AT_STEP=str(KILL_AT), KILL_MARK=str(mark))
    assert mark.exists(), log  # the kill happened (once: the restarted group saw the mark)

    # Both ranks of the restarted group (restart 1) resumed the first attempt's run from its step-4 checkpoint:
    # 2 steps lost (the kill came after step 6), less than one checkpoint interval.
    runs = tmp_path / "killed" / "runs"
    run = RunFolder(runs / "elastic")
    resumed = str(run.checkpoint_path(CHECKPOINT_EVERY))
    assert [(r["code"], r["world"], r["restart"], r["step"], r["resumed_from"]) for r in ranks(out)] == \
        [(0, 2, 1, STEPS, resumed)] * 2, log
    assert "torchrun restart 1 of job" in log and f"resuming {run.path}" in log, log
    if kill_rank == 0:  # rank 0 held the run's lock when it was killed: the restarted rank 0 took it over
        assert f"Taking over the lock of run elastic from process {int(mark.read_text())}" in log, log

    # One run folder; every checkpoint once; the loss log has each step once, in order (no gap, no duplicate).
    assert [p.name for p in runs.iterdir()] == ["elastic"]
    assert [ck.step for ck in run.checkpoints()] == [4, 8, 10]
    steps = [r["step"] for r in read_metrics(run.metrics_path) if "loss" in r]
    assert steps == list(range(1, STEPS + 1)), steps
    status = json.loads((run.path / "run.json").read_text())
    assert status["state"] == "completed" and status["torchrun_job"]["restart"] == 1

    # The resume was exact: bit for bit the weights of the same job without the kill, on both ranks.
    for result in ranks(out):
        for key, value in uninterrupted["model"].items():
            assert torch.equal(result["model"][key], value), key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_nodes_on_localhost_train_and_write_once(tmp_path: Path) -> None:
    """Two torchrun launchers (one process each) meet through c10d on 127.0.0.1, like two machines sharing the
    runs folder; each "node" has its own cache folder, where its local rank 0 decodes the image folder."""
    out, runs = tmp_path / "out", tmp_path / "runs"
    out.mkdir()
    write_demo_folder(tmp_path / "shapes", n=48, image_size=16, seed=0)
    settings = {**SETTINGS, "data": {"source": "folder", "data_path": str(tmp_path / "shapes"), "image_size": 16},
                "optim": {**SETTINGS["optim"], "total_steps": 4}, "schedule": {**SETTINGS["schedule"], "checkpoint_every": 2}}
    endpoint, job = f"127.0.0.1:{free_port()}", f"two-nodes-{uuid.uuid4().hex[:8]}"
    procs = []
    for node in range(2):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
               "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", job,
               "--rdzv-conf", f"is_host={'true' if node == 0 else 'false'}", "--local-addr", "127.0.0.1",
               "--max-restarts", "0", str(WORKER), str(out),
               "train", "--runs-dir", str(runs), "--name", "two-nodes", *cli_flags(settings)]
        env = torchrun_env(tmp_path, XDG_CACHE_HOME=str(tmp_path / f"cache-node{node}"))
        procs.append(subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    logs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n\n".join(logs)

    results = ranks(out)
    assert [(r["code"], r["world"], r["step"]) for r in results] == [(0, 2, 4)] * 2
    for key in results[0]["model"]:
        assert torch.equal(results[0]["model"][key], results[1]["model"][key]), key
    # Written once, by global rank 0: one folder, each checkpoint once, each step's loss once.
    assert [p.name for p in runs.iterdir()] == ["two-nodes"]
    run = RunFolder(runs / "two-nodes")
    assert [ck.step for ck in run.checkpoints()] == [2, 4]
    assert [r["step"] for r in read_metrics(run.metrics_path) if "loss" in r] == [1, 2, 3, 4]
    assert "".join(logs).count("effective batch 8 = 4 per device × 2 processes") == 1, "\n\n".join(logs)
    # Each node decoded the folder into its own cache once (its local rank 0; there is no other local rank here).
    for node in range(2):
        assert len(list((tmp_path / f"cache-node{node}" / "ddpm-studio" / "datasets").glob("*.npy"))) == 1
