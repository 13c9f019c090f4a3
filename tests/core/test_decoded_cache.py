"""The decoded cache as a memory map: built by streaming, never holding the folder; larger-than-RAM folders train."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ddpm_studio.core import datasets, decoded_cache
from ddpm_studio.core.datasets import DatasetError, load_image_folder
from ddpm_studio.services.batches import images_to_batch


def write_pngs(root: Path, n: int, size: int = 8, bad: tuple[int, ...] = ()) -> None:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        if i in bad:
            (root / f"{i:05d}.png").write_bytes(b"not a png")
        else:
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / f"{i:05d}.png")


def npy_files(cache: Path) -> list[Path]:
    return sorted(cache.glob("*.npy"))


def test_the_cache_is_memory_mapped_and_equals_decoding_into_memory(tmp_path: Path) -> None:
    root, cache = tmp_path / "imgs", tmp_path / "cache"
    write_pngs(root, 30, bad=(3, 17))
    in_memory = load_image_folder(root, 8, 3)
    built = load_image_folder(root, 8, 3, cache_dir=cache)
    again = load_image_folder(root, 8, 3, cache_dir=cache)
    assert in_memory.backing_file is None
    assert built.backing_file == again.backing_file == str(npy_files(cache)[0])
    for loaded in (built, again):
        assert torch.equal(loaded.images, in_memory.images) and loaded.skipped == in_memory.skipped
        assert loaded.description == in_memory.description
    # The header written for 30 files was rewritten for the 28 kept rows; numpy reads the file as its own.
    mapped = np.load(npy_files(cache)[0], mmap_mode="r")
    assert isinstance(mapped, np.memmap) and mapped.shape == (28, 3, 8, 8)
    assert npy_files(cache)[0].stat().st_size == 128 + 28 * 3 * 8 * 8
    assert not list(cache.glob(".*"))  # no temp files left


def test_building_the_cache_never_holds_the_folder_in_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """600 images of 3 KB (1.8 MB decoded): the build's peak of Python/numpy allocations stays at the write buffer
    (8 rows here) plus the decode window, and training's batches come from the map."""
    root, cache = tmp_path / "imgs", tmp_path / "cache"
    write_pngs(root, 600, size=32)
    monkeypatch.setattr(decoded_cache, "WRITE_BUFFER_BYTES", 8 * 3 * 32 * 32)
    tracemalloc.start()
    try:
        data = load_image_folder(root, 32, 3, cache_dir=cache)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(data) == 600 and data.backing_file is not None
    decoded = 600 * 3 * 32 * 32
    assert peak < decoded / 3, f"peak {peak} bytes while building a {decoded}-byte cache"
    idx = torch.tensor([599, 0, 5, 5, 300])
    flip = torch.tensor([True, False, False, True, False])
    batch = images_to_batch(data.images, idx, flip, torch.device("cpu"))
    expected = data.images.clone()[idx].float() / 127.5 - 1
    expected[flip] = expected[flip].flip(-1)
    assert torch.allclose(batch, expected)


def test_a_folder_larger_than_memory_trains_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, cache = tmp_path / "imgs", tmp_path / "cache"
    write_pngs(root, 12)
    real_sysconf = os.sysconf
    monkeypatch.setattr(os, "sysconf", lambda name: 1 if name == "SC_PHYS_PAGES" else real_sysconf(name))  # one page of RAM
    data = load_image_folder(root, 16, 3, cache_dir=cache)  # 9 KB > half of "RAM": fine, it is mapped
    assert len(data) == 12 and data.backing_file is not None
    with pytest.raises(DatasetError, match=r"more than half of this computer's .* and the decoded-image cache is off "
                                           r"\(turn on Cache decoded images, --cache"):
        load_image_folder(root, 16, 3)


def test_no_room_for_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    root, cache = tmp_path / "imgs", tmp_path / "cache"
    write_pngs(root, 5)
    monkeypatch.setattr(decoded_cache.shutil, "disk_usage", lambda p: _Usage(1000))
    data = load_image_folder(root, 8, 3, cache_dir=cache)  # fits in memory: decoded there, with a warning
    assert len(data) == 5 and data.backing_file is None and not npy_files(cache)
    assert any("Could not write the dataset cache" in r.getMessage() and "GiB free" in r.getMessage()
               for r in caplog.records if r.levelno == logging.WARNING)
    real_sysconf = os.sysconf
    monkeypatch.setattr(os, "sysconf", lambda name: 1 if name == "SC_PHYS_PAGES" else real_sysconf(name))
    with pytest.raises(DatasetError, match=r"more than half .* and the decoded-image cache cannot be used \(.*GiB free"):
        load_image_folder(root, 16, 3, cache_dir=cache)


