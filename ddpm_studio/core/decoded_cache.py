"""The decoded-image cache: a folder's images decoded once into a ``.npy`` file, then memory-mapped for training.

Why a file that is mapped rather than an array in memory: training draws random batches thousands of
times, so every image is decoded once, up front. Kept in a file that the process maps read-only, the
decoded set may be larger than RAM: the operating system pages in the rows a batch touches and keeps the
recently used ones in its page cache, whose pages are clean copies of the file that it drops under memory
pressure instead of swapping. The processes of a torchrun job on one machine map the same file, so they
share one copy. On a set that fits in memory, the pages stay cached and a batch reads at memory speed.

An entry is ``<source>-<key>.npy`` (uint8, ``(N, C, H, W)``) and ``<source>-<key>.json`` (for each file of the
folder, the row it became or why it was skipped), each written atomically, the ``.json`` last: it marks the
entry complete. The key covers the file list (names, sizes, mtimes) and the settings, so any change to the
folder makes a new entry, and older entries of the same folder are then deleted.

Building streams: each decoded image is appended to a temp ``.npy`` through a buffer of a few MB, so memory
stays bounded however large the folder. Files that fail to decode are skipped, so the rows written are the
kept images in order; the header, written first with the number of files, is rewritten with the number of
rows at the end (same length, padded). A killed build leaves only a temp file (named with its pid), which
the next build removes.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ddpm_studio.core.atomic import atomic_output, atomic_write, remove_stale_temp_files
from ddpm_studio.core.images import display_path

logger = logging.getLogger(__name__)

#: Bump when the decoding rules change so old caches are not reused.
CACHE_FORMAT_VERSION = 1
#: Rows are written to disk in chunks of about this many bytes (the build's only buffer of images).
WRITE_BUFFER_BYTES = 4 * 2**20
#: Free space left over on the cache's disk beyond the entry itself, so the build does not fill it.
DISK_MARGIN_BYTES = 256 * 2**20

_NPY_MAGIC = b"\x93NUMPY\x01\x00"  # format version 1.0: a 2-byte little-endian header length follows

Status = list[int | str]  # per file: its row, or why it was skipped
AddRow = Callable[[np.ndarray], None]


class CacheUnavailable(Exception):
    """The cache cannot be written here (no room, read-only, gone); ``str(err)`` says why."""


def entry_stem(cache_dir: str | Path, root: str, files: tuple[str, ...], image_size: int, channels: int) -> Path:
    """``cache_dir/<source>-<key>`` for this folder, file list and settings (add ``.npy`` / ``.json``).

    The source names the folder + settings, the key also its files: any added, removed, resized or touched
    file changes the key; entries of the same source with an older key are stale and deleted on the next build.
    """
    source = json.dumps([CACHE_FORMAT_VERSION, os.path.realpath(root), image_size, channels])
    entries = []
    for path in files:
        try:
            st = os.stat(path)
            entries.append([os.path.relpath(path, root), st.st_size, st.st_mtime_ns])
        except OSError:
            entries.append([os.path.relpath(path, root), -1, -1])
    # json.dumps escapes lone surrogates (non-UTF-8 names), so encoding cannot fail.
    content = json.dumps([source, entries])
    name = (hashlib.sha256(source.encode("utf-8")).hexdigest()[:16] + "-"
            + hashlib.sha256(content.encode("utf-8")).hexdigest()[:32])
    return Path(cache_dir) / name


def read(stem: Path, n_files: int, shape: tuple[int, int, int]) -> tuple[np.ndarray, Status] | None:
    """(read-only memory map of the images, per-file status) of a complete entry, or None when absent or unusable."""
    meta_path, npy_path = stem.with_suffix(".json"), stem.with_suffix(".npy")
    if not meta_path.is_file() or not npy_path.is_file():
        return None
    try:
        status = json.loads(meta_path.read_text(encoding="utf-8"))["status"]
        rows = [s for s in status if not isinstance(s, str)]
        if len(status) != n_files or rows != list(range(len(rows))):
            raise ValueError("metadata does not match the folder")
        arr = map_npy(npy_path)
        if arr.dtype != np.uint8 or arr.shape != (len(rows), *shape):
            raise ValueError(f"array is {arr.dtype} {arr.shape}")
        return arr, status
    except (OSError, ValueError, KeyError, TypeError, EOFError) as exc:
        logger.info("Ignoring unusable dataset cache %s (%s); decoding again", display_path(npy_path), exc)
        return None


def map_npy(path: str | Path) -> np.ndarray:
    """A read-only memory map of the C-ordered array in a ``.npy`` file (``np.load(path, mmap_mode="r")``, which
    would also map a Fortran-ordered one); ValueError for a file that is not a complete ``.npy`` of that kind.

    No ``madvise``: MADV_RANDOM was tried (training reads rows in random order). It left 19 MB of a 1.2 GB
    cache mapped after 1,200 random rows instead of 85-93 MB, but on a set that fits in memory the first,
    cold epoch read 3x slower (33 vs 10 ms per batch of 32 at 64 px, benchmarks/big_dataset.py), because the
    default read-around loads the file in large chunks; on a set larger than memory the kernel itself stops
    reading around a mapping after repeated misses.
    """
    import mmap

    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(fh)
        if fortran_order or dtype.hasobject:
            raise ValueError("not a C-ordered array of plain numbers")
        offset = fh.tell()
        mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)  # keeps its own handle on the file
    count = int(np.prod(shape))
    return np.frombuffer(mapped, dtype=dtype, count=count, offset=offset).reshape(shape)  # too short: ValueError


def build(stem: Path, n_files: int, shape: tuple[int, int, int],
          decode: Callable[[AddRow], Status]) -> tuple[np.ndarray | None, Status]:
    """Write a new entry from ``decode(add_row)`` (which calls ``add_row`` once per kept image, in order, and
    returns the per-file status); then (the entry memory-mapped, the status). No entry is kept when no image
    could be decoded: then the array is None.

    Raises :class:`CacheUnavailable` when the entry cannot be written (the caller may decode into memory
    instead); errors of ``decode`` itself (a cancel) propagate, leaving no file behind.
    """
    folder = stem.parent
    row_bytes = int(np.prod(shape))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in remove_stale_temp_files(folder, f".{stem.name.split('-')[0]}-*.tmp"):
            logger.info("Removed %s, left by an interrupted cache build", stale.name)
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        raise CacheUnavailable(f"cannot use {display_path(folder)}: {exc.strerror or exc}") from exc
    need = n_files * row_bytes
    if free < need + DISK_MARGIN_BYTES:
        raise CacheUnavailable(f"{display_path(folder)} has {free / 2**30:.1f} GiB free and the decoded images need "
                               f"{need / 2**30:.1f} GiB")
    status: Status = []
    try:
        with atomic_output(stem.with_suffix(".npy")) as fh:
            writer = _RowWriter(fh, n_files, shape)
            status = decode(writer.add)
            if writer.finish() == 0:
                raise _NothingKept
        meta = json.dumps({"status": status}).encode("utf-8")
        atomic_write(stem.with_suffix(".json"), lambda f: f.write(meta))  # written last: marks the entry complete
    except _NothingKept:
        return None, status
    except OSError as exc:
        stem.with_suffix(".npy").unlink(missing_ok=True)
        what = "the disk is full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        raise CacheUnavailable(f"cannot write the decoded images to {display_path(folder)}: {what}") from exc
    _delete_older_entries(stem)
    cached = read(stem, n_files, shape)
    if cached is None:
        raise CacheUnavailable(f"the decoded images written to {display_path(folder)} cannot be read back")
    return cached


class _NothingKept(Exception):
    pass


def _delete_older_entries(stem: Path) -> None:
    """Entries of the same folder and settings with another key are stale. Best effort (a mapped file on
    Windows cannot be deleted while another process uses it; it goes at a later build)."""
    source = stem.name.split("-")[0]
    for old in stem.parent.glob(f"{source}-*"):
        if old.stem != stem.name and not old.name.startswith("."):
            try:
                old.unlink(missing_ok=True)
            except OSError as exc:
                logger.info("Could not delete the stale cache file %s: %s", display_path(old), exc.strerror or exc)


def npy_header(shape: tuple[int, ...], size: int | None = None) -> bytes:
    """A ``.npy`` (format 1.0) header for a C-ordered uint8 array of ``shape``.

    ``size`` pads it to exactly that many bytes (to rewrite a header in place with a smaller row count);
    by default it is padded to a multiple of 64, as numpy does, so the data that follows is aligned.
    """
    dims = tuple(int(d) for d in shape)
    text = "{'descr': '|u1', 'fortran_order': False, 'shape': " + repr(dims) + ", }"
    body = len(text) + 1  # + the closing newline
    if size is None:
        size = -(-(len(_NPY_MAGIC) + 2 + body) // 64) * 64
    pad = size - len(_NPY_MAGIC) - 2 - body
    if pad < 0 or size - len(_NPY_MAGIC) - 2 > 0xFFFF:
        raise ValueError(f"a header for {shape} does not fit in {size} bytes")
    return _NPY_MAGIC + struct.pack("<H", size - len(_NPY_MAGIC) - 2) + text.encode("latin-1") + b" " * pad + b"\n"


class _RowWriter:
    """Appends uint8 rows of one shape to an open ``.npy`` file through a small buffer."""

    def __init__(self, fh: BinaryIO, capacity: int, shape: tuple[int, int, int]) -> None:
        self.fh, self.capacity, self.shape = fh, capacity, shape
        self.header_size = len(header := npy_header((capacity, *shape)))
        fh.write(header)
        row_bytes = int(np.prod(shape))
        self.buffer = np.empty((max(1, min(capacity, WRITE_BUFFER_BYTES // row_bytes)), *shape), dtype=np.uint8)
        self.filled = 0
        self.rows = 0

    def add(self, row: np.ndarray) -> None:
        if self.rows + self.filled >= self.capacity:
            raise ValueError("more rows than the cache entry was made for")
        self.buffer[self.filled] = row
        self.filled += 1
        if self.filled == len(self.buffer):
            self._flush()

    def _flush(self) -> None:
        if self.filled:
            self.fh.write(memoryview(self.buffer[: self.filled]).cast("B"))
            self.rows += self.filled
            self.filled = 0

    def finish(self) -> int:
        """Write what is buffered and fix the header's row count; returns the number of rows."""
        self._flush()
        if self.rows != self.capacity:
            self.fh.seek(0)
            self.fh.write(npy_header((self.rows, *self.shape), size=self.header_size))
            self.fh.seek(0, os.SEEK_END)
        return self.rows
