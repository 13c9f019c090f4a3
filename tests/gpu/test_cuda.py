"""What only a CUDA GPU can show: no host sync inside a training step, the device-side refusal of a bad step,
batches gathered on the GPU equal to the host's, the self-check passing. Skipped without CUDA (CI has none);
benchmarks/gpu_check.py runs them on the GPU machine (``pytest -m gpu tests/gpu``)."""

import pytest
import torch

from ddpm_studio.core.accelerator_check import check_device
from ddpm_studio.core.checkpoint import load_checkpoint
from ddpm_studio.services import config as c
from ddpm_studio.services import events as ev
from ddpm_studio.services.batches import images_to_batch
from ddpm_studio.services.runs import RunFolder
from ddpm_studio.services.training import TrainingError, TrainingSession
from tests.poison import poison_training_loss

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
CUDA = torch.device("cuda")


def tiny(**optim):
    return c.check(c.from_dict({
        "data": {"source": "demo", "image_size": 16, "cache": False}, "model": {"preset": "tiny"},
        "diffusion": {"timesteps": 100},
        "optim": {"batch_size": 8, "total_steps": 12, "warmup_steps": 2, "lr": 1e-3, "device": "cuda", **optim},
        "schedule": {"preview_every": 0, "checkpoint_every": 4, "checkpoint_minutes": 0, "log_every": 100},
    }))


def test_the_self_check_passes_on_this_gpu():
    for impl in ("sdpa", "math"):
        result = check_device(CUDA, impl)
        assert result.ok, result.warning


@pytest.mark.parametrize(("precision", "conditional"), [("bf16", False), ("off", False), ("bf16", True)])
def test_a_training_step_never_waits_for_the_gpu(tmp_path, precision, conditional):
    """torch.cuda.set_sync_debug_mode("error") raises at any call that makes the host wait for the GPU."""
    cfg = tiny(mixed_precision=precision)
    cfg = c.check(c.from_dict({**c.to_dict(cfg), "data": {**c.to_dict(cfg)["data"], "conditional": conditional}}))
    session = TrainingSession(cfg, runs_dir=tmp_path)
    events = session.steps()
    for event in events:  # set up, up to the first step
        if isinstance(event, ev.RunStarted):
            break
    session._train_step()  # the first step puts the data set on the GPU and lets kernels load
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            session._train_step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert session.training_step.refused is not None and session.training_step.resident_images is not False
    events.close()


def test_a_refused_step_and_every_step_after_it_are_never_applied(tmp_path, monkeypatch):
    poison_training_loss(monkeypatch, 5, float("nan"))
    session = TrainingSession(tiny(mixed_precision="bf16"), runs_dir=tmp_path, run_name="nan")
    progress = []
    with pytest.raises(TrainingError, match="The loss became NaN at step 5"):
        for event in session.steps():
            if isinstance(event, ev.TrainProgress):
                progress.append(event.step)
    assert progress == [1, 2, 3, 4] and session.step == 8
    run = RunFolder(tmp_path / "nan")
    assert [ck.step for ck in run.checkpoints()] == [4]
    good = load_checkpoint(run.checkpoint_path(4))
    for key, value in session.model.state_dict().items():
        assert torch.equal(value.cpu(), good["model"][key]), key
    for key, value in session.ema.model.state_dict().items():
        assert torch.equal(value.cpu(), good["ema"]["model"][key]), key


def test_batches_gathered_on_the_gpu_equal_the_hosts():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8, generator=g)
    idx, flip = torch.randperm(50, generator=g)[:16], torch.rand(16, generator=g) < 0.5
    host = images_to_batch(images, idx, flip, CUDA)
    device = images_to_batch(images.to(CUDA), idx.to(CUDA), flip.to(CUDA), CUDA)
    assert torch.equal(host, device)


def test_batched_reads_report_every_step_with_the_loss_of_a_step_by_step_run(tmp_path, monkeypatch):
    from ddpm_studio.services import training

    losses = {}
    for deferred in (True, False):
        monkeypatch.setattr(training, "step_policy", lambda device, distributed, d=deferred: (d, True))
        session = TrainingSession(tiny(mixed_precision="off", total_steps=6), runs_dir=tmp_path, run_name=f"d{deferred}")
        losses[deferred] = [(e.step, e.loss) for e in session.steps() if isinstance(e, ev.TrainProgress)]
    assert [s for s, _ in losses[True]] == [s for s, _ in losses[False]] == list(range(1, 7))
    assert [x for _, x in losses[True]] == pytest.approx([x for _, x in losses[False]], rel=1e-5)
