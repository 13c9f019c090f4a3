"""Folder scanning, whole-folder loading, the decode cache and the standard datasets."""

from __future__ import annotations

import logging
import os
import pickle
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ddpm_studio.core import datasets
from ddpm_studio.core.datasets import (
    DatasetError,
    ImageSet,
    default_cache_dir,
    load_image_folder,
    scan_image_folder,
)
from ddpm_studio.core.standard_datasets import CIFAR_PICKLE_WARNING, load_standard_dataset
from tests.core.test_images import NON_UTF8_NAME, NON_UTF8_OK, bad_files, good_files, run_with_timeout, write_files

LOGGER = "ddpm_studio.core.datasets"


def save_png(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (8, 8)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def symlink(target: str | Path, link: Path) -> bool:
    """Create a symlink where the OS allows it (Windows needs a privilege)."""
    try:
        os.symlink(target, link)
    except (OSError, NotImplementedError):
        return False
    return True


@pytest.fixture()
def hostile(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """Good files of every kind plus every kind of bad entry; returns (root, {bad name: reason})."""
    root = tmp_path / "hostile"
    write_files(root, good_files())
    expected = {name: reason for name, (_, reason) in bad_files().items()}
    write_files(root, {name: data for name, (data, _) in bad_files().items()})
    (root / "readme.txt").write_text("not an image")
    expected["readme.txt"] = "not an image extension"
    (root / ".DS_Store").write_bytes(b"\0\1")
    save_png(root / ".hidden" / "ignored.png", (0, 0, 0))
    (root / "sub").mkdir()
    save_png(root / "sub" / "nested.png", (0, 255, 0))
    symlink("..", root / "sub" / "loop")  # dir symlink to its parent
    if symlink(root / "missing.png", root / "broken.png"):
        expected["broken.png"] = "broken symbolic link"
    if hasattr(os, "mkfifo"):
        os.mkfifo(root / "pipe.png")
        expected["pipe.png"] = "named pipe"
    return root, expected


def reasons_by_name(items: tuple[datasets.SkippedFile, ...]) -> dict[str, str]:
    return {os.path.basename(s.path): s.reason for s in items}


# --------------------------------------------------------------------------- scanning


def test_scan_hostile_folder(hostile: tuple[Path, dict[str, str]]) -> None:
    root, _ = hostile
    scan = run_with_timeout(lambda: scan_image_folder(root), 10)
    assert isinstance(scan, datasets.FolderScan)
    names = [os.path.relpath(f, root) for f in scan.files]
    assert names == sorted(names)
    assert "sub/nested.png" in names and not any(".hidden" in n or "loop" in n for n in names)
    assert NON_UTF8_NAME in names or not NON_UTF8_OK
    skipped = reasons_by_name(scan.skipped)
    assert skipped["readme.txt"] == "not an image extension"
    assert skipped.get("broken.png", "broken symbolic link") == "broken symbolic link"
    if hasattr(os, "mkfifo"):
        assert "named pipe" in skipped["pipe.png"]
    assert ".DS_Store" not in skipped
    assert scan.class_names == ()  # images at the top level
    assert scan == scan_image_folder(root)  # deterministic


def test_scan_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        scan_image_folder(tmp_path / "missing")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(DatasetError, match="is not a folder"):
        scan_image_folder(tmp_path / "file.png")


def test_scan_max_files_and_no_follow(tmp_path: Path) -> None:
    for i in range(5):
        save_png(tmp_path / f"{i}.png", (0, 0, 0))
    save_png(tmp_path / "elsewhere" / "x.png", (0, 0, 0))
    if not symlink(tmp_path / "elsewhere", tmp_path / "linked"):
        pytest.skip("no symlinks here")
    assert len(scan_image_folder(tmp_path, max_files=3).files) == 3
    followed = {os.path.relpath(f, tmp_path) for f in scan_image_folder(tmp_path).files}
    assert "elsewhere/x.png" in followed and "linked/x.png" not in followed  # same real folder, walked once
    plain = {os.path.relpath(f, tmp_path) for f in scan_image_folder(tmp_path, follow_symlinks=False).files}
    assert "linked/x.png" not in plain


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root can read any folder")
def test_scan_unreadable_subfolder(tmp_path: Path) -> None:
    save_png(tmp_path / "ok.png", (0, 0, 0))
    locked = tmp_path / "locked"
    save_png(locked / "x.png", (0, 0, 0))
    locked.chmod(0)
    try:
        scan = scan_image_folder(tmp_path)
    finally:
        locked.chmod(0o755)
    assert reasons_by_name(scan.skipped)["locked"].startswith("permission denied")


def test_scan_unreadable_subfolder_monkeypatched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_png(tmp_path / "ok.png", (0, 0, 0))
    save_png(tmp_path / "locked" / "x.png", (0, 0, 0))
    real_scandir = os.scandir

    def deny(path: str) -> object:
        if os.path.basename(path) == "locked":
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", deny)
    scan = scan_image_folder(tmp_path)
    assert [os.path.basename(f) for f in scan.files] == ["ok.png"]
    assert reasons_by_name(scan.skipped) == {"locked": "permission denied (folder)"}
    with pytest.raises(DatasetError, match=r"^Cannot open .*locked: permission denied$"):
        load_image_folder(tmp_path / "locked", 8, 3)


def test_display_path_never_raises() -> None:
    text = datasets.display_path(os.path.join("/x", NON_UTF8_NAME))
    assert text.encode("utf-8") and text.endswith("caf\ufffd.png")
    assert datasets.SkippedFile(NON_UTF8_NAME, "r").display == "caf\ufffd.png"


# --------------------------------------------------------------------------- loading


def test_load_hostile_folder(hostile: tuple[Path, dict[str, str]], caplog: pytest.LogCaptureFixture) -> None:
    root, expected = hostile
    caplog.set_level(logging.INFO, logger=LOGGER)
    result = run_with_timeout(lambda: load_image_folder(root, 16, 3), 30)
    assert isinstance(result, ImageSet)
    n_good = len(good_files()) + 1  # + sub/nested.png
    assert result.images.shape == (n_good, 3, 16, 16) and result.images.dtype == torch.uint8
    assert result.images.is_contiguous() and len(result) == n_good
    assert result.labels is None and result.class_names == ()
    skipped = reasons_by_name(result.skipped)
    assert set(skipped) == set(expected)
    for name, reason in expected.items():
        assert reason in skipped[name], (name, skipped[name])
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    for name in expected:
        shown = [r for r in warnings if datasets.display_path(name) in r.getMessage()]
        assert len(shown) == (0 if name == "readme.txt" else 1), (name, [r.getMessage() for r in warnings])
    assert len(warnings) == len(expected) - 1
    assert result.description.startswith(f"{n_good} images from ")
    assert f"({len(expected)} skipped), 16x16 RGB" in result.description
    batch = result.to_float(torch.arange(3))
    assert batch.dtype == torch.float32 and batch.min() >= -1 and batch.max() <= 1


def test_unreadable_file_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    save_png(tmp_path / "a.png", (255, 0, 0))
    save_png(tmp_path / "b.png", (255, 0, 0))
    real_open = os.open

    def deny(p: object, *args: object, **kwargs: object) -> int:
        if str(p).endswith("b.png"):
            raise PermissionError(13, "Permission denied", str(p))
        return real_open(p, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", deny)
    result = load_image_folder(tmp_path, 8, 3)
    assert len(result) == 1
    assert reasons_by_name(result.skipped) == {"b.png": "permission denied"}
    assert sum("b.png: permission denied" in r.getMessage() for r in caplog.records) == 1


def test_empty_and_all_bad_folders(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match=r"No images found in .*empty: the folder is empty"):
        load_image_folder(empty, 8, 3)
    text_only = tmp_path / "text"
    text_only.mkdir()
    (text_only / "a.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"No images found in .*none of its 1 entries is an image file"):
        load_image_folder(text_only, 8, 3)
    bad = tmp_path / "bad"
    write_files(bad, {name: data for name, (data, _) in bad_files().items()})
    with pytest.raises(DatasetError, match=r"None of the 5 files in .*bad could be read \(first: bomb.png: image too large"):
        load_image_folder(bad, 8, 3)
    with pytest.raises(DatasetError, match="does not exist"):
        load_image_folder(tmp_path / "nope", 8, 3)


def test_class_subfolders_give_labels(tmp_path: Path) -> None:
    save_png(tmp_path / "dogs" / "1.png", (0, 0, 255))
    save_png(tmp_path / "dogs" / "deeper" / "2.png", (0, 0, 255))
    save_png(tmp_path / "cats" / "1.png", (255, 0, 0))
    (tmp_path / "cats" / "broken.png").write_bytes(b"")
    (tmp_path / "empty_class").mkdir()
    result = load_image_folder(tmp_path, 8, 3)
    assert result.class_names == ("cats", "dogs")
    assert result.labels is not None and result.labels.tolist() == [0, 1, 1]
    assert result.images[:, 0, 0, 0].tolist() == [255, 0, 0]  # labels follow the kept images
    assert "3 images" in result.description and "2 classes" in result.description
    save_png(tmp_path / "top.png", (0, 0, 0))
    assert load_image_folder(tmp_path, 8, 3).labels is None  # mixed layout: no classes


def test_single_class_folder_has_no_labels(tmp_path: Path) -> None:
    save_png(tmp_path / "only" / "1.png", (0, 0, 255))
    result = load_image_folder(tmp_path, 8, 1)
    assert result.class_names == () and result.labels is None and result.images.shape == (1, 1, 8, 8)


def test_progress_and_cancel(tmp_path: Path) -> None:
    for i in range(40):
        save_png(tmp_path / f"{i:02d}.png", (i, i, i))
    seen: list[tuple[int, int]] = []
    result = load_image_folder(tmp_path, 8, 1, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (40, 40) and all(t == 40 for _, t in seen)
    assert result.images[:, 0, 0, 0].tolist() == list(range(40))  # deterministic order
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 5

    with pytest.raises(DatasetError, match="cancelled"):
        load_image_folder(tmp_path, 8, 1, cancel=cancel)


def test_cache_hit_skips_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    root, cache = tmp_path / "imgs", tmp_path / "cache"
    for i in range(6):
        save_png(root / f"{i}.png", (10 * i, 0, 0))
    (root / "bad.png").write_bytes(b"")
    first = load_image_folder(root, 8, 3, cache_dir=cache)
    assert sorted(p.suffix for p in cache.iterdir()) == [".json", ".npy"]  # no temp files left

    def no_decoding(*args: object) -> np.ndarray:
        raise AssertionError("decoded although the cache is valid")

    monkeypatch.setattr(datasets, "load_image", no_decoding)
    caplog.clear()
    second = load_image_folder(root, 8, 3, cache_dir=cache)
    assert torch.equal(first.images, second.images) and second.skipped == first.skipped
    assert sum("bad.png: empty file" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING) == 1
    with pytest.raises(AssertionError):  # a different size is a different key
        load_image_folder(root, 4, 3, cache_dir=cache)
    monkeypatch.undo()

    counted = []
    real = datasets.load_image
    monkeypatch.setattr(datasets, "load_image", lambda *a: counted.append(1) or real(*a))
    save_png(root / "3.png", (1, 2, 3))
    os.utime(root / "3.png", ns=(1, 1))  # changed file -> decode again
    third = load_image_folder(root, 8, 3, cache_dir=cache)
    assert len(counted) == 7 and third.images[3, :, 0, 0].tolist() == [1, 2, 3]
    assert len(list(cache.glob("*.npy"))) == 1  # the stale entry of this folder was deleted


def test_corrupt_cache_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, cache = tmp_path / "imgs", tmp_path / "cache"
    for i in range(3):
        save_png(root / f"{i}.png", (0, 50 * i, 0))
    # A copy: ``first`` maps the file this test then overwrites in place (DDPM Studio itself only ever renames
    # a complete file over a cache entry, which leaves an existing mapping untouched).
    first = load_image_folder(root, 8, 3, cache_dir=cache).images.clone()
    for npy in cache.glob("*.npy"):
        npy.write_bytes(b"garbage that is not an npy file")
    again = load_image_folder(root, 8, 3, cache_dir=cache)
    assert torch.equal(first, again.images)
    monkeypatch.setattr(datasets, "load_image", lambda *a: (_ for _ in ()).throw(AssertionError("decoded")))
    assert torch.equal(load_image_folder(root, 8, 3, cache_dir=cache).images, first)  # rebuilt cache is used


def test_default_cache_dir() -> None:
    path = default_cache_dir()
    assert path.name == "datasets" and "ddpm-studio" in str(path)


# --------------------------------------------------------------------------- standard datasets


def write_idx(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">I", 0x0800 | array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def fake_mnist(root: Path, folder: str, n: int = 5) -> np.ndarray:
    rng = np.random.default_rng(0)
    data = rng.integers(1, 256, size=(n, 28, 28), dtype=np.uint8)
    for split in ("train", "t10k"):
        write_idx(root / folder / "raw" / f"{split}-images-idx3-ubyte", data)
        write_idx(root / folder / "raw" / f"{split}-labels-idx1-ubyte", np.arange(n, dtype=np.uint8) % 10)
    return data


@pytest.mark.parametrize(("kind", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_padded_to_32(tmp_path: Path, kind: str, folder: str) -> None:
    data = fake_mnist(tmp_path, folder)
    result = load_standard_dataset(kind, tmp_path)
    assert result.images.shape == (5, 1, 32, 32) and result.images.dtype == torch.uint8
    assert torch.equal(result.images[:, 0, 2:30, 2:30], torch.from_numpy(data))
    border = result.images.clone()
    border[:, :, 2:30, 2:30] = 0
    assert border.sum() == 0  # padded with background 0 -> -1 after scaling
    assert result.to_float(torch.tensor([0]))[0, 0, 0, 0] == -1
    assert result.labels is not None and result.labels.tolist() == [0, 1, 2, 3, 4]
    assert len(result.class_names) == 10
    assert load_standard_dataset(kind, tmp_path / folder / "raw").images.shape == (5, 1, 32, 32)  # raw folder also accepted
    assert load_standard_dataset(kind, tmp_path, 16, train=False).images.shape == (5, 1, 16, 16)


def test_missing_mnist_names_expected_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte.*MNIST/raw"):
        load_standard_dataset("mnist", tmp_path)
    with pytest.raises(DatasetError, match="Unknown dataset"):
        load_standard_dataset("imagenet", tmp_path)


def test_cifar10_from_fake_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.cifar as cifar

    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.default_rng(0)
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"):
        data = rng.integers(0, 256, size=(2, 3072), dtype=np.uint8)
        data[:, :1024] = 200  # red plane
        with open(base / name, "wb") as f:
            pickle.dump({"data": data, "labels": [1, 2]}, f)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)
    # The fake files cannot match the official MD5s that torchvision checks before unpickling.
    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))
    result = load_standard_dataset("cifar10", tmp_path)
    assert result.images.shape == (10, 3, 32, 32) and result.images.is_contiguous()
    assert torch.all(result.images[:, 0] == 200)
    assert result.labels is not None and result.labels.tolist() == [1, 2] * 5
    assert result.class_names[0] == "class0"
    assert "pickle" in CIFAR_PICKLE_WARNING


def test_missing_cifar_names_expected_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"cifar-10-batches-py.*data_batch_1"):
        load_standard_dataset("cifar10", tmp_path)
