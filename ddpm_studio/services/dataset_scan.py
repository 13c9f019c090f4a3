"""What is in a folder of images, for the app's dataset panel: which files training will use, which it will skip
and why, their sizes and colour modes, and thumbnails.

Why decode every file: a zero-byte PNG, a text file renamed .jpg or a truncated JPEG looks like an image by its
name (and a truncated JPEG even by its header); only decoding tells. So the scan decodes each file with the
engine's own decoder (:func:`ddpm_studio.core.images.decode_image`, the same rules and warnings as training),
at a small size. That is the slow part, so:

- results are cached per folder (under the user cache folder, keyed by each file's path, size and mtime):
  a second scan of an unchanged folder decodes nothing;
- :func:`scan_folder` reports partial summaries as it goes (``report``) and stops when ``cancelled()`` says
  so (what it checked is kept in the cache), so a 100 000-image folder never freezes the window and a new
  choice never waits for an old scan; it runs off the GUI thread (the app's BackgroundTasks).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

THUMB_SIZE = 64
CHECK_SIZE = 32  # decoding at a small size is enough to know a file decodes (JPEGs take the fast DCT path)
CHECK_CHUNK = 64  # files decoded between two looks at ``cancelled`` (and at most one report per REPORT_SECONDS)
REPORT_SECONDS = 0.25
CACHE_VERSION = 1


@dataclass(frozen=True)
class FileCheck:
    """One image file as decoded by the scan (what the cache keeps): its header, or why it cannot be used."""

    size: int
    mtime_ns: int
    width: int = 0
    height: int = 0
    mode: str = ""
    error: str | None = None
    warnings: tuple[str, ...] = ()

    def row(self) -> list[object]:
        return [self.size, self.mtime_ns, self.width, self.height, self.mode, self.error, list(self.warnings)]

    @classmethod
    def from_row(cls, row: list[object]) -> FileCheck:
        size, mtime, width, height, mode, error, warnings = row
        return cls(int(size), int(mtime), int(width), int(height), str(mode),  # type: ignore[call-overload]
                   None if error is None else str(error), tuple(str(w) for w in warnings))  # type: ignore[union-attr]


@dataclass(frozen=True)
class ScanSummary:
    """What the panel shows about a folder; while the scan runs, a partial one (``complete`` is False)."""

    root: str
    files: tuple[str, ...]  # usable: the image files not (yet) found broken
    skipped: tuple[tuple[str, str], ...]  # (display path, reason): not images, or images that do not decode
    class_names: tuple[str, ...]
    stats: dict[str, object] = field(default_factory=dict)
    error: str | None = None
    warnings: tuple[tuple[str, str], ...] = ()  # (display path, warning) of usable files
    checked: int = 0  # image files decoded (or found in the cache) so far
    total: int = 0  # image files found by name
    cancelled: bool = False

    @property
    def usable(self) -> int:
        return len(self.files)

    @property
    def complete(self) -> bool:
        return self.error is not None or self.checked >= self.total

    def message(self) -> str:
        """The one-line verdict: count, skipped, warnings, classes, or why the folder cannot be used."""
        if self.error:
            return self.error
        skipped = f"{len(self.skipped):,} skipped" if self.skipped else ""
        if not self.complete:
            state = "stopped" if self.cancelled else "checking"
            return " · ".join(p for p in (f"{self.usable:,} images, {state} {self.checked:,} / {self.total:,}",
                                          skipped + (" so far" if skipped else "")) if p)
        if not self.files:
            if not self.skipped:
                return f"No images found in {self.root}: the folder is empty"
            if self.total:
                return f"No usable images in {self.root}: none of its {self.total:,} image files decodes"
            return f"No images found in {self.root}: none of its {len(self.skipped):,} files is an image"
        parts = [f"{len(self.files):,} usable images"]
        if skipped:
            parts.append(skipped)
        if self.warnings:
            parts.append(f"{len(self.warnings):,} with a warning")
        if self.class_names:
            names = ", ".join(self.class_names[:5]) + (" …" if len(self.class_names) > 5 else "")
            parts.append(f"{len(self.class_names)} classes ({names})")
        return " · ".join(parts)


# -- the per-folder cache of file checks ----------------------------------------------------------------------
def default_cache_dir() -> Path:
    """``<user cache>/ddpm-studio/file-checks`` (one small JSON file per folder scanned)."""
    import platformdirs

    return platformdirs.user_cache_path("ddpm-studio") / "file-checks"


class CheckCache:
    """A folder's file checks by absolute path; an entry counts only while the file's size and mtime are unchanged."""

    def __init__(self, root: str, cache_dir: Path) -> None:
        key = hashlib.sha256(os.path.realpath(root).encode("utf-8", "surrogateescape")).hexdigest()[:24]
        self.path = Path(cache_dir) / f"{key}.json"
        self.entries: dict[str, FileCheck] = {}
        self.dirty = False
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                if data.get("version") == CACHE_VERSION:
                    self.entries = {p: FileCheck.from_row(row) for p, row in data["files"].items()}
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                self.entries = {}  # unreadable: checked again, and rewritten

    def get(self, path: str, st: os.stat_result) -> FileCheck | None:
        found = self.entries.get(path)
        return found if found is not None and (found.size, found.mtime_ns) == (st.st_size, st.st_mtime_ns) else None

    def put(self, path: str, check: FileCheck) -> None:
        self.entries[path] = check
        self.dirty = True

    def save(self, keep: Iterable[str]) -> None:
        """Write the entries of ``keep`` (the folder's files now), best effort: a read-only cache only costs time."""
        if not self.dirty:
            return
        from ddpm_studio.core.atomic import atomic_write

        files = {p: self.entries[p].row() for p in keep if p in self.entries}
        data = json.dumps({"version": CACHE_VERSION, "files": files}, ensure_ascii=True).encode("ascii")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, lambda f: f.write(data))
            self.dirty = False
        except OSError:
            pass


