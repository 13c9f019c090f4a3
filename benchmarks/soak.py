"""Soak: a long CPU training run in the real window, with a preview every minute; does memory stay flat?

Usage (from the repository root; a benchmark, not a test: CI does not run it)::

    QT_QPA_PLATFORM=offscreen OMP_NUM_THREADS=1 .venv/bin/python benchmarks/soak.py --minutes 30
    .venv/bin/python benchmarks/soak.py --minutes 30 --cli     # the CLI engine alone, in a child process
    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python benchmarks/soak.py --minutes 30 --cli --preset laptop \
        --image-size 32 --batch-size 32 --source folder --out benchmarks/results/soak_cli.json

Drives the app as ``benchmarks/gui_responsiveness.py`` does (offscreen window, Start on the built-in demo
shapes) with previews every ``--preview-minutes`` and checkpoints every ``--checkpoint-minutes``. Every
``--sample-seconds`` it records the resident memory (RSS, from /proc or psutil) of the process that
trains, the step, the loss plot's points and the buffer bytes behind them, and the preview history
(entries, how many still hold their full trajectory, bytes held). Reports:

- the RSS slope in MB/hour by least squares over the samples after ``--warmup-fraction`` of the run
  (set-up, the first previews and allocator warm-up are excluded), and the RSS range;
- the loss plot's growth per hour (bytes) and whether the preview history's full-trajectory count stops
  at its cap (``trajectory_view.MAX_FULL_HISTORY``);
- steps per second.

``--source folder`` writes the demo shapes to a folder first and trains from it with the decoded cache, so
the images come from the memory-mapped cache file (in the CLI mode the child's RSS is also split into
anonymous memory and file-backed pages: mapped cache pages are clean copies of the file that the kernel
can drop, so a leak shows in the anonymous part).

Writes ``benchmarks/results/soak.json`` (or ``--out``), samples included.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def proc_status_mb(pid: int | str = "self", keys: tuple[str, ...] = ("VmRSS", "RssAnon", "RssFile")) -> dict[str, float]:
    """Linux: these memory fields of /proc/<pid>/status in MB (empty elsewhere, or when the process is gone)."""
    out: dict[str, float] = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in keys:
                    out[key] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return out


def rss_split_mb(pid: int) -> dict[str, float]:
    """The anonymous and file-backed parts of ``pid``'s RSS in MB (Linux; empty elsewhere)."""
    status = proc_status_mb(pid, ("RssAnon", "RssFile"))
    return {name: round(status[key], 1) for key, name in (("RssAnon", "rss_anon_mb"), ("RssFile", "rss_file_mb"))
            if key in status}


def rss_mb(pid: int | None = None) -> float:
    """Resident set size of ``pid`` (this process by default) in MB."""
    status = proc_status_mb(pid or "self", ("VmRSS",))
    if status:
        return status["VmRSS"]
    import psutil  # optional: macOS / Windows

    return psutil.Process(pid or os.getpid()).memory_info().rss / 2**20


def slope_per_hour(samples: list[dict[str, Any]], key: str, warmup_fraction: float) -> float | None:
    """Least-squares slope of ``key`` against time, per hour, over the samples after the warm-up."""
    if len(samples) < 3:
        return None
    t_end = samples[-1]["t"]
    kept = [s for s in samples if s["t"] >= warmup_fraction * t_end]
    if len(kept) < 3:
        kept = samples
    n = len(kept)
    mt = sum(s["t"] for s in kept) / n
    my = sum(s[key] for s in kept) / n
    var = sum((s["t"] - mt) ** 2 for s in kept)
    if var == 0:
        return None
    cov = sum((s["t"] - mt) * (s[key] - my) for s in kept)
    return cov / var * 3600


def soak_config(args: argparse.Namespace, data_path: str = "") -> dict[str, dict[str, Any]]:
    data = ({"source": "folder", "data_path": data_path, "cache": True} if args.source == "folder"
            else {"source": "demo", "cache": False})
    return {
        "data": {**data, "image_size": args.image_size},
        "model": {"preset": args.preset},
        "diffusion": {"timesteps": 1000},
        "optim": {"batch_size": args.batch_size, "total_steps": 100_000_000, "device": "cpu", "mixed_precision": "off"},
        "schedule": {"preview_every": 0, "preview_minutes": args.preview_minutes, "preview_steps": 20, "preview_images": 8,
                     "checkpoint_every": 0, "checkpoint_minutes": args.checkpoint_minutes, "keep_last": 3,
                     "log_every": 10},
    }


