"""The loop's clock, speed and preview cadence, on fake clocks (no sleeping)."""

import itertools
import math

import pytest

from ddpm_studio.services.loop_timing import ActiveClock, PreviewCadence, Throughput


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_active_clock_leaves_out_pauses():
    fake = FakeClock()
    clock = ActiveClock(fake)
    fake.t += 5
    clock.pause_started()
    fake.t += 600
    assert clock() == pytest.approx(5)  # still paused: the pause so far does not count
    clock.pause_ended()
    fake.t += 2
    assert clock() == pytest.approx(7)


def test_throughput_ignores_the_first_step_and_is_smooth_under_a_burst_of_slow_steps():
    speed = Throughput(images_per_step=32)
    assert math.isinf(speed.eta(100))
    speed.add(5.0)  # first step: allocations and lazy set-up
    assert speed.images_per_sec == pytest.approx(32 / 5.0)
    for _ in range(600):  # a minute of 0.1 s steps
        speed.add(0.1)
    steady = speed.images_per_sec
    assert steady == pytest.approx(320, rel=1e-6)  # the slow first step is left out
    etas = []
    for _ in range(5):  # another process takes the CPU: five steps 20x slower
        speed.add(2.0)
        etas.append(speed.eta(10_000))
    # A per-step average with weight 0.1 (the loop's before) moves 8.8x; this one by the burst's share of the last
    # minute of training (10 s of slow steps in ~70 s: +27 %).
    assert max(etas) / (10_000 * 0.1) < 1.3
    for _ in range(2400):  # four minutes later the burst is forgotten
        speed.add(0.1)
    assert speed.images_per_sec == pytest.approx(320, rel=0.01)
    assert speed.train_seconds == pytest.approx(5 + 60 + 10 + 240)


def test_eta_adds_the_side_work_share():
    speed = Throughput(images_per_step=8)
    for _ in range(10):
        speed.add(0.5)
    assert speed.eta(100) == pytest.approx(50)
    assert speed.eta(100, overhead_share=0.1) == pytest.approx(50 / 0.9)
    assert speed.eta(100, overhead_share=3.0) == pytest.approx(500)  # capped at 90 % of the time


def simulate(cadence, steps, step_seconds, preview_seconds):
    """Run a fake loop: returns the steps previews ran at and the share of time they took."""
    now = spent = 0.0
    at = []
    for step in range(1, steps + 1):
        now += step_seconds
        if cadence.due(step, now):
            now += preview_seconds
            spent += preview_seconds
            cadence.spent(preview_seconds, now)
            at.append(step)
    return at, spent / now


def test_slow_step_based_previews_are_spaced_out_to_the_budget():
    # A preview every 100 steps of 0.1 s (10 s of training) that takes 30 s would be 75 % of the run.
    cadence = PreviewCadence(every_steps=100, every_seconds=0, budget=0.1)
    at, share = simulate(cadence, 10_000, 0.1, 30.0)
    # The first preview's cost is only known once it has run; from then on each one is paid for in advance.
    total = 10_000 * 0.1 + 30 * len(at)
    assert share <= 0.1 + 30 / total
    gaps = [b - a for a, b in itertools.pairwise(at)]
    assert all(g * 0.1 >= 270 for g in gaps)  # 30 s of preview, then at least 270 s of training
    assert all(s % 100 == 0 for s in at)  # still at round steps
    assert len(at) >= 3


def test_fast_previews_keep_their_cadence():
    cadence = PreviewCadence(every_steps=100, every_seconds=0, budget=0.1)
    at, share = simulate(cadence, 1000, 0.1, 0.5)  # 0.5 s per 10 s of training: 5 %
    assert at == list(range(100, 1001, 100)) and share < 0.1


def test_time_based_previews_count_training_time_from_the_end_of_the_last():
    cadence = PreviewCadence(every_steps=0, every_seconds=60, budget=0.5)
    assert not cadence.due(1, 59.0) and cadence.due(1, 60.0)
    cadence.spent(20.0, end=80.0)  # ran from 60 to 80
    assert not cadence.due(2, 139.0)  # 59 s of training since it ended
    assert cadence.due(3, 140.0)


def test_no_preview_right_after_a_resume():
    cadence = PreviewCadence(every_steps=10, every_seconds=60, budget=0.1, resume_grace=30)
    cadence.resumed(100.0)
    assert not cadence.due(10, 100.1) and not cadence.due(20, 129.9)
    assert cadence.due(30, 130.0)


def test_validation_work_delays_previews_without_restarting_their_interval():
    cadence = PreviewCadence(every_steps=0, every_seconds=60, budget=0.1)
    cadence.spent(2.0, end=50.0, preview=False)  # a checkpoint's validation loss: 2 s → 18 s of grace
    assert not cadence.due(1, 60.0) and cadence.due(1, 68.0)
    assert cadence.previews == 0 and cadence.seconds_spent == 2.0


def test_budget_must_be_a_share():
    with pytest.raises(ValueError):
        PreviewCadence(10, 0, budget=0)
