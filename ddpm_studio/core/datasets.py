"""Turn a folder of images (or an MNIST / Fashion-MNIST / CIFAR-10 download) into one in-memory tensor.

Training samples random batches thousands of times, so every image is decoded once, up front,
into a uint8 ``(N, C, H, W)`` tensor (4096 RGB images at 32x32 are 12 MB). Decoding a big
folder is the slow part, so the result can be cached on disk as ``.npy`` keyed by the file
list (names, sizes, mtimes) and the settings: the second start of a run is instant.

Folders come from users, so scanning never raises for a single odd entry: hidden files are
ignored, everything else that cannot become an image lands in ``skipped`` with a reason,
symlink loops are walked once, and FIFOs / sockets / devices are never opened.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import tempfile
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ddpm_studio.core.images import (
    IMAGE_EXTENSIONS,
    ImageDecodeError,
    describe_file_kind,
    display_path,
    load_image,
)

logger = logging.getLogger(__name__)

__all__ = [
    "CIFAR_PICKLE_WARNING",
    "DatasetError",
    "FolderScan",
    "ImageSet",
    "SkippedFile",
    "default_cache_dir",
    "display_path",
    "load_image_folder",
    "load_standard_dataset",
    "scan_image_folder",
]

#: Bump when the decoding rules change so old caches are not reused.
CACHE_FORMAT_VERSION = 1
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
    """A whole dataset in memory, ready for random batches."""

    images: torch.Tensor
    labels: torch.Tensor | None
    class_names: tuple[str, ...]
    skipped: tuple[SkippedFile, ...]
    description: str

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
    if not os.access(root, os.R_OK | os.X_OK):
        raise DatasetError(f"Cannot open {display_path(root)}: permission denied")


def scan_image_folder(
    root: str | os.PathLike[str], *, max_files: int | None = None, follow_symlinks: bool = True
) -> FolderScan:
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


def _cache_key(scan: FolderScan, image_size: int, channels: int) -> str:
    """Hash of everything that decides the decoded array; any change means a fresh decode."""
    entries = []
    for path in scan.files:
        try:
            st = os.stat(path)
            entries.append([display_path(os.path.relpath(path, scan.root)), st.st_size, st.st_mtime_ns])
        except OSError:
            entries.append([display_path(os.path.relpath(path, scan.root)), -1, -1])
    blob = json.dumps(
        {
            "version": CACHE_FORMAT_VERSION,
            "root": display_path(os.path.realpath(scan.root)),
            "image_size": image_size,
            "channels": channels,
            "files": entries,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:40]


def _atomic_write(target: Path, write: Callable[[Path], None]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_cache(
    cache_dir: Path, key: str, n_files: int, shape: tuple[int, int, int]
) -> tuple[np.ndarray, list[int | str]] | None:
    """(images, per-file status) from the cache, or None when absent or unusable."""
    meta_path, npy_path = cache_dir / f"{key}.json", cache_dir / f"{key}.npy"
    if not meta_path.is_file() or not npy_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        status = meta["status"]
        arr = np.load(npy_path, allow_pickle=False)
        n_kept = sum(1 for s in status if isinstance(s, int))
        if meta.get("version") != CACHE_FORMAT_VERSION or len(status) != n_files:
            raise ValueError("cache metadata does not match the folder")
        if arr.dtype != np.uint8 or arr.shape != (n_kept, *shape):
            raise ValueError(f"cached array has shape {arr.shape} {arr.dtype}")
        return arr, status
    except (OSError, ValueError, KeyError, TypeError, EOFError) as exc:
        logger.info("Ignoring unusable dataset cache %s (%s); decoding again", display_path(npy_path), exc)
        return None


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with path.open("wb") as f:
        np.save(f, arr, allow_pickle=False)


def _write_cache(cache_dir: Path, key: str, arr: np.ndarray, status: list[int | str]) -> None:
    """Best effort: a read-only or full cache folder only costs speed next time."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write(cache_dir / f"{key}.npy", lambda p: _save_npy(p, arr))
        meta = json.dumps({"version": CACHE_FORMAT_VERSION, "status": status})
        _atomic_write(cache_dir / f"{key}.json", lambda p: p.write_text(meta, encoding="utf-8"))
    except OSError as exc:
        logger.warning("Could not write the dataset cache in %s: %s", display_path(cache_dir), exc.strerror or exc)