def check_file(path: str, st: os.stat_result | None = None) -> FileCheck:
    """Decode ``path`` as training would (small size): its header and warnings, or the reason it is skipped."""
    from ddpm_studio.core.images import ImageDecodeError, decode_image

    try:
        st = st or os.stat(path)
    except OSError as exc:
        return FileCheck(-1, -1, error=f"cannot read file ({exc.strerror or exc})")
    try:
        decoded = decode_image(path, CHECK_SIZE, 3)
    except (ImageDecodeError, OSError, ValueError) as exc:
        return FileCheck(st.st_size, st.st_mtime_ns, error=str(exc) or type(exc).__name__)
    return FileCheck(st.st_size, st.st_mtime_ns, decoded.width, decoded.height, decoded.mode, None, decoded.warnings)


# -- the scan -------------------------------------------------------------------------------------------------
def scan_folder(root: str, report: Callable[[ScanSummary], None] | None = None,
                cancelled: Callable[[], bool] | None = None, cache_dir: Path | None = None,
                workers: int | None = None) -> ScanSummary:
    """Find ``root``'s image files (the engine's rules), then decode each (or take it from the cache).

    ``report`` gets partial summaries while files are decoded (at most every REPORT_SECONDS); ``cancelled()``
    stops the scan between chunks, returning the partial summary (``cancelled=True``). ``cache_dir``: where the
    checks are cached (default: :func:`default_cache_dir`).
    """
    from ddpm_studio.core.datasets import DatasetError, scan_image_folder
    from ddpm_studio.core.images import display_path

    try:
        walk = scan_image_folder(root)
    except DatasetError as exc:
        return ScanSummary(root, (), (), (), error=str(exc))
    named_skips = tuple((s.display, s.reason) for s in walk.skipped)
    cache = CheckCache(walk.root, cache_dir or default_cache_dir())
    checks: dict[str, FileCheck] = {}

    def summary(done: bool = False, stopped: bool = False) -> ScanSummary:
        broken = {p: c.error for p, c in checks.items() if c.error is not None}
        files = tuple(p for p in walk.files if p not in broken) if broken else walk.files
        skipped = tuple(sorted(named_skips + tuple((display_path(p), e) for p, e in broken.items() if e)))
        warned = tuple((display_path(p), w) for p in walk.files if p in checks for w in checks[p].warnings)
        good = [c for c in checks.values() if c.error is None]
        return ScanSummary(walk.root, files, skipped, walk.class_names, image_stats(good, len(files)),
                           warnings=warned, checked=len(walk.files) if done else len(checks), total=len(walk.files),
                           cancelled=stopped)

    todo: list[tuple[str, os.stat_result | None]] = []
    for path in walk.files:
        try:
            st = os.stat(path)
        except OSError:
            todo.append((path, None))
            continue
        hit = cache.get(path, st)
        if hit is None:
            todo.append((path, st))
        else:
            checks[path] = hit
    last = time.monotonic()
    if report is not None and todo:
        report(summary())
    pool_size = workers or max(1, min(4, os.cpu_count() or 1))
    stopped = False
    with ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="ddpm-scan") as pool:
        for start in range(0, len(todo), CHECK_CHUNK):
            if cancelled is not None and cancelled():
                stopped = True
                break
            chunk = todo[start:start + CHECK_CHUNK]
            for (path, _st), check in zip(chunk, pool.map(lambda item: check_file(*item), chunk), strict=True):
                checks[path] = check
                if check.size >= 0:
                    cache.put(path, check)
            if report is not None and time.monotonic() - last >= REPORT_SECONDS:
                last = time.monotonic()
                report(summary())
    cache.save(walk.files)
    return summary(done=not stopped, stopped=stopped)


