"""``ddpm-studio --self-test``: prove an installed or bundled app works, without a display.

Trains a tiny model for a few steps on the built-in demo shapes, writes its metrics and a
checkpoint, reads the checkpoint back (``weights_only``), samples a few images from it, then
builds the main window on Qt's offscreen platform. Everything goes to a temporary folder,
which is deleted afterwards (set DDPM_STUDIO_SELF_TEST_KEEP=1 to keep it). Exit 0 = all good.
This is how a PyInstaller bundle is smoke-tested (scripts/build_app.sh).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

STEPS = 4


def run_self_test(out: Path | None = None) -> int:
    """Run every check, print a line each; 0 when all pass, 1 otherwise."""
    from ddpm_studio import __version__

    t0 = time.perf_counter()
    out = Path(out) if out else Path(tempfile.mkdtemp(prefix="ddpm-studio-self-test-"))
    keep = bool(os.environ.get("DDPM_STUDIO_SELF_TEST_KEEP"))
    os.environ["DDPM_STUDIO_RUNS_DIR"] = str(out / "runs")  # the window must not list the user's runs
    # torch's optimizers import torch._dynamo, which makes its cache folder in the system temp folder: keep it in ours
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(out / "torch-cache"))
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # no display needed
    frozen = "bundled (PyInstaller)" if getattr(sys, "frozen", False) else "from source"
    print(f"DDPM Studio {__version__} self-test, {frozen}, Python {sys.version.split()[0]}, in {out}", flush=True)
    failed = 0
    context: dict[str, Any] = {"out": out}
    for name, check in (("train", _train), ("sample", _sample), ("window", _window)):
        started = time.perf_counter()
        try:
            detail = check(context)
        except Exception as exc:  # report every failure the same way, then go on to the next check
            import traceback

            traceback.print_exc()
            print(f"FAIL {name}: {type(exc).__name__}: {exc}", flush=True)
            failed += 1
            if name == "train":
                break  # sampling needs its checkpoint
            continue
        print(f"ok   {name} ({time.perf_counter() - started:.1f} s): {detail}", flush=True)
    if keep:
        print(f"Kept {out}")
    else:
        shutil.rmtree(out, ignore_errors=True)
    verdict = "FAILED" if failed else "passed"
    print(f"Self-test {verdict} in {time.perf_counter() - t0:.1f} s", flush=True)
    return 1 if failed else 0


def _train(context: dict[str, Any]) -> str:
    import torch

    from ddpm_studio.core.checkpoint import load_checkpoint
    from ddpm_studio.core.device import choose_device
    from ddpm_studio.services import config as config_mod
    from ddpm_studio.services import events as ev
    from ddpm_studio.services.control import drive
    from ddpm_studio.services.training import TrainingSession

    cfg = config_mod.check(config_mod.from_dict({
        "data": {"source": "demo", "image_size": 16},
        "model": {"preset": "tiny"},
        "diffusion": {"timesteps": 50},
        "optim": {"batch_size": 8, "total_steps": STEPS, "warmup_steps": 1, "lr": 1e-3, "device": "cpu",
                  "mixed_precision": "off"},
        "schedule": {"preview_every": 0, "checkpoint_every": 0, "checkpoint_minutes": 0, "log_every": 2},
    }))
    events: list[Any] = []
    drive(TrainingSession(cfg, runs_dir=context["out"] / "runs", run_name="self-test").steps(), events.append)
    finished = events[-1]
    _expect(isinstance(finished, ev.RunFinished) and finished.reason == "completed", f"training ended with {finished!r}")
    losses = [e.loss for e in events if isinstance(e, ev.TrainProgress)]
    _expect(len(losses) == STEPS and all(loss == loss and loss < 10 for loss in losses), f"bad losses {losses}")
    _expect(any(isinstance(e, ev.MetricsLogged) for e in events), "no metrics logged")
    ckpt = load_checkpoint(finished.checkpoint)
    _expect(ckpt["step"] == STEPS and all(bool(torch.isfinite(v).all()) for v in ckpt["model"].values()),
            "checkpoint unreadable or not finite")
    context["checkpoint"] = finished.checkpoint
    auto = choose_device()
    return (f"{STEPS} steps, loss {losses[0]:.3f} → {losses[-1]:.3f}, checkpoint {Path(finished.checkpoint).name}; "
            f"PyTorch {torch.__version__}, auto device here: {auto.reason}")


def _sample(context: dict[str, Any]) -> str:
    from ddpm_studio.services import config as config_mod
    from ddpm_studio.services import events as ev
    from ddpm_studio.services.control import drive
    from ddpm_studio.services.sampling import SamplingSession

    sample = config_mod.SampleConfig(sampler="dpm++2m", steps=4, num_images=4, sample_batch_size=4)
    events: list[Any] = []
    session = SamplingSession(context["checkpoint"], sample, context["out"] / "samples", device="cpu", precision="off")
    drive(session.steps(), events.append)
    ready = [e for e in events if isinstance(e, ev.SamplesReady)]
    _expect(len(ready) == 1 and ready[0].images.shape[0] == 4, "no samples")
    written = [Path(p) for p in ready[0].paths]
    _expect(all(p.is_file() and p.stat().st_size > 0 for p in written), "sample files missing")
    return f"{len(written)} images and a grid ({Path(ready[0].grid_path or '').name})"


def _window(context: dict[str, Any]) -> str:
    from ddpm_studio.gui.app import create_app

    handle: Any = create_app(exec_app=False, argv=[], settings_path=str(context["out"] / "settings.ini"),
                             offer_interrupted=False)
    app = handle.app
    _process_events(app.processEvents, 1.5)  # paint, then the torch warm-up the window starts after it
    _expect(handle.window.isVisible(), "the main window did not show")
    title = handle.window.windowTitle()
    handle.window.close()
    handle.studio.shutdown()
    _process_events(app.processEvents, 0.2)
    return f"window {title!r} built on the {app.platformName()} platform"


def _process_events(process: Callable[[], None], seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        process()
        time.sleep(0.01)


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)
