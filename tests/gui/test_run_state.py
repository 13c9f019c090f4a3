"""RunState transitions as plain data: the buttons follow confirmations, never clicks."""

from __future__ import annotations

import pytest

from ddpm_studio.gui.presenters.run_state import RunState, buttons_for, next_state

S = RunState


@pytest.mark.parametrize(
    ("state", "action", "expected"),
    [
        (S.IDLE, "start", S.STARTING),
        (S.FINISHED, "start", S.STARTING),
        (S.FAILED, "start", S.STARTING),
        (S.STARTING, "started", S.RUNNING),
        (S.RUNNING, "pause", S.PAUSING),
        (S.PAUSING, "paused", S.PAUSED),
        (S.RUNNING, "paused", S.PAUSED),
        (S.PAUSED, "resume", S.RESUMING),
        (S.RESUMING, "resumed", S.RUNNING),
        (S.RUNNING, "stop", S.STOPPING),
        (S.PAUSED, "stop", S.STOPPING),
        (S.STARTING, "stop", S.STOPPING),
        (S.STOPPING, "finished", S.FINISHED),
        (S.STOPPING, "paused", S.STOPPING),
        (S.RUNNING, "failed", S.FAILED),
        (S.STARTING, "thread_ended", S.IDLE),
        (S.FINISHED, "thread_ended", S.FINISHED),
        (S.FAILED, "thread_ended", S.FAILED),
    ],
)
def test_allowed_transitions(state: RunState, action: str, expected: RunState) -> None:
    assert next_state(state, action) is expected


@pytest.mark.parametrize(
    ("state", "action"),
    [(S.RUNNING, "start"), (S.PAUSED, "pause"), (S.RUNNING, "resume"), (S.IDLE, "pause"), (S.IDLE, "stop"),
     (S.STOPPING, "stop"), (S.FINISHED, "paused"), (S.IDLE, "started"), (S.PAUSING, "pause")],
)
def test_refused_transitions(state: RunState, action: str) -> None:
    assert next_state(state, action) is None


def test_buttons_follow_state() -> None:
    no_requests = {"preview": False, "checkpoint": False}
    serving = {"preview": True, "checkpoint": True}
    assert buttons_for(S.IDLE) == {"start": True, "pause": False, "resume": False, "stop": False, "continue": True,
                                   **no_requests}
    assert buttons_for(S.IDLE, can_start=False)["start"] is False
    assert buttons_for(S.FINISHED, can_continue=False)["continue"] is False
    assert buttons_for(S.RUNNING) == {"start": False, "pause": True, "resume": False, "stop": True, "continue": False,
                                      **serving}
    assert buttons_for(S.PAUSING) == {"start": False, "pause": False, "resume": False, "stop": True, "continue": False,
                                      **no_requests}
    assert buttons_for(S.PAUSED) == {"start": False, "pause": False, "resume": True, "stop": True, "continue": False,
                                     **serving}  # Sample now / Checkpoint now work while paused too
    assert buttons_for(S.STOPPING) == {"start": False, "pause": False, "resume": False, "stop": False, "continue": False,
                                       **no_requests}
    assert all(s.active for s in (S.STARTING, S.RUNNING, S.PAUSING, S.PAUSED, S.RESUMING, S.STOPPING))
    assert not any(s.active for s in (S.IDLE, S.FINISHED, S.FAILED))


def test_every_live_state_can_end() -> None:
    for state in RunState:
        if state.active:
            assert next_state(state, "failed") is S.FAILED
            assert next_state(state, "thread_ended") is S.IDLE