class _Usage:
    def __init__(self, free: int) -> None:
        self.free = free


def test_disk_full_during_the_build_leaves_no_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, cache = tmp_path / "imgs", tmp_path / "cache"
    write_pngs(root, 40)
    monkeypatch.setattr(decoded_cache, "WRITE_BUFFER_BYTES", 4 * 192)
    real = decoded_cache._RowWriter._flush
    calls = []

    def full(self: decoded_cache._RowWriter) -> None:
        calls.append(1)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real(self)

    monkeypatch.setattr(decoded_cache._RowWriter, "_flush", full)
    data = load_image_folder(root, 8, 3, cache_dir=cache)  # falls back to memory
    assert len(data) == 40 and data.backing_file is None
    assert not list(cache.iterdir())  # neither a partial entry nor a temp file


def test_a_cancelled_or_killed_build_leaves_nothing_behind(tmp_path: Path) -> None:
    root, cache = tmp_path / "imgs", tmp_path / "cache"
    write_pngs(root, 60)
    calls = []
    with pytest.raises(DatasetError, match="cancelled"):
        load_image_folder(root, 8, 3, cache_dir=cache, cancel=lambda: bool(calls.append(1)) or len(calls) > 20)
    assert not list(cache.iterdir())
    # A build killed mid-way leaves its temp file, named with its pid: the next build removes it, not a live one's.
    stem = decoded_cache.entry_stem(cache, str(root), datasets.scan_image_folder(root).files, 8, 3)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    killed = cache / f".{stem.name}.npy.{int(dead.stdout)}.abc123.tmp"
    live = cache / f".{stem.name}.npy.{os.getpid()}.def456.tmp"
    for path in (killed, live):
        path.write_bytes(b"partial")
    assert load_image_folder(root, 8, 3, cache_dir=cache).backing_file is not None
    assert not killed.exists() and live.exists()


def test_a_truncated_or_foreign_cache_file_is_decoded_again(tmp_path: Path) -> None:
    root, cache = tmp_path / "imgs", tmp_path / "cache"
    write_pngs(root, 10)
    expected = load_image_folder(root, 8, 3).images
    load_image_folder(root, 8, 3, cache_dir=cache)  # (its map is dropped at once: the file is cut below)
    npy = npy_files(cache)[0]
    for damage in (lambda: npy.write_bytes(npy.read_bytes()[:-100]),  # cut short
                   lambda: np.save(npy, np.zeros((10, 3, 8, 8), dtype=np.float32)),  # another dtype
                   lambda: np.save(npy, np.asfortranarray(np.zeros((10, 3, 8, 8), dtype=np.uint8)))):  # Fortran order
        damage()
        again = load_image_folder(root, 8, 3, cache_dir=cache)
        assert torch.equal(again.images, expected) and again.backing_file == str(npy)
        del again
    assert decoded_cache.map_npy(npy).shape == (10, 3, 8, 8)


def test_all_files_bad_with_the_cache(tmp_path: Path) -> None:
    root, cache = tmp_path / "imgs", tmp_path / "cache"
    write_pngs(root, 3, bad=(0, 1, 2))
    with pytest.raises(DatasetError, match=r"None of the 3 files in .* could be read \(first: 00000.png: "):
        load_image_folder(root, 8, 3, cache_dir=cache)
    assert not list(cache.iterdir())


def test_npy_header_matches_numpy() -> None:
    import io

    for shape in [(0, 1, 4, 4), (28, 3, 8, 8), (100_000, 3, 64, 64), (10**9, 3, 256, 256)]:
        ref = io.BytesIO()
        np.lib.format.write_array_header_1_0(ref, {"descr": "|u1", "fortran_order": False, "shape": shape})
        assert decoded_cache.npy_header(shape) == ref.getvalue()
    assert len(decoded_cache.npy_header((7, 3, 8, 8), size=256)) == 256
    with pytest.raises(ValueError):
        decoded_cache.npy_header((7, 3, 8, 8), size=64)  # too small for the text
