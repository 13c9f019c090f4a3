"""Turn a folder of images (or an MNIST / Fashion-MNIST / CIFAR-10 download) into a uint8 image tensor.

Training samples random batches thousands of times, so every image is decoded once, up front,
into a uint8 ``(N, C, H, W)`` tensor (4096 RGB images at 32x32 are 12 MB). A folder is decoded into
the on-disk cache (:mod:`ddpm_studio.core.decoded_cache`), keyed by the file list (names, sizes,
mtimes) and the settings, and training reads it through a read-only memory map: the second start of
a run is instant, and a folder larger than RAM trains with bounded memory. With the cache turned
off, the folder is decoded into memory, which must then hold it.

Folders come from users, so scanning never raises for a single odd entry: hidden files are
ignored, everything else that cannot become an image lands in ``skipped`` with a reason,
symlink loops are walked once, and FIFOs / sockets / devices are never opened.
"""

from __future__ import annotations

import logging
import os
import stat
import time
import warnings
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ddpm_studio.core import decoded_cache
from ddpm_studio.core.images import (
    IMAGE_EXTENSIONS,
    ImageDecodeError,
    describe_file_kind,
    display_path,
    load_image,
)

logger = logging.getLogger(__name__)

NOT_AN_IMAGE_EXTENSION = "not an image extension"
_MAX_WORKERS = 4


class DatasetError(Exception):
    """A dataset cannot be used; ``str(err)`` is a complete sentence for the user."""


@dataclass(frozen=True)
class SkippedFile:
    """A file that is not in the dataset, and why (``path`` may hold surrogate escapes)."""

    path: str
    reason: str

    @property
    def display(self) -> str:
        """``path`` made safe to print or show in a widget."""
        return display_path(self.path)


@dataclass(frozen=True)
class FolderScan:
    """What :func:`scan_image_folder` found; nothing has been decoded yet."""

    root: str
    files: tuple[str, ...]
    skipped: tuple[SkippedFile, ...]
    class_names: tuple[str, ...]


