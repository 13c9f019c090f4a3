"""The GPU's way of running steps, exercised on the CPU: results read in batches, bad steps refused on the device.

On a CUDA GPU (``step_policy``: deferred reads, fused AdamW) the host reads each step's loss only every few
steps and a non-finite step is refused through the fused optimizer's ``found_inf`` and a gated EMA update.
Here the policy is forced on for a CPU run, so the same code runs in CI: it must train the same weights as
reading every step, report every step, and never apply a refused step (nor any after it).
"""

import pytest
import torch

from ddpm_studio.core.checkpoint import load_checkpoint
from ddpm_studio.core.ema import EMA
from ddpm_studio.core.power_ema import PowerEMA
from ddpm_studio.services import events as ev
from ddpm_studio.services import step_results, training
from ddpm_studio.services.runs import RunFolder
from ddpm_studio.services.step_results import PendingSteps, RefusedSteps, non_finite_message
from ddpm_studio.services.training import TrainingError, TrainingSession
from tests.poison import poison_training_loss
from tests.services.test_training import collect as run


@pytest.fixture
def gpu_policy(monkeypatch):
    """Force the CUDA policy (batched reads, device-side refusal) on a CPU run; reads only when an event needs one."""
    monkeypatch.setattr(training, "step_policy", lambda device, distributed: (True, True))
    monkeypatch.setattr(step_results, "READ_EVERY_SECONDS", 1e9)


def assert_same_ema(ema, other):
    """The same stored averages, to rounding: the gated update is three ops for lerp's one. (A power EMA's rebuilt
    average is not compared: its coefficients, up to ±3 this early, magnify those roundings and the half-precision
    snapshots' rounding steps.)"""
    pairs = [(ema.model, other.model)] if isinstance(ema, EMA) else list(zip(ema.averages, other.averages, strict=True))
    for mine, theirs in pairs:
        for key, value in mine.state_dict().items():
            torch.testing.assert_close(theirs.state_dict()[key], value, rtol=1e-6, atol=1e-7, msg=key)
    if isinstance(ema, PowerEMA):
        assert [s[0] for s in ema.snapshots] == [s[0] for s in other.snapshots] and ema.num_updates == other.num_updates
        for (_, mine), (_, theirs) in zip(ema.snapshots, other.snapshots, strict=True):
            torch.testing.assert_close(theirs, mine)  # half precision: one rounding step apart at most


