"""Engine figures for the foundation: training images/s, sampling ms/step, peak RSS, import time.

Runs our own training step (the one TrainingSession uses: batch to device, q_sample, forward
under the chosen autocast, ε-MSE, backward, clip, AdamW, EMA) on random data. Prints a table and
writes JSON to benchmarks/results/engine_figures.json.

    python benchmarks/engine_figures.py [--threads 2] [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def import_time() -> float:
    """Median wall time of `import ddpm_studio` (and of the CLI module) in a fresh interpreter."""
    code = "import time; t=time.perf_counter(); import ddpm_studio, ddpm_studio.cli; print(time.perf_counter()-t)"
    runs = sorted(float(subprocess.check_output([sys.executable, "-c", code], text=True)) for _ in range(3))
    return runs[1]


def engine_step(preset: str, batch: int, precision: str, image_size: int = 32) -> tuple[Any, Any]:
    """The bare training step on random data: (step, model). Also the reference of benchmarks/loop_overhead.py."""
    import torch

    from ddpm_studio.core.device import choose_device
    from ddpm_studio.core.ema import EMA
    from ddpm_studio.core.objectives import per_sample_loss
    from ddpm_studio.core.schedules import NoiseSchedule
    from ddpm_studio.core.unet import UNet, preset_config

    device = choose_device("cpu", precision)
    model = UNet(preset_config(preset, image_size=image_size, in_channels=3))
    ema = EMA(model, 0.999)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4, foreach=True)
    sched = NoiseSchedule.create("linear", 1000)
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, 256, (batch, 3, image_size, image_size), dtype=torch.uint8)

    def step() -> None:
        x0 = data.float() / 127.5 - 1
        t = torch.randint(0, 1000, (batch,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        with device.autocast():
            eps = model(sched.q_sample(x0, t, noise), t)
        loss = per_sample_loss(eps, noise).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema.update(model)

    return step, model


def train_speed(preset: str, batch: int, precision: str, seconds: float) -> dict:
    from ddpm_studio.core.device import choose_device

    device = choose_device("cpu", precision)
    step, model = engine_step(preset, batch, precision)
    for _ in range(2):
        step()
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 3:
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    times.sort()
    median = times[len(times) // 2]
    params = sum(p.numel() for p in model.parameters())
    return {"preset": preset, "params_M": round(params / 1e6, 2), "batch": batch, "precision": device.precision_name,
            "step_ms": round(median * 1000, 1), "images_per_sec": round(batch / median, 2), "steps_timed": len(times)}


def sample_speed(preset: str, batch: int, precision: str, steps: int = 10) -> dict:
    import torch

    from ddpm_studio.core.device import choose_device
    from ddpm_studio.core.unet import UNet, preset_config

    device = choose_device("cpu", precision)
    model = UNet(preset_config(preset, image_size=32, in_channels=3)).eval()
    x = torch.randn(batch, 3, 32, 32)
    t = torch.full((batch,), 500)
    with torch.inference_mode(), device.autocast():
        model(x, t)
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            model(x, t)
            times.append(time.perf_counter() - t0)
    times.sort()
    return {"preset": preset, "batch": batch, "precision": device.precision_name,
            "ms_per_step": round(times[len(times) // 2] * 1000, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=15.0, help="timing window per configuration")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    results: dict = {"machine": platform.processor() or platform.machine(), "threads": args.threads,
                     "torch": torch.__version__, "import_seconds": round(import_time(), 3), "train": [], "sample": []}
    for precision in ("off", "auto"):
        for preset, batch in (("laptop", 32), ("laptop", 8), ("cifar10", 32), ("cifar10", 8)):
            r = train_speed(preset, batch, precision, args.seconds)
            results["train"].append(r)
            print(f"train  {preset:8s} batch {batch:3d} {r['precision']:14s} {r['images_per_sec']:8.2f} img/s "
                  f"({r['step_ms']:.0f} ms/step)", flush=True)
        for preset in ("laptop", "cifar10"):
            r = sample_speed(preset, 16, precision)
            results["sample"].append(r)
            print(f"sample {preset:8s} batch  16 {r['precision']:14s} {r['ms_per_step']:8.1f} ms/step", flush=True)
    results["peak_rss_MB"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(f"import ddpm_studio + cli: {results['import_seconds'] * 1000:.0f} ms; peak RSS {results['peak_rss_MB']} MB")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "engine_figures.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
