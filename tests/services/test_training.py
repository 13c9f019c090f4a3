import json

import pytest
import torch

from ddpm_studio.core.checkpoint import load_checkpoint
from ddpm_studio.core.demo_data import generate_demo_images
from ddpm_studio.core.objectives import per_sample_loss
from ddpm_studio.core.schedules import NoiseSchedule
from ddpm_studio.core.unet import UNet, preset_config
from ddpm_studio.services import events as ev
from ddpm_studio.services.control import RunControl, drive
from ddpm_studio.services.runs import RunFolder
from ddpm_studio.services.training import TrainingError, TrainingSession
from tests.poison import poison_training_loss


def collect(session, on_event=None):
    events = []

    def sink(e):
        events.append(e)
        if on_event:
            on_event(e)

    drive(session.steps(), sink)
    return events


def test_tiny_model_loss_falls_on_fixed_batch():
    torch.manual_seed(0)
    images, _ = generate_demo_images(16, image_size=16, seed=0)
    x0 = images.float() / 127.5 - 1
    model = UNet(preset_config("tiny", image_size=16, in_channels=3))
    sched = NoiseSchedule.create("linear", 100)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(1)
    t_eval = torch.linspace(0, 99, 16).long()
    n_eval = torch.randn(x0.shape, generator=g)

    def eval_loss():
        with torch.no_grad():
            model.eval()
            return per_sample_loss(model(sched.q_sample(x0, t_eval, n_eval), t_eval), n_eval).mean().item()

    start = eval_loss()
    model.train()
    for _ in range(150):
        t = torch.randint(0, 100, (16,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        loss = per_sample_loss(model(sched.q_sample(x0, t, noise), t), noise).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    end = eval_loss()
    assert start == pytest.approx(1.0, abs=0.1)  # zero-initialised output predicts ε = 0
    assert end < 0.4 * start, (start, end)


def test_events_checkpoints_and_metrics(tmp_path, tiny_cfg):
    cfg = tiny_cfg(schedule={"preview_every": 5, "checkpoint_every": 4, "keep_last": 2})
    events = collect(TrainingSession(cfg, runs_dir=tmp_path, run_name="r"))
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "Status" and "RunStarted" in kinds and kinds[-1] == "RunFinished"
    progress = [e for e in events if isinstance(e, ev.TrainProgress)]
    assert [p.step for p in progress] == list(range(1, 11))
    assert all(p.images_per_sec > 0 and p.eta_seconds >= 0 for p in progress)
    previews = [e for e in events if isinstance(e, ev.PreviewReady)]
    assert [p.step for p in previews] == [0, 5, 10]
    assert previews[0].x_t.shape == (5, 4, 16, 16, 3) and previews[0].x_t.dtype.name == "uint8"
    assert previews[-1].val_loss is not None
    run = RunFolder(tmp_path / "r")
    # Retention: saves at 4, 8 and the final 10; only the newest two remain.
    assert [c.step for c in run.checkpoints()] == [8, 10]
    assert events[-1].reason == "completed" and events[-1].checkpoint.endswith("step_00000010.pt")
    records = [json.loads(line) for line in run.metrics_path.read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [2, 4, 6, 8, 10]
    first = next(r for r in records if "loss" in r)
    assert {"loss_q0", "loss_q3"} <= set(first) or {"loss_q1", "loss_q2"} <= set(first)
    assert [r["step"] for r in records if "val_loss" in r] == [0, 5, 10]  # the untrained model's too
    status = run.read_status()
    assert status["state"] == "completed"
    assert 0 < status["train_seconds"] <= records[-1]["time"] - records[0]["time"] + 60  # a reopened timed run's bar
    assert (run.previews_dir / "step_00000005.png").exists() and run.config_path.exists()


def test_resume_is_exact(tmp_path, tiny_cfg):
    n = 5
    cfg = tiny_cfg(optim={"total_steps": 2 * n, "lr_schedule": "cosine"})
    collect(TrainingSession(cfg, runs_dir=tmp_path, run_name="straight"))
    straight = load_checkpoint(RunFolder(tmp_path / "straight").latest_checkpoint().path)

    control = RunControl()
    first = collect(TrainingSession(cfg, runs_dir=tmp_path, run_name="split", control=control),
                    on_event=lambda e: control.stop() if isinstance(e, ev.TrainProgress) and e.step == n else None)
    assert first[-1].reason == "stopped" and first[-1].step == n
    mid = RunFolder(tmp_path / "split").latest_checkpoint()
    assert mid.step == n
    second = collect(TrainingSession(resume_from=mid.path))
    assert second[-1].reason == "completed"
    resumed = load_checkpoint(RunFolder(tmp_path / "split").latest_checkpoint().path)
    assert resumed["step"] == straight["step"] == 2 * n
    for key in straight["model"]:
        assert torch.equal(straight["model"][key], resumed["model"][key]), key
    for key in straight["ema"]["model"]:
        assert torch.equal(straight["ema"]["model"][key], resumed["ema"]["model"][key]), key
    kept, kept_resumed = straight["early_weights"]["kept"], resumed["early_weights"]["kept"]  # autoguidance's guides
    assert [e["step"] for e in kept] == [e["step"] for e in kept_resumed] == [4, 8]
    for a, b in zip(kept, kept_resumed, strict=True):
        assert all(torch.equal(a["weights"][k], b["weights"][k]) for k in a["weights"])


def test_pause_blocks_until_resume(tmp_path, tiny_cfg):
    import threading
    import time

    control = RunControl()
    session = TrainingSession(tiny_cfg(optim={"total_steps": 6}), runs_dir=tmp_path, control=control)
    steps = []

    def on_event(e):
        if isinstance(e, ev.TrainProgress):
            steps.append(e.step)
            if e.step == 2:
                control.pause()

    th = threading.Thread(target=collect, args=(session, on_event))
    th.start()
    deadline = time.time() + 30
    while not (control.paused and steps == [1, 2]) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert steps == [1, 2]  # paused: no progress
    control.resume()
    th.join(30)
    assert steps == [1, 2, 3, 4, 5, 6]


def test_keep_last_changed_during_a_run_is_followed_by_retention(tmp_path, tiny_cfg):
    """The app's "Keep the last N" box changes retention mid-run: the next save keeps only N, and the new N is
    what later checkpoints record (so a resumed run keeps it). Before set_keep_last the app replaced session.cfg,
    which the checkpoint policy never read again."""
    import threading

    session = TrainingSession(tiny_cfg(optim={"total_steps": 9}, schedule={"checkpoint_every": 1, "keep_last": 5}),
                              runs_dir=tmp_path, run_name="keep")
    kept_after: dict[int, int] = {}
    changed = threading.Event()

    def on_event(e):
        if isinstance(e, ev.CheckpointSaved):
            kept_after[e.step] = len(RunFolder(tmp_path / "keep").checkpoints())
            if e.step == 4:
                # From another thread, as the app does: applied between steps, before the next save.
                threading.Thread(target=lambda: (session.set_keep_last(2), changed.set())).start()
                assert changed.wait(5)

    collect(session, on_event)
    assert kept_after[4] == 4  # keep_last = 5 so far
    assert kept_after[5] == 2 and kept_after[9] == 2  # the next save already kept only the newest 2
    assert [c.step for c in RunFolder(tmp_path / "keep").checkpoints()] == [8, 9]
    saved = load_checkpoint(RunFolder(tmp_path / "keep").checkpoint_path(9))
    assert saved["config"]["schedule"]["keep_last"] == 2
    with pytest.raises(ValueError, match="at least 1"):
        session.set_keep_last(0)


def test_snapshot_is_a_private_copy_made_between_steps_or_while_paused(tmp_path, tiny_cfg):
    import threading
    import time

    control = RunControl()
    session = TrainingSession(tiny_cfg(optim={"total_steps": 50}, data={"conditional": True}), runs_dir=tmp_path,
                              run_name="snap", control=control)
    started: list[ev.RunStarted] = []
    copies = {}

    def on_event(e):
        if isinstance(e, ev.RunStarted):
            started.append(e)
        if isinstance(e, ev.TrainProgress) and e.step == 3:
            copies["running"] = session.snapshot()  # served after this event, before step 4
        if isinstance(e, ev.TrainProgress) and e.step == 6:
            control.pause()

    th = threading.Thread(target=collect, args=(session, on_event))
    th.start()
    deadline = time.time() + 60
    while not (control.paused and "running" in copies and copies["running"].done()) and time.time() < deadline:
        time.sleep(0.05)
    running = copies["running"].result(timeout=5)
    assert running.step == 3 and running.class_names == started[0].class_names == ("circle", "square", "triangle")
    assert not any(p.requires_grad for p in running.model.parameters()) and not running.model.training
    time.sleep(0.3)
    paused = session.snapshot().result(timeout=10)  # the run is paused: served from inside its wait
    assert paused.step == 6 and control.paused and th.is_alive()
    assert paused.guide_step == 2 and not paused.guide.training  # kept at steps 2, 4, 6: nearest half of 6 is 2
    weights = {k: v.clone() for k, v in paused.model.state_dict().items()}
    control.resume()
    th.join(60)
    assert not th.is_alive()
    assert all(torch.equal(weights[k], v) for k, v in paused.model.state_dict().items())  # training did not touch it
    assert started[0].precision in ("float32", "bf16 autocast") and started[0].parameters > 0
    ended = session.snapshot()  # after the end: made at once, on this thread
    assert ended.done() and ended.result().step == 50


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, tiny_cfg, monkeypatch):
    from ddpm_studio.core import objectives

    real = poison_training_loss(monkeypatch, 5, float("nan"))
    cfg = tiny_cfg(schedule={"checkpoint_every": 2})
    with pytest.raises(TrainingError, match="NaN at step 5"):
        collect(TrainingSession(cfg, runs_dir=tmp_path, run_name="nan"))
    run = RunFolder(tmp_path / "nan")
    assert [c.step for c in run.checkpoints()] == [2, 4]
    good = load_checkpoint(run.latest_checkpoint().path)
    assert all(torch.isfinite(v).all() for v in good["model"].values())
    assert run.read_status()["state"] == "failed"
    # The user can go on from the last good checkpoint with a lower learning rate.
    monkeypatch.setattr(objectives, "per_sample_loss", real)
    events = collect(TrainingSession(resume_from=run.latest_checkpoint().path, overrides={"optim": {"lr": 1e-4}}))
    assert events[-1].reason == "completed"


def test_resume_refuses_model_changes(tmp_path, tiny_cfg):
    cfg = tiny_cfg(optim={"total_steps": 2})
    collect(TrainingSession(cfg, runs_dir=tmp_path, run_name="a"))
    ckpt = RunFolder(tmp_path / "a").latest_checkpoint().path
    with pytest.raises(TrainingError, match=r"\[model\] settings cannot change"):
        collect(TrainingSession(resume_from=ckpt, overrides={"model": {"base_channels": 64}}))


@pytest.mark.parametrize("weighting", ["min-snr", "edm"])
def test_loss_weighting_changes_the_update_not_the_reported_loss(tmp_path, tiny_cfg, weighting):
    """Min-SNR or EDM weights reweight the gradient; the loss a user sees stays the plain MSE (of ε or v) of the
    same batch.

    Three steps, because Adam's first update is lr·sign(g) whatever the weights (and the zero-initialised
    output layer is all the first step moves)."""
    runs = {}
    for name in ("uniform", weighting):
        cfg = tiny_cfg(diffusion={"loss_weighting": name, "min_snr_gamma": 5.0},
                       optim={"total_steps": 3, "warmup_steps": 0})
        events = collect(TrainingSession(cfg, runs_dir=tmp_path, run_name=name))
        loss = next(e.loss for e in events if isinstance(e, ev.TrainProgress))
        runs[name] = (loss, load_checkpoint(RunFolder(tmp_path / name).latest_checkpoint().path)["model"])
    assert runs["uniform"][0] == pytest.approx(runs[weighting][0], rel=1e-6)
    assert any(not torch.equal(runs["uniform"][1][k], runs[weighting][1][k]) for k in runs["uniform"][1])
