"""Loop overhead: the real training run's images/s against the bare engine step's, interleaved in one process.

Why: issue 17 measured ~75 img/s for ``ddpm-studio train`` where the bare step of benchmarks/engine_figures.py
did 86.6. This script runs both on the same preset, batch and precision, in the same process and under the same
load, alternating chunks of ``--chunk`` steps:

- **engine**: ``engine_figures.engine_step`` (random data already in memory; forward, loss, backward, clip,
  AdamW, EMA: nothing else);
- **loop**: a :class:`TrainingSession` as ``ddpm-studio train`` runs it (demo data, the run's own training step,
  the metrics log, run.json, previews with their validation loss, checkpoints with theirs, the CLI's progress
  printer on a terminal, the CLI's signal handlers), with the default schedule (preview every 500 steps,
  checkpoint every 2000 steps or 10 minutes of training) and the run's final checkpoint. Everything from
  RunStarted to RunFinished counts (the step-0 preview and the final checkpoint included), so a run of a few
  hundred steps is charged more previews and checkpoints per step than a long one.

Both wall time and this process's CPU time are kept: on a shared machine, CPU time with ``--threads 1`` is the
steadier measure of the work each side does; wall time is what a user sees. The time of each loop event is
attributed to its kind, which gives a preview's and a checkpoint's cost, and from them the ratio projected for
a default run of ``--project-steps`` steps.

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
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))  # last: PYTHONPATH decides which ddpm_studio is measured (an A/B of two checkouts)
sys.path.insert(0, str(Path(__file__).resolve().parent))

RESULTS = Path(__file__).parent / "results"


class _Terminal(io.StringIO):
    """The CLI's progress printer redraws its bar as on a terminal (every 0.2 s)."""

    def isatty(self) -> bool:
        return True


class _Meter:
    """Wall and CPU seconds, added up by label."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.count: dict[str, int] = {}
        self._mark = (time.perf_counter(), time.process_time())

    def restart(self) -> None:
        self._mark = (time.perf_counter(), time.process_time())

    def charge(self, label: str, count: bool = True) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        self.wall[label] = self.wall.get(label, 0.0) + wall - self._mark[0]
        self.cpu[label] = self.cpu.get(label, 0.0) + cpu - self._mark[1]
        self.count[label] = self.count.get(label, 0) + count
        self._mark = (wall, cpu)


def _steps_only(times: dict[str, float]) -> float:
    """The loop's time in training steps and their bookkeeping (not previews or checkpoints)."""
    return times.get("TrainProgress", 0.0) + times.get("MetricsLogged", 0.0)


def run(steps: int, chunk: int, precision: str, preset: str, batch: int, runs_dir: Path,
        schedule: dict[str, Any]) -> dict[str, Any]:
    import torch
    from engine_figures import engine_step

    from ddpm_studio.cli_progress import EventPrinter
    from ddpm_studio.services import config as config_mod
    from ddpm_studio.services import events as ev
    from ddpm_studio.services.training import TrainingSession

    cfg = config_mod.check(config_mod.from_dict({
        "model": {"preset": preset}, "schedule": schedule,
        "optim": {"batch_size": batch, "total_steps": steps, "device": "cpu", "mixed_precision": precision},
    }))
    engine, _ = engine_step(preset, batch, precision, image_size=cfg.data.image_size)
    session = TrainingSession(cfg, runs_dir=runs_dir, run_name="loop-overhead")
    try:  # as the CLI's train (its handlers cost nothing until a signal comes)
        from ddpm_studio.cli.signals import request_signals

        request_signals(session.control)
    except ImportError:  # a version without them
        pass
    printer = EventPrinter(stream=_Terminal())
    events = session.steps()
    for event in events:  # set-up (loading images, building the model) is not the loop: not timed
        printer(event)
        if isinstance(event, ev.RunStarted):
            break
    for _ in range(2):
        engine()
    eng, loop = _Meter(), _Meter()
    engine_steps = loop_steps = 0
    pairs: dict[str, list[float]] = {"wall": [], "cpu": []}  # per chunk: engine time / loop steps-only time
    finished = False
    while not finished:
        before = {c: (getattr(eng, c).get("step", 0.0), _steps_only(getattr(loop, c))) for c in pairs}
        eng.restart()
        for _ in range(chunk):
            engine()
            eng.charge("step")
        engine_steps += chunk
        loop.restart()
        seen = 0
        for event in events:
            printer(event)
            if isinstance(event, ev.MetricsLogged) and "val_loss" in event.record:
                loop.charge("PreviewReady", count=False)  # a preview's validation record comes first, with its work
            else:
                loop.charge(type(event).__name__)
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
        if seen == chunk:  # a whole chunk on both sides: pair them
            for c in pairs:
                e0, l0 = before[c]
                pairs[c].append((getattr(eng, c)["step"] - e0) / max(_steps_only(getattr(loop, c)) - l0, 1e-9))
    events.close()

    def rate(meter: _Meter, clock: str, n: int, only: tuple[str, ...] | None = None) -> float:
        times = getattr(meter, clock)
        total = sum(v for k, v in times.items() if only is None or k in only)
        return n * batch / total

    # The side work: what a preview (with its validation loss) and a checkpoint (with its validation loss) cost.
    side = {kind: {"count": loop.count.get(kind, 0), "wall_s": round(loop.wall.get(kind, 0.0), 3),
                   "cpu_s": round(loop.cpu.get(kind, 0.0), 3)}
            for kind in ("PreviewReady", "CheckpointSaved", "MetricsLogged", "TrainProgress")}
    result: dict[str, Any] = {
        "preset": preset, "batch": batch, "precision": session.device.precision_name, "steps": loop_steps,
        "chunk": chunk, "torch_threads": torch.get_num_threads(), "schedule": schedule, "side_work": side,
    }
    for clock in ("wall", "cpu"):
        e, lp = rate(eng, clock, engine_steps), rate(loop, clock, loop_steps)
        steady = rate(loop, clock, loop_steps, only=("TrainProgress", "MetricsLogged"))
        result[clock] = {"engine_images_per_sec": round(e, 2), "loop_images_per_sec": round(lp, 2),
                         "loop_vs_engine": round(lp / e, 4), "loop_steps_only_vs_engine": round(steady / e, 4),
                         "paired_median_steps_only_vs_engine": round(statistics.median(pairs[clock]), 4),
                         "pairs": len(pairs[clock])}
    return result


