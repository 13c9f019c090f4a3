"""GUI under stress: a seeded random driver presses Start / Pause / Resume / Stop / Continue / Sample now / Checkpoint
now / Generate / Cancel / close a few hundred times on the real window training a tiny model, with random pauses
between clicks.

Some clicks go through the toolbar actions (disabled ones do nothing, as for a user); others call the
presenters directly, as a double click or a keyboard shortcut racing a state change would. After every
action: the buttons match the state machine, at most one training and one sampling thread run, no action
blocks the event loop, and no unexpected error dialog or exception in a slot appeared. Every few dozen
actions, and at the end, everything is stopped and must wind down (a deadlock fails the wait), every
checkpoint written must load, and no worker thread may remain. Closing the window (answering "Stop and
quit") ends an episode; a fresh window carries on.

``DDPM_STUDIO_GUI_STRESS_ACTIONS`` (default 300) and ``DDPM_STUDIO_GUI_STRESS_SEED`` (default 0).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.gui.conftest import (  # noqa: F401 (fixtures)
    _join_background_jobs,
    _one_torch_thread,
    app_handle,
    dialogs,
    isolated,
    tiny_config,
)

ACTIONS = int(os.environ.get("DDPM_STUDIO_GUI_STRESS_ACTIONS", "300"))
SEED = int(os.environ.get("DDPM_STUDIO_GUI_STRESS_SEED", "0"))
SETTLE_MS = 90_000  # waiting longer than this for threads to end is a deadlock

#: action -> weight
WEIGHTS = {
    "start": 14, "start_direct": 3, "pause": 10, "resume": 10, "stop": 8, "toggle_pause": 4, "pause_direct": 3,
    "resume_direct": 3, "stop_direct": 3, "continue": 4, "generate": 10, "cancel_generate": 4, "close": 4,
    "wait": 10, "preview": 4, "checkpoint": 4,  # Sample now / Checkpoint now
}
#: Error dialogs a user can legitimately get from such clicking (anything else fails the test).
ALLOWED_ERRORS = {"No model", "No live model", "Cannot continue"}


class Tracker:
    """Every WorkerThread the app creates, to count the ones still running."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from ddpm_studio.gui import workers

        self.threads: list[Any] = []
        real_init = workers.WorkerThread.__init__
        tracker = self

        def init(self: Any, worker: Any, parent: Any = None) -> None:
            real_init(self, worker, parent)
            tracker.threads.append((type(worker).__name__, self.thread))

        monkeypatch.setattr(workers.WorkerThread, "__init__", init)

    def running(self, kind: str) -> int:
        return sum(1 for name, thread in self.threads if name == kind and _alive(thread))


def _alive(qthread: Any) -> bool:
    try:
        return qthread.isRunning()
    except RuntimeError:  # the C++ object is gone: it ended
        return False


def _check_buttons(studio: Any) -> None:
    from ddpm_studio.gui.presenters.run_state import buttons_for

    tc = studio.training
    controls = studio.w.run_controls
    assert controls.state_label.text() == tc.label  # (a finished run's says Completed or Stopped)
    ended = not tc.is_running()
    expected = buttons_for(tc.state, tc.verdict.ok and ended, ended)
    for name in ("start", "pause", "resume", "stop", "continue", "preview", "checkpoint"):
        assert controls.action(name).isEnabled() == expected[name], (name, tc.state)
    if tc.state.active:
        assert tc.is_running(), f"{tc.state} without a worker thread"


def _settle(qtbot: Any, studio: Any, tracker: Tracker) -> None:
    """Stop everything and wait for it to end: a deadlock fails here."""
    studio.training.stop()
    studio.generate.cancel()
    qtbot.waitUntil(lambda: not studio.training.is_running() and not studio.generate.is_running(), timeout=SETTLE_MS)
    qtbot.waitUntil(lambda: tracker.running("TrainWorker") == 0 and tracker.running("SampleWorker") == 0, timeout=SETTLE_MS)
    assert not studio.training.state.active


def _new_window(qtbot: Any, isolated_dir: Path) -> Any:
    from ddpm_studio.gui.app import create_app

    handle = create_app(exec_app=False, settings_path=str(isolated_dir / "settings.ini"), offer_interrupted=False)
    qtbot.waitUntil(lambda: handle.studio.torch_ready, timeout=60_000)
    return handle


def _configure(qtbot: Any, studio: Any) -> None:
    from ddpm_studio.services.config import SampleConfig

    studio.settings.set_config(tiny_config(
        data={"source": "demo"}, optim={"total_steps": 40},
        schedule={"preview_every": 5, "checkpoint_every": 10, "keep_last": 2, "log_every": 2}))
    studio.generate.set_sample_config(SampleConfig(num_images=2, sample_batch_size=2, steps=3))
    qtbot.waitUntil(lambda: studio.w.run_controls.action("start").isEnabled(), timeout=60_000)


