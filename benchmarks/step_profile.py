"""Where a training step's time goes, and how close its convolutions run to this CPU's convolution rate.

Why: the peers benchmark shows ours and diffusers' U-Net at nearly the same speed on the same layout. This
script says whether any headroom is left: it profiles our training step (forward under the chosen
precision, ε-MSE, backward, clip, AdamW, EMA: the step TrainingSession runs) with torch.profiler, groups
the operators (convolution, matmul, attention, dropout, normalisation, activation, optimizer + EMA, other),
and measures the rate of a lone 3x3 convolution forward + backward at the model's widths, the practical
ceiling for a convolutional network here (a 2048^3 matmul runs slower than a convolution on this CPU).

    python benchmarks/step_profile.py [--configs paper,laptop] [--precisions fp32,bf16] [--threads 2]

Prints a table; writes benchmarks/results/step_profile.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CONFIGS = {"paper": ("cifar10", 8), "laptop": ("laptop", 32)}  # preset, training batch (as in peers.py)
GROUPS = (  # first match wins; names are aten operator names
    ("convolution", ("convolution", "conv2d")),
    ("matmul (linear, 1x1 attention projections)", ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul")),
    ("attention (SDPA)", ("scaled_dot_product",)),
    ("dropout RNG", ("bernoulli", "native_dropout")),
    ("group norm", ("group_norm",)),
    ("SiLU", ("silu",)),
    ("optimizer + EMA + clip", ("_foreach", "lerp", "addcdiv", "addcmul", "sqrt", "vector_norm", "clamp")),
)


def group_of(name: str) -> str:
    for group, keys in GROUPS:
        if any(k in name for k in keys):
            return group
    return "other (elementwise, copies, casts)"


def timed(fn: Any, repeats: int) -> float:
    """Median seconds of ``fn`` over ``repeats`` calls after two warm-up calls."""
    fn()
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def conv_ceiling(channels: int, size: int, batch: int, autocast: Any) -> float:
    """GFLOP/s of a lone channels→channels 3x3 convolution, forward + backward (3x the forward FLOPs)."""
    import torch

    conv = torch.nn.Conv2d(channels, channels, 3, padding=1)
    x = torch.randn(batch, channels, size, size, requires_grad=True)

    def fwd_bwd() -> None:
        with autocast():
            y = conv(x)
        y.float().sum().backward()

    flops = 3 * 2 * batch * channels * channels * 9 * size * size
    return flops / timed(fwd_bwd, 10) / 1e9


def profile_config(name: str, precision: str, steps: int) -> dict[str, Any]:
    import torch
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    from ddpm_studio.core.device import choose_device
    from ddpm_studio.core.ema import EMA
    from ddpm_studio.core.objectives import per_sample_loss
    from ddpm_studio.core.schedules import NoiseSchedule
    from ddpm_studio.core.unet import UNet, preset_config

    preset, batch = CONFIGS[name]
    device = choose_device("cpu", "bf16" if precision == "bf16" else "off")
    torch.manual_seed(0)
    ucfg = preset_config(preset, image_size=32, in_channels=3)
    model = UNet(ucfg)
    ema = EMA(model, 0.999)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4, foreach=True)
    sched = NoiseSchedule.create("linear", 1000)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(batch, 3, 32, 32) * 2 - 1

    def step() -> None:
        t = torch.randint(0, 1000, (batch,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        with device.autocast():
            eps = model(sched.q_sample(x0, t, noise), t)
        per_sample_loss(eps, noise).mean().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema.update(model)

    step_s = timed(step, 5)
    with FlopCounterMode(display=False) as fc:
        step()
    conv_flops = sum(v for op, v in fc.get_flop_counts()["Global"].items() if "convolution" in str(op))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    totals: dict[str, float] = {}
    for event in prof.key_averages():
        group = group_of(event.key)
        totals[group] = totals.get(group, 0.0) + event.self_cpu_time_total / 1e3 / steps  # ms per step
    profiled_ms = sum(totals.values())
    conv_ms = totals.get("convolution", 0.0)
    widths = sorted({ucfg.base_channels * m for m in ucfg.channel_mults})
    ceiling = max(conv_ceiling(w, 32 >> i, batch, device.autocast) for i, w in enumerate(widths))
    return {
        "config": name, "preset": preset, "batch": batch, "precision": precision,
        "step_ms": step_s * 1e3, "images_per_s": batch / step_s, "profiled_ms_per_step": profiled_ms,
        "share": {k: v / profiled_ms for k, v in sorted(totals.items(), key=lambda kv: -kv[1])},
        "conv_gflop_per_step": conv_flops / 1e9, "conv_gflops_achieved": conv_flops / (conv_ms / 1e3) / 1e9 if conv_ms else None,
        "conv_gflops_ceiling": ceiling,
        "step_if_only_convolutions_ms": step_s * 1e3 * conv_ms / profiled_ms,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default="paper,laptop")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=3, help="Profiled steps per cell")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "step_profile.json")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    rows = [profile_config(c, prec, args.steps) for c in args.configs.split(",") for prec in args.precisions.split(",")]
    print("| config | precision | ms/step | convolution share | conv GFLOP/s: achieved / lone-conv rate | "
          "step if only convolutions were left | other shares |")
    print("|---|---|---:|---:|---|---:|---|")
    for r in rows:
        others = ", ".join(f"{k} {v:.0%}" for k, v in r["share"].items() if k != "convolution" and v >= 0.01)
        print(f"| {r['config']} | {r['precision']} | {r['step_ms']:.0f} | {r['share'].get('convolution', 0):.0%} | "
              f"{r['conv_gflops_achieved']:.0f} / {r['conv_gflops_ceiling']:.0f} | "
              f"{r['step_if_only_convolutions_ms']:.0f} ms ({r['step_ms'] / r['step_if_only_convolutions_ms']:.2f}x) | "
              f"{others} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "rows": rows, "threads": args.threads, "torch": torch.__version__, "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