def project(result: dict[str, Any], total_steps: int, preview_every: int, checkpoint_every: int) -> dict[str, float]:
    """The loop's share of the engine's speed over a whole default run: the engine's step time over the paired
    median ratio (the loop's steps), plus the measured cost of each preview and checkpoint at the default cadence."""
    out = {}
    side = result["side_work"]
    for clock in ("wall", "cpu"):
        key = f"{clock}_s"
        engine_step = result["batch"] / result[clock]["engine_images_per_sec"]
        preview = side["PreviewReady"][key] / max(side["PreviewReady"]["count"], 1)
        ckpt = side["CheckpointSaved"][key] / max(side["CheckpointSaved"]["count"], 1)
        previews = 1 + total_steps // preview_every if preview_every else 0  # the step-0 one too
        ckpts = max(1, total_steps // checkpoint_every) if checkpoint_every else 1
        loop_time = (total_steps * engine_step / result[clock]["paired_median_steps_only_vs_engine"]
                     + previews * preview + ckpts * ckpt)
        out[clock] = round(total_steps * engine_step / loop_time, 4)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=600, help="training steps of the real run (and of the engine)")
    parser.add_argument("--chunk", type=int, default=25, help="steps per alternation")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--preset", default="laptop")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--preview-every", type=int, default=None,
                        help="override the default preview cadence (e.g. to sample the cost of previews in a short run)")
    parser.add_argument("--checkpoint-every", type=int, default=None, help="override the default checkpoint cadence")
    parser.add_argument("--project-steps", type=int, default=20_000, help="length of the default run to project to")
    parser.add_argument("--label", default="", help="a note stored with the result (e.g. 'before', 'loaded machine')")
    parser.add_argument("--out", type=Path, default=RESULTS / "loop_overhead.json")
    args = parser.parse_args()
    import torch

    from ddpm_studio.services.config import ScheduleConfig

    torch.set_num_threads(args.threads)
    schedule = {}
    if args.preview_every is not None:
        schedule["preview_every"] = args.preview_every
    if args.checkpoint_every is not None:
        schedule["checkpoint_every"] = args.checkpoint_every
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args.steps, args.chunk, args.precision, args.preset, args.batch, Path(tmp), schedule)
    defaults = ScheduleConfig()
    result["projected_default_run"] = {"steps": args.project_steps, **project(
        result, args.project_steps, defaults.preview_every, defaults.checkpoint_every)}
    import ddpm_studio

    result.update(code=str(Path(ddpm_studio.__file__).resolve().parent.parent),
                  machine=platform.processor() or platform.machine(), cpus=os.cpu_count(), torch=torch.__version__,
                  load_average_at_start=load, load_average_at_end=os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
                  label=args.label, when=time.strftime("%Y-%m-%d %H:%M"))
    print(f"code: {result['code']}")
    print(f"{result['preset']}, batch {result['batch']}, {result['precision']}, {result['steps']} steps in chunks of "
          f"{result['chunk']}, {result['torch_threads']} threads; load average {load} at start")
    print(f"{'clock':6s} {'engine img/s':>13s} {'loop img/s':>11s} {'loop/engine':>12s} {'steps only':>11s} "
          f"{'paired median':>14s} {'projected':>10s}")
    for clock in ("wall", "cpu"):
        r = result[clock]
        print(f"{clock:6s} {r['engine_images_per_sec']:13.2f} {r['loop_images_per_sec']:11.2f} "
              f"{100 * r['loop_vs_engine']:11.1f}% {100 * r['loop_steps_only_vs_engine']:10.1f}% "
              f"{100 * r['paired_median_steps_only_vs_engine']:13.1f}% "
              f"{100 * result['projected_default_run'][clock]:9.1f}%")
    for kind, s in result["side_work"].items():
        if kind != "TrainProgress" and s["count"]:
            print(f"  {kind:16s} x{s['count']:<4d} {s['wall_s'] / s['count']:8.3f} s wall, "
                  f"{s['cpu_s'] / s['count']:8.3f} s CPU each")
    print("loop/engine: everything from RunStarted to RunFinished; steps only: without previews and checkpoints; "
          f"paired median: of {result['wall']['pairs']} chunk pairs; projected: a {args.project_steps}-step run with "
          "the default previews and checkpoints")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
