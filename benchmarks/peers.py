"""Our U-Net against its two peers (diffusers' UNet2DModel, lucidrains' denoising-diffusion-pytorch Unet) on CPU.

For each configuration and precision, in one process, libraries interleaved round by round (for round: for
library: time for --seconds), it measures:

* the training step, images/s: q_sample with our NoiseSchedule (same data, t and noise for every library),
  forward (under bf16 autocast or not), ε-MSE in float32, backward, grad-norm clip 1.0, the library's own
  optimizer call (``--optimizer typical``, default) or our AdamW(foreach) for all (``--optimizer same``), and the
  same EMA update for every library (our EMA class: one ``_foreach_lerp_`` over the weights, every step);
* the sampling forward: one model call at batch 16 under ``torch.inference_mode()``, ms per call;
* the FLOPs of one training step (``torch.utils.flop_counter.FlopCounterMode``, forward + backward; matmuls,
  convolutions and attention only) and the achieved GFLOP/s, against this CPU's measured 2048x2048 matmul rate;
* the peak RSS a training step adds, in a separate child process per (config, library, precision).

    python benchmarks/peers.py                          # full: 2 threads, 5 rounds x 6 s per cell (~45 min)
    python benchmarks/peers.py --variants --configs laptop,paper --no-memory   # ours in channels_last, compiled
    python benchmarks/peers.py --quick                  # pipeline check (tiny batches, 1 s cells); *_quick files
    python benchmarks/peers.py --configs 64px --json benchmarks/results/peers_64px.json --doc docs/benchmarks_64px.md

The peers are built from our preset as it stands when the script runs (diffusers to the same layout and
parameter count; lucidrains with dim = our base width and dim_mults = our mults, in its own layout).

Writes benchmarks/results/peers.json (every per-round timing) and docs/benchmarks.md; --quick writes
benchmarks/results/peers_quick.json and benchmarks/results/peers_quick.md instead (--json, --doc: elsewhere).
The doc's hand-written sections, below the KEEP_MARKER line, survive a rerun.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "benchmarks.md"

LIBS = ("ours", "diffusers", "lucidrains")
VARIANTS = ("ours-cl", "ours-compile")  # extra rows of our model with --variants
PRECISIONS = ("fp32", "bf16")
SAMPLE_BATCH = 16


@dataclass(frozen=True)
class Config:
    """One model size: our preset as it stands in ddpm_studio (resolved at run time), and the peers built to match it."""

    name: str
    preset: str
    in_channels: int
    batch: int
    quick_batch: int
    quick_sample_batch: int

    def unet_config(self) -> Any:
        from ddpm_studio.core.unet import preset_config

        return preset_config(self.preset, in_channels=self.in_channels)

    @property
    def image_size(self) -> int:
        return int(self.unet_config().image_size)

    @property
    def channels(self) -> int:
        return self.in_channels

    def layout(self) -> str:
        c = self.unet_config()
        return (f"{c.image_size}x{c.image_size}x{c.in_channels}, preset {self.preset!r}: base {c.base_channels}, mults "
                f"{tuple(c.channel_mults)}, {c.num_res_blocks} res block{'s' if c.num_res_blocks != 1 else ''} per level, "
                f"attention at "
                f"{', '.join(f'{r}x{r}' for r in c.attention_resolutions) or 'none'} + middle, {c.num_heads} head(s), "
                f"dropout {c.dropout}")

    def diffusers_kwargs(self) -> dict[str, Any]:
        """UNet2DModel laid out like ours: single-head attention at the same sizes, GroupNorm(32) eps 1e-6,
        the same res blocks per level, the paper's time embedding (as in the google/ddpm-* conversions)."""
        c = self.unet_config()
        if c.num_heads != 1:
            raise ValueError("diffusers' UNet2DModel takes one attention_head_dim for all levels: match needs 1 head")
        levels = len(c.channel_mults)
        attn = [c.feature_sizes[i] in c.attention_resolutions for i in range(levels)]
        return {"sample_size": c.image_size, "in_channels": c.in_channels, "out_channels": c.in_channels,
                "block_out_channels": tuple(c.base_channels * m for m in c.channel_mults),
                "layers_per_block": c.num_res_blocks,
                "down_block_types": tuple("AttnDownBlock2D" if attn[i] else "DownBlock2D" for i in range(levels)),
                "up_block_types": tuple("AttnUpBlock2D" if attn[levels - 1 - i] else "UpBlock2D" for i in range(levels)),
                "dropout": c.dropout, "attention_head_dim": None, "norm_num_groups": 32, "norm_eps": 1e-6,
                "flip_sin_to_cos": False, "freq_shift": 1}

    def lucidrains_kwargs(self) -> dict[str, Any]:
        c = self.unet_config()
        return {"dim": c.base_channels, "dim_mults": tuple(c.channel_mults), "channels": c.in_channels,
                "dropout": c.dropout}

    def notes(self) -> list[str]:
        n = self.unet_config().num_res_blocks
        return [f"lucidrains has 2 res blocks per level in the encoder and 2 in the decoder (ours and diffusers: {n} and "
                f"{n + 1}), linear attention at every level but the innermost, full attention only at the innermost "
                "level and the middle"]