def image_stats(checks: list[FileCheck], total: int) -> dict[str, object]:
    """Sizes and colour modes of the usable files checked so far (``total``: how many usable files there are)."""
    if not checks:
        return {}
    modes: Counter[str] = Counter(c.mode for c in checks)
    sizes: Counter[str] = Counter(f"{c.width}×{c.height}" for c in checks)
    sides = [min(c.width, c.height) for c in checks]
    return {
        "sampled": len(checks),
        "total": max(total, len(checks)),
        "modes": dict(modes.most_common()),
        "sizes": dict(sizes.most_common(4)),
        "distinct_sizes": len(sizes),
        "min_side": min(sides),
        "median_side": int(np.median(sides)),
        "max_side": max(sides),
    }


def describe_stats(stats: dict[str, object], image_size: int) -> str:
    """Human summary of :func:`image_stats` (with a warning when most images will be enlarged)."""
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
    sample = "" if stats["sampled"] == stats["total"] else f" (of the {stats['sampled']:,} checked so far)"
    text = (f"Sizes{sample}: {size_text}\nSmallest side: min {stats['min_side']}, median {stats['median_side']}, "
            f"max {stats['max_side']} px\nColour modes: {mode_text}")
    if int(stats["median_side"]) and int(stats["median_side"]) < image_size:  # type: ignore[arg-type]
        text += f"\n⚠ Most images are smaller than {image_size}px and will be enlarged (blurry samples)"
    return text


_MODE_NAMES = {"L": "grayscale", "LA": "grayscale+alpha", "RGBA": "RGB+alpha", "P": "palette", "1": "1-bit",
               "I;16": "16-bit gray", "I": "32-bit gray", "F": "float", "CMYK": "CMYK"}


def demo_thumbnails(count: int = 64, image_size: int = 32, channels: int = 3) -> np.ndarray:
    """The first ``count`` demo images as (N, H, W, C) uint8, drawn at most THUMB_SIZE pixels wide (a thumbnail
    needs no more; drawing at a 256-pixel training size took ~300 MB of temporaries). Imports torch: call it off
    the GUI thread."""
    from ddpm_studio.core.demo_data import demo_image_set

    size = max(8, min(image_size, THUMB_SIZE))
    images = demo_image_set(count, image_size=size, channels=channels).images.numpy()
    return np.ascontiguousarray(images.transpose(0, 2, 3, 1))


def load_thumbnail(path: str, size: int = THUMB_SIZE, channels: int = 3) -> np.ndarray | str:
    """(size, size, C) uint8 via the engine's decoder (same crop as training), or the reason it failed; its warnings
    are the scan's to report, not logged again here."""
    from ddpm_studio.core.images import ImageDecodeError, decode_image

    try:
        return np.ascontiguousarray(decode_image(path, size, channels).pixels.transpose(1, 2, 0))
    except (ImageDecodeError, OSError, ValueError) as exc:
        return str(exc)