@dataclass
class ImageSet:
    """A whole dataset, ready for random batches.

    ``images`` may be a read-only memory map of the decoded cache (``backing_file`` names it): index it
    (``images[idx]`` copies the rows) and never write into it.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    class_names: tuple[str, ...]
    skipped: tuple[SkippedFile, ...]
    description: str
    backing_file: str | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels is not None and self.labels.shape != (self.images.shape[0],):
            raise ValueError("labels must have one entry per image")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def to_float(self, idx: torch.Tensor) -> torch.Tensor:
        """The images at ``idx`` as float32 in [-1, 1] (the range DDPM noise is added in)."""
        return self.images[idx].to(torch.float32).div_(127.5).sub_(1.0)


def default_cache_dir() -> Path:
    """Where decoded folders are cached: ``<user cache>/ddpm-studio/datasets``."""
    import platformdirs

    return platformdirs.user_cache_path("ddpm-studio") / "datasets"


# ---------------------------------------------------------------------------------------------
# Scanning


def _check_root(root: str) -> None:
    try:
        st = os.stat(root)
    except FileNotFoundError:
        raise DatasetError(f"Folder {display_path(root)} does not exist") from None
    except PermissionError:
        raise DatasetError(f"Cannot open {display_path(root)}: permission denied") from None
    except OSError as exc:
        raise DatasetError(f"Cannot open {display_path(root)}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise DatasetError(f"{display_path(root)} is not a folder")


def scan_image_folder(root: str | os.PathLike[str], *, max_files: int | None = None, follow_symlinks: bool = True) -> FolderScan:
    """Find image files under ``root`` recursively, in sorted (deterministic) order.

    Hidden names (leading '.') are ignored; other non-image entries are listed in ``skipped``.
    ``class_names`` are the immediate subfolders holding images when there are at least two
    and no image sits directly in ``root``; otherwise ``()`` (no labels).
    """
    top = os.fsdecode(os.fspath(root))
    _check_root(top)
    files: list[str] = []
    skipped: list[SkippedFile] = []
    visited: set[str] = {os.path.realpath(top)}
    pending: list[str] = [top]
    while pending and (max_files is None or len(files) < max_files):
        folder = pending.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except PermissionError:
            if folder == top:
                raise DatasetError(f"Cannot open {display_path(top)}: permission denied") from None
            skipped.append(SkippedFile(folder, "permission denied (folder)"))
            continue
        except OSError as exc:
            skipped.append(SkippedFile(folder, f"cannot read folder ({exc.strerror or exc})"))
            continue
        subdirs: list[str] = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_symlink() and not follow_symlinks:
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
                is_file = entry.is_file(follow_symlinks=True)
            except OSError:
                is_dir = is_file = False
            if is_dir:
                real = os.path.realpath(entry.path)
                if real in visited:  # symlink loop or second link to a folder already walked
                    logger.debug("Not walking %s again (same as %s)", display_path(entry.path), display_path(real))
                    continue
                visited.add(real)
                subdirs.append(entry.path)
            elif not is_file:
                skipped.append(SkippedFile(entry.path, _special_reason(entry)))
            elif os.path.splitext(entry.name)[1].lower() not in IMAGE_EXTENSIONS:
                skipped.append(SkippedFile(entry.path, NOT_AN_IMAGE_EXTENSION))
            else:
                files.append(entry.path)
                if max_files is not None and len(files) >= max_files:
                    break
        pending.extend(reversed(subdirs))
    files.sort()
    skipped.sort(key=lambda s: s.path)
    return FolderScan(top, tuple(files), tuple(skipped), _class_names(top, files))


def _special_reason(entry: os.DirEntry[str]) -> str:
    """Why a directory entry that is neither a file nor a folder was skipped (never opened)."""
    try:
        mode = entry.stat(follow_symlinks=True).st_mode
    except FileNotFoundError:
        return "broken symbolic link"
    except OSError as exc:
        return f"cannot read file ({exc.strerror or exc})"
    return f"not a regular file ({describe_file_kind(mode)})"


def _top_folder(root: str, path: str) -> str | None:
    """First path component of ``path`` below ``root`` (None for files directly in root)."""
    rel = os.path.relpath(path, root)
    head, _, rest = rel.partition(os.sep)
    return head if rest else None


def _class_names(root: str, files: list[str]) -> tuple[str, ...]:
    tops = {_top_folder(root, f) for f in files}
    if None in tops or len(tops) < 2:
        return ()
    return tuple(sorted(t for t in tops if t is not None))


# ---------------------------------------------------------------------------------------------
# Loading a folder


def _no_images_message(scan: FolderScan) -> str:
    where = display_path(scan.root)
    if not scan.skipped:
        return f"No images found in {where}: the folder is empty"
    exts = ", ".join(sorted(IMAGE_EXTENSIONS))
    return (
        f"No images found in {where}: none of its {len(scan.skipped):,} entries is an image file "
        f"(looked for {exts}); first: {scan.skipped[0].display}: {scan.skipped[0].reason}"
    )


def _decode(
    files: tuple[str, ...],
    image_size: int,
    channels: int,
    add_row: Callable[[np.ndarray], None],
    progress: Callable[[int, int], None] | None,
    cancel: Callable[[], bool] | None,
) -> list[int | str]:
    """Decode in a small thread pool, in file order, handing each good image to ``add_row`` as it comes.

    Returns status[i] = row of file i, or its error. Only a bounded window of decoded images is held here.
    """
    total = len(files)
    status: list[int | str] = []
    kept = 0

    def one(path: str) -> np.ndarray | str:
        try:
            return load_image(path, image_size, channels)
        except ImageDecodeError as exc:
            return str(exc)

    workers = max(1, min(_MAX_WORKERS, os.cpu_count() or 1, total))
    window: deque[Future[np.ndarray | str]] = deque()  # bounded, so cancel is quick and memory stays small
    submitted = 0
    last_report = 0.0
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ddpm-decode") as pool:
        try:
            for done in range(1, total + 1):
                while submitted < total and len(window) < 8 * workers:
                    window.append(pool.submit(one, files[submitted]))
                    submitted += 1
                if cancel is not None and cancel():
                    raise DatasetError("cancelled")
                result = window.popleft().result()
                if isinstance(result, str):
                    status.append(result)
                else:
                    add_row(result)
                    status.append(kept)
                    kept += 1
                now = time.monotonic()
                if progress is not None and (now - last_report >= 0.1 or done == total):
                    last_report = now
                    progress(done, total)
        finally:
            for fut in window:
                fut.cancel()
    return status


def _decode_into_memory(
    files: tuple[str, ...], image_size: int, channels: int,
    progress: Callable[[int, int], None] | None, cancel: Callable[[], bool] | None,
) -> tuple[np.ndarray, list[int | str]]:
    out = np.empty((len(files), channels, image_size, image_size), dtype=np.uint8)
    kept = [0]

    def add_row(row: np.ndarray) -> None:
        out[kept[0]] = row
        kept[0] += 1

    status = _decode(files, image_size, channels, add_row, progress, cancel)
    return (out if kept[0] == len(files) else out[: kept[0]].copy()), status


def _decode_folder(
    scan: FolderScan, image_size: int, channels: int, cache_dir: str | Path | None,
    progress: Callable[[int, int], None] | None, cancel: Callable[[], bool] | None,
) -> tuple[np.ndarray, list[int | str], str | None]:
    """(images, per-file status, the cache file they are mapped from or None): from the cache when it holds
    this folder, else decoded into a new cache entry, else (no cache, or it cannot be written) into memory."""
    n, shape = len(scan.files), (channels, image_size, image_size)
    if cache_dir is not None:
        stem = decoded_cache.entry_stem(cache_dir, scan.root, scan.files, image_size, channels)
        cached = decoded_cache.read(stem, n, shape)
        if cached is not None:
            logger.info("Loaded %d decoded images of %s from the cache", cached[0].shape[0], display_path(scan.root))
            if progress is not None:
                progress(n, n)
            return *cached, str(stem.with_suffix(".npy"))
        started = time.monotonic()
        try:
            built = decoded_cache.build(
                stem, n, shape, lambda add_row: _decode(scan.files, image_size, channels, add_row, progress, cancel))
        except decoded_cache.CacheUnavailable as exc:
            _check_memory(n, image_size, channels, why=f"the decoded-image cache cannot be used ({exc})")
            logger.warning("Could not write the dataset cache: %s; decoding into memory", exc)
        else:
            logger.info("Decoded %d files of %s in %.1f s", n, display_path(scan.root), time.monotonic() - started)
            arr, status = built
            if arr is None:  # nothing could be decoded: no entry was kept
                return np.empty((0, *shape), dtype=np.uint8), status, None
            return arr, status, str(stem.with_suffix(".npy"))
    else:
        _check_memory(n, image_size, channels, why="the decoded-image cache is off (turn on Cache decoded images, "
                                                   "--cache, to train from a memory-mapped copy on disk)")
    started = time.monotonic()
    arr, status = _decode_into_memory(scan.files, image_size, channels, progress, cancel)
    logger.info("Decoded %d files of %s in %.1f s", n, display_path(scan.root), time.monotonic() - started)
    return arr, status, None


def _check_memory(n: int, image_size: int, channels: int, *, why: str) -> None:
    """Refuse up front to decode into memory a dataset that cannot fit in RAM, instead of swapping the machine
    to death. Only for in-memory decoding: the cache is memory-mapped and may be larger than RAM."""
    need = n * channels * image_size * image_size
    try:
        total_ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return
    if total_ram > 0 and need > total_ram // 2:
        raise DatasetError(
            f"{n:,} images at {image_size}x{image_size} need {need / 2**30:.1f} GiB of memory, "
            f"more than half of this computer's {total_ram / 2**30:.1f} GiB, and {why}; "
            "use a smaller image size or fewer images"
        )


def _describe(n: int, where: str, n_skipped: int, image_size: int, channels: int, n_classes: int) -> str:
    text = f"{n:,} images from {where}"
    if n_skipped:
        text += f" ({n_skipped:,} skipped)"
    text += f", {image_size}x{image_size} {'RGB' if channels == 3 else 'grayscale'}"
    if n_classes:
        text += f", {n_classes} classes"
    return text


def load_image_folder(
    root: str | os.PathLike[str],
    image_size: int,
    channels: int,
    *,
    cache_dir: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> ImageSet:
    """Every image under ``root``, decoded at ``image_size``: memory-mapped from the cache in ``cache_dir``
    (built first when it does not hold this folder yet), or decoded into memory without a cache; raises DatasetError.

    Each unusable file is logged once as a warning with its reason and listed in ``skipped``;
    files without an image extension are only summarised (folders often hold sidecar files).
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3 (got {channels})")
    if image_size < 1:
        raise ValueError(f"image_size must be positive (got {image_size})")
    scan = scan_image_folder(root)
    if not scan.files:
        raise DatasetError(_no_images_message(scan))
    arr, status, backing_file = _decode_folder(scan, image_size, channels, cache_dir, progress, cancel)

    bad = [SkippedFile(path, s) for path, s in zip(scan.files, status, strict=True) if isinstance(s, str)]
    ignored = 0
    for item in scan.skipped:
        if item.reason == NOT_AN_IMAGE_EXTENSION:
            ignored += 1
        else:
            logger.warning("Skipping %s: %s", item.display, item.reason)
    for item in bad:
        logger.warning("Skipping %s: %s", item.display, item.reason)
    if ignored:
        logger.info("Ignored %d files without an image extension in %s", ignored, display_path(scan.root))
    if arr.shape[0] == 0:
        first = bad[0]
        raise DatasetError(
            f"None of the {len(scan.files):,} files in {display_path(scan.root)} could be read "
            f"(first: {os.path.basename(first.display)}: {first.reason})"
        )

    labels = None
    if scan.class_names:
        index = {name: i for i, name in enumerate(scan.class_names)}
        labels = torch.tensor(
            [index[_top_folder(scan.root, p) or ""] for p, s in zip(scan.files, status, strict=True) if isinstance(s, int)],
            dtype=torch.int64,
        )
    skipped = tuple(sorted((*scan.skipped, *bad), key=lambda s: s.path))
    return ImageSet(
        images=_as_tensor(arr),
        labels=labels,
        class_names=scan.class_names,
        skipped=skipped,
        description=_describe(arr.shape[0], display_path(scan.root), len(skipped), image_size, channels, len(scan.class_names)),
        backing_file=backing_file,
    )


def _as_tensor(arr: np.ndarray) -> torch.Tensor:
    """A tensor over ``arr`` without a copy; a read-only memory map stays read-only (torch warns that it
    cannot mark a tensor read-only: the data set is only ever indexed, which copies)."""
    if arr.flags.writeable:
        return torch.from_numpy(np.ascontiguousarray(arr))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(arr)


# ---------------------------------------------------------------------------------------------
# Standard datasets (torchvision on-disk formats, never downloaded)

#: Shown by the GUI before loading CIFAR-10.


# Re-exported so callers keep one import for every image source.