LUCID_NOTE = ("lucidrains' Unet keeps its own layout, which no argument changes: 2 res blocks per level in the encoder "
              "and 2 in the decoder (ours and diffusers: N in the encoder and N+1 in the decoder), linear attention "
              "(4 heads x 32, with memory key/values) after every level but the innermost, full attention (4 heads x 32, "
              "einsum, not SDPA) only at the innermost level and the middle, RMSNorm instead of GroupNorm, scale-shift "
              "time conditioning, a 7x7 input conv, pixel-unshuffle + 1x1 conv downsampling, an extra final res block; "
              "it is built with dim = our base width, dim_mults = our mults, dropout = ours")

CONFIGS: dict[str, Config] = {
    "paper": Config("paper", "cifar10", 3, batch=8, quick_batch=2, quick_sample_batch=4),
    "laptop": Config("laptop", "laptop", 3, batch=32, quick_batch=8, quick_sample_batch=16),
    "64px": Config("64px", "ddpm-64", 3, batch=8, quick_batch=1, quick_sample_batch=2),
    "tiny16": Config("tiny16", "tiny", 1, batch=64, quick_batch=16, quick_sample_batch=16),
}

# The optimizer each library's own training loop uses (diffusers: examples/unconditional_image_generation/
# train_unconditional.py; lucidrains: denoising_diffusion_pytorch.Trainer). Both leave foreach to torch,
# which on CPU means the per-parameter loop. Ours: what TrainingSession does on CPU.
OPTIMIZERS = {
    "ours": "AdamW(lr=2e-4, weight_decay=0, foreach=True)",
    "diffusers": "AdamW(lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)",
    "lucidrains": "Adam(lr=8e-5, betas=(0.9, 0.99))",
}


def make_optimizer(lib: str, params: list[Any], mode: str) -> Any:
    import torch

    if mode == "same" or lib.startswith("ours"):
        return torch.optim.AdamW(params, lr=2e-4, weight_decay=0.0, foreach=True)
    if lib == "diffusers":
        return torch.optim.AdamW(params, lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)
    return torch.optim.Adam(params, lr=8e-5, betas=(0.9, 0.99))


# ---------------------------------------------------------------------------------------------- models
def build_model(cfg: Config, lib: str) -> Any:
    """The network, and a forward(x, t) -> ε for it."""
    if lib.startswith("ours"):
        from ddpm_studio.core.unet import UNet

        return UNet(cfg.unet_config())
    if lib == "diffusers":
        from diffusers import UNet2DModel

        return UNet2DModel(**cfg.diffusers_kwargs())
    if lib == "lucidrains":
        from denoising_diffusion_pytorch import Unet

        return Unet(**cfg.lucidrains_kwargs())
    raise ValueError(lib)


def forward_fn(lib: str) -> Callable[[Any, Any, Any], Any]:
    if lib == "diffusers":
        return lambda model, x, t: model(x, t, return_dict=False)[0]
    return lambda model, x, t: model(x, t)


