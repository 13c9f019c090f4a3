"""Datasets larger than RAM: peak memory of building the decoded cache and of training from it, this code
against another checkout (today's ``main``), plus batch-gather speed and an A/B of training speed.

Usage (from the repository root; a benchmark, not a test: CI does not run it)::

    git worktree add --detach /tmp/ddpm-old main            # the implementation to compare against
    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python benchmarks/big_dataset.py --old /tmp/ddpm-old

Phases, each in fresh child processes (one at a time), for this checkout ("new") and ``--old``:

1. **folder**: writes ``--images`` PNGs (default 100,000 demo shapes at 64x64, in ``--workers`` processes)
   under ``--data-dir``, once (reused when it holds that many).
2. **build**: a child runs ``load_image_folder(folder, 64, 3, cache_dir=…)`` on an empty cache folder.
3. **train**: a child trains ``--steps`` steps (tiny U-Net, ``--train-batch`` 4, the folder at 64 px) with the cache
   from phase 2 (no previews; one checkpoint at the end).
   For 2 and 3 the parent samples the child's /proc status every 0.2 s: RSS split into anonymous memory
   (the process's own: what a larger folder would make grow) and file-backed pages (mapped cache pages:
   clean copies of the file that the kernel drops under memory pressure); the child reports its kernel
   peak RSS (VmHWM) and its RSS after imports (baseline).
4. **gather**: the time of a batch of 32 through ``images_to_batch``: on an in-memory copy, the old gather
   (``images[idx]``) and the new (sorted ``index_select``) interleaved; on the memory map as the cache opens
   it (``map_npy``), with both gathers, and with ``madvise(MADV_RANDOM)`` (tried, not used), each cold (the
   file's pages evicted with posix_fadvise(DONTNEED) first, then a fresh map) and warm (the same batches again).
5. **ab**: training speed of the laptop preset (32 px, batch 32, a 4,096-image folder with the cache on),
   old and new interleaved in ``--ab-rounds`` rounds of ``--ab-steps`` steps, each a fresh child; the
   figure is the median step time after 10 warm-up steps.

Prints a table and writes ``benchmarks/results/big_dataset.json``. Speed figures depend on machine load
(give ``--note``); memory figures do not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from soak import proc_status_mb  # noqa: E402  (the same /proc reader as the soak)

#: Defines status() in a child: its memory figures in MB (any checkout: nothing imported from it).
_STATUS = r"""
def status():
    out = {}
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) / 1024
    return out
"""

BUILD_CHILD = _STATUS + r"""
import json, sys, time
import torch, numpy
from ddpm_studio.core.datasets import load_image_folder
base = status()["VmRSS"]
t = time.perf_counter()
data = load_image_folder(sys.argv[1], int(sys.argv[2]), 3, cache_dir=sys.argv[3])
seconds = time.perf_counter() - t
print(json.dumps({"images": len(data), "seconds": seconds, "baseline_mb": base, **status(),
                  "backing_file": getattr(data, "backing_file", None),
                  "code": __import__("ddpm_studio").__file__}), flush=True)
"""

TRAIN_CHILD = _STATUS + r"""
import json, statistics, sys, time
import torch
from ddpm_studio.services import config as c
from ddpm_studio.services.control import drive
from ddpm_studio.services.events import TrainProgress
from ddpm_studio.services.training import TrainingSession
settings = json.loads(sys.argv[1])
base = status()["VmRSS"]
session = TrainingSession(c.check(c.from_dict(settings)), runs_dir=sys.argv[2], run_name="bench")
times = []
def sink(event):
    if isinstance(event, TrainProgress):
        times.append(time.perf_counter())
drive(session.steps(), sink)
dts = [b - a for a, b in zip(times[10:], times[11:])]
print(json.dumps({"steps": session.step, "median_step_s": statistics.median(dts) if dts else None,
                  "images_per_s": settings["optim"]["batch_size"] / statistics.median(dts) if dts else None,
                  "baseline_mb": base, **status(),
                  "backing_file": getattr(session.data, "backing_file", None),
                  "code": __import__("ddpm_studio").__file__}), flush=True)
