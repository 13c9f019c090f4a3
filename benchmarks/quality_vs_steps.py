"""Quality versus sampling steps on the demo dataset: DDPM-1000 vs DDIM 10/25/50/100 vs DPM-Solver++ 10/20/50 (ODE and SDE).

Trains one checkpoint on the built-in demo shapes (or reuses ``--checkpoint``), then samples the same
``--num-images`` starting noises with every sampler and reports the demo shape score (the fraction of
images that are one clean shape of a valid colour on white, ``ddpm_studio.core.demo_score``) and the
wall time of sampling. Writes JSON and a markdown table (docs/quality_vs_steps.md by default).

    python benchmarks/quality_vs_steps.py                 # full: trains ~6000 steps, then all samplers
    python benchmarks/quality_vs_steps.py --quick         # pipeline check in about a minute (meaningless scores)
    python benchmarks/quality_vs_steps.py --checkpoint RUN_OR_CKPT --num-images 512
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SAMPLERS = ("ddpm:1000,ddim:10,ddim:25,ddim:50,ddim:100,dpm++2m:10,dpm++2m:20,dpm++2m:50,"
            "dpm++2m-sde:10,dpm++2m-sde:20,dpm++2m-sde:50")
FULL = {"train_steps": 6000, "num_images": 256, "image_size": 16, "preset": "tiny", "schedule": "linear",
        "prediction": "epsilon"}
QUICK = {**FULL, "train_steps": 20, "num_images": 8}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="Tiny settings that only check the pipeline; writes *_quick files")
    p.add_argument("--checkpoint", type=Path, help="Reuse this checkpoint or run folder instead of training")
    p.add_argument("--train-steps", type=int, help=f"Training steps (full: {FULL['train_steps']})")
    p.add_argument("--num-images", type=int, help=f"Samples per sampler, same noise for all (full: {FULL['num_images']})")
    p.add_argument("--image-size", type=int, help=f"Demo image size (full: {FULL['image_size']})")
    p.add_argument("--preset", help=f"Model preset (full: {FULL['preset']})")
    p.add_argument("--schedule", help=f"Noise schedule, linear or cosine (full: {FULL['schedule']})")
    p.add_argument("--prediction", help=f"epsilon or v (full: {FULL['prediction']})")
    p.add_argument("--train-only", action="store_true", help="Train the checkpoint and stop (sample later with --checkpoint)")
    p.add_argument("--precision", default="off", help="Training mixed precision (default off: float32 on every machine)")
    p.add_argument("--batch-size", type=int, default=128, help="Sampling batch size")
    p.add_argument("--samplers", default=SAMPLERS, help=f"name:steps list (default {SAMPLERS})")
    p.add_argument("--spacing", default="trailing", help="Timestep spacing of DDIM and DPM-Solver++ (default trailing)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--runs-dir", type=Path, help="Where the trained run goes (default: the app runs folder; --quick: temp)")
    p.add_argument("--json", type=Path, help="Default benchmarks/results/quality_vs_steps[_quick].json")
    p.add_argument("--markdown", type=Path, help="Default docs/quality_vs_steps.md (quick: benchmarks/results/…_quick.md)")
    args = p.parse_args(argv)
    base = QUICK if args.quick else FULL
    for key, value in base.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    suffix = "_quick" if args.quick else ""
    args.json = args.json or ROOT / "benchmarks" / "results" / f"quality_vs_steps{suffix}.json"
    args.markdown = args.markdown or (ROOT / "benchmarks" / "results" / "quality_vs_steps_quick.md" if args.quick
                                      else ROOT / "docs" / "quality_vs_steps.md")
    return args


#: The benchmark checkpoint's recipe, every setting that shapes the weights spelled out (not left to defaults that
#: move): the tiny U-Net on 16x16 demo shapes, ε-prediction on the paper's linear schedule, 6,000 steps of batch 32,
#: lr 1e-3 with a cosine decay after 200 warm-up steps, EMA 0.999, float32 on the CPU, seed 0. Training it again
#: reproduces the checkpoint (the demo set and every random draw are seeded); settings added to the app later must
#: default to their old behaviour (config.LEGACY_DEFAULTS) or be pinned here.
RECIPE: dict[str, dict[str, Any]] = {
    "data": {"source": "demo", "image_size": 16, "channels": 3, "hflip": True, "conditional": False},
    "model": {"preset": "tiny", "base_channels": 32, "channel_mults": [1, 2], "num_res_blocks": 1,
              "attention_resolutions": [8], "dropout": 0.1},
    "diffusion": {"timesteps": 1000, "schedule": "linear", "prediction": "epsilon", "loss": "mse", "min_snr_gamma": 0.0},
    "optim": {"batch_size": 32, "grad_accum": 1, "lr": 1e-3, "warmup_steps": 200, "lr_schedule": "cosine",
              "weight_decay": 0.0, "grad_clip": 1.0, "ema_decay": 0.999, "mixed_precision": "off", "device": "cpu",
              "total_steps": 6000, "seed": 0},
    "schedule": {"preview_every": 0, "checkpoint_every": 0, "checkpoint_minutes": 0, "log_every": 50},
}


def recipe(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """:data:`RECIPE` with the command line's overrides (--quick and the size options change it: say so in the doc)."""
    out = {section: dict(values) for section, values in RECIPE.items()}
    out["data"]["image_size"] = args.image_size
    out["optim"]["total_steps"] = args.train_steps
    out["optim"]["warmup_steps"] = min(RECIPE["optim"]["warmup_steps"], args.train_steps // 10)
    out["optim"]["seed"] = args.seed
    out["optim"]["mixed_precision"] = args.precision
    out["diffusion"]["schedule"] = args.schedule
    out["diffusion"]["prediction"] = args.prediction
    if args.preset != RECIPE["model"]["preset"]:
        out["model"] = {"preset": args.preset}
    return out


def train(args: argparse.Namespace) -> Path:
    """Train the benchmark's checkpoint on the demo shapes (:data:`RECIPE`); returns its path."""
    from ddpm_studio.cli_progress import EventPrinter
    from ddpm_studio.services import config as config_mod
    from ddpm_studio.services.control import drive
    from ddpm_studio.services.runs import RunFolder
    from ddpm_studio.services.training import TrainingSession

    cfg = config_mod.check(config_mod.from_dict(recipe(args)))
    name = f"quality-vs-steps-{time.strftime('%Y%m%d-%H%M%S')}"
    session = TrainingSession(cfg, runs_dir=args.runs_dir, run_name=name)  # None: the app's runs folder
    printer = EventPrinter()
    try:
        drive(session.steps(), printer)
    finally:
        printer.close()
    latest = RunFolder(session.run.path).latest_checkpoint()  # type: ignore[union-attr]
    assert latest is not None
    return latest.path


def measure(args: argparse.Namespace, checkpoint: Path) -> dict[str, Any]:
    import torch

    from ddpm_studio.core.device import choose_device
    from ddpm_studio.services.control import drive
    from ddpm_studio.services.evaluation import EvaluationSession, evaluation_sample_config
    from ddpm_studio.services.events import EvaluationReady
    from ddpm_studio.services.sampling import load_for_sampling, sampler_spec

    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_for_sampling(checkpoint, choose_device("cpu", "off"))
    rows = []
    for item in args.samplers.split(","):
        name, steps = item.split(":")
        sample = evaluation_sample_config(sampler=name, steps=int(steps), spacing=args.spacing, num_images=args.num_images,
                                          sample_batch_size=args.batch_size, sample_seed=args.seed)
        events: list[Any] = []
        drive(EvaluationSession(loaded, sample, None, fid="off", demo=True).steps(), events.append)
        r = next(e.report for e in events if isinstance(e, EvaluationReady))
        score = r["demo"]["score"]
        calls = sampler_spec(sample).steps_for(loaded.schedule.num_timesteps)
        rows.append({"sampler": name, "steps": int(steps), "model_calls": calls, "score": score,
                     "score_se": math.sqrt(max(score * (1 - score), 1e-12) / r["num_images"]),
                     "seconds": r["sampling_seconds"], "reasons": r["demo"]["reasons"], "shapes": r["demo"]["shapes"]})
        print(f"{name:8s} {steps:>5s} steps: score {score:.3f}  {r['sampling_seconds']:8.1f} s", flush=True)
    return {
        "checkpoint": str(checkpoint), "step": loaded.step, "num_images": args.num_images, "seed": args.seed,
        "spacing": args.spacing, "image_size": loaded.cfg.data.image_size, "preset": loaded.cfg.model.preset,
        "timesteps": loaded.schedule.num_timesteps, "schedule": loaded.cfg.diffusion.schedule, "quick": args.quick, "rows": rows,
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__},
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def markdown(result: dict[str, Any]) -> str:
    rows = result["rows"]
    ref = next((r for r in rows if r["sampler"] == "ddpm"), None)
    lines = [
        "# Sample quality versus sampling steps (demo shapes)",
        "",
        f"Checkpoint: `{Path(result['checkpoint']).name}` after {result['step']} training steps, preset "
        f"`{result['preset']}`, {result['image_size']}x{result['image_size']} demo shapes, T = {result['timesteps']} "
        f"({result['schedule']} schedule). "
        f"Every sampler starts from the same {result['num_images']} noises (seed {result['seed']}); DDIM (η = 0) and "
        f"DPM-Solver++ (dpm++2m: the ODE solver; dpm++2m-sde: the same solver on the reverse SDE) use "
        f"`{result['spacing']}` spacing. Measured {result['date']} on {result['machine']['processor']}, "
        f"{result['machine']['torch_threads']} torch threads, PyTorch {result['machine']['torch']}.",
        "",
        "Score = fraction of samples the demo detector reads as one clean shape of a valid colour on a clean white "
        "background (1.0 on the real demo images). ± is one binomial standard error. Small-sample score on a toy "
        "dataset: compare the rows with each other, not with FIDs from papers.",
        "",
        "| Sampler | Steps | Score | vs DDPM-1000 | Sampling time (s) | Speed-up vs DDPM-1000 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        rel = f"{r['score'] / ref['score']:.2f}x" if ref and ref["score"] > 0 else "–"
        speed = f"{ref['seconds'] / r['seconds']:.0f}x" if ref and r["seconds"] > 0 else "–"
        lines.append(f"| {r['sampler']} | {r['steps']} | {r['score']:.3f} ± {r['score_se']:.3f} | {rel} | "
                     f"{r['seconds']:.1f} | {speed} |")
    for name in ("dpm++2m", "dpm++2m-sde"):
        dpm20 = next((r for r in rows if r["sampler"] == name and r["steps"] == 20), None)
        if ref and dpm20:
            within = ref["score"] > 0 and dpm20["score"] >= 0.9 * ref["score"]
            speed = ref["seconds"] / dpm20["seconds"] if dpm20["seconds"] > 0 else float("inf")
            lines += ["", f"**Target** ({name} at 20 steps within 10% of DDPM-1000's score at ≥ 40x less wall time): "
                      f"score {dpm20['score']:.3f} vs {ref['score']:.3f} "
                      f"({'within' if within else 'NOT within'} 10%), {speed:.0f}x faster "
                      f"({'met' if within and speed >= 40 else 'not met'})."]
    if result["quick"]:
        lines += ["", "_Quick run (--quick): a barely trained model and a handful of images; checks the pipeline only._"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ddpm-quality-") as tmp:
        if args.quick and args.runs_dir is None:
            args.runs_dir = Path(tmp)
        if args.checkpoint:
            from ddpm_studio.services.runs import resolve_checkpoint

            checkpoint = resolve_checkpoint(args.checkpoint)
        else:
            checkpoint = train(args)
            print(f"Trained {checkpoint}; reuse it with --checkpoint {checkpoint}", flush=True)
            if args.train_only:
                return 0
        train_seconds = time.perf_counter() - started
        result = measure(args, checkpoint)
    result["train_seconds"] = None if args.checkpoint else round(train_seconds, 1)
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    text = markdown(result)
    args.markdown.write_text(text, encoding="utf-8")
    print(text)
    print(f"Wrote {args.json} and {args.markdown} ({result['total_seconds']:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
