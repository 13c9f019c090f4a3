"""Quality versus sampling steps on the demo dataset: every few-step sampler at 5 / 10 / 20 / 50 steps, per timestep
spacing, against DDPM's 1000 steps.

Trains one checkpoint on the built-in demo shapes with a pinned recipe (:data:`RECIPE`; or reuses
``--checkpoint``), then samples the same ``--num-images`` starting noises with every sampler and reports the demo
shape score (the fraction of images that are one clean shape of a valid colour on white,
``ddpm_studio.core.demo_score``) and the wall time of sampling. Writes JSON after every row (``--resume`` skips
the rows a previous run of the same checkpoint already wrote) and a markdown table (docs/quality_vs_steps.md).

    python benchmarks/quality_vs_steps.py --threads 1             # full: trains 6000 steps (~25 quiet CPU min)
    python benchmarks/quality_vs_steps.py --train-only --threads 1   # only the checkpoint
    python benchmarks/quality_vs_steps.py --checkpoint RUN_OR_CKPT --resume
    python benchmarks/quality_vs_steps.py --quick                 # pipeline check in a few minutes
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

from ddpm_studio.core.sampler_catalog import SAMPLER_NAMES, uses_steps  # noqa: E402 - torch-free, after the path

FEW_STEP = ",".join(name for name in SAMPLER_NAMES if uses_steps(name))
FULL = {"train_steps": 6000, "num_images": 256, "image_size": 16, "preset": "tiny", "schedule": "linear",
        "prediction": "epsilon", "steps": "5,10,20,50", "spacings": "trailing,karras,logsnr", "samplers": FEW_STEP}
QUICK = {**FULL, "train_steps": 20, "num_images": 8, "steps": "5,10", "spacings": "trailing,karras"}
#: Issue 17's target: at 10 steps, at least this share of DDPM-1000's score.
TARGET_STEPS, TARGET_SHARE = 10, 0.9


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="Tiny settings that only check the pipeline; writes *_quick files")
    p.add_argument("--checkpoint", type=Path, help="Reuse this checkpoint or run folder instead of training")
    p.add_argument("--train-only", action="store_true", help="Train the checkpoint and stop (sample later with --checkpoint)")
    p.add_argument("--train-steps", type=int, help=f"Training steps (full: {FULL['train_steps']})")
    p.add_argument("--num-images", type=int, help=f"Samples per row, same noises for all (full: {FULL['num_images']})")
    p.add_argument("--image-size", type=int, help=f"Demo image size (full: {FULL['image_size']})")
    p.add_argument("--preset", help=f"Model preset (full: {FULL['preset']})")
    p.add_argument("--schedule", help=f"Noise schedule, linear or cosine (full: {FULL['schedule']})")
    p.add_argument("--prediction", help=f"epsilon or v (full: {FULL['prediction']})")
    p.add_argument("--precision", default="off", help="Training mixed precision (default off: float32 on every machine)")
    p.add_argument("--batch-size", type=int, default=128, help="Sampling batch size")
    p.add_argument("--samplers", help=f"Few-step samplers, comma-separated (full: {FULL['samplers']})")
    p.add_argument("--spacings", help=f"Timestep spacings, comma-separated (full: {FULL['spacings']})")
    p.add_argument("--steps", help=f"Step counts, comma-separated (full: {FULL['steps']})")
    p.add_argument("--no-reference", action="store_true", help="Skip the DDPM-1000 row (unless --resume has it)")
    p.add_argument("--resume", action="store_true", help="Keep the rows the JSON already has for this checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--autoguidance", type=float, default=0.0,
                   help="Autoguidance weight for every row (default 0: the model alone; needs a checkpoint that keeps a guide)")
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
#: default to their old behaviour (config_files.LEGACY_DEFAULTS) or be pinned here (tests/test_benchmark_recipes.py checks it
#: still builds a valid config that trains exactly its steps).
RECIPE: dict[str, dict[str, Any]] = {
    "data": {"source": "demo", "image_size": 16, "channels": 3, "hflip": True, "conditional": False},
    "model": {"preset": "tiny", "base_channels": 32, "channel_mults": [1, 2], "num_res_blocks": 1,
              "attention_resolutions": [8], "dropout": 0.1},
    "diffusion": {"timesteps": 1000, "schedule": "linear", "prediction": "epsilon", "loss": "mse", "min_snr_gamma": 0.0,
                  "noise_levels": "uniform", "loss_weighting": "uniform"},
    "optim": {"batch_size": 32, "grad_accum": 1, "lr": 1e-3, "warmup_steps": 200, "lr_schedule": "cosine",
              "weight_decay": 0.0, "grad_clip": 1.0, "ema": "fixed", "ema_decay": 0.999, "mixed_precision": "off",
              "device": "cpu", "total_steps": 6000, "train_minutes": 0, "adam_beta1": 0.9, "adam_beta2": 0.999,
              "seed": 0},
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


def run_config(args: argparse.Namespace) -> Any:
    """The checked RunConfig the benchmark's checkpoint is trained with (:func:`recipe` over today's defaults)."""
    from ddpm_studio.services import config as config_mod

    return config_mod.check(config_mod.from_dict(recipe(args)))


def train(args: argparse.Namespace) -> Path:
    """Train the benchmark's checkpoint on the demo shapes (:data:`RECIPE`); returns its path."""
    from ddpm_studio.cli_progress import EventPrinter
    from ddpm_studio.services.control import drive
    from ddpm_studio.services.runs import RunFolder
    from ddpm_studio.services.training import TrainingSession

    cfg = run_config(args)
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


