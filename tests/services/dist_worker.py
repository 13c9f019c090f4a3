"""Run by test_distributed.py under torchrun: ``ddpm-studio train`` through the CLI, then this rank's weights.

Usage: ``python -m torch.distributed.run --nproc_per_node 2 dist_worker.py OUT_DIR train [flags]``; writes
``OUT_DIR/rank<R>.pt`` with the exit code and the model's state dict as this rank ended.
"""

import os
import sys
from pathlib import Path

import torch

from ddpm_studio import cli
from ddpm_studio.services import training

sessions = []


class RecordingSession(training.TrainingSession):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        sessions.append(self)


training.TrainingSession = RecordingSession  # cmd_train imports it from the module when it runs

if __name__ == "__main__":
    out = Path(sys.argv[1])
    code = cli.main(sys.argv[2:])
    session = sessions[0]
    torch.save({"code": code, "world": session.dist.world, "step": session.step, "model": session.model.state_dict(),
                "ema": session.ema.model.state_dict()}, out / f"rank{os.environ['RANK']}.pt")
    sys.exit(code)
