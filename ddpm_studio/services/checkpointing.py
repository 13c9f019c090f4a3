"""Saving a training run's checkpoints so that no failure loses the work already done.

Why apart from the training loop: the loop only says "a checkpoint now"; what happens around the
write is a policy of its own. The file is written atomically (:func:`core.checkpoint.save_checkpoint`),
older checkpoints are deleted only after the new one is on disk, and a failed write (disk full, folder
gone) pauses the run, so the user can free space and resume, which retries the save, instead of the
run going on with nothing to fall back on.

Besides the newest ``keep_last`` checkpoints, the one with the lowest validation loss (of its EMA weights, on the
run's fixed held-out batch) is kept: retention never deletes it, and run.json records it, so
``ddpm-studio sample RUN --best`` and the app's Checkpoints panel can find it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from ddpm_studio.core.checkpoint import save_checkpoint
from ddpm_studio.services.control import RunControl
from ddpm_studio.services.events import CheckpointFailed, CheckpointSaved, RunPaused, RunResumed
from ddpm_studio.services.runs import RunFolder

log = logging.getLogger(__name__)

SaveOutcome = CheckpointSaved | CheckpointFailed


class Checkpointer:
    """Writes one run's checkpoints, applies retention, and pauses for a retry when a write fails.

    ``status`` updates run.json (the session's, which knows whether this process may write it);
    ``pause_on_failure`` is False under torchrun, where no one is there to resume a paused job.
    """

    def __init__(self, run: RunFolder, control: RunControl, keep_last: int, *,
                 status: Callable[..., None], pause_on_failure: bool = True) -> None:
        self.run = run
        self.control = control
        self.keep_last = keep_last
        self.status = status
        self.pause_on_failure = pause_on_failure
        self.last_saved_step = -1
        self.scores: dict[int, float] = run.checkpoint_scores()  # step → validation loss, of the checkpoints on disk

    def save(self, step: int, payload: dict[str, Any], *, val_loss: float | None = None) -> SaveOutcome:
        """Write ``payload`` as the checkpoint of ``step``; on failure pause (unless stopping) and say why.

        ``val_loss``: the checkpoint's validation loss; the lowest one on disk marks the run's best checkpoint,
        which retention keeps.
        """
        path = self.run.checkpoint_path(step)
        try:
            save_checkpoint(path, payload)
        except OSError as exc:
            log.error("Checkpoint at step %d failed: %s", step, exc)
            message = f"Could not save checkpoint at step {step}: {exc.strerror or exc}"
            if self.pause_on_failure and not self.control.stop_requested:
                # Keep the work: wait for the user to free space (or fix the folder), then save_retrying retries.
                self.control.pause()
                message += ". Training is paused: free some disk space, then resume to retry the save"
            return CheckpointFailed(step, message)
        self.last_saved_step = step
        if val_loss is not None:
            self.scores[step] = val_loss
        else:
            self.scores.pop(step, None)
        self.status(**self.run.scores_record(self.scores))  # the best is on record before retention, which keeps it
        deleted = self.run.apply_retention(self.keep_last, protect=path)
        self.scores = {s: v for s, v in self.scores.items() if self.run.checkpoint_path(s).exists()}
        self.status(step=step, last_checkpoint=str(path), **self.run.scores_record(self.scores))
        best = self.run.best_of(self.scores)
        if best is not None and best.step == step and len(self.scores) > 1:
            log.info("Checkpoint at step %d is the best so far (validation loss %.5f)", step, val_loss)
        return CheckpointSaved(step, str(path), path.stat().st_size, tuple(str(p) for p in deleted))

    def save_retrying(self, step: int, payload: Callable[[], dict[str, Any]], *,
                      val_loss: float | None = None) -> Iterator[Any]:
        """Save; while the save failed and the run is paused, retry on each resume until it works or is stopped.

        Yields the save events and the pause / resume in between; returns the last save event.
        """
        event = self.save(step, payload(), val_loss=val_loss)
        yield event
        while isinstance(event, CheckpointFailed) and self.control.paused and not self.control.stop_requested:
            self.status(state="paused", step=step)
            yield RunPaused(step)
            self.control.wait_resumed()
            if self.control.stop_requested:
                break
            self.status(state="running", step=step)
            yield RunResumed(step)
            event = self.save(step, payload(), val_loss=val_loss)
            yield event
        return event
