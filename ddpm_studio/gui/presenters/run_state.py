"""The run's state machine, Qt-free so it can be unit-tested as plain data.

The training presenter holds the one RunState of the app; every view derives from it. It moves only on
what the worker confirms (RunStarted, RunPaused, RunResumed, RunFinished, RunFailed, the thread ending);
a click only moves to a *requested* state (PAUSING, RESUMING, STOPPING) that disables the button until
the worker answers.
"""

from __future__ import annotations

from enum import Enum


class RunState(Enum):
    IDLE = "idle"
    STARTING = "starting"
    RUNNING = "running"
    PAUSING = "pausing"
    PAUSED = "paused"
    RESUMING = "resuming"
    STOPPING = "stopping"
    FINISHED = "finished"
    FAILED = "failed"

    @property
    def active(self) -> bool:
        """A worker thread is (or may still be) running: settings are read-only, Start is off."""
        return self not in (RunState.IDLE, RunState.FINISHED, RunState.FAILED)

    @property
    def label(self) -> str:
        return {
            RunState.IDLE: "Idle", RunState.STARTING: "Starting…", RunState.RUNNING: "Training",
            RunState.PAUSING: "Pausing…", RunState.PAUSED: "Paused", RunState.RESUMING: "Resuming…",
            RunState.STOPPING: "Stopping (saving a checkpoint)…", RunState.FINISHED: "Finished",
            RunState.FAILED: "Failed",
        }[self]


_ENDED = {RunState.IDLE, RunState.FINISHED, RunState.FAILED}
_LIVE = {RunState.STARTING, RunState.RUNNING, RunState.PAUSING, RunState.PAUSED, RunState.RESUMING, RunState.STOPPING}

#: Allowed transitions. Requests: start (ended → STARTING), pause, resume, stop.
#: Confirmations: started, paused, resumed, finished, failed, thread_ended.
TRANSITIONS: dict[tuple[RunState, str], RunState] = {}
for _s in _ENDED:
    TRANSITIONS[(_s, "start")] = RunState.STARTING
TRANSITIONS[(RunState.STARTING, "started")] = RunState.RUNNING
TRANSITIONS[(RunState.RUNNING, "pause")] = RunState.PAUSING
TRANSITIONS[(RunState.PAUSED, "resume")] = RunState.RESUMING
for _s in (RunState.RUNNING, RunState.PAUSING):
    TRANSITIONS[(_s, "paused")] = RunState.PAUSED
for _s in (RunState.PAUSED, RunState.RESUMING):
    TRANSITIONS[(_s, "resumed")] = RunState.RUNNING
for _s in _LIVE:
    TRANSITIONS[(_s, "finished")] = RunState.FINISHED
    TRANSITIONS[(_s, "failed")] = RunState.FAILED
    # The thread ended without RunFinished/RunFailed (stopped while loading images): back to idle.
    TRANSITIONS[(_s, "thread_ended")] = RunState.IDLE
    if _s is not RunState.STOPPING:
        TRANSITIONS[(_s, "stop")] = RunState.STOPPING
# A stop while the run was pausing/resuming still gets its RunPaused/RunResumed confirmations.
TRANSITIONS[(RunState.STOPPING, "paused")] = RunState.STOPPING
TRANSITIONS[(RunState.STOPPING, "resumed")] = RunState.STOPPING
TRANSITIONS[(RunState.STOPPING, "started")] = RunState.STOPPING
for _s in _ENDED:
    TRANSITIONS[(_s, "thread_ended")] = _s  # the thread's end after RunFinished / RunFailed changes nothing


def next_state(state: RunState, action: str) -> RunState | None:
    """The state after ``action``, or None when the action is not allowed in ``state``."""
    return TRANSITIONS.get((state, action))


def buttons_for(state: RunState, can_start: bool = True, can_continue: bool = True) -> dict[str, bool]:
    """Which run controls are enabled in ``state`` (start and continue also need the presenter's say-so).

    Sample now / Checkpoint now work while running and while paused: the session serves them between steps,
    and a paused session serves them at once and stays paused.
    """
    serving = state in (RunState.RUNNING, RunState.PAUSED)
    return {
        "start": state in _ENDED and can_start,
        "pause": state is RunState.RUNNING,
        "resume": state is RunState.PAUSED,
        "stop": state in (RunState.STARTING, RunState.RUNNING, RunState.PAUSING, RunState.PAUSED, RunState.RESUMING),
        "continue": state in _ENDED and can_continue,
        "preview": serving,
        "checkpoint": serving,
    }