@pytest.mark.parametrize("ema", ["fixed", "power"])
def test_batched_reads_train_the_same_weights_and_report_every_step(tmp_path, tiny_cfg, monkeypatch, ema):
    cfg = tiny_cfg(optim={"total_steps": 7, "ema": ema}, schedule={"log_every": 3, "checkpoint_every": 5})
    outcomes = {}
    for deferred in (False, True):
        monkeypatch.setattr(training, "step_policy", lambda device, distributed, d=deferred: (d, True))
        session = TrainingSession(cfg, runs_dir=tmp_path, run_name=f"d{deferred}")
        events = run(session)
        outcomes[deferred] = (session, events)
    (plain, plain_events), (batched, batched_events) = outcomes[False], outcomes[True]
    assert batched.training_step.refused is not None and plain.training_step.refused is None

    def progress(events):
        return [(e.step, e.loss, e.lr) for e in events if isinstance(e, ev.TrainProgress)]

    assert [s for s, _, _ in progress(batched_events)] == list(range(1, 8))
    assert progress(batched_events) == progress(plain_events)  # the same losses, bit for bit
    metrics = [{k: v for k, v in e.record.items() if k not in ("time", "elapsed", "images_per_sec")}
               for events in (plain_events, batched_events) for e in events if isinstance(e, ev.MetricsLogged)]
    assert metrics[: len(metrics) // 2] == metrics[len(metrics) // 2 :]
    assert [c.step for c in RunFolder(tmp_path / "dTrue").checkpoints()] == [5, 7]
    for key, value in plain.model.state_dict().items():
        assert torch.equal(value, batched.model.state_dict()[key]), key
    assert_same_ema(plain.ema, batched.ema)


@pytest.mark.parametrize("ema", ["fixed", "power"])
def test_a_refused_step_and_every_step_after_it_are_never_applied(tmp_path, tiny_cfg, monkeypatch, gpu_policy, ema):
    """NaN at step 5; the host reads at step 8 (the checkpoint), so steps 5-8 ran on the device before it knew."""
    poison_training_loss(monkeypatch, 5, float("nan"))
    cfg = tiny_cfg(optim={"ema": ema}, schedule={"checkpoint_every": 4, "log_every": 100})
    session = TrainingSession(cfg, runs_dir=tmp_path, run_name="nan")
    events = []
    with pytest.raises(TrainingError, match="The loss became NaN at step 5") as err:
        run(session, events.append)
    assert str(err.value) == non_finite_message(5, float("nan"), float("nan"))
    assert session.step == 8  # ... the device ran on past the bad step
    assert [e.step for e in events if isinstance(e, ev.TrainProgress)] == [1, 2, 3, 4]
    run_folder = RunFolder(tmp_path / "nan")
    assert [c.step for c in run_folder.checkpoints()] == [4]
    assert run_folder.read_status()["state"] == "failed"
    good = load_checkpoint(run_folder.checkpoint_path(4))
    for key, value in session.model.state_dict().items():  # ... and applied none of steps 5-8
        assert torch.equal(value, good["model"][key]), key
    assert session.ema.num_updates == 4  # the gated-off updates are not counted (a power EMA's average depends on it)
    stored = [(session.ema.model, good["ema"]["model"])] if ema == "fixed" else list(
        zip(session.ema.averages, good["phema"]["averages"], strict=True))  # (snapshots thinned since may be gone)
    for average, good_weights in stored:
        for key, value in average.state_dict().items():
            assert torch.equal(value, good_weights[key]), key
    assert session.optimizer.state_dict()["state"][0]["step"] == 4  # fused AdamW skipped its step counts too


def test_an_infinite_gradient_is_refused_on_the_device_too(tmp_path, tiny_cfg, monkeypatch, gpu_policy):
    real_clip, calls = torch.nn.utils.clip_grad_norm_, {"n": 0}

    def clip(parameters, max_norm, *args, **kwargs):
        params = list(parameters)
        calls["n"] += 1
        if calls["n"] == 3:
            params[0].grad.view(-1)[0] = float("inf")
        return real_clip(params, max_norm, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    session = TrainingSession(tiny_cfg(schedule={"checkpoint_every": 2, "log_every": 100}), runs_dir=tmp_path,
                              run_name="grad")
    with pytest.raises(TrainingError, match="The gradient became infinite at step 3"):
        run(session)
    assert [c.step for c in RunFolder(tmp_path / "grad").checkpoints()] == [2]


def test_stop_between_reads_reports_every_step_then_saves(tmp_path, tiny_cfg, gpu_policy):
    """A stop request arrives while steps are unread: they are reported (and checked) before the checkpoint."""
    session = TrainingSession(tiny_cfg(optim={"total_steps": 50}, schedule={"log_every": 100}), runs_dir=tmp_path,
                              run_name="stop")
    original, stopped = session._train_step, {}

    def train_step():
        out = original()
        if session.step == 3:
            session.control.stop()
            stopped["at"] = session.step
        return out

    session._train_step = train_step
    events = run(session)
    assert [e.step for e in events if isinstance(e, ev.TrainProgress)] == [1, 2, 3]
    assert events[-1].reason == "stopped" and events[-1].step == 3
    assert [c.step for c in RunFolder(tmp_path / "stop").checkpoints()] == [3]


def test_refused_steps_record_only_the_first_and_stay_set():
    guard = RefusedSteps(torch.device("cpu"))
    ok, nan, inf = torch.tensor(0.5), torch.tensor(float("nan")), torch.tensor(float("inf"))
    assert float(guard.record(1, ok, ok)) == 0.0 and guard.first_refused() is None
    assert float(guard.record(2, ok, inf)) == 1.0
    assert float(guard.record(3, nan, ok)) == 1.0  # sticky: a later good or bad step does not clear or overwrite it
    assert float(guard.record(4, ok, ok)) == 1.0
    assert guard.first_refused() == (2, 0.5, float("inf"))
    assert non_finite_message(*guard.first_refused()).startswith("The gradient became infinite at step 2")


def test_pending_steps_read_in_one_batch_and_know_when_they_are_due():
    now = [100.0]
    pending = PendingSteps(deferred=True, every_seconds=0.5, every_steps=3, clock=lambda: now[0])
    assert not pending.due() and pending.read() == ([], 0.0)
    for step in (1, 2):
        pending.begin_step()
        pending.add(step, torch.tensor(step * 0.1), torch.arange(4.0), torch.ones(4), 1e-3 * step)
        now[0] += 0.1
    assert not pending.due()
    now[0] += 0.35
    assert pending.due()  # 0.55 s since the first pending step began
    results, seconds = pending.read()
    assert [(r.step, r.loss, r.lr) for r in results] == [(1, pytest.approx(0.1), 1e-3), (2, pytest.approx(0.2), 2e-3)]
    assert torch.equal(results[1].bucket_sums, torch.arange(4.0)) and torch.equal(results[1].bucket_counts, torch.ones(4))
    assert seconds == pytest.approx(0.55) and len(pending) == 0
    for step in (3, 4, 5):
        pending.begin_step()
        pending.add(step, torch.tensor(0.0), torch.zeros(4), torch.zeros(4), 0.0)
    assert pending.due()  # three steps: due by count
    assert PendingSteps(deferred=False).due()  # a CPU reads every step
