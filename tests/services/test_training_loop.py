"""The training loop's timing on a fake clock: previews within their budget and counted in training time, an ETA
that does not swing, run.json's step kept current, Pause / Resume logged. The training step and the preview are
replaced by fakes that only move the clock, so these runs of thousands of "steps" take a second or two."""

import itertools
import logging
import types

import numpy as np
import pytest
import torch

from ddpm_studio.core.choices import TIMESTEP_BUCKETS
from ddpm_studio.services import events as ev
from ddpm_studio.services import training as training_mod
from ddpm_studio.services.control import drive
from ddpm_studio.services.preview import Previewer
from ddpm_studio.services.runs import RunFolder
from ddpm_studio.services.training import TrainingSession


class FakeTime:
    """Stands in for the ``time`` module inside training.py: perf_counter is moved by the fakes below."""

    def __init__(self) -> None:
        self.now = 10_000.0

    def perf_counter(self) -> float:
        return self.now

    def time(self) -> float:
        return 1.8e9 + self.now


@pytest.fixture
def fake_loop(monkeypatch):
    """Returns ``run(cfg, step_seconds, preview_seconds, on_event)``: events of a run whose steps and previews take
    the given (fake) seconds; ``step_seconds`` may be a function of the step number."""
    clock = FakeTime()
    monkeypatch.setattr(training_mod, "time", clock)

    def fake_step(self):
        seconds = self._fake_step_seconds
        clock.now += seconds(self.step + 1) if callable(seconds) else seconds
        self.step += 1
        zeros = torch.zeros(TIMESTEP_BUCKETS)
        return torch.tensor(0.5), zeros, zeros + 1, 1e-3

    def fake_preview(self, ema_model, model, step):
        clock.now += self._fake_preview_seconds
        frames = np.zeros((1, 1, 4, 4, 3), np.uint8)
        return ev.PreviewReady(step, (0,), frames, frames, np.zeros((4, 4, 3), np.uint8), "p.png", val_loss=0.25)

    monkeypatch.setattr(TrainingSession, "_train_step", fake_step)
    monkeypatch.setattr(Previewer, "preview", fake_preview)
    monkeypatch.setattr(Previewer, "validation_loss", lambda self, model: 0.25)

    def run(cfg, tmp_path, step_seconds=0.1, preview_seconds=0.0, on_event=None):
        session = TrainingSession(cfg, runs_dir=tmp_path, run_name="r")
        session._fake_step_seconds = step_seconds
        Previewer._fake_preview_seconds = preview_seconds
        events = []

        def sink(event):
            events.append(event)
            if on_event:
                on_event(session, clock, event)

        drive(session.steps(), sink)
        return events

    yield run
    if hasattr(Previewer, "_fake_preview_seconds"):
        del Previewer._fake_preview_seconds


def preview_steps(events):
    return [e.step for e in events if isinstance(e, ev.PreviewReady)]


def test_slow_previews_are_spaced_out_to_a_tenth_of_the_time(fake_loop, tmp_path, tiny_cfg):
    """Issue 14 defect 6: previews of 30 s every 100 steps of 0.1 s took 75 % of the run; the budget spaces them."""
    cfg = tiny_cfg(optim={"total_steps": 6000}, schedule={"preview_every": 100, "preview_budget": 0.1, "log_every": 100})
    events = fake_loop(cfg, tmp_path, step_seconds=0.1, preview_seconds=30.0)
    at = preview_steps(events)
    assert at[0] == 0 and len(at) >= 3, at  # the untrained model's preview, then spaced out ones
    gaps = [b - a for a, b in itertools.pairwise(at)]
    assert all(g * 0.1 >= 270 for g in gaps), at  # a 30 s preview does not come back 60 s later
    assert all(s % 100 == 0 for s in at)
    total = 6000 * 0.1 + 30 * len(at)
    assert 30 * (len(at) - 1) / total <= 0.1  # the step-0 preview aside, previews take at most a tenth