"""


def run_child(code: str, args: list[str], tree: Path, env_extra: dict[str, str], timeout: float) -> dict[str, Any]:
    """Run ``code`` in a child with ``tree`` first on the path; its JSON line, plus the sampled RSS maxima."""
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), **env_extra)
    proc = subprocess.Popen([sys.executable, "-c", code, *args], env=env, cwd=tree, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    peaks = {"VmRSS": 0.0, "RssAnon": 0.0, "RssFile": 0.0}
    samples: list[dict[str, float]] = []
    t0 = time.perf_counter()

    def sample() -> None:
        while proc.poll() is None:
            st = proc_status_mb(proc.pid)
            if st:
                samples.append({"t": round(time.perf_counter() - t0, 2), **st})
                for key in peaks:
                    peaks[key] = max(peaks[key], st.get(key, 0.0))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate(timeout=timeout)
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"child failed ({proc.returncode}): {err[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    result.update(sampled_peak_rss_mb=peaks["VmRSS"], sampled_peak_anon_mb=peaks["RssAnon"],
                  sampled_peak_file_mb=peaks["RssFile"], wall_s=round(time.perf_counter() - t0, 1))
    result["rss_samples"] = samples[:: max(1, len(samples) // 200)]
    return result


# ------------------------------------------------------------------------------------------------ the folder


def _write_chunk(job: tuple[str, int, int, int]) -> int:
    folder, start, count, size = job
    sys.path.insert(0, str(ROOT))
    from PIL import Image

    from ddpm_studio.core.demo_data import generate_demo_images

    images, _ = generate_demo_images(count, image_size=size, seed=start)
    arr = images.permute(0, 2, 3, 1).numpy()
    sub = Path(folder) / f"{start // 10_000:03d}"
    sub.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(arr[i]).save(sub / f"{start + i:07d}.png", compress_level=1)
    return count


def make_folder(folder: Path, n: int, size: int, workers: int) -> float:
    """``n`` demo-shape PNGs at ``size`` px under ``folder`` (subfolders of 10,000); seconds taken (0: reused)."""
    marker = folder / f".complete-{n}-{size}"
    if marker.exists():
        return 0.0
    import multiprocessing

    t = time.perf_counter()
    chunk = 1000
    jobs = [(str(folder), start, min(chunk, n - start), size) for start in range(0, n, chunk)]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        done = 0
        for count in pool.imap_unordered(_write_chunk, jobs):
            done += count
            print(f"\r  wrote {done:,}/{n:,} images", end="", flush=True)
    print()
    marker.touch()
    return time.perf_counter() - t


# ------------------------------------------------------------------------------------------------ gather speed


def gather_speed(cache_file: str | None, rounds: int, batches: int) -> dict[str, Any]:
    """µs per batch of 32 (median over rounds): the old gather (``images[idx]``) and the new (sorted
    ``index_select``) on an in-memory copy, interleaved; and the new one on the memory map as the cache opens
    it (``map_npy``: MADV_RANDOM) and as plain ``np.load(mmap_mode="r")`` opens it, each warm (pages already
    mapped) and cold (the file's pages evicted with posix_fadvise(DONTNEED), then a fresh map)."""
    sys.path.insert(0, str(ROOT))
    import warnings

    import numpy as np
    import torch

    from ddpm_studio.core.decoded_cache import map_npy
    from ddpm_studio.services.batches import images_to_batch

    torch.set_num_threads(1)
    cpu = torch.device("cpu")

    def old(images: torch.Tensor, idx: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        x = images[idx]
        if flip.any():
            x[flip] = x[flip].flip(-1)
        return x.float().div_(127.5).sub_(1.0)

    def new(images: torch.Tensor, idx: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        return images_to_batch(images, idx, flip, cpu)

    def per_batch_us(fn: Any, images: torch.Tensor, seed: int) -> float:
        g = torch.Generator().manual_seed(seed)
        work = [(torch.randint(0, images.shape[0], (32,), generator=g), torch.rand(32, generator=g) < 0.5)
                for _ in range(batches)]
        t = time.perf_counter()
        for idx, flip in work:
            fn(images, idx, flip)
        return (time.perf_counter() - t) / batches * 1e6

    def tensor(arr: np.ndarray) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.from_numpy(arr)

    def evict() -> None:
        fd = os.open(cache_file, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)

    result: dict[str, list[float]] = {}
    ram = tensor(map_npy(cache_file)).clone() if cache_file else torch.randint(0, 256, (100_000, 3, 64, 64),
                                                                                 dtype=torch.uint8)
    def madv_random(path: str) -> np.ndarray:  # tried, not used: see map_npy
        import mmap

        arr = map_npy(path)
        buffer = arr.base
        while not isinstance(buffer, mmap.mmap):
            buffer = buffer.base if hasattr(buffer, "base") else buffer.obj
        buffer.madvise(mmap.MADV_RANDOM)
        return arr

    mappers = {"mapped": map_npy, "mapped_madv_random": madv_random}
    for r in range(rounds):
        for name, fn in (("old", old), ("new", new)):  # interleaved
            result.setdefault(f"in_memory_{name}_gather", []).append(per_batch_us(fn, ram, r))
        if not cache_file:
            continue
        for mapper, open_map in mappers.items():
            for gather, fn in (("new", new), ("old", old)) if mapper == "mapped" else (("new", new),):
                evict()
                images = tensor(open_map(cache_file))
                result.setdefault(f"{mapper}_cold_{gather}_gather", []).append(per_batch_us(fn, images, 2000 + r))
                result.setdefault(f"{mapper}_warm_{gather}_gather", []).append(per_batch_us(fn, images, 2000 + r))
                del images
    return {key: round(statistics.median(values), 1) for key, values in result.items()} | {"rounds": rounds,
                                                                                          "batches": batches}


# ------------------------------------------------------------------------------------------------ main


def train_settings(folder: Path, size: int, preset: str, batch: int, steps: int) -> dict[str, Any]:
    return {
        "data": {"source": "folder", "data_path": str(folder), "image_size": size, "cache": True},
        "model": {"preset": preset}, "diffusion": {"timesteps": 1000},
        "optim": {"batch_size": batch, "total_steps": steps, "device": "cpu", "mixed_precision": "off"},
        "schedule": {"preview_every": 0, "checkpoint_every": 0, "checkpoint_minutes": 0, "log_every": 50},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old", type=Path, required=True, help="A checkout of the implementation to compare against")
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "ddpm-big-dataset")
    parser.add_argument("--workers", type=int, default=2, help="Processes writing the PNG folder")
    parser.add_argument("--steps", type=int, default=300, help="Training steps of the memory phase")
    parser.add_argument("--train-batch", type=int, default=4, help="Batch of the memory phase (tiny U-Net at 64 px)")
    parser.add_argument("--gather-rounds", type=int, default=5)
    parser.add_argument("--gather-batches", type=int, default=300)
    parser.add_argument("--ab-rounds", type=int, default=3)
    parser.add_argument("--ab-steps", type=int, default=36)
    parser.add_argument("--phases", default="build,train,gather,ab")
    parser.add_argument("--trees", default="old,new", help="Which implementations the build and train phases run")
    parser.add_argument("--update", action="store_true", help="Keep the other figures of an existing --out file")
    parser.add_argument("--note", default="", help="Machine load etc., stored with the figures")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "big_dataset.json")
    args = parser.parse_args()
    phases = set(args.phases.split(","))
    trees = {name: path for name, path in (("old", args.old.resolve()), ("new", ROOT)) if name in args.trees.split(",")}
    result: dict[str, Any] = json.loads(args.out.read_text()) if args.update and args.out.exists() else {}
    result |= {"machine": platform.platform(), "python": platform.python_version(),
                              "cpu_count": os.cpu_count(), "omp_threads": os.environ.get("OMP_NUM_THREADS"),
                              "note": args.note, "images": args.images, "image_size": args.image_size,
                              "decoded_mb": round(args.images * 3 * args.image_size**2 / 2**20, 1),
                              "load_at_start": os.getloadavg(), "train_steps": args.steps,
                              "train_batch": args.train_batch}
    folder = args.data_dir / f"shapes-{args.images}-{args.image_size}px"
    print(f"Folder {folder}")
    result["folder_write_s"] = round(make_folder(folder, args.images, args.image_size, args.workers), 1)
    work = args.data_dir / "work"

    if "build" in phases:
        for name, tree in trees.items():
            cache = work / f"cache-{name}"
            if cache.exists():
                import shutil

                shutil.rmtree(cache)
            print(f"build [{name}] …", flush=True)
            r = run_child(BUILD_CHILD, [str(folder), str(args.image_size), str(cache)], tree, {}, timeout=7200)
            result[f"build_{name}"] = r
            print(f"  {r['images']:,} images in {r['seconds']:.0f} s; peak RSS {r['VmHWM']:.0f} MB "
                  f"(baseline {r['baseline_mb']:.0f}), peak anon {r['sampled_peak_anon_mb']:.0f} MB", flush=True)
    if "train" in phases:
        settings = train_settings(folder, args.image_size, "tiny", args.train_batch, args.steps)
        for name, tree in trees.items():
            print(f"train [{name}] {args.steps} steps …", flush=True)
            env = {"XDG_CACHE_HOME": str(work / f"xdg-{name}")}
            # The build phase's cache, where this implementation's default_cache_dir() looks.
            target = work / f"xdg-{name}" / "ddpm-studio" / "datasets"
            if not target.exists() and (work / f"cache-{name}").exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                (work / f"cache-{name}").rename(target)
            r = run_child(TRAIN_CHILD, [json.dumps(settings), str(work / f"runs-{name}")], tree, env, timeout=7200)
            result[f"train_{name}"] = r
            print(f"  peak RSS {r['VmHWM']:.0f} MB (baseline {r['baseline_mb']:.0f}), peak anon "
                  f"{r['sampled_peak_anon_mb']:.0f} MB, peak file-backed {r['sampled_peak_file_mb']:.0f} MB", flush=True)
    if "gather" in phases:
        cache_files = sorted((work / "xdg-new" / "ddpm-studio" / "datasets").glob("*.npy"))
        print("gather …", flush=True)
        result["gather_us_per_batch32"] = gather_speed(str(cache_files[0]) if cache_files else None,
                                                       args.gather_rounds, args.gather_batches)
        print(f"  {result['gather_us_per_batch32']}", flush=True)
    if "ab" in phases:
        small = args.data_dir / "shapes-4096-32px"
        make_folder(small, 4096, 32, args.workers)
        settings = train_settings(small, 32, "laptop", 32, args.ab_steps)
        ab: dict[str, list[float]] = {"old": [], "new": []}
        ab_trees = {"old": args.old.resolve(), "new": ROOT}
        for r in range(args.ab_rounds):
            for name in (("old", "new") if r % 2 == 0 else ("new", "old")):
                env = {"XDG_CACHE_HOME": str(work / f"ab-xdg-{name}")}
                out = run_child(TRAIN_CHILD, [json.dumps(settings), str(work / f"ab-runs-{name}-{r}")], ab_trees[name], env,
                                timeout=7200)
                ab[name].append(out["images_per_s"])
                print(f"  ab round {r} [{name}]: {out['images_per_s']:.1f} img/s", flush=True)
        result["ab_laptop_images_per_s"] = {name: {"rounds": [round(v, 2) for v in values],
                                                   "median": round(statistics.median(values), 2)}
                                            for name, values in ab.items()}
        result["ab_new_over_old"] = round(result["ab_laptop_images_per_s"]["new"]["median"]
                                          / result["ab_laptop_images_per_s"]["old"]["median"], 3)
    result["load_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print_table(result)
    print(f"wrote {args.out}")
    return 0


def print_table(result: dict[str, Any]) -> None:
    print(f"\n{result['images']:,} images at {result['image_size']} px ({result['decoded_mb']:,} MB decoded)")
    print("| phase | implementation | peak RSS (VmHWM) MB | baseline MB | peak anonymous MB | peak file-backed MB | time s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for phase in ("build", "train"):
        for name in ("old", "new"):
            r = result.get(f"{phase}_{name}")
            if r:
                seconds = r.get("seconds") or r.get("wall_s")
                print(f"| {phase} | {name} | {r['VmHWM']:.0f} | {r['baseline_mb']:.0f} | {r['sampled_peak_anon_mb']:.0f} | "
                      f"{r['sampled_peak_file_mb']:.0f} | {seconds:.0f} |")
    if "gather_us_per_batch32" in result:
        print("\nimages_to_batch, µs per batch of 32:", result["gather_us_per_batch32"])
    if "ab_laptop_images_per_s" in result:
        print("laptop preset img/s:", result["ab_laptop_images_per_s"], "new/old", result["ab_new_over_old"])


if __name__ == "__main__":
    sys.exit(main())
