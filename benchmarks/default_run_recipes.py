"""Recipes at the default run's own setting: a CPU U-Net at 32x32 on the demo shapes, at equal images or CPU time.

Why: `quality_per_compute.py --quick` compares recipes at 16x16, where a run is cheap. What a user gets from
`ddpm-studio train` is the 32x32 laptop run of about ten minutes; this script trains that run with each recipe
for the same number of images (``--images``, default 28,800: ten minutes on a 2-core float32 CPU), saves a
checkpoint at a third, two thirds and the end, and scores each with `ddpm-studio evaluate` (the demo detector, the
same pinned sampling, :data:`PINNED_SAMPLING`, and seed). It drives the CLI exactly as a user would (training is
seeded, so the scores do not depend on the machine or its load; the seconds do). Every run starts from the laptop
preset (``--preset laptop``, the default when these were first run; a recipe's own ``--preset`` comes later and
wins); the ``mults-1-2-2`` recipes are the ``small`` preset that became the default after them, trained for more
images so that they cost the same CPU time (:data:`EQUAL_COMPUTE`). The former defaults' run to 88,896 images in
docs/quality_per_compute.md ("Half the images?") is ``--recipes old-defaults --images 88896 --eval-images 256``.

    python benchmarks/default_run_recipes.py [--out DIR] [--images 28800] [--eval-images 128] [--threads 1]
        [--recipes NAME,NAME]

A run whose checkpoints are already in DIR/runs/NAME is not trained again, and a checkpoint whose evaluation.json
is already in DIR/ev is not scored again, so an interrupted sweep continues. Two sweeps can run side by side with
``--threads 1`` each. Prints a table; writes DIR/default_run_recipes.json (and, with ``--json``, a copy there).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

#: name → (batch size, extra `ddpm-studio train` flags). The flags say where each differs from the CLI defaults
#: of the day it ran; "uniform" pins the loss weighting that was the default before Min-SNR (and ``train`` pins the fixed
#: EMA, the default before the power EMA, which a recipe's own --ema overrides).
RECIPES: dict[str, tuple[int, list[str]]] = {
    "old-defaults": (32, ["--loss-weighting", "uniform"]),
    "b16-dropout0": (16, ["--dropout", "0", "--loss-weighting", "uniform"]),
    "b8-dropout0": (8, ["--dropout", "0", "--loss-weighting", "uniform"]),
    "b16-dropout0-lognormal": (16, ["--dropout", "0", "--noise-levels", "lognormal", "--loss-weighting", "uniform"]),
    "b16-dropout0-minsnr5": (16, ["--dropout", "0", "--loss-weighting", "min-snr"]),
    "b16-dropout0-minsnr2": (16, ["--dropout", "0", "--loss-weighting", "min-snr", "--min-snr-gamma", "2"]),
    "b32-dropout0-minsnr5": (32, ["--dropout", "0", "--loss-weighting", "min-snr"]),
    "new-defaults": (32, []),  # Min-SNR, the defaults after it (the laptop U-Net)
    "cosine-lr": (32, ["--lr-schedule", "cosine"]),
    "mults-1-2-2": (32, ["--channel-mults", "1,2,2"]),
    "mults-1-2-2-cosine-lr": (32, ["--channel-mults", "1,2,2", "--lr-schedule", "cosine"]),
    # The small preset at its ten quiet minutes' images (run with --images 29312); dropout pinned both ways, since the
    # preset's own dropout became 0 after these runs.
    "small-b16": (16, ["--preset", "small", "--dropout", "0.1"]),
    "small-lr4e-3": (32, ["--preset", "small", "--dropout", "0.1", "--lr", "4e-3"]),
    "small-dropout0": (32, ["--preset", "small", "--dropout", "0"]),
    "small-b16-dropout0": (16, ["--preset", "small", "--dropout", "0"]),
    "small-b16-dropout0-beta2-0.99": (16, ["--preset", "small", "--dropout", "0", "--adam-beta2", "0.99"]),
    "small-b16-dropout0-power-ema": (16, ["--preset", "small", "--dropout", "0", "--ema", "power"]),
}

#: Recipes whose network is faster than the laptop preset's train for more images, so that every row costs about the
#: same CPU time: the ratio of bare training-step throughputs measured side by side (benchmarks/engine_figures.py
#: style, 2 threads, float32): channel mults 1,2,2 ran 66.9 img/s where the laptop preset ran 47.9.
EQUAL_COMPUTE: dict[str, float] = {"mults-1-2-2": 66.9 / 47.9, "mults-1-2-2-cosine-lr": 66.9 / 47.9}


#: The sampling every score here was made with, pinned as the defaults move: the model alone (no autoguidance, which
#: came later), `dpm++2m-sde` 20 steps with log-SNR spacing (the default spacing until 2026-12-02), in float32.
PINNED_SAMPLING = ["--autoguidance", "0", "--sampler", "dpm++2m-sde", "--steps", "20", "--spacing", "logsnr",
                   "--precision", "off"]


def train(out: Path, name: str, images: int, batch: int, flags: list[str], env: dict[str, str]) -> None:
    steps = images // batch
    cmd = ["ddpm-studio", "train", "--runs-dir", str(out / "runs"), "--name", name, "--source", "demo", "--preset", "laptop",
           "--ema", "fixed", "--train-minutes", "0", "--total-steps", str(steps), "--batch-size", str(batch),
           "--checkpoint-every", str(steps // 3), "--keep-last", "10", "--preview-every", "1000000",
           "--log-every", "50", *flags]
    with open(out / f"{name}.train.log", "w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, env=env)


def evaluation(out: Path, name: str, checkpoint: Path, eval_images: int, env: dict[str, str]) -> dict[str, Any]:
    """The checkpoint's detector report: one made earlier (whatever its sample count, which it records), or a new one."""
    folder = out / "ev" / f"{name}-{checkpoint.stem}"
    found = sorted(folder.glob("*/evaluation.json"))
    if not found:
        subprocess.run(["ddpm-studio", "evaluate", str(checkpoint), "--num-images", str(eval_images), "--fid", "off",
                        "--no-memorization", *PINNED_SAMPLING, "--out", str(folder)], check=True, capture_output=True,
                       env=env)
        found = sorted(folder.glob("*/evaluation.json"))
    return json.loads(found[-1].read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("default_run_recipes"))
    ap.add_argument("--images", type=int, default=28_800)
    ap.add_argument("--eval-images", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--recipes", default=",".join(RECIPES))
    ap.add_argument("--json", type=Path, help="Also write the results here")
    args = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.recipes.split(","):
        batch, flags = RECIPES[name]
        images = args.images * EQUAL_COMPUTE.get(name, 1.0)
        images = int(images // (3 * batch)) * 3 * batch
        ckpt_dir = args.out / "runs" / name / "checkpoints"
        if not sorted(ckpt_dir.glob("step_*.pt")):
            train(args.out, name, images, batch, flags, env)
        for ckpt in sorted(ckpt_dir.glob("step_*.pt")):
            step = int(ckpt.stem.split("_")[1])
            report = evaluation(args.out, name, ckpt, args.eval_images, env)
            score = report["demo"]["score"]
            se = (score * (1 - score) / report["num_images"]) ** 0.5
            rows.append({"recipe": name, "batch": batch, "flags": flags, "step": step, "images": step * batch,
                         "score": score, "stderr": se, "eval_images": report["num_images"],
                         "sampler": f"{report['sampler']} {report['steps']} {report['spacing']}",
                         "reasons": report["demo"]["reasons"]})
            print(f"{name:28s} {step * batch:7,d} images  score {score:.3f} ± {se:.3f}  (n={report['num_images']})",
                  flush=True)
    result = {"images": args.images, "eval_images": args.eval_images, "threads": args.threads, "rows": rows,
              "python": sys.version.split()[0]}
    text = json.dumps(result, indent=1)
    (args.out / "default_run_recipes.json").write_text(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
