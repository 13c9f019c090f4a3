"""torchrun restarts: a group that torchrun restarts after a failure continues the run folder it was training.

``torchrun --max-restarts N`` restarts every process of a job when one of them fails (a crash, a SIGKILL,
a lost node). The new processes run the same command line, with ``TORCHELASTIC_RESTART_COUNT`` = 1, 2, …
and the job's ``TORCHELASTIC_RUN_ID`` (``--rdzv-id``, or a random id per torchrun invocation with
``--standalone``). So the same ``ddpm-studio train …`` command must find what the first attempt made:

- the first attempt's rank 0 records the job's id in its run folder's ``run.json`` (:func:`record_job`);
- a restarted attempt (restart count > 0, no ``--resume``) looks under its runs folder for the folder of its
  job and resumes its newest complete checkpoint, exactly as ``train --resume RUN`` would
  (:func:`run_to_resume`). The work lost is what came after that checkpoint, at most one checkpoint
  interval; the loss log is cut back to the checkpoint's step, so it has no gap and no duplicate.

A restart that finds no checkpoint of its job yet starts the run again in a new folder; one that finds
its run completed (a process failed on the way out) resumes it at its last step and ends at once. Use a
distinct ``--rdzv-id`` per job, as torchrun asks: a restart would take an earlier job's run folder with
the same id for its own.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from ddpm_studio.services.runs import RunFolder, list_runs

log = logging.getLogger(__name__)

#: The key of run.json that names the torchrun job training the folder.
STATUS_KEY = "torchrun_job"


def job() -> tuple[str, int] | None:
    """(run id, restart count) of the torchrun job this process belongs to, or None outside torchrun."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if not run_id or "RANK" not in os.environ:
        return None
    return run_id, int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def record_job(run: RunFolder) -> None:
    """Note in ``run``'s run.json which torchrun job trains it (rank 0, once it holds the run's lock)."""
    current = job()
    if current is not None:
        run.write_status(**{STATUS_KEY: {"run_id": current[0], "restart": current[1], "at": time.time()}})


def run_to_resume(runs_dir: str | Path | None) -> Path | None:
    """In a process that torchrun restarted: the run folder its job was training, when it has a checkpoint.

    None on the first attempt, outside torchrun, or when no folder of this job has a checkpoint yet. When
    several do (earlier restarts that found none started afresh), the one with the newest checkpoint.
    """
    current = job()
    if current is None or current[1] == 0:
        return None
    run_id = current[0]
    best: tuple[float, Path] | None = None
    for run in list_runs(runs_dir):
        status = run.read_status()
        mark = status.get(STATUS_KEY)
        if not isinstance(mark, dict) or mark.get("run_id") != run_id:
            continue
        latest = run.latest_checkpoint()
        if latest is not None and (best is None or latest.modified > best[0]):
            best = (latest.modified, run.path)
    if best is None:
        log.warning("torchrun restart %d of job %s: no checkpoint of this job yet, starting the run again", current[1],
                    run_id)
        return None
    log.warning("torchrun restart %d of job %s: resuming %s from its newest checkpoint", current[1], run_id, best[1])
    return best[1]