def planned_rows(args: argparse.Namespace) -> list[tuple[str, str, int]]:
    """(sampler, spacing, steps) for every row: DDPM-1000 first, then each sampler × spacing × step count."""
    rows = [] if args.no_reference else [("ddpm", "-", 1000)]
    for name in args.samplers.split(","):
        for spacing in args.spacings.split(","):
            rows += [(name, spacing, int(n)) for n in args.steps.split(",")]
    return rows


def measure_row(loaded: Any, args: argparse.Namespace, name: str, spacing: str, steps: int) -> dict[str, Any]:
    """Score one sampler setting on the benchmark's noises (seed ``args.seed``)."""
    from ddpm_studio.services.control import drive
    from ddpm_studio.services.evaluation import EvaluationSession, evaluation_sample_config
    from ddpm_studio.services.events import EvaluationReady
    from ddpm_studio.services.sampling import sampler_spec

    sample = evaluation_sample_config(sampler=name, steps=steps, spacing="trailing" if spacing == "-" else spacing,
                                      num_images=args.num_images, sample_batch_size=args.batch_size,
                                      sample_seed=args.seed, autoguidance=args.autoguidance)
    events: list[Any] = []
    drive(EvaluationSession(loaded, sample, None, fid="off", demo=True).steps(), events.append)
    r = next(e.report for e in events if isinstance(e, EvaluationReady))
    score = r["demo"]["score"]
    return {"sampler": name, "spacing": spacing, "steps": steps,
            "model_calls": sampler_spec(sample).steps_for(loaded.schedule.num_timesteps), "score": score,
            "score_se": math.sqrt(max(score * (1 - score), 1e-12) / r["num_images"]),
            "seconds": r["sampling_seconds"], "reasons": r["demo"]["reasons"], "shapes": r["demo"]["shapes"]}


def measure(args: argparse.Namespace, checkpoint: Path) -> dict[str, Any]:
    import torch

    from ddpm_studio.core.device import choose_device
    from ddpm_studio.services.sampling import load_for_sampling

    loaded = load_for_sampling(checkpoint, choose_device("cpu", "off"), guided=args.autoguidance > 0)
    if args.autoguidance > 0 and loaded.guide is None:
        raise SystemExit(f"{checkpoint} keeps no earlier weights to guide with: run with --autoguidance 0")
    result: dict[str, Any] = {
        "checkpoint": str(checkpoint), "step": loaded.step, "num_images": args.num_images, "seed": args.seed,
        "autoguidance": args.autoguidance,
        "image_size": loaded.cfg.data.image_size, "preset": loaded.cfg.model.preset,
        "timesteps": loaded.schedule.num_timesteps, "schedule": loaded.cfg.diffusion.schedule,
        "prediction": loaded.cfg.diffusion.prediction, "recipe": None if args.checkpoint else recipe(args),
        "quick": args.quick, "rows": [],
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None},
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    done: dict[tuple[str, str, int], dict[str, Any]] = {}
    if args.resume and args.json.exists():
        old = json.loads(args.json.read_text(encoding="utf-8"))
        same = (old.get("checkpoint"), old.get("num_images"), old.get("seed"), old.get("autoguidance", 0.0))
        if same == (str(checkpoint), args.num_images, args.seed, args.autoguidance):
            done = {(r["sampler"], r["spacing"], r["steps"]): r for r in old["rows"]}
    for key in dict.fromkeys([*([k for k in done if k[0] == "ddpm"]), *planned_rows(args)]):
        row = done.get(key) or measure_row(loaded, args, *key)
        result["rows"].append(row)
        print(f"{row['sampler']:12s} {row['spacing']:9s} {row['steps']:5d} steps: score {row['score']:.3f}  "
              f"{row['seconds']:8.1f} s", flush=True)
        write(args.json, result)
    return result


def write(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)