def soak_gui(args: argparse.Namespace, runs_dir: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from PySide6.QtWidgets import QApplication

    from ddpm_studio.gui.app import create_app
    from ddpm_studio.gui.presenters.run_state import RunState
    from ddpm_studio.gui.views.trajectory_viewer import MAX_FULL_HISTORY
    from ddpm_studio.services import config as config_mod

    handle = create_app(exec_app=False, settings_path=os.environ["DDPM_STUDIO_SETTINGS"], offer_interrupted=False)
    studio, app, w = handle.studio, handle.app, handle.window

    def pump(seconds: float, until: Any = None) -> bool:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            app.processEvents()
            if until is not None and until():
                return True
            time.sleep(0.002)
        return False

    pump(120, lambda: studio.torch_ready and studio.settings.ok)
    studio.settings.set_config(config_mod.from_dict(soak_config(args)))
    pump(60, lambda: studio.settings.ok)
    studio.training.start()
    pump(300, lambda: studio.training.state is RunState.RUNNING and studio.training.step >= 1)

    def plot_bytes() -> int:
        """Bytes allocated by the loss plot's growable buffers (capacity, not just the points in use)."""
        plot = w.loss_plot
        total = 0
        for buf in (plot.raw, plot.smooth, plot.lr, plot.val, *plot.quartiles):
            for name in ("_x", "_y"):
                total += getattr(getattr(buf, name, None), "nbytes", 0)
        return total

    def history_bytes() -> int:
        total = 0
        for e in w.trajectory.history:
            for arr in (e.x_t, e.x0, e.final):
                total += arr.nbytes if arr is not None else 0
        return total

    samples: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    end = t0 + args.minutes * 60
    next_sample = t0
    while time.perf_counter() < end:
        pump(max(0.0, next_sample - time.perf_counter()))
        next_sample += args.sample_seconds
        hist = w.trajectory.history
        samples.append({
            "t": round(time.perf_counter() - t0, 2), "rss_mb": round(rss_mb(), 1), "step": studio.training.step,
            "plot_points": w.loss_plot.points, "plot_bytes": plot_bytes(), "previews": len(hist),
            "previews_full": sum(1 for e in hist if e.x_t is not None), "history_bytes": history_bytes(),
        })
        if args.verbose:
            print(samples[-1], flush=True)
    studio.training.stop()
    pump(300, lambda: not studio.training.is_running())
    extra = {"max_full_history": MAX_FULL_HISTORY, "run_dir": studio.training.run.run_dir if studio.training.run else None}
    w.close()
    QApplication.processEvents()
    # What the app's aboutToQuit does (create_app(exec_app=False) never quits): wait for the background jobs.
    # Without it a job still inside torch (reading the new checkpoint for the Generate panel) when the
    # interpreter finalizes is killed mid-C++ call: "terminate called without an active exception".
    studio.shutdown()
    return samples, extra


def soak_cli(args: argparse.Namespace, runs_dir: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The engine alone: ``python -m ddpm_studio train`` in a child; its RSS from /proc, its step from metrics.jsonl."""
    from ddpm_studio.services import config as config_mod
    from ddpm_studio.services import config_files
    from ddpm_studio.services.metrics import read_metrics

    data_path = ""
    if args.source == "folder":
        from ddpm_studio.core.demo_data import write_demo_folder

        data_path = str(Path(runs_dir).parent / "shapes")
        write_demo_folder(data_path, n=4096, image_size=args.image_size, seed=0)
    cfg_path = Path(runs_dir) / "soak.toml"
    cfg_path.write_text(config_files.to_toml(config_mod.from_dict(soak_config(args, data_path))), encoding="utf-8")
    env = dict(os.environ, DDPM_STUDIO_RUNS_DIR=runs_dir)
    proc = subprocess.Popen([sys.executable, "-m", "ddpm_studio", "train", "--config", str(cfg_path), "--name", "soak"],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = Path(runs_dir) / "soak" / "metrics.jsonl"
    samples: list[dict[str, Any]] = []
    try:
        while not metrics.exists() and proc.poll() is None:
            time.sleep(0.5)
        t0 = time.perf_counter()
        end = t0 + args.minutes * 60
        while time.perf_counter() < end and proc.poll() is None:
            records = read_metrics(metrics)
            samples.append({"t": round(time.perf_counter() - t0, 2), "rss_mb": round(rss_mb(proc.pid), 1),
                            **rss_split_mb(proc.pid), "step": max((r.get("step", 0) for r in records), default=0)})
            if args.verbose:
                print(samples[-1], flush=True)
            time.sleep(args.sample_seconds)
    finally:
        proc.send_signal(2)  # Ctrl-C: checkpoint and exit
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
    previews = len(list((Path(runs_dir) / "soak" / "previews").glob("*.png")))
    checkpoints = len(list((Path(runs_dir) / "soak" / "checkpoints").glob("step_*.pt")))
    return samples, {"previews_written": previews, "checkpoints_kept": checkpoints, "exit_code": proc.returncode,
                     "source": args.source}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--preview-minutes", type=float, default=1.0)
    parser.add_argument("--checkpoint-minutes", type=float, default=5.0)
    parser.add_argument("--sample-seconds", type=float, default=5.0)
    parser.add_argument("--warmup-fraction", type=float, default=0.2,
                        help="Leave out this share of the run (set-up, first previews) from the slope")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--cli", action="store_true", help="Soak the CLI engine in a child process instead of the window")
    parser.add_argument("--source", choices=("demo", "folder"), default="demo",
                        help="folder: train from a folder of the demo shapes through the memory-mapped cache (CLI)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "soak.json")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ddpm-soak-") as tmp:
        os.environ.setdefault("DDPM_STUDIO_RUNS_DIR", str(Path(tmp) / "runs"))
        os.environ.setdefault("DDPM_STUDIO_SETTINGS", str(Path(tmp) / "settings.ini"))
        os.environ.setdefault("XDG_CACHE_HOME", str(Path(tmp) / "cache"))
        runs_dir = os.environ["DDPM_STUDIO_RUNS_DIR"]
        Path(runs_dir).mkdir(parents=True, exist_ok=True)
        samples, extra = (soak_cli if args.cli else soak_gui)(args, runs_dir)

    if not samples:
        print("no samples were taken", file=sys.stderr)
        return 1
    elapsed_h = max(samples[-1]["t"], 1e-9) / 3600
    rss = [s["rss_mb"] for s in samples]
    result: dict[str, Any] = {
        "mode": "cli" if args.cli else "gui", "minutes": args.minutes, "preview_minutes": args.preview_minutes,
        "checkpoint_minutes": args.checkpoint_minutes, "preset": args.preset, "image_size": args.image_size,
        "batch_size": args.batch_size, "machine": platform.platform(), "python": platform.python_version(),
        "torch_threads": os.environ.get("OMP_NUM_THREADS"), "nice": os.nice(0) if hasattr(os, "nice") else None,
        "load_average_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "rss_slope_mb_per_hour": _round(slope_per_hour(samples, "rss_mb", args.warmup_fraction)),
        "rss_first_mb": rss[0], "rss_last_mb": rss[-1], "rss_min_mb": min(rss), "rss_max_mb": max(rss),
        **({"rss_anon_slope_mb_per_hour": _round(slope_per_hour(samples, "rss_anon_mb", args.warmup_fraction)),
            "rss_anon_first_mb": samples[0]["rss_anon_mb"], "rss_anon_last_mb": samples[-1]["rss_anon_mb"],
            "rss_file_last_mb": samples[-1].get("rss_file_mb")} if "rss_anon_mb" in samples[0] else {}),
        "steps": samples[-1]["step"] - samples[0]["step"],
        "steps_per_s": round((samples[-1]["step"] - samples[0]["step"]) / (elapsed_h * 3600), 2),
        **extra,
    }
    if not args.cli:
        result.update(
            plot_points=samples[-1]["plot_points"], plot_bytes=samples[-1]["plot_bytes"],
            plot_bytes_slope_per_hour=_round(slope_per_hour(samples, "plot_bytes", args.warmup_fraction)),
            previews=samples[-1]["previews"], previews_with_full_trajectory=samples[-1]["previews_full"],
            history_bytes=samples[-1]["history_bytes"],
            history_bytes_slope_per_hour=_round(slope_per_hour(samples, "history_bytes", args.warmup_fraction)),
        )
    result["samples"] = samples
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    for key, value in result.items():
        if key != "samples":
            print(f"{key:32s} {value}")
    print(f"wrote {args.out}")
    return 0


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


if __name__ == "__main__":
    sys.exit(main())
