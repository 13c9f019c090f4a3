"""The learning-rate schedule fitted to the run's budget (steps or minutes) and the budget's clock."""

import math

import pytest

from ddpm_studio.services import config as c
from ddpm_studio.services.lr_schedule import decay_progress, lr_at
from ddpm_studio.services.run_budget import RunBudget, TrainingClock


def optim(**values):
    return c.update_section(c.OptimConfig(), values)


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_step_runs_keep_the_schedule_they_always_had():
    """The formula before time budgets existed: warm-up (step+1)/W, then cosine over total - W steps."""
    o = optim(lr=1e-3, warmup_steps=10, total_steps=110, lr_schedule="cosine")
    assert o.train_minutes == 0  # total steps given alone: a step run
    for step in (0, 5, 9):
        assert lr_at(step, o) == pytest.approx(1e-3 * (step + 1) / 10)
    for step in (10, 35, 60, 109, 110, 500):
        progress = min(1.0, (step - 10) / 100)
        assert lr_at(step, o) == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * progress)))
    assert lr_at(110, o) == 0.0
    constant = optim(lr=2e-3, warmup_steps=100, lr_schedule="constant", total_steps=20_000)
    assert lr_at(49, constant) == pytest.approx(1e-3) and lr_at(5_000, constant) == 2e-3


def test_linear_decay_reaches_zero_at_the_last_step():
    o = optim(lr=1e-3, warmup_steps=0, total_steps=200, lr_schedule="linear")
    assert [lr_at(s, o) for s in (0, 100, 150, 200)] == pytest.approx([1e-3, 5e-4, 2.5e-4, 0.0])


def test_a_time_budget_decays_with_the_time_used_or_the_steps_whichever_is_further():
    o = optim(lr=1e-3, warmup_steps=10, train_minutes=10.0, lr_schedule="cosine")
    assert o.total_steps == 20_000  # the default: an upper bound next to the time budget
    assert decay_progress(100, o, time_fraction=0.5) == pytest.approx(0.5)
    assert lr_at(100, o, time_fraction=0.5) == pytest.approx(0.5e-3)
    assert lr_at(100, o, time_fraction=1.0) == 0.0
    assert lr_at(5, o, time_fraction=0.9) == pytest.approx(0.6e-3)  # the warm-up is in steps either way
    assert decay_progress(15_005, o, time_fraction=0.1) == pytest.approx((15_005 - 10) / (20_000 - 10))


def test_total_steps_alone_makes_a_step_run_and_minutes_a_timed_one():
    assert c.from_dict({"optim": {"total_steps": 5000}}).optim.train_minutes == 0
    assert c.from_dict({"optim": {"total_steps": 5000, "train_minutes": 3}}).optim.train_minutes == 3
    timed = c.from_dict({"optim": {"train_minutes": 7.5}}).optim
    assert (timed.train_minutes, timed.total_steps) == (7.5, c.OptimConfig().total_steps)
    # Resuming a timed run with a new step count makes it a step run; with new minutes it stays timed.
    saved = c.from_dict({"optim": {"train_minutes": 10}})
    assert c.from_dict({"optim": {"total_steps": 900}}, base=saved).optim.train_minutes == 0
    assert c.from_dict({"optim": {"train_minutes": 20}}, base=saved).optim.train_minutes == 20


def test_the_clock_counts_running_time_only_and_carries_over():
    fake = FakeClock()
    clock = TrainingClock(used=30.0, clock=fake)
    assert clock.seconds == 30.0
    clock.start()
    fake.now += 10
    assert clock.seconds == 40.0
    clock.stop()  # paused
    fake.now += 1000
    assert clock.seconds == 40.0
    clock.start()
    fake.now += 5
    clock.start()  # starting twice does not restart the stretch
    assert clock.seconds == 45.0


def test_the_budget_ends_at_its_minutes_or_its_steps():
    fake = FakeClock()
    budget = RunBudget(optim(train_minutes=1.0, total_steps=1000), TrainingClock(clock=fake))
    budget.clock.start()
    assert budget.timed and not budget.done(10)
    fake.now += 45
    assert budget.time_fraction() == pytest.approx(0.75)
    assert budget.remaining_seconds(10, seconds_per_step=0.1) == pytest.approx(15.0)
    assert budget.remaining_seconds(995, seconds_per_step=0.1) == pytest.approx(0.5)  # the steps end first
    assert budget.done(1000) and budget.reason(1000) == "completed"
    fake.now += 15
    assert budget.done(11) and budget.reason(11) == "completed" and budget.time_fraction() == 1.0
    steps = RunBudget(optim(total_steps=50), TrainingClock(clock=fake))
    assert not steps.timed and steps.time_fraction() == 0.0 and steps.reason(20) == "stopped"
    assert steps.remaining_seconds(20, 2.0) == 60.0


def test_cli_takes_minutes_as_the_time_budget_and_steps_alone_as_a_step_run():
    from ddpm_studio.cli.parser import build_parser, overrides_from

    parser = build_parser()
    timed = overrides_from(parser.parse_args(["train", "--minutes", "10"]))
    assert c.from_dict(timed).optim.train_minutes == 10
    assert c.from_dict(overrides_from(parser.parse_args(["train", "--train-minutes", "2.5"]))).optim.train_minutes == 2.5
    steps = c.from_dict(overrides_from(parser.parse_args(["train", "--total-steps", "5000"]))).optim
    assert (steps.train_minutes, steps.total_steps) == (0, 5000)


def test_wsd_holds_the_rate_then_decays_over_the_last_share():
    o = optim(lr=1e-3, warmup_steps=0, total_steps=100, lr_schedule="wsd", lr_decay_share=0.25)
    assert [lr_at(s, o) for s in (0, 50, 75, 87.5, 100)] == pytest.approx([1e-3, 1e-3, 1e-3, 0.5e-3, 0.0])
    timed = optim(lr=1e-3, warmup_steps=0, train_minutes=10, lr_schedule="wsd", lr_decay_share=0.2)
    assert lr_at(10, timed, time_fraction=0.9) == pytest.approx(0.5e-3)
