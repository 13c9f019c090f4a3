"""Folder inspection used by the dataset panel (Qt-free): every file decoded as training would, cached, progressive."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest
from PIL import Image

from ddpm_studio.services import dataset_scan
from ddpm_studio.services.dataset_scan import ScanSummary, describe_stats, load_thumbnail, scan_folder


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scan caches its checks under the user cache folder: each test gets its own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def good_jpeg(colour: tuple[int, int, int] = (200, 60, 40), size: tuple[int, int] = (64, 64)) -> bytes:
    out = io.BytesIO()
    im = Image.new("RGB", size, colour)
    im.paste((20, 20, 200), (10, 10, 40, 50))
    im.save(out, "JPEG", quality=90)
    return out.getvalue()


def photo_folder(root: Path, good: int = 30) -> Path:
    """``good`` JPEGs and the three broken files of the walkthrough's folder."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(good):
        (root / f"photo_{i:04d}.jpg").write_bytes(good_jpeg(((i * 37) % 256, 90, 120)))
    (root / "empty.png").write_bytes(b"")
    (root / "notes.jpg").write_text("these are my notes, not a photo\n")
    (root / "cut.jpg").write_bytes(good_jpeg()[:400])
    return root


def test_scan_counts_skips_and_stats(tmp_path: Path) -> None:
    (tmp_path / "cats").mkdir()
    (tmp_path / "dogs").mkdir()
    for i in range(3):
        Image.new("RGB", (64, 48), "red").save(tmp_path / "cats" / f"{i}.png")
        Image.new("L", (20, 20), 128).save(tmp_path / "dogs" / f"{i}.jpg")
    (tmp_path / "dogs" / "readme.md").write_text("hi")
    summary = scan_folder(str(tmp_path))
    assert summary.complete and summary.usable == 6 and summary.class_names == ("cats", "dogs")
    assert [reason for _, reason in summary.skipped] == ["not an image extension"]
    assert summary.message() == "6 usable images · 1 skipped · 2 classes (cats, dogs)"
    text = describe_stats(summary.stats, 32)
    assert "64×48" in text and "grayscale 50%" in text and "RGB 50%" in text
    assert "median 34" in text and "smaller than" not in text  # median smallest side 34 ≥ 32: no warning
    assert "smaller than 64px" in describe_stats(summary.stats, 64)


def test_broken_files_are_skipped_with_their_reason_before_training(tmp_path: Path) -> None:
    """main: 300 good files and these three showed "303 usable images" and "Skipped files: none"."""
    summary = scan_folder(str(photo_folder(tmp_path / "photos")))
    assert summary.complete and summary.usable == 30 and summary.total == 33
    reasons = {os.path.basename(path): reason for path, reason in summary.skipped}
    assert reasons == {"empty.png": "empty file", "notes.jpg": "not an image", "cut.jpg": "truncated file"}
    assert summary.message() == "30 usable images · 3 skipped"
    assert not any(name in os.path.basename(f) for f in summary.files for name in ("empty", "notes", "cut"))


def test_usable_files_with_warnings_are_named(tmp_path: Path) -> None:
    """A file over Pillow's decompression-bomb threshold and one with corrupt EXIF: used, each named with why."""
    root = tmp_path / "mixed"
    root.mkdir()
    (root / "ok.jpg").write_bytes(good_jpeg())
    side = int((Image.MAX_IMAGE_PIXELS or 89_478_485) ** 0.5) + 40
    Image.new("1", (side, side), 1).save(root / "panorama.png")
    Image.new("RGB", (64, 48), "red").save(root / "phone.jpg",
                                          exif=b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x05\x00\x12\x01\x03\x00")
    summary = scan_folder(str(root))
    assert summary.usable == 3 and not summary.skipped
    warned = {os.path.basename(path): text for path, text in summary.warnings}
    assert set(warned) == {"panorama.png", "phone.jpg"}
    assert warned["panorama.png"].startswith("very large image (90 megapixels")
    assert warned["phone.jpg"].startswith("corrupt EXIF data, ignored")
    assert summary.message() == "3 usable images · 2 with a warning"


def test_a_second_scan_decodes_nothing_and_a_changed_file_is_checked_again(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    root = photo_folder(tmp_path / "photos", good=40)
    first = scan_folder(str(root))
    decoded: list[str] = []
    real = dataset_scan.check_file
    monkeypatch.setattr(dataset_scan, "check_file", lambda path, st=None: decoded.append(path) or real(path, st))
    again = scan_folder(str(root))
    assert decoded == [] and again == first  # cached by path, size and mtime
    (root / "cut.jpg").write_bytes(good_jpeg())  # repaired: a new size and mtime
    os.utime(root / "photo_0001.jpg", ns=(time.time_ns(), time.time_ns() + 10**9))  # touched
    third = scan_folder(str(root))
    assert sorted(os.path.basename(p) for p in decoded) == ["cut.jpg", "photo_0001.jpg"]
    assert third.usable == 41 and len(third.skipped) == 2


def test_the_scan_reports_as_it_goes_and_stops_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = photo_folder(tmp_path / "photos", good=300)
    monkeypatch.setattr(dataset_scan, "REPORT_SECONDS", 0.0)
    reports: list[ScanSummary] = []
    stopped = scan_folder(str(root), report=reports.append, cancelled=lambda: len(reports) >= 2, workers=1)
    assert reports[0].checked == 0 and reports[0].total == 303 and not reports[0].complete
    assert "checking 0 / 303" in reports[0].message()
    assert reports[1].checked == dataset_scan.CHECK_CHUNK and not reports[1].complete
    assert stopped.cancelled and not stopped.complete and stopped.checked < 303
    assert "stopped" in stopped.message()
    decoded: list[str] = []
    real = dataset_scan.check_file
    monkeypatch.setattr(dataset_scan, "check_file", lambda path, st=None: decoded.append(path) or real(path, st))
    done = scan_folder(str(root))  # resumes: what the stopped scan checked is cached
    assert len(decoded) == 303 - stopped.checked
    assert done.complete and done.usable == 300 and len(done.skipped) == 3


def test_scan_errors_are_messages(tmp_path: Path) -> None:
    missing = scan_folder(str(tmp_path / "nope"))
    assert missing.error and "does not exist" in missing.error and missing.message() == missing.error
    empty = scan_folder(str(tmp_path))
    assert empty.usable == 0 and "empty" in empty.message()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"garbage")
    assert scan_folder(str(broken)).message() == f"No usable images in {broken}: none of its 1 image files decodes"


def test_thumbnail_or_reason(tmp_path: Path) -> None:
    Image.new("RGB", (100, 50), "blue").save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"garbage")
    thumb = load_thumbnail(str(tmp_path / "a.png"), 32)
    assert thumb.shape == (32, 32, 3)
    assert isinstance(load_thumbnail(str(tmp_path / "b.png"), 32), str)


def test_demo_thumbnails_are_drawn_at_thumbnail_size() -> None:
    assert dataset_scan.demo_thumbnails(4, 256, 3).shape == (4, 64, 64, 3)
    assert dataset_scan.demo_thumbnails(4, 16, 1).shape == (4, 16, 16, 1)
