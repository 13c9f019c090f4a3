"""Loop overhead: the real training run's images/s against the bare engine step's, interleaved in one process.

Why: issue 17 measured ~75 img/s for ``ddpm-studio train`` where the bare step of benchmarks/engine_figures.py
did 86.6. This script runs both on the same preset, batch and precision, in the same process and under the same
load, alternating chunks of ``--chunk`` steps:

- **engine**: ``engine_figures.engine_step`` (random data already in memory; forward, loss, backward, clip,
  AdamW, EMA: nothing else);
- **loop**: a :class:`TrainingSession` as ``ddpm-studio train`` runs it (demo data, the run's own training step,
  the metrics log, run.json, previews with their validation loss, checkpoints, the CLI's progress printer on a
  terminal), with the default schedule (preview every 500 steps, checkpoint every 2000 or 10 minutes) and the run's
  final checkpoint. Everything from RunStarted to RunFinished counts (the step-0 preview and the final checkpoint
  included), so a run of a few hundred steps is charged more previews and checkpoints per step than a long one.

Prints a table; writes benchmarks/results/loop_overhead.json. On a shared machine, run it alone and read the
figures as "loaded machine" ones: the ratio is the figure of merit (both sides see the same load).

    python benchmarks/loop_overhead.py [--steps 600] [--chunk 25] [--threads 2] [--precision auto]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

RESULTS = Path(__file__).parent / "results"


class _Terminal(io.StringIO):
    """The CLI's progress printer redraws its bar as on a terminal (every 0.2 s)."""

    def isatty(self) -> bool:
        return True


def run(steps: int, chunk: int, precision: str, preset: str, batch: int, runs_dir: Path) -> dict[str, Any]:
    import torch
    from engine_figures import engine_step

    from ddpm_studio.cli_progress import EventPrinter
    from ddpm_studio.services import config as config_mod
    from ddpm_studio.services import events as ev
    from ddpm_studio.services.training import TrainingSession

    cfg = config_mod.check(config_mod.from_dict({
        "model": {"preset": preset}, "optim": {"batch_size": batch, "total_steps": steps, "device": "cpu",
                                               "mixed_precision": precision},
    }))
    engine, _ = engine_step(preset, batch, precision, image_size=cfg.data.image_size)
    session = TrainingSession(cfg, runs_dir=runs_dir, run_name="loop-overhead")
    printer = EventPrinter(stream=_Terminal())
    events = session.steps()
    for event in events:  # set-up (loading images, building the model) is not the loop: not timed
        printer(event)
        if isinstance(event, ev.RunStarted):
            break
    for _ in range(2):
        engine()
    engine_s = loop_s = 0.0
    engine_steps = loop_steps = 0
    kinds: dict[str, int] = {}
    finished = False
    while not finished:
        t0 = time.perf_counter()
        for _ in range(chunk):
            engine()
        engine_s += time.perf_counter() - t0
        engine_steps += chunk
        t0 = time.perf_counter()
        seen = 0
        for event in events:
            printer(event)
            kinds[type(event).__name__] = kinds.get(type(event).__name__, 0) + 1
            if isinstance(event, ev.TrainProgress):
                seen += 1
                loop_steps += 1
                if seen == chunk:
                    break
            if isinstance(event, ev.RunFinished):
                finished = True
                break
        else:
            finished = True
        loop_s += time.perf_counter() - t0
    events.close()
    engine_ips = engine_steps * batch / engine_s
    loop_ips = loop_steps * batch / loop_s
    return {
        "preset": preset, "batch": batch, "precision": session.device.precision_name, "steps": loop_steps,
        "chunk": chunk, "engine_images_per_sec": round(engine_ips, 2), "loop_images_per_sec": round(loop_ips, 2),
        "loop_vs_engine": round(loop_ips / engine_ips, 4), "engine_seconds": round(engine_s, 2),
        "loop_seconds": round(loop_s, 2), "loop_events": kinds, "torch_threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=600, help="training steps of the real run (and of the engine)")
    parser.add_argument("--chunk", type=int, default=25, help="steps per alternation")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--preset", default="laptop")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--label", default="", help="a note stored with the result (e.g. 'before', 'loaded machine')")
    parser.add_argument("--out", type=Path, default=RESULTS / "loop_overhead.json")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args.steps, args.chunk, args.precision, args.preset, args.batch, Path(tmp))
    result.update(machine=platform.processor() or platform.machine(), cpus=os.cpu_count(), torch=torch.__version__,
                  load_average_at_start=load, label=args.label, when=time.strftime("%Y-%m-%d %H:%M"))
    print(f"{'':8s} {'img/s':>8s}  ({result['preset']}, batch {result['batch']}, {result['precision']}, "
          f"{result['steps']} steps, chunks of {result['chunk']}, {result['torch_threads']} threads)")
    print(f"{'engine':8s} {result['engine_images_per_sec']:8.2f}")
    print(f"{'loop':8s} {result['loop_images_per_sec']:8.2f}  = {100 * result['loop_vs_engine']:.1f}% of the engine")
    print(f"loop events: {result['loop_events']}; load average at start {load}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