def test_time_based_previews_and_checkpoints_count_training_time_only(fake_loop, tmp_path, tiny_cfg, caplog):
    """A 10-minute pause made the preview (and checkpoint) timers fire at once after Resume; they count training."""
    cfg = tiny_cfg(optim={"total_steps": 1200},
                   schedule={"preview_every": 0, "preview_minutes": 1.0, "checkpoint_minutes": 2.0, "log_every": 100})

    def on_event(session, clock, event):
        if isinstance(event, ev.TrainProgress) and event.step == 500:  # 50 s of training
            session.control.pause()
        elif isinstance(event, ev.RunPaused):
            clock.now += 600  # the user went away for ten minutes
            session.control.resume()

    with caplog.at_level(logging.INFO, logger="ddpm_studio"):
        events = fake_loop(cfg, tmp_path, step_seconds=0.1, preview_seconds=1.0, on_event=on_event)
    at = preview_steps(events)
    assert at and at[0] >= 600, at  # not at step 501, right after Resume
    assert 790 <= at[0] <= 810, at  # held back 30 s of training after the resume (grace), then due
    saved = [e.step for e in events if isinstance(e, ev.CheckpointSaved)]
    assert saved[0] > 1000, saved  # two minutes of training, not the pause, before the timed checkpoint
    messages = [r.getMessage() for r in caplog.records]
    assert "Paused at step 500" in messages and "Resumed at step 500" in messages


def test_images_per_sec_and_eta_do_not_swing(fake_loop, tmp_path, tiny_cfg):
    """The walkthrough saw the ETA swing from 2 to 41 hours: a per-step average follows every slow patch."""
    def step_seconds(step):
        return 2.0 if 1000 < step <= 1010 else 0.1  # another process takes the CPU for 20 s

    cfg = tiny_cfg(optim={"total_steps": 3000}, schedule={"preview_every": 500, "log_every": 100})
    events = fake_loop(cfg, tmp_path, step_seconds=step_seconds, preview_seconds=5.0)
    progress = [e for e in events if isinstance(e, ev.TrainProgress)]
    later = [p for p in progress if p.step >= 400]
    rates = [p.images_per_sec for p in later]
    assert max(rates) / min(rates) < 1.5  # the 20x slow patch moves the speed by its share of a minute
    assert all(r == pytest.approx(80, rel=0.02) for p, r in zip(later, rates, strict=True) if p.step < 1000)
    per_step = {p.step: p.eta_seconds / (p.total_steps - p.step) for p in later if p.step < p.total_steps}
    before = per_step[1000]
    assert before == pytest.approx(0.1 / 0.95, rel=0.03)  # 0.1 s steps, plus the 5 s preview at step 500 (5 %)
    # A per-step average with weight 0.1 (the loop's before) multiplied the ETA by 8; this one follows the burst by
    # its share of the last minute of training, and forgets it again.
    assert max(per_step.values()) / before < 1.5
    assert per_step[2999] / before < 1.1


def test_run_json_step_is_kept_current_while_training(fake_loop, tmp_path, tiny_cfg):
    """The Runs list showed "0 / 20,000 … running" for a running run: run.json's step was written only at saves."""
    seen = {}

    def on_event(session, clock, event):
        if isinstance(event, ev.TrainProgress) and event.step == 250:  # 25 s into the run
            seen.update(session.run.read_status())

    fake_loop(tiny_cfg(optim={"total_steps": 300}), tmp_path, step_seconds=0.1, on_event=on_event)
    assert seen["state"] == "running" and 200 <= seen["step"] <= 250


def test_a_run_stopped_early_is_recorded_as_stopped(fake_loop, tmp_path, tiny_cfg):
    def on_event(session, clock, event):
        if isinstance(event, ev.TrainProgress) and event.step == 153:
            session.control.stop()

    events = fake_loop(tiny_cfg(optim={"total_steps": 20_000}), tmp_path, on_event=on_event)
    assert events[-1].reason == "stopped" and events[-1].step == 153
    assert RunFolder(tmp_path / "r").read_status()["state"] == "stopped"


def test_the_fake_time_reaches_the_loop(fake_loop, tmp_path, tiny_cfg):
    """Guards the tests above: the loop's clock is the fake one (else they would measure nothing)."""
    events = fake_loop(tiny_cfg(optim={"total_steps": 20}), tmp_path, step_seconds=0.5)
    progress = [e for e in events if isinstance(e, ev.TrainProgress)]
    assert progress[-1].elapsed_seconds == pytest.approx(10.0, abs=0.01)
    assert progress[-1].images_per_sec == pytest.approx(8 / 0.5)
    assert isinstance(training_mod.time, types.SimpleNamespace) is False