def markdown(result: dict[str, Any]) -> str:
    from ddpm_studio.services.config import EVALUATION_SAMPLE_DEFAULTS, SampleConfig

    rows = result["rows"]
    ref = next((r for r in rows if r["sampler"] == "ddpm"), None)
    step_counts = sorted({r["steps"] for r in rows if r["sampler"] != "ddpm"})
    grid: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for r in rows:
        if r["sampler"] != "ddpm":
            grid.setdefault((r["sampler"], r["spacing"]), {})[r["steps"]] = r
    machine = result["machine"]
    lines = [
        "# Sample quality versus sampling steps (demo shapes)",
        "",
        f"Checkpoint: `{Path(result['checkpoint']).name}` after {result['step']} training steps "
        + ("of the pinned recipe in `benchmarks/quality_vs_steps.py` (`RECIPE`)" if result.get("recipe")
           else "(given with `--checkpoint`)")
        + f": preset `{result['preset']}`, "
        f"{result['image_size']}x{result['image_size']} demo shapes, {result.get('prediction', 'epsilon')}-prediction, "
        f"T = {result['timesteps']} ({result['schedule']} schedule). Every row starts from the same "
        f"{result['num_images']} noises (seed {result['seed']})"
        + (f", with autoguidance at w = {result['autoguidance']:g}" if result.get("autoguidance") else "")
        + f". Measured {result['date']} on {machine['processor']}, "
        f"{machine['torch_threads']} torch threads, PyTorch {machine['torch']}; the times were taken on a loaded "
        "machine (shared CPUs) and compare rows only roughly; the scores do not depend on load.",
        "",
        "Score = fraction of samples the demo detector reads as one clean shape of a valid colour on a clean white "
        "background (1.0 on the real demo images); ± is one binomial standard error. Small-sample score on a toy "
        "dataset: compare the rows with each other, not with FIDs from papers.",
        "",
    ]
    if ref:
        lines += [f"**Reference: DDPM, 1000 steps: {ref['score']:.3f} ± {ref['score_se']:.3f}** "
                  f"({ref['seconds']:.0f} s for {result['num_images']} images).", ""]
    header = " | ".join(f"{n} steps" for n in step_counts)
    share = f" | {TARGET_STEPS} steps vs DDPM" if ref and TARGET_STEPS in step_counts else ""
    lines += [f"| Sampler | Spacing | {header}{share} |", "|---|---|" + "---:|" * (len(step_counts) + bool(share))]
    for (name, spacing), by_steps in grid.items():
        cells = [f"{by_steps[n]['score']:.3f} ± {by_steps[n]['score_se']:.3f}" if n in by_steps else "–"
                 for n in step_counts]
        if share:
            at = by_steps.get(TARGET_STEPS)
            cells.append(f"{at['score'] / ref['score']:.0%}" if at and ref["score"] > 0 else "–")
        lines.append(f"| {name} | {spacing} | " + " | ".join(cells) + " |")
    if ref and ref["score"] > 0:
        lines.append("")
        for n in step_counts:
            at_n = [r for r in rows if r["sampler"] != "ddpm" and r["steps"] == n]
            best = max(at_n, key=lambda r: r["score"])
            lines.append(f"- Best at {n} steps: {best['sampler']} ({best['spacing']}), {best['score']:.3f} = "
                         f"{best['score'] / ref['score']:.0%} of DDPM-1000, {best['seconds']:.1f} s vs "
                         f"{ref['seconds']:.0f} s.")
        at_target = [r for r in rows if r["sampler"] != "ddpm" and r["steps"] == TARGET_STEPS]
        if at_target:
            best = max(at_target, key=lambda r: r["score"])
            met = best["score"] >= TARGET_SHARE * ref["score"]
            lines += ["", f"**Target** (issue 17: at {TARGET_STEPS} steps, ≥ {TARGET_SHARE:.0%} of DDPM-1000's score, "
                          f"i.e. ≥ {TARGET_SHARE * ref['score']:.3f}): {'met' if met else 'NOT met'} "
                          f"(best {best['score']:.3f}, {best['sampler']} with {best['spacing']} spacing)."]
    sample = SampleConfig()
    lines += ["", f"App defaults: Generate uses `{sample.sampler}` with {sample.steps} steps and `{sample.spacing}` "
                  f"spacing; Evaluate `{EVALUATION_SAMPLE_DEFAULTS.get('sampler', sample.sampler)}` with "
                  f"{EVALUATION_SAMPLE_DEFAULTS.get('steps', sample.steps)} steps."]
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
    write(args.json, result)
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    text = markdown(result)
    args.markdown.write_text(text, encoding="utf-8")
    print(text)
    print(f"Wrote {args.json} and {args.markdown} ({result['total_seconds']:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