def _decode_all(
    files: tuple[str, ...],
    image_size: int,
    channels: int,
    progress: Callable[[int, int], None] | None,
    cancel: Callable[[], bool] | None,
) -> tuple[np.ndarray, list[int | str]]:
    """Decode in a small thread pool, in file order. status[i] = row of file i, or its error."""
    total = len(files)
    out = np.empty((total, channels, image_size, image_size), dtype=np.uint8)
    status: list[int | str] = []
    kept = 0

    def one(path: str) -> np.ndarray | str:
        try:
            return load_image(path, image_size, channels)
        except ImageDecodeError as exc:
            return str(exc)

    workers = max(1, min(_MAX_WORKERS, os.cpu_count() or 1, total))
    window: deque[Future[np.ndarray | str]] = deque()  # bounded, so cancel is quick
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
                    out[kept] = result
                    status.append(kept)
                    kept += 1
                now = time.monotonic()
                if progress is not None and (now - last_report >= 0.1 or done == total):
                    last_report = now
                    progress(done, total)
        finally:
            for fut in window:
                fut.cancel()
    return (out if kept == total else out[:kept].copy()), status


def _check_memory(n: int, image_size: int, channels: int) -> None:
    """Refuse up front a dataset that cannot fit in RAM, instead of swapping the machine to death."""
    need = n * channels * image_size * image_size
    try:
        total_ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return
    if total_ram > 0 and need > total_ram // 2:
        raise DatasetError(
            f"{n:,} images at {image_size}x{image_size} need {need / 2**30:.1f} GiB of memory, "
            f"more than half of this computer's {total_ram / 2**30:.1f} GiB; use a smaller image size or fewer images"
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
    """Decode every image under ``root`` into memory (or reuse the cache); raises DatasetError.

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
    _check_memory(len(scan.files), image_size, channels)

    cached = None
    key = ""
    if cache_dir is not None:
        key = _cache_key(scan, image_size, channels)
        cached = _read_cache(Path(cache_dir), key, len(scan.files), (channels, image_size, image_size))
    if cached is not None:
        arr, status = cached
        logger.info("Loaded %d decoded images of %s from the cache", arr.shape[0], display_path(scan.root))
        if progress is not None:
            progress(len(scan.files), len(scan.files))
    else:
        started = time.monotonic()
        arr, status = _decode_all(scan.files, image_size, channels, progress, cancel)
        logger.info("Decoded %d files of %s in %.1f s", len(scan.files), display_path(scan.root), time.monotonic() - started)
        if cache_dir is not None and arr.shape[0] > 0:
            _write_cache(Path(cache_dir), key, arr, status)

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
        images=torch.from_numpy(np.ascontiguousarray(arr)),
        labels=labels,
        class_names=scan.class_names,
        skipped=skipped,
        description=_describe(arr.shape[0], display_path(scan.root), len(skipped), image_size, channels, len(scan.class_names)),
    )


# ---------------------------------------------------------------------------------------------
# Standard datasets (torchvision on-disk formats, never downloaded)

#: Shown by the GUI before loading CIFAR-10.
CIFAR_PICKLE_WARNING = (
    "CIFAR-10 batches are Python pickle files, and loading a pickle can run arbitrary code. "
    "Only use files extracted from the official cifar-10-python.tar.gz; torchvision checks their "
    "MD5 checksums against the official release before unpickling them."
)

_KIND_ALIASES = {
    "mnist": "mnist",
    "fashion_mnist": "fashion_mnist",
    "fashionmnist": "fashion_mnist",
    "cifar10": "cifar10",
    "cifar_10": "cifar10",
}
_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_CIFAR_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch", "batches.meta")


def _mnist_root(root: Path, folder: str) -> Path:
    """Accept the parent of ``<folder>/raw`` (torchvision's layout) or that folder itself."""
    for candidate in (root, root.parent, root.parent.parent):
        if (candidate / folder / "raw").is_dir():
            return candidate
    return root


def _resize_batch(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """Antialiased bilinear resize of a uint8 batch, in chunks to bound the float copy."""
    chunks = []
    for start in range(0, images.shape[0], 4096):
        x = images[start : start + 4096].to(torch.float32)
        x = torch.nn.functional.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True)
        chunks.append(x.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(chunks).contiguous()


def load_standard_dataset(
    kind: str, root: str | os.PathLike[str], image_size: int | None = None, *, train: bool = True
) -> ImageSet:
    """MNIST / Fashion-MNIST (1 channel, padded 28 -> 32 with 0) or CIFAR-10 (RGB 32x32) from disk.

    Files are read through ``torchvision.datasets`` with ``download=False``. CIFAR-10 batches are
    Python pickles (see :data:`CIFAR_PICKLE_WARNING`). ``image_size`` other than 32 resizes.
    """
    name = _KIND_ALIASES.get(kind.lower().replace("-", "_"))
    if name is None:
        raise DatasetError(f"Unknown dataset {kind!r}; choose one of mnist, fashion_mnist, cifar10")
    if root is None or not os.fspath(root):
        raise DatasetError("Choose the folder that holds the dataset files")
    base = Path(os.fspath(root)).expanduser()
    split = "training" if train else "test"
    import torchvision

    try:
        if name == "cifar10":
            label = "CIFAR-10"
            if base.name == "cifar-10-batches-py":
                base = base.parent
            try:
                ds = torchvision.datasets.CIFAR10(str(base), train=train, download=False)
            except RuntimeError:
                raise DatasetError(
                    f"CIFAR-10 files not found in {display_path(base)}: torchvision expects the folder "
                    f"{display_path(base / 'cifar-10-batches-py')} with {', '.join(_CIFAR_FILES)} "
                    "(extract cifar-10-python.tar.gz there; the files must match the official MD5 checksums)"
                ) from None
            images = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
            labels = torch.as_tensor(ds.targets, dtype=torch.int64)
        else:
            label = "MNIST" if name == "mnist" else "Fashion-MNIST"
            cls = torchvision.datasets.MNIST if name == "mnist" else torchvision.datasets.FashionMNIST
            folder = cls.__name__
            base = _mnist_root(base, folder)
            try:
                ds = cls(str(base), train=train, download=False)
            except RuntimeError:
                raise DatasetError(
                    f"{label} files not found in {display_path(base)}: torchvision expects "
                    f"{', '.join(_MNIST_FILES)} in {display_path(base / folder / 'raw')} "
                    "(uncompressed: gunzip the .gz downloads)"
                ) from None
            # Pad 28x28 to 32x32 with the background value 0 (-1 after scaling), like the DDPM seeds.
            images = torch.nn.functional.pad(ds.data.to(torch.uint8), (2, 2, 2, 2), value=0).unsqueeze(1).contiguous()
            labels = ds.targets.to(torch.int64)
        class_names = tuple(str(c) for c in ds.classes)
    except DatasetError:
        raise
    except Exception as exc:  # torchvision's readers assert / raise on malformed files
        raise DatasetError(f"Could not read the {kind} files in {display_path(base)}: {type(exc).__name__}: {exc}") from exc

    if image_size is not None and image_size != images.shape[-1]:
        images = _resize_batch(images, image_size)
    size, channels = images.shape[-1], images.shape[1]
    description = (
        f"{images.shape[0]:,} {label} {split} images from {display_path(base)}, "
        f"{size}x{size} {'RGB' if channels == 3 else 'grayscale'}, {len(class_names)} classes"
    )
    return ImageSet(images=images, labels=labels, class_names=class_names, skipped=(), description=description)
