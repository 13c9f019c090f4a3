"""Run by test_torchrun.py under torchrun: ``ddpm-studio train`` through the CLI, then this rank's outcome.

Usage: ``python -m torch.distributed.run … torchrun_worker.py OUT_DIR train [flags]``. Writes ``OUT_DIR/rank<R>.pt``
(exit code, world size, restart count, step, weights). With ``KILL_RANK``, ``KILL_AT_STEP`` and ``KILL_MARK`` in the
environment, that rank SIGKILLs itself right after that step, once: it first creates the mark file, so the group
torchrun restarts does not kill again.
"""

import os
import signal
import sys
from pathlib import Path

import torch

from ddpm_studio import cli
from ddpm_studio.services import training

sessions = []
KILL_RANK = int(os.environ.get("KILL_RANK", "-1"))
KILL_AT_STEP = int(os.environ.get("KILL_AT_STEP", "0"))
KILL_MARK = Path(os.environ.get("KILL_MARK", os.devnull))


class Session(training.TrainingSession):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        sessions.append(self)

    def _train_step(self):
        result = super()._train_step()
        if self.dist.rank == KILL_RANK and self.step == KILL_AT_STEP and not KILL_MARK.exists():
            KILL_MARK.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return result


training.TrainingSession = Session  # cmd_train imports it from the module when it runs

if __name__ == "__main__":
    out = Path(sys.argv[1])
    code = cli.main(sys.argv[2:])
    session = sessions[0]
    torch.save({"code": code, "world": session.dist.world, "step": session.step,
                "restart": int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")),
                "resumed_from": str(session.resume_from) if session.resume_from else None,
                "model": session.model.state_dict() if hasattr(session, "model") else None},
               out / f"rank{os.environ['RANK']}.pt")
    sys.exit(code)
