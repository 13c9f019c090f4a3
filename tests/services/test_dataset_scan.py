"""Folder inspection used by the dataset panel (Qt-free)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from ddpm_studio.services.dataset_scan import describe_stats, header_stats, load_thumbnail, scan_folder


def test_scan_counts_skips_and_stats(tmp_path: Path) -> None:
    (tmp_path / "cats").mkdir()
    (tmp_path / "dogs").mkdir()
    for i in range(3):
        Image.new("RGB", (64, 48), "red").save(tmp_path / "cats" / f"{i}.png")
        Image.new("L", (20, 20), 128).save(tmp_path / "dogs" / f"{i}.jpg")
    (tmp_path / "dogs" / "readme.md").write_text("hi")
    summary = scan_folder(str(tmp_path))
    assert summary.usable == 6 and summary.class_names == ("cats", "dogs")
    assert [reason for _, reason in summary.skipped] == ["not an image extension"]
    assert summary.message() == "6 usable images · 1 skipped · 2 classes (cats, dogs)"
    text = describe_stats(summary.stats, 32)
    assert "64×48" in text and "grayscale 50%" in text and "RGB 50%" in text
    assert "median 34" in text and "smaller than" not in text  # median smallest side 34 ≥ 32: no warning
    assert "smaller than 64px" in describe_stats(summary.stats, 64)
    stats = header_stats(summary.files, sample=2)
    assert stats["sampled"] == 2 and stats["total"] == 6


def test_scan_errors_are_messages(tmp_path: Path) -> None:
    missing = scan_folder(str(tmp_path / "nope"))
    assert missing.error and "does not exist" in missing.error and missing.message() == missing.error
    empty = scan_folder(str(tmp_path))
    assert empty.usable == 0 and "empty" in empty.message()


def test_thumbnail_or_reason(tmp_path: Path) -> None:
    Image.new("RGB", (100, 50), "blue").save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"garbage")
    thumb = load_thumbnail(str(tmp_path / "a.png"), 32)
    assert thumb.shape == (32, 32, 3)
    assert isinstance(load_thumbnail(str(tmp_path / "b.png"), 32), str)
