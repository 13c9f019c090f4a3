"""load_image: every Pillow mode, odd files and hostile inputs, all made inside the tests."""

from __future__ import annotations

import io
import os
import struct
import sys
import threading
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from ddpm_studio.core import images as images_mod
from ddpm_studio.core.images import IMAGE_EXTENSIONS, ImageDecodeError, display_path, load_image, to_8bit

RED = (255, 0, 0)
NON_UTF8_NAME = os.fsdecode(b"caf\xe9.png")
# macOS and Windows file systems reject names that are not valid Unicode; Linux accepts any bytes.
NON_UTF8_OK = sys.platform.startswith("linux")


# --------------------------------------------------------------------------- builders (also used by test_datasets)


def solid(mode: str, size: tuple[int, int], color: object) -> Image.Image:
    return Image.new(mode, size, color)  # type: ignore[arg-type]


def png_bytes(im: Image.Image, fmt: str = "PNG", **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def bomb_png() -> bytes:
    """A tiny PNG whose header claims 100000 x 100000 pixels (valid CRCs)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def exif_rotated_jpeg() -> bytes:
    """40x20 JPEG, left half blue / right half red, EXIF orientation 6 (display rotated 90 deg CW)."""
    im = solid("RGB", (40, 20), RED)
    im.paste((0, 0, 255), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    return png_bytes(im, "JPEG", exif=exif, quality=95)


def animated_gif() -> bytes:
    frames = []
    for index in range(3):
        frame = Image.new("P", (16, 16), index)
        frame.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
        frames.append(frame)
    return png_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)


def palette_with_transparency() -> bytes:
    im = Image.new("P", (16, 16), 0)
    im.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    im.paste(1, (0, 0, 16, 8))  # top half uses the transparent index 1
    return png_bytes(im, transparency=1)


def good_files() -> dict[str, bytes]:
    """Name -> bytes of files that must decode (16x16 unless stated)."""
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[8:, :, 3] = 255  # top half transparent
    files = {
        "plain.png": png_bytes(solid("RGB", (16, 16), RED)),
        "photo.jpg": png_bytes(solid("RGB", (16, 16), RED), "JPEG", quality=95),
        "photo2.JPEG": png_bytes(solid("RGB", (16, 16), RED), "JPEG", quality=95),
        "bitmap.bmp": png_bytes(solid("RGB", (16, 16), RED), "BMP"),
        "anim.gif": animated_gif(),
        "lossless.webp": png_bytes(solid("RGB", (16, 16), RED), "WEBP", lossless=True),
        "scan.tiff": png_bytes(solid("RGB", (16, 16), RED), "TIFF"),
        "gray16.png": png_bytes(Image.fromarray(np.full((16, 16), 65535, np.uint16))),
        "rgba.png": png_bytes(Image.fromarray(rgba, "RGBA")),
        "palette.png": palette_with_transparency(),
        "cmyk.jpg": png_bytes(solid("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95),
        "rotated.jpg": exif_rotated_jpeg(),
        "wide.png": png_bytes(solid("RGB", (48, 16), RED)),
    }
    if NON_UTF8_OK:
        files[NON_UTF8_NAME] = png_bytes(solid("RGB", (16, 16), RED))
    return files


def bad_files() -> dict[str, tuple[bytes, str]]:
    """Name -> (bytes, expected substring of the reason)."""
    png = png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    jpg = png_bytes(Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)), "JPEG")
    return {
        "empty.png": (b"", "empty file"),
        "truncated.png": (png[: len(png) // 2], "truncated"),
        "truncated.jpg": (jpg[: len(jpg) // 2], "truncated"),
        "notes.png": (b"this is a text file, not a picture\n" * 4, "not an image"),
        "bomb.png": (bomb_png(), "too large"),
    }


def write_files(folder: Path, files: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)


def run_with_timeout(fn: Callable[[], object], seconds: float = 20.0) -> object:
    """Run fn in a daemon thread; fail (instead of hanging the suite) if it blocks."""
    result: dict[str, object] = {}

    def target() -> None:
        try:
            result["value"] = fn()
        except BaseException as exc:  # re-raised in the caller
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"call blocked for more than {seconds} s"
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["value"]


# --------------------------------------------------------------------------- good files


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    write_files(tmp_path, good_files())
    return tmp_path


def test_extensions_are_lower_case() -> None:
    assert {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"} == IMAGE_EXTENSIONS


@pytest.mark.parametrize(
    "name", ["plain.png", "photo.jpg", "photo2.JPEG", "bitmap.bmp", "lossless.webp", "scan.tiff", "wide.png"]
)
def test_formats_decode_to_red(folder: Path, name: str) -> None:
    out = load_image(folder / name, 8, 3)
    assert out.shape == (3, 8, 8) and out.dtype == np.uint8 and out.flags.c_contiguous
    assert np.abs(out.astype(int) - np.array(RED)[:, None, None]).max() <= 6


def test_channels_one_is_luminance(folder: Path) -> None:
    out = load_image(folder / "plain.png", 8, 1)
    assert out.shape == (1, 8, 8)
    assert np.all(out == 76)  # Pillow L = 0.299 * 255


def test_gray_to_rgb_repeats_channels(tmp_path: Path) -> None:
    path = tmp_path / "gray.png"
    solid("L", (8, 8), 100).save(path)
    out = load_image(path, 8, 3)
    assert out.shape == (3, 8, 8) and np.all(out == 100)


def test_sixteen_bit_scaled_by_real_range(tmp_path: Path) -> None:
    arr = np.tile(np.array([0, 32768, 65535, 257], np.uint16), (4, 1))
    path = tmp_path / "g16.png"
    Image.fromarray(arr).save(path)
    assert Image.open(path).mode == "I;16"
    out = load_image(path, 4, 1)[0]
    assert out[0].tolist() == [0, 128, 255, 1]
    assert np.all(load_image(path, 4, 3)[:, :, 2] == 255)


def test_mode_i_with_16_bit_data_and_float_modes() -> None:
    mode_i = Image.fromarray(np.array([[0, 65535]], np.int32), "I")
    assert np.asarray(to_8bit(mode_i, 1)).tolist() == [[0, 255]]
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32), "F")
    assert np.asarray(to_8bit(unit, 1)).tolist() == [[0, 128, 255]]
    wide = Image.fromarray(np.array([[-10.0, 0.0, 10.0]], np.float32), "F")
    assert np.asarray(to_8bit(wide, 1)).tolist() == [[0, 128, 255]]


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [
        ("1", 1, (255, 255, 255)),
        ("CMYK", (0, 255, 255, 0), RED),
        ("YCbCr", (76, 85, 255), RED),
        ("LAB", (136, 208, 195), RED),
        ("HSV", (0, 255, 255), RED),
        ("LA", (10, 0), (255, 255, 255)),
        ("RGBa", (0, 0, 0, 0), (255, 255, 255)),
    ],
)
def test_other_modes_convert(mode: str, value: object, expected: tuple[int, int, int]) -> None:
    rgb = np.asarray(to_8bit(solid(mode, (2, 2), value), 3))[0, 0]
    assert np.abs(rgb.astype(int) - np.array(expected)).max() <= 12


def test_rgba_transparent_becomes_white(folder: Path) -> None:
    out = load_image(folder / "rgba.png", 16, 3)
    assert np.all(out[:, :8] == 255)  # transparent top half
    assert np.all(out[:, 8:, :] == np.array(RED, np.uint8)[:, None, None])


def test_palette_transparency_becomes_white(folder: Path) -> None:
    out = load_image(folder / "palette.png", 16, 3)
    assert np.all(out[:, :8] == 255)
    assert np.all(out[:, 8:] == np.array(RED, np.uint8)[:, None, None])


def test_cmyk_jpeg(folder: Path) -> None:
    out = load_image(folder / "cmyk.jpg", 8, 3)
    assert np.abs(out.astype(int) - np.array(RED)[:, None, None]).max() <= 8


def test_exif_orientation_is_applied(folder: Path) -> None:
    out = load_image(folder / "rotated.jpg", 20, 3)
    # Displayed 20 wide x 40 tall with blue on top; the centre crop keeps rows 10..30.
    assert out[2, 3, 10] > 200 and out[0, 3, 10] < 50  # blue at the top
    assert out[0, 16, 10] > 200 and out[2, 16, 10] < 50  # red at the bottom


def test_non_square_is_centre_cropped(tmp_path: Path) -> None:
    im = solid("RGB", (60, 20), RED)
    im.paste((0, 255, 0), (20, 0, 40, 20))
    im.paste((0, 0, 255), (40, 0, 60, 20))
    im.save(tmp_path / "strip.png")
    out = load_image(tmp_path / "strip.png", 20, 3)
    assert np.all(out == np.array([0, 255, 0], np.uint8)[:, None, None])
    tall = load_image(tmp_path / "strip.png", 10, 3)  # shrink path keeps the centre too
    assert tall.shape == (3, 10, 10) and np.abs(tall[:, 2:8, 2:8].astype(int) - [[[0]], [[255]], [[0]]]).max() <= 2


def test_animated_gif_uses_first_frame(folder: Path) -> None:
    out = load_image(folder / "anim.gif", 16, 3)
    assert np.all(out == np.array(RED, np.uint8)[:, None, None])


def test_upscale_small_image(tmp_path: Path) -> None:
    solid("RGB", (4, 6), RED).save(tmp_path / "tiny.png")
    out = load_image(tmp_path / "tiny.png", 32, 3)
    assert out.shape == (3, 32, 32) and np.all(out == np.array(RED, np.uint8)[:, None, None])


def test_large_jpeg_uses_draft(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    solid("RGB", (2048, 1536), (10, 200, 30)).save(tmp_path / "big.jpg", quality=90)
    calls: list[tuple[int, int]] = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self: JpegImagePlugin.JpegImageFile, mode: str | None, size: tuple[int, int] | None) -> object:
        result = original(self, mode, size)
        calls.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    out = load_image(tmp_path / "big.jpg", 32, 3)
    assert calls and calls[0][1] == 1536 // 8  # decoded at 1/8 scale
    assert np.abs(out.astype(int) - np.array([10, 200, 30])[:, None, None]).max() <= 6


@pytest.mark.skipif(not NON_UTF8_OK, reason="file system needs Unicode names")
def test_non_utf8_name_loads(folder: Path) -> None:
    path = os.path.join(folder, NON_UTF8_NAME)
    assert load_image(path, 8, 3).shape == (3, 8, 8)
    shown = display_path(path)
    shown.encode("utf-8")  # never raises
    assert "caf\ufffd.png" in shown


def test_bad_arguments_are_programming_errors(folder: Path) -> None:
    with pytest.raises(ValueError):
        load_image(folder / "plain.png", 8, 2)
    with pytest.raises(ValueError):
        load_image(folder / "plain.png", 0, 3)


# --------------------------------------------------------------------------- bad files


@pytest.mark.parametrize("name", list(bad_files()))
def test_bad_files_raise_decode_error(tmp_path: Path, name: str) -> None:
    data, reason = bad_files()[name]
    (tmp_path / name).write_bytes(data)
    with pytest.raises(ImageDecodeError, match=reason):
        load_image(tmp_path / name, 8, 3)


def test_bomb_reason_names_megapixels(tmp_path: Path) -> None:
    (tmp_path / "bomb.png").write_bytes(bomb_png())
    with pytest.raises(ImageDecodeError) as info:
        load_image(tmp_path / "bomb.png", 8, 3)
    assert str(info.value) == "image too large (10,000 megapixels)"


def test_pixel_limit_is_enforced_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    solid("RGB", (100, 100), RED).save(tmp_path / "big.png")
    monkeypatch.setattr(images_mod, "MAX_PIXELS", 5_000)
    with pytest.raises(ImageDecodeError, match=r"image too large \(0.0 megapixels\)"):
        load_image(tmp_path / "big.png", 8, 3)


def test_stricter_pillow_limit_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    solid("RGB", (100, 100), RED).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6_000)  # warning threshold only (hard error at 12,000)
    with pytest.raises(ImageDecodeError, match="image too large"):
        load_image(tmp_path / "big.png", 8, 3)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert load_image(tmp_path / "big.png", 8, 3).shape == (3, 8, 8)


def test_truncated_header_is_not_called_not_an_image(tmp_path: Path) -> None:
    (tmp_path / "cut.png").write_bytes(png_bytes(solid("RGB", (8, 8), RED))[:30])
    with pytest.raises(ImageDecodeError, match="truncated or corrupt PNG"):
        load_image(tmp_path / "cut.png", 8, 3)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match="file not found"):
        load_image(tmp_path / "nope.png", 8, 3)
    with pytest.raises(ImageDecodeError, match="not a regular file"):
        load_image(tmp_path, 8, 3)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_named_pipe_is_never_opened(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ImageDecodeError, match="named pipe"):
        run_with_timeout(lambda: load_image(fifo, 8, 3), 10)


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root can read any file")
def test_unreadable_file_real_permissions(tmp_path: Path) -> None:
    path = tmp_path / "secret.png"
    solid("RGB", (8, 8), RED).save(path)
    path.chmod(0)
    try:
        with pytest.raises(ImageDecodeError, match="permission denied"):
            load_image(path, 8, 3)
    finally:
        path.chmod(0o644)


def test_unreadable_file_monkeypatched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "secret.png"
    solid("RGB", (8, 8), RED).save(path)
    real_open = os.open

    def deny(p: object, *args: object, **kwargs: object) -> int:
        if os.fspath(p) == str(path):  # type: ignore[arg-type]
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(p, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", deny)
    with pytest.raises(ImageDecodeError, match=r"^permission denied$"):
        load_image(path, 8, 3)


def test_threads_decode_concurrently(folder: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    paths = [folder / "plain.png", folder / "photo.jpg", folder / "scan.tiff"] * 20
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda p: load_image(p, 8, 3), paths))
    assert all(o.shape == (3, 8, 8) for o in outs)


# --------------------------------------------------------------------------- warnings: used, with one line naming the file


def corrupt_exif_jpeg(path: Path) -> Path:
    """A good JPEG whose EXIF block claims five tags and holds a third of one (Pillow: "Corrupt EXIF data")."""
    solid("RGB", (64, 48), RED).save(path, exif=b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x05\x00\x12\x01\x03\x00")
    return path


def test_corrupt_exif_is_our_one_line_warning_not_pillows(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                         recwarn: pytest.WarningsRecorder) -> None:
    """main: Pillow's raw "UserWarning: Corrupt EXIF data" reached the terminal, naming no file."""
    path = corrupt_exif_jpeg(tmp_path / "phone.jpg")
    with caplog.at_level("WARNING", logger="ddpm_studio.core.images"):
        assert load_image(path, 16, 3).shape == (3, 16, 16)  # training's path: the image is used
    assert not [w for w in recwarn if "EXIF" in str(w.message)]  # nothing raw on the terminal
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith(f"{path}: corrupt EXIF data") and "\n" not in lines[0]
    decoded = images_mod.decode_image(path, 16, 3)  # the scan's path: the warning comes back with the pixels
    assert decoded.pixels.shape == (3, 16, 16) and (decoded.width, decoded.height) == (64, 48)
    assert len(decoded.warnings) == 1 and decoded.warnings[0].startswith("corrupt EXIF data, ignored")


def test_an_image_over_pillows_bomb_threshold_is_used_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """main: a file over Image.MAX_IMAGE_PIXELS (but within our MAX_PIXELS) was decoded silently."""
    side = int((Image.MAX_IMAGE_PIXELS or 89_478_485) ** 0.5) + 40  # 1-bit white: a 30 KB PNG
    Image.new("1", (side, side), 1).save(tmp_path / "panorama.png")
    with caplog.at_level("WARNING", logger="ddpm_studio.core.images"):
        out = load_image(tmp_path / "panorama.png", 8, 3)
    assert out.shape == (3, 8, 8) and out.min() >= 250
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"{tmp_path / 'panorama.png'}: very large image (90 megapixels, over Pillow's decompression-bomb")