def autocast(precision: str) -> contextlib.AbstractContextManager[Any]:
    """Same context for everyone: our DeviceChoice.autocast() for CPU bf16 is exactly torch.autocast('cpu', bf16)."""
    import torch

    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Runner:
    """One library's model, optimizer, EMA and inputs; train_step() and sample_call() are what gets timed."""

    def __init__(self, cfg: Config, lib: str, batch: int, sample_batch: int, optimizer: str) -> None:
        import torch

        from ddpm_studio.core.ema import EMA
        from ddpm_studio.core.schedules import NoiseSchedule

        self.lib, self.cfg = lib, cfg
        torch.manual_seed(0)
        self.model = build_model(cfg, lib).train()
        self.channels_last = lib == "ours-cl"
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.params = sum(p.numel() for p in self.model.parameters())
        self.net = self.model  # what forward goes through (the compiled wrapper for ours-compile)
        self.fwd = forward_fn(lib)
        self.ema = EMA(self.model, 0.999)
        self.opt = make_optimizer(lib, list(self.model.parameters()), optimizer)
        self.sched = NoiseSchedule.create("linear", 1000)
        self.gen = torch.Generator().manual_seed(1)
        size = (cfg.channels, cfg.image_size, cfg.image_size)
        self.batch = batch
        self.data = torch.randint(0, 256, (batch, *size), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
        self.sample_x = torch.randn(sample_batch, *size, generator=torch.Generator().manual_seed(3))
        self.sample_t = torch.full((sample_batch,), 500)
        if self.channels_last:
            self.sample_x = self.sample_x.contiguous(memory_format=torch.channels_last)
        self.compile_s: dict[str, float] = {}

    def compile(self) -> None:
        import torch

        self.net = torch.compile(self.model, dynamic=False)

    def _loss(self, batch: int | None = None) -> Any:
        import torch

        from ddpm_studio.core.objectives import per_sample_loss

        x0 = self.data[:batch].float() / 127.5 - 1
        n = x0.shape[0]
        t = torch.randint(0, 1000, (n,), generator=self.gen)
        noise = torch.randn(x0.shape, generator=self.gen)
        x_t = self.sched.q_sample(x0, t, noise)
        if self.channels_last:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        with self.precision_ctx():
            eps = self.fwd(self.net, x_t, t)
        return per_sample_loss(eps, noise).mean()

    precision = "fp32"

    def precision_ctx(self) -> contextlib.AbstractContextManager[Any]:
        return autocast(self.precision)

    def train_step(self) -> None:
        import torch

        self._loss().backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.ema.update(self.model)

    def sample_call(self) -> None:
        import torch

        self.model.eval()
        try:
            with torch.inference_mode(), self.precision_ctx():
                self.fwd(self.net, self.sample_x, self.sample_t)
        finally:
            self.model.train()

    def count_flops(self) -> tuple[float, float]:
        """FLOPs of one training step (forward + backward) per image, and of one sampling forward per image."""
        import torch
        from torch.utils.flop_counter import FlopCounterMode

        net, self.net = self.net, self.model  # count the eager model (same maths as channels_last / compiled)
        try:
            with FlopCounterMode(display=False) as fc:
                self._loss(batch=1).backward()
            train = fc.get_total_flops()
            self.model.zero_grad(set_to_none=True)
            self.model.eval()
            with FlopCounterMode(display=False) as fc, torch.inference_mode():
                self.fwd(self.model, self.sample_x[:1], self.sample_t[:1])
            self.model.train()
            return float(train), float(fc.get_total_flops())
        finally:
            self.net = net


# ------------------------------------------------------------------------------------------------ timing
def time_window(fn: Callable[[], None], seconds: float, min_calls: int) -> list[float]:
    """One untimed warm-up call, then calls until `seconds` have passed (at least `min_calls`): each call's seconds."""
    fn()
    times: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < min_calls:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def matmul_gflops(dtype_name: str, seconds: float, n: int = 2048) -> float:
    """Median rate of an n x n x n matmul at the current thread count, GFLOP/s."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g).to(dtype), torch.randn(n, n, generator=g).to(dtype)
    out = torch.empty(n, n, dtype=dtype)
    times = time_window(lambda: torch.matmul(a, b, out=out), seconds, 3)
    return 2 * n**3 / statistics.median(times) / 1e9


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


# ------------------------------------------------------------------------------------------------ memory
def _rss_kb(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise RuntimeError(field_name)


def memory_child(cfg: Config, lib: str, precision: str, batch: int, optimizer: str, steps: int) -> dict[str, Any]:
    """Runs in its own process: RSS before the model, after model+EMA+optimizer, and the peak over `steps` steps."""
    import resource

    linux = Path("/proc/self/clear_refs").exists()

    def rss() -> float:
        if linux:
            return _rss_kb("VmRSS") / 1024
        import psutil

        return psutil.Process().memory_info().rss / 2**20

    # Import everything first, so that imports do not count as the model's memory.
    import torch  # noqa: F401
    from denoising_diffusion_pytorch import Unet  # noqa: F401
    from diffusers import UNet2DModel  # noqa: F401  (diffusers loads its model modules lazily, on this import)

    from ddpm_studio.core.ema import EMA  # noqa: F401
    from ddpm_studio.core.unet import UNet  # noqa: F401

    start = rss()
    runner = Runner(cfg, lib, batch, 1, optimizer)
    runner.precision = precision
    built = rss()
    if linux:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    for _ in range(steps):
        runner.train_step()
    if linux:
        peak = _rss_kb("VmHWM") / 1024
        how = "VmHWM after /proc/self/clear_refs reset"
    else:  # ru_maxrss is the whole process's peak: only an upper bound when building peaked higher
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)
        how = "ru_maxrss (process peak)"
    weights_mb = runner.params * 4 / 2**20
    return {"config": cfg.name, "lib": lib, "precision": precision, "batch": batch, "steps": steps,
            "rss_start_MB": round(start, 1), "model_ema_MB": round(built - start, 1),
            "step_peak_increase_MB": round(peak - built, 1), "train_total_MB": round(peak - start, 1),
            "expected_grads_adam_MB": round(3 * weights_mb, 1), "method": how}


def run_memory_children(args: argparse.Namespace, cfg: Config, libs: list[str]) -> list[dict[str, Any]]:
    out = []
    for lib in libs:
        for precision in args.precision:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", cfg.name, lib, precision,
                   "--threads", str(args.threads), "--optimizer", args.optimizer]
            if args.quick:
                cmd.append("--quick")
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
                out.append({"config": cfg.name, "lib": lib, "precision": precision, "error": " | ".join(tail)})
                print(f"  memory {lib:12s} {precision}: FAILED {' | '.join(tail)}", flush=True)
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            out.append(r)
            print(f"  memory {lib:12s} {precision}: model+EMA {r['model_ema_MB']:7.1f} MB, training step peak "
                  f"+{r['step_peak_increase_MB']:7.1f} MB", flush=True)
    return out


# ------------------------------------------------------------------------------------------------ main run
@contextlib.contextmanager
def stage(label: str) -> Iterator[None]:
    t0 = time.perf_counter()
    print(label, flush=True)
    yield
    print(f"  ({time.perf_counter() - t0:.0f} s)", flush=True)


def bench_config(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    batch = cfg.quick_batch if args.quick else cfg.batch
    sample_batch = cfg.quick_sample_batch if args.quick else SAMPLE_BATCH
    libs = list(LIBS) + args.variants
    res: dict[str, Any] = {"layout": cfg.layout(), "batch": batch, "sample_batch": sample_batch, "libs": {},
                           "notes": cfg.notes(), "ours_config": dataclasses.asdict(cfg.unet_config()),
                           "diffusers_kwargs": cfg.diffusers_kwargs(), "lucidrains_kwargs": cfg.lucidrains_kwargs()}
    print(f"  {res['layout']}", flush=True)
    runners: dict[str, Runner] = {}
    for lib in libs:
        runner = Runner(cfg, lib, batch, sample_batch, args.optimizer)
        train_flops, sample_flops = runner.count_flops()
        runners[lib] = runner
        res["libs"][lib] = {"params": runner.params, "optimizer": "AdamW(foreach) as ours" if args.optimizer == "same"
                            else OPTIMIZERS["ours" if lib.startswith("ours") else lib],
                            "train_flops_per_image": train_flops, "sample_flops_per_image": sample_flops,
                            "compile_s": {}, "train": {}, "sample": {}}
        print(f"  {lib:12s} {runner.params / 1e6:7.2f} M params, {train_flops / 1e9:6.2f} GFLOP/image per training "
              f"step, {sample_flops / 1e9:6.2f} GFLOP/image per forward", flush=True)
    if "ours-compile" in runners:
        try:
            runners["ours-compile"].compile()
        except Exception as exc:  # report whatever stops torch.compile on this machine
            res["libs"]["ours-compile"]["error"] = f"{type(exc).__name__}: {exc}"
            del runners["ours-compile"]

    seconds = args.seconds
    min_calls = 1 if args.quick else 2
    for precision in args.precision:
        # First call of each (lib, precision, mode) outside the timing: for torch.compile this is the compile time.
        for lib, runner in list(runners.items()):
            runner.precision = precision
            for mode, fn in (("train", runner.train_step), ("sample", runner.sample_call)):
                t0 = time.perf_counter()
                try:
                    fn()
                except Exception as exc:  # a variant that fails is reported, the others go on
                    if not lib.startswith("ours-"):
                        raise
                    res["libs"][lib]["error"] = f"{precision} {mode}: {type(exc).__name__}: {str(exc)[:300]}"
                    print(f"  {lib} dropped: {res['libs'][lib]['error']}", flush=True)
                    del runners[lib]
                    break
                res["libs"][lib]["compile_s"][f"{precision}_{mode}"] = round(time.perf_counter() - t0, 2)
        for lib in runners:
            res["libs"][lib]["train"][precision] = []
            res["libs"][lib]["sample"][precision] = []
        for rnd in range(args.rounds):
            order = list(runners)
            order = order[rnd % len(order):] + order[:rnd % len(order)]  # rotate who goes first each round
            for mode in ("train", "sample"):
                for lib in order:
                    runner = runners[lib]
                    runner.precision = precision
                    fn = runner.train_step if mode == "train" else runner.sample_call
                    times = time_window(fn, seconds, min_calls)
                    res["libs"][lib][mode][precision].append([round(x, 5) for x in times])
            line = "  ".join(
                f"{lib} {batch / median(res['libs'][lib]['train'][precision][-1]):.1f} img/s "
                f"{median(res['libs'][lib]['sample'][precision][-1]) * 1000:.0f} ms" for lib in runners)
            print(f"  {precision} round {rnd + 1}/{args.rounds}: {line}", flush=True)
    del runners
    return res


def summarize(results: dict[str, Any]) -> None:
    """Add medians (median over rounds of each round's median call), ratios and GFLOP/s to the results, in place."""
    ceil = results["matmul_gflops"]
    for cres in results["configs"].values():
        batch = cres["batch"]
        for precision in results["precision"]:
            summary: dict[str, Any] = {}
            for lib, lres in cres["libs"].items():
                rounds_t = lres["train"].get(precision) or []
                rounds_s = lres["sample"].get(precision) or []
                if not rounds_t:
                    continue
                step = median([median(r) for r in rounds_t])
                samp = median([median(r) for r in rounds_s])
                gflops = lres["train_flops_per_image"] * batch / step / 1e9
                summary[lib] = {
                    "train_ms": round(step * 1000, 1), "images_per_s": round(batch / step, 2),
                    "train_round_images_per_s": [round(batch / median(r), 2) for r in rounds_t],
                    "sample_ms": round(samp * 1000, 1), "sample_round_ms": [round(median(r) * 1000, 1) for r in rounds_s],
                    "gflops": round(gflops, 1), "fraction_of_matmul": round(gflops / ceil[precision], 3),
                }
            peers = [lib for lib in ("diffusers", "lucidrains") if lib in summary]
            if "ours" in summary and peers:
                best_t = max(peers, key=lambda lib: summary[lib]["images_per_s"])
                best_s = min(peers, key=lambda lib: summary[lib]["sample_ms"])
                summary["ratio"] = {
                    "train_ours_over_fastest_peer": round(summary["ours"]["images_per_s"] / summary[best_t]["images_per_s"], 2),
                    "train_fastest_peer": best_t,
                    "sample_speed_ours_over_fastest_peer": round(summary[best_s]["sample_ms"] / summary["ours"]["sample_ms"], 2),
                    "sample_fastest_peer": best_s,
                }
            cres.setdefault("summary", {})[precision] = summary


def _fmt_params(n: int) -> str:
    return f"{n / 1e6:.2f} M"


def markdown(results: dict[str, Any], command: str) -> str:
    ceil = results["matmul_gflops"]
    lines = [
        "# Training and sampling speed against diffusers and denoising-diffusion-pytorch (CPU)",
        "",
        f"{results['cpu']}, {results['threads']} threads, torch {results['torch']}, diffusers {results['diffusers']}, "
        f"denoising-diffusion-pytorch {results['denoising_diffusion_pytorch']}; {results['rounds']} rounds x "
        f"{results['seconds']} s per cell; load average {results['loadavg_start'][0]:.2f} at start, "
        f"{results['loadavg_end'][0]:.2f} at end. Matmul ceiling (2048^3) at this thread count: "
        f"{ceil['fp32']:.0f} GFLOP/s fp32, {ceil['bf16']:.0f} GFLOP/s bf16."
        + (" **Quick mode: pipeline check only, tiny batches and windows, not a measurement.**" if results["quick"] else ""),
        "",
        "## Configurations", "",
        "| config | our layout | params: ours / diffusers / lucidrains | training GFLOP per image: ours / diffusers / "
        "lucidrains |",
        "|---|---|---|---|",
    ]
    for cname, cres in results["configs"].items():
        libs = cres["libs"]
        trio = [lib for lib in LIBS if lib in libs]
        lines.append(f"| {cname} | {cres['layout']} | " + " / ".join(_fmt_params(libs[lib]["params"]) for lib in trio)
                     + " | " + " / ".join(f"{libs[lib]['train_flops_per_image'] / 1e9:.2f}" for lib in trio) + " |")
    lines.append("")
    for precision in results["precision"]:
        lines += [f"## {precision}" + (" (everyone under torch.autocast('cpu', bfloat16))" if precision == "bf16"
                                       else " (everyone eager float32)"), "",
                  "| config | library | params | train batch | train img/s | ms/step | GFLOP/s (% of matmul) "
                  "| sample ms (batch) | ours / fastest peer, speed (>1: ours faster): train, sample |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---|"]
        for cname, cres in results["configs"].items():
            summary = cres.get("summary", {}).get(precision, {})
            for lib, lres in cres["libs"].items():
                s = summary.get(lib)
                if s is None:
                    err = lres.get("error", "not run")
                    lines.append(f"| {cname} | {lib} | {_fmt_params(lres['params'])} | | failed: {err[:80]} | | | | |")
                    continue
                ratio = ""
                if lib == "ours" and "ratio" in summary:
                    r = summary["ratio"]
                    ratio = (f"{r['train_ours_over_fastest_peer']:.2f}x ({r['train_fastest_peer']}), "
                             f"{r['sample_speed_ours_over_fastest_peer']:.2f}x ({r['sample_fastest_peer']})")
                elif lib.startswith("ours-") and "ours" in summary:
                    ratio = (f"vs ours: {s['images_per_s'] / summary['ours']['images_per_s']:.2f}x, "
                             f"{summary['ours']['sample_ms'] / s['sample_ms']:.2f}x")
                lines.append(
                    f"| {cname} | {lib} | {_fmt_params(lres['params'])} | {cres['batch']} | {s['images_per_s']:.2f} | "
                    f"{s['train_ms']:.0f} | {s['gflops']:.0f} ({100 * s['fraction_of_matmul']:.0f}%) | "
                    f"{s['sample_ms']:.0f} ({cres['sample_batch']}) | {ratio} |")
        lines.append("")
    mem = [m for c in results["configs"].values() for m in c.get("memory", [])]
    if mem:
        lines += ["## Peak memory of a training step (separate process per row)", "",
                  "| config | library | precision | batch | model + EMA MB | step peak increase MB "
                  "| of which grads + Adam state MB |",
                  "|---|---|---|---:|---:|---:|---:|"]
        for m in mem:
            if "error" in m:
                lines.append(f"| {m['config']} | {m['lib']} | {m['precision']} | | failed: {m['error'][:80]} | | |")
            else:
                lines.append(f"| {m['config']} | {m['lib']} | {m['precision']} | {m['batch']} | {m['model_ema_MB']:.0f} | "
                             f"{m['step_peak_increase_MB']:.0f} | {m['expected_grads_adam_MB']:.0f} |")
        lines.append("")
    compiles = [(c, lib, lres["compile_s"]) for c, cres in results["configs"].items()
                for lib, lres in cres["libs"].items() if lib == "ours-compile" and lres["compile_s"]]
    if compiles:
        lines += ["torch.compile time (first call, per precision and mode): " + "; ".join(
            f"{c}: " + ", ".join(f"{k} {v:.0f} s" for k, v in cs.items()) for c, _, cs in compiles), ""]
    lines += [
        "## How measured", "",
        "One process; per configuration and precision, every library's model, optimizer and EMA are built once and "
        "then timed in rounds, libraries interleaved (the order rotates each round), each cell one untimed warm-up "
        "call and then calls for the window. A cell's figure is the median over rounds of each round's median call. "
        "The training step is the same for all: uint8 batch to [-1, 1], our NoiseSchedule.q_sample with the same "
        "t and noise, forward, float32 ε-MSE, backward, clip_grad_norm_(1.0), the optimizer step "
        f"({'our AdamW(foreach=True) for every library' if results['optimizer'] == 'same' else 'each library’s own: '}"
        + ("" if results["optimizer"] == "same" else "; ".join(f"{k} {v}" for k, v in OPTIMIZERS.items()))
        + ") and, for every library, the same EMA update (our EMA: one torch._foreach_lerp_ per step; diffusers' "
        "EMAModel and lucidrains' ema-pytorch would cost the same or less). Sampling is one forward of the training "
        "copy in eval mode under torch.inference_mode(). bf16 rows run everyone's forward under "
        "torch.autocast('cpu', dtype=torch.bfloat16) with float32 weights; fp32 rows are plain eager float32. "
        "GFLOP/s counts the matmul, convolution and attention FLOPs of forward + backward "
        "(torch.utils.flop_counter.FlopCounterMode) over the measured step time (which also includes the "
        "optimizer, EMA and elementwise work), against the rate of a 2048x2048 matmul at the same thread count. "
        "Memory: a child process per row builds the model, EMA and optimizer, resets the kernel's peak-RSS mark "
        "and runs training steps; the increase includes gradients, the Adam state created by the first step, the "
        "activations and the optimizer's temporaries (our foreach AdamW holds whole-model temporaries that the "
        "peers' per-parameter loop does not: --optimizer same gives everyone ours).",
        "",
        "Architectures: diffusers' UNet2DModel is configured to the same layout as ours (same parameter count: "
        "single-head attention at the same feature-map size, GroupNorm(32) with eps 1e-6, the same res blocks per level, "
        "strided-conv downsampling, nearest + conv upsampling, the paper's sinusoidal time embedding). "
        + LUCID_NOTE + "."
        + (" ours-cl is our model and input in channels_last; ours-compile is torch.compile(model, dynamic=False), "
           "compiled before timing." if results["variants"] else ""),
        "",
        "Command:", "", "```", command, "```", "",
    ]
    return "\n".join(lines)


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int,
                   help="torch.set_num_threads (default 2, capped by the CPUs this process may use and OMP_NUM_THREADS)")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 5; quick 2)")
    p.add_argument("--seconds", type=float, help="timing window per cell (default 6; quick 1)")
    p.add_argument("--quick", action="store_true", help="small batches and windows: checks the pipeline; writes *_quick files")
    p.add_argument("--precision", default="fp32,bf16", help="comma list of fp32, bf16 (default both)")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma list of {', '.join(CONFIGS)}")
    p.add_argument("--variants", nargs="?", const=",".join(VARIANTS), default="",
                   help=f"also time these variants of ours (bare flag: all of {', '.join(VARIANTS)}; "
                        "ours-compile costs minutes of compiling per config, precision and mode)")
    p.add_argument("--optimizer", choices=("typical", "same"), default="typical",
                   help="typical: each library's own optimizer call (default); same: our AdamW(foreach) for all")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-RSS child processes")
    p.add_argument("--json", type=Path, help="results file (default benchmarks/results/peers.json; quick: peers_quick.json)")
    p.add_argument("--doc", type=Path,
                   help="markdown table (default docs/benchmarks.md; quick: benchmarks/results/peers_quick.md); "
                        "what follows its KEEP_MARKER line is kept")
    p.add_argument("--memory-child", nargs=3, metavar=("CONFIG", "LIB", "PRECISION"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        omp = os.environ.get("OMP_NUM_THREADS", "")
        args.threads = min(2, cpus, int(omp) if omp.isdigit() and int(omp) > 0 else 2)
    args.rounds = args.rounds or (2 if args.quick else 5)
    args.seconds = args.seconds if args.seconds is not None else (1.0 if args.quick else 6.0)
    args.precision = [x.strip() for x in args.precision.split(",") if x.strip()]
    args.configs = [x.strip() for x in args.configs.split(",") if x.strip()]
    args.variants = [x.strip() for x in args.variants.split(",") if x.strip()]
    for x in args.variants:
        if x not in VARIANTS:
            p.error(f"unknown variant {x!r}; choose from {', '.join(VARIANTS)}")
    for x in args.precision:
        if x not in PRECISIONS:
            p.error(f"unknown precision {x!r}; choose from {', '.join(PRECISIONS)}")
    for x in args.configs:
        if x not in CONFIGS:
            p.error(f"unknown config {x!r}; choose from {', '.join(CONFIGS)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.memory_child:
        cname, lib, precision = args.memory_child
        cfg = CONFIGS[cname]
        batch = cfg.quick_batch if args.quick else cfg.batch
        print(json.dumps(memory_child(cfg, lib, precision, batch, args.optimizer, 2 if args.quick else 3)))
        return

    from importlib.metadata import version

    import denoising_diffusion_pytorch  # noqa: F401
    import diffusers

    t_start = time.perf_counter()
    command = "python benchmarks/peers.py " + " ".join(argv if argv is not None else sys.argv[1:])
    ceil_seconds = 1.0 if args.quick else 3.0
    results: dict[str, Any] = {
        "cpu": cpu_name(), "machine": platform.machine(), "python": platform.python_version(), "torch": torch.__version__,
        "diffusers": diffusers.__version__, "denoising_diffusion_pytorch": version("denoising-diffusion-pytorch"),
        "threads": args.threads, "rounds": args.rounds, "seconds": args.seconds, "quick": args.quick,
        "precision": args.precision, "optimizer": args.optimizer, "variants": args.variants, "command": command,
        "cpu_affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "mkldnn_bf16": bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)()),
        "loadavg_start": list(os.getloadavg()), "started": time.strftime("%Y-%m-%d %H:%M:%S"), "configs": {},
    }
    with stage("matmul ceiling"):
        results["matmul_gflops_start"] = {p: round(matmul_gflops(p, ceil_seconds), 1) for p in PRECISIONS}
        print(f"  {results['matmul_gflops_start']}", flush=True)
    for cname in args.configs:
        cfg = CONFIGS[cname]
        with stage(f"config {cname}"):
            results["configs"][cname] = bench_config(args, cfg)
        if not args.no_memory:
            with stage(f"memory {cname}"):
                mem_libs = list(LIBS) + [v for v in args.variants if v != "ours-compile"]
                results["configs"][cname]["memory"] = run_memory_children(args, cfg, mem_libs)
    results["matmul_gflops_end"] = {p: round(matmul_gflops(p, ceil_seconds), 1) for p in PRECISIONS}
    # The ceiling is the best rate seen: a busy moment only lowers a measurement.
    results["matmul_gflops"] = {p: max(results["matmul_gflops_start"][p], results["matmul_gflops_end"][p]) for p in PRECISIONS}
    results["loadavg_end"] = list(os.getloadavg())
    results["wall_s"] = round(time.perf_counter() - t_start, 1)
    summarize(results)
    md = markdown(results, command)
    print()
    print(md)
    if results["loadavg_end"][0] > args.threads + 0.5:
        print(f"WARNING: load average {results['loadavg_end'][0]:.1f} > {args.threads} threads: other work shared the CPU.")
    print(f"total {results['wall_s']:.0f} s")
    json_path = args.json or RESULTS / ("peers_quick.json" if args.quick else "peers.json")
    doc_path = args.doc or (RESULTS / "peers_quick.md" if args.quick else DOC)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=1))
    write_doc(doc_path, md)


#: Ends the part of a doc this script writes; what follows it (hand-written sections) survives a rerun.
KEEP_MARKER = "<!-- Generated by benchmarks/peers.py down to here; what follows is kept when it rewrites this file. -->"


def write_doc(path: Path, md: str) -> None:
    """Write the generated table to ``path``, keeping whatever stood after :data:`KEEP_MARKER` there."""
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    kept = old.split(KEEP_MARKER, 1)[1] if KEEP_MARKER in old else "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(md.rstrip("\n") + "\n\n" + KEEP_MARKER + kept, encoding="utf-8")


if __name__ == "__main__":
    main()
