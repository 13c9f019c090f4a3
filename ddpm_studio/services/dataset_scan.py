"""What is in a folder of images, for the app's dataset panel: scan, sample header statistics, thumbnails.

Runs on a background thread. Statistics read image *headers* only, and only of an evenly spread
sample of files, so a 100 000-image folder is summarised in about a second.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

STATS_SAMPLE = 400
THUMB_SIZE = 64


@dataclass(frozen=True)
class ScanSummary:
    """What the panel shows about a folder."""

    root: str
    files: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]  # (display path, reason)
    class_names: tuple[str, ...]
    stats: dict[str, object] = field(default_factory=dict)
    error: str | None = None

    @property
    def usable(self) -> int:
        return len(self.files)

    def message(self) -> str:
        """The one-line verdict: count, skipped, classes, or why the folder cannot be used."""
        if self.error:
            return self.error
        if not self.files:
            if not self.skipped:
                return f"No images found in {self.root}: the folder is empty"
            return f"No images found in {self.root}: none of its {len(self.skipped):,} files is an image"
        parts = [f"{len(self.files):,} usable images"]
        if self.skipped:
            parts.append(f"{len(self.skipped):,} skipped")
        if self.class_names:
            names = ", ".join(self.class_names[:5]) + (" …" if len(self.class_names) > 5 else "")
            parts.append(f"{len(self.class_names)} classes ({names})")
        return " · ".join(parts)


def scan_folder(root: str) -> ScanSummary:
    """Scan ``root`` with the engine's rules (same files training will use) and sample statistics."""
    from ddpm_studio.core.datasets import DatasetError, scan_image_folder

    try:
        scan = scan_image_folder(root)
    except DatasetError as exc:
        return ScanSummary(root, (), (), (), error=str(exc))
    skipped = tuple((s.display, s.reason) for s in scan.skipped)
    return ScanSummary(scan.root, scan.files, skipped, scan.class_names, header_stats(scan.files))


def header_stats(files: tuple[str, ...] | list[str], sample: int = STATS_SAMPLE) -> dict[str, object]:
    """Sizes and colour modes from the headers of up to ``sample`` evenly spread files."""
    from PIL import Image

    if not files:
        return {}
    idx = np.unique(np.linspace(0, len(files) - 1, min(sample, len(files))).round().astype(int))
    modes: Counter[str] = Counter()
    sides: list[int] = []
    sizes: Counter[str] = Counter()
    unreadable = 0
    for i in idx:
        try:
            with Image.open(files[i]) as im:
                w, h = im.size
                modes[im.mode] += 1
        except Exception:
            unreadable += 1
            continue
        sides.append(min(w, h))
        sizes[f"{w}×{h}"] += 1
    return {
        "sampled": len(idx),
        "total": len(files),
        "modes": dict(modes.most_common()),
        "sizes": dict(sizes.most_common(4)),
        "distinct_sizes": len(sizes),
        "min_side": min(sides) if sides else 0,
        "median_side": int(np.median(sides)) if sides else 0,
        "max_side": max(sides) if sides else 0,
        "unreadable": unreadable,
    }


def describe_stats(stats: dict[str, object], image_size: int) -> str:
    """Human summary of :func:`header_stats` (with a warning when most images will be enlarged)."""
    if not stats:
        return ""
    modes = stats["modes"]
    assert isinstance(modes, dict)
    total_m = sum(modes.values()) or 1
    mode_text = ", ".join(f"{_MODE_NAMES.get(m, m)} {100 * n / total_m:.0f}%" for m, n in modes.items())
    sizes = stats["sizes"]
    assert isinstance(sizes, dict)
    size_text = ", ".join(sizes)
    if int(stats["distinct_sizes"]) > len(sizes):  # type: ignore[arg-type]
        size_text += f" … ({stats['distinct_sizes']} different sizes)"
    sample = "" if stats["sampled"] == stats["total"] else f" (from a sample of {stats['sampled']:,})"
    text = (f"Sizes{sample}: {size_text}\nSmallest side: min {stats['min_side']}, median {stats['median_side']}, "
            f"max {stats['max_side']} px\nColour modes: {mode_text}")
    if int(stats["median_side"]) and int(stats["median_side"]) < image_size:  # type: ignore[arg-type]
        text += f"\n⚠ Most images are smaller than {image_size}px and will be enlarged (blurry samples)"
    return text


_MODE_NAMES = {"L": "grayscale", "LA": "grayscale+alpha", "RGBA": "RGB+alpha", "P": "palette", "1": "1-bit",
               "I;16": "16-bit gray", "I": "32-bit gray", "F": "float", "CMYK": "CMYK"}


def demo_thumbnails(count: int = 64, image_size: int = 32, channels: int = 3) -> np.ndarray:
    """The first ``count`` demo images as (N, H, W, C) uint8 (imports torch: call off the GUI thread)."""
    from ddpm_studio.core.demo_data import demo_image_set

    images = demo_image_set(count, image_size=image_size, channels=channels).images.numpy()
    return np.ascontiguousarray(images.transpose(0, 2, 3, 1))


def load_thumbnail(path: str, size: int = THUMB_SIZE, channels: int = 3) -> np.ndarray | str:
    """(size, size, C) uint8 via the engine's decoder (same crop as training), or the reason it failed."""
    from ddpm_studio.core.images import ImageDecodeError, load_image

    try:
        return np.ascontiguousarray(load_image(path, size, channels).transpose(1, 2, 0))
    except (ImageDecodeError, OSError, ValueError) as exc:
        return str(exc)