def test_random_clicks_never_deadlock_crash_or_leak_threads(app_handle, dialogs, qtbot, isolated,  # noqa: F811
                                                            monkeypatch: pytest.MonkeyPatch, qtlog) -> None:
    from ddpm_studio.core.checkpoint import load_checkpoint
    from ddpm_studio.gui import dialogs as dlg
    from ddpm_studio.gui.presenters.model_sources import LIVE
    from ddpm_studio.services.runs import list_runs

    rng = random.Random(SEED)
    tracker = Tracker(monkeypatch)
    handles = [app_handle]
    studio = app_handle.studio
    _configure(qtbot, studio)
    names, weights = zip(*WEIGHTS.items(), strict=True)
    done: Counter[str] = Counter()
    slowest, slowest_action = 0.0, ""
    started = time.monotonic()
    for i in range(ACTIONS):
        w, tc = studio.w, studio.training
        action = rng.choices(names, weights)[0]
        t0 = time.perf_counter()
        if action == "start":
            w.run_controls.action("start").trigger()
        elif action == "start_direct":
            tc.start()
        elif action in ("pause", "resume", "stop", "preview", "checkpoint"):
            w.run_controls.action(action).trigger()
        elif action == "toggle_pause":
            tc.toggle_pause()
        elif action.endswith("_direct"):
            getattr(tc, action.removesuffix("_direct"))()
        elif action == "continue":
            dialogs.answers = [rng.choice([0, 1])]  # "Train more" / "Cancel" when the run is complete
            w.run_controls.action("continue").trigger()
            dialogs.answers = []
        elif action == "generate":
            panel = w.generate_panel
            values = [panel.source.itemData(k) for k in range(panel.source.count())]
            if values:
                pick = rng.choice(values)
                panel.source.setCurrentIndex(values.index(pick))
                if pick == LIVE:
                    done["generate_live"] += 1
            panel.generate_button.click()
        elif action == "cancel_generate":
            studio.generate.cancel()
        elif action == "close":
            answer = rng.choice([0, 1])  # "Stop and quit" / "Keep training"
            dialogs.answers = [answer]
            w.close()
            dialogs.answers = []
        elif action == "wait":
            qtbot.wait(rng.randint(200, 800))
        took = time.perf_counter() - t0 if action != "wait" else 0.0
        if took > slowest:
            slowest, slowest_action = took, action
        done[action] += 1
        if action == "close" and (not w.isVisible() or studio._closing):
            # The window goes: wait for it, then carry on in a new one.
            qtbot.waitUntil(lambda w=w: not w.isVisible(), timeout=SETTLE_MS)
            _settle(qtbot, studio, tracker)
            done["episodes"] += 1
            handle = _new_window(qtbot, isolated)
            handles.append(handle)
            studio = handle.studio
            _configure(qtbot, studio)
        qtbot.wait(rng.randint(0, 60))
        _check_buttons(studio)
        assert tracker.running("TrainWorker") <= 1 and tracker.running("SampleWorker") <= 1
        unexpected = [e for e in dlg.shown_errors if e[0] not in ALLOWED_ERRORS]
        assert not unexpected, unexpected
        if i % 60 == 59:
            _settle(qtbot, studio, tracker)
    _settle(qtbot, studio, tracker)

    # No action blocked the event loop (a close waits for sampling to cancel: still well under this).
    assert slowest < 5.0, f"{slowest_action} took {slowest:.1f} s on the GUI thread"
    # Every checkpoint written is complete.
    checkpoints = [c for run in list_runs(isolated / "runs") for c in run.checkpoints()]
    for c in checkpoints:
        assert load_checkpoint(c.path)["step"] == c.step
    assert not [r for r in qtlog.records if "QThread: Destroyed while thread is still running" in r.message]
    for handle in handles[1:]:
        handle.studio.shutdown()
        handle.window.close()
        handle.window.deleteLater()
    qtbot.waitUntil(lambda: tracker.running("TrainWorker") == 0 and tracker.running("SampleWorker") == 0, timeout=SETTLE_MS)
    leftovers = [t.name for t in threading.enumerate() if t.name.startswith("ddpm-") and t.is_alive()]
    assert not leftovers or _wait_threads(leftovers), leftovers
    runs_started = len(tracker.threads)
    print(f"\nGUI stress: {ACTIONS} actions in {time.monotonic() - started:.1f} s (seed {SEED}); {dict(done)}; "
          f"{sum(1 for n, _ in tracker.threads if n == 'TrainWorker')} training and "
          f"{sum(1 for n, _ in tracker.threads if n == 'SampleWorker')} sampling threads started ({runs_started} in all), "
          f"{len(checkpoints)} checkpoints verified, slowest action {slowest_action} {slowest * 1000:.0f} ms")


def _wait_threads(names: list[str], timeout: float = 30.0) -> bool:
    """Background helper threads (decode pool, class-name readers) may take a moment to end after their job."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [t for t in threading.enumerate() if t.name in names and t.is_alive()]
        if not alive:
            return True
        time.sleep(0.1)
    return False


def test_waiting_for_a_worker_thread_does_not_need_the_event_loop(qtbot) -> None:
    """Found by the stress test: closing the window while images were being generated froze it for 60 s, then
    quit with the thread alive. ``shutdown`` blocks the GUI thread in ``QThread.wait``; the worker's
    ``finished -> quit`` was a queued call to that same GUI thread, so it could not run until the wait timed out."""
    from PySide6.QtCore import QObject, Signal, Slot

    from ddpm_studio.gui.workers import WorkerThread

    class Sleeper(QObject):
        finished = Signal()

        @Slot()
        def run(self) -> None:
            time.sleep(0.3)
            self.finished.emit()

    wt = WorkerThread(Sleeper())
    wt.start()
    t0 = time.monotonic()
    assert wt.wait(20_000), "the thread did not end"
    assert time.monotonic() - t0 < 5.0
    qtbot.waitUntil(lambda: not wt.is_running(), timeout=5_000)
