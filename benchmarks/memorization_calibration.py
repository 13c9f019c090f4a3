"""Calibration of the memorization check's copy rule (ddpm_studio/services/memorization.py).

For several kinds of small image sets it takes a training set and, as probes, (a) copies of training images:
exact, moved by one pixel (four directions), mirrored, and with light noise (σ = 4/255), which the rule must
flag, and (b) novel images: other images from the same generator, not in the training set, which it must not.
It prints, per set, the share of each probe kind flagged, the largest score (d1/d2) among the copies and the
smallest among the novel images, and writes benchmarks/results/memorization_calibration.json.

    python benchmarks/memorization_calibration.py            # all sets (~2 minutes on 2 CPU threads)
    python benchmarks/memorization_calibration.py --quick    # small sets, a pipeline check

The image sets are generated here (no downloads): flat-coloured disks on white ("blobs", the look of a small
folder of simple drawings), smooth colour fields ("textures": bicubic upsampled 4x4 / 8x8 noise, the
low-frequency content of photos), and the app's demo shapes. "Novel" demo shapes can be genuinely identical
to training ones (the generator draws from a small space of shapes, colours, sizes and positions): a
flagged novel demo image is then a true copy, which the table shows by its distance.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ddpm_studio.core.demo_data import generate_demo_images  # noqa: E402
from ddpm_studio.services.memorization import (  # noqa: E402
    COPY_DISTANCE,
    MAX_SHIFT,
    RATIO_THRESHOLD,
    check_memorization,
    copy_probes,
)


def blobs(n: int, size: int, seed: int) -> torch.Tensor:
    """Three flat-coloured disks of random size, colour and place on white, per image: uint8 (n, 3, size, size)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    out = torch.full((n, 3, size, size), 255.0)
    for i in range(n):
        for _ in range(3):
            colour = torch.rand(3, generator=g) * 255
            cy, cx = (torch.rand(2, generator=g) * size).tolist()
            radius = 2 + float(torch.rand(1, generator=g)) * size / 4
            out[i, :, (yy - cy) ** 2 + (xx - cx) ** 2 < radius**2] = colour[:, None]
    return out.round().to(torch.uint8)


def textures(n: int, size: int, seed: int, res: int = 4) -> torch.Tensor:
    """Smooth colour fields: res x res uniform noise upsampled bicubically to size x size."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand((n, 3, res, res), generator=g)
    return (F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1) * 255).round().to(torch.uint8)


def demo(n: int, size: int, seed: int) -> torch.Tensor:
    return generate_demo_images(n, size, seed)[0]


SETS: list[tuple[str, Any, int, int]] = [  # name, generator, training images, size
    ("blobs", blobs, 16, 16), ("blobs", blobs, 256, 16), ("blobs", blobs, 1000, 32),
    ("textures4", lambda n, s, seed: textures(n, s, seed, 4), 16, 32),
    ("textures4", lambda n, s, seed: textures(n, s, seed, 4), 2000, 32),
    ("textures8", lambda n, s, seed: textures(n, s, seed, 8), 2000, 32),
    ("demo", demo, 8, 16), ("demo", demo, 16, 16), ("demo", demo, 64, 16), ("demo", demo, 256, 32),
]
QUICK_SETS = [("blobs", blobs, 16, 16), ("demo", demo, 16, 16)]


def calibrate(name: str, make: Any, n_train: int, size: int, seed: int, n_novel: int, mirror: bool) -> dict[str, Any]:
    train = make(n_train, size, seed)
    novel = make(n_novel, size, seed + 1000)
    probes = {**copy_probes(train[: min(n_train, 200)], seed=seed, mirror=mirror), "novel": novel}
    row: dict[str, Any] = {"set": name, "train": n_train, "size": size, "seed": seed, "flips": mirror}
    for kind, images in probes.items():
        check = check_memorization(images, train, mirror=mirror)
        d1 = check.neighbours.distances[:, 0]
        row[kind] = {"n": len(images), "flagged": float(check.flagged.mean()),
                     "score_min": float(check.score.min()), "score_max": float(check.score[np.isfinite(check.score)].max()),
                     "d1_min": float(d1.min()), "d1_median": float(np.median(d1))}
        if kind == "novel" and check.flagged.any():
            row[kind]["flagged_d1"] = [round(float(d), 4) for d in d1[check.flagged]]
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    sets, seeds, n_novel = (QUICK_SETS, 1, 50) if args.quick else (SETS, args.seeds, 300)
    rows, started = [], time.time()
    print(f"rule: d1 < {RATIO_THRESHOLD:.3g} d2 or d1 < {COPY_DISTANCE:g} (RMS, 0-1), alignment ±{MAX_SHIFT} px")
    print(f"{'set':10s} {'train':>5s} {'px':>3s} {'seed':>4s} {'mir':>3s} | flagged: {'exact':>6s} {'shift':>6s} "
          f"{'mirror':>6s} {'noise':>6s} {'novel':>6s} | copy score max  novel score min  novel d1 min")
    for name, make, n_train, size in sets:
        for seed in range(seeds):
            for mirror in (False, True):
                row = calibrate(name, make, n_train, size, seed, n_novel, mirror)
                rows.append(row)
                copies = [row[k]["score_max"] for k in ("exact", "shift", "mirror", "noise") if k in row]
                flags = " ".join(f"{row[k]['flagged']:6.1%}" if k in row else f"{'-':>6s}"
                                 for k in ("exact", "shift", "mirror", "noise", "novel"))
                print(f"{name:10s} {n_train:5d} {size:3d} {seed:4d} {'yes' if mirror else 'no':>3s} | {'':8s} {flags} | "
                      f"{max(copies):15.3f}  {row['novel']['score_min']:15.3f}  {row['novel']['d1_min']:12.4f}", flush=True)
    out = args.json or ROOT / "benchmarks" / "results" / f"memorization_calibration{'_quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "rule": {"ratio_threshold": RATIO_THRESHOLD, "copy_distance": COPY_DISTANCE, "max_shift": MAX_SHIFT},
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "processor": platform.processor()},
        "seconds": round(time.time() - started, 1), "rows": rows,
    }, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
