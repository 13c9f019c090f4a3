"""Decode one image file into a square uint8 array, whatever the user's folder throws at us.

A user's folder may hold 16-bit scans, CMYK print files, palette GIFs with transparency,
phone photos rotated by EXIF, 100-megapixel panoramas, half-copied files and things that
are not images at all. :func:`load_image` turns each into ``(channels, size, size)`` uint8
or raises :class:`ImageDecodeError` with a short, human-readable reason; it never lets a
Pillow-specific exception escape and never blocks on a named pipe.

Rules, in order:

1. Only regular, non-empty files are opened (``stat`` first, then ``fstat`` on the
   descriptor opened with ``O_NONBLOCK``, so a FIFO swapped in meanwhile cannot block).
2. Images over :data:`MAX_PIXELS` (or a stricter Pillow limit) are refused from the header
   alone, before any pixel is decoded.
3. Only the first frame of animated GIF / WebP / TIFF is used.
4. JPEGs are decoded at a reduced DCT scale (``Image.draft``) when much larger than needed.
5. EXIF orientation is applied (``ImageOps.exif_transpose``).
6. Alpha (RGBA, LA, PA, P or L/RGB with a transparency key) is composited on white.
   16-bit / 32-bit integer images are scaled to 8 bit by their real range (I;16 / 257),
   float images from [0, 1] (or min-max when they exceed 1). Everything else
   (1, L, P, CMYK, YCbCr, LAB, HSV, ...) goes through Pillow's own conversion.
7. ``channels=1`` is luminance (Pillow "L", ITU-R 601-2), ``channels=3`` is RGB.
8. The centred square of side ``min(w, h)`` is resampled to ``image_size`` in one step
   (Lanczos when shrinking, with Pillow's ``reduce`` pre-pass; bicubic when enlarging).

Truncated files are errors: ``ImageFile.LOAD_TRUNCATED_IMAGES`` is left alone.

Warnings: a file that decodes but deserves a word is *used*, with one short sentence per problem
(:attr:`DecodedImage.warnings`; :func:`load_image` logs each as one line naming the file). Two kinds:

* more pixels than Pillow's decompression-bomb threshold (``Image.MAX_IMAGE_PIXELS``, ~89 MP by default)
  but within :data:`MAX_PIXELS`: a real 100 MP photo is a legitimate training image, so it is used, and
  the warning says it is slow to decode (Pillow would only have warned, and we silenced that);
* Pillow's warnings while parsing metadata (``UserWarning: Corrupt EXIF data…``), which used to reach the
  terminal raw: they become "corrupt EXIF data (ignored: …)".
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import stat
import threading
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})

#: Largest image (width * height) we agree to decode. Pillow's default warning threshold (~89 MP)
#: would refuse ordinary 100 MP camera/panorama files, so this explicit limit replaces it; a
#: stricter ``PIL.Image.MAX_IMAGE_PIXELS`` set by the application is honoured (its warning
#: counts as an error), and Pillow's hard DecompressionBombError always applies.
MAX_PIXELS: int = 200_000_000
_PILLOW_DEFAULT_LIMIT = 1024 * 1024 * 1024 // 4 // 3

# Pillow reports "decompression bomb" sizes through the global warnings machinery; changing
# warning filters is process-wide and not thread-safe, so opens are serialised (headers only).
_OPEN_LOCK = threading.Lock()

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)

_FILE_KINDS: tuple[tuple[object, str], ...] = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


logger = logging.getLogger(__name__)


class ImageDecodeError(Exception):
    """A file could not be turned into an image; ``str(err)`` is the reason for the user."""


@dataclass(frozen=True)
class DecodedImage:
    """What :func:`decode_image` made of a file: the pixels, the warnings it deserves, and the original's header."""

    pixels: np.ndarray  # (channels, size, size) uint8
    warnings: tuple[str, ...]  # short sentences, e.g. "corrupt EXIF data (ignored: …)"
    width: int
    height: int
    mode: str


def display_path(path: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> str:
    """A printable form of ``path``: non-UTF-8 bytes (surrogate escapes) become U+FFFD.

    ``os.scandir`` returns undecodable file names as lone surrogates, which make
    ``print``, logging to a UTF-8 file and Qt raise; use this whenever a path is shown.
    """
    raw = os.fsencode(path)
    return raw.decode("utf-8", "replace")


def _safe_text(text: str) -> str:
    """Strip lone surrogates from arbitrary exception text before it reaches a message."""
    return text.encode("utf-8", "replace").decode("utf-8")


def describe_file_kind(mode: int) -> str:
    """'a named pipe', 'a socket', ... for a non-regular ``st_mode``."""
    for test, name in _FILE_KINDS:
        if test(mode):  # type: ignore[operator]
            return name
    return "not a regular file"


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:,.0f}" if pixels >= 10_000_000 else f"{pixels / 1e6:,.1f}"


def _sniff_format(fp: io.BufferedReader) -> str | None:
    """Format named by the file's magic bytes, to tell 'corrupt PNG' from 'not an image'."""
    try:
        fp.seek(0)
        head = fp.read(16)
    except (OSError, ValueError):
        return None
    for magic, name in _SIGNATURES:
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return None


def _open_regular(path: str) -> io.BufferedReader:
    """Open ``path`` for reading after checking it is a regular, non-empty file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ImageDecodeError("file not found") from None
    except PermissionError:
        raise ImageDecodeError("permission denied") from None
    except OSError as exc:
        raise ImageDecodeError(f"cannot read file ({_safe_text(exc.strerror or str(exc))})") from None
    if not stat.S_ISREG(st.st_mode):
        raise ImageDecodeError(f"not a regular file ({describe_file_kind(st.st_mode)})")
    if st.st_size == 0:
        raise ImageDecodeError("empty file")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except PermissionError:
        raise ImageDecodeError("permission denied") from None
    except OSError as exc:
        raise ImageDecodeError(f"cannot read file ({_safe_text(exc.strerror or str(exc))})") from None
    fst = os.fstat(fd)
    if not stat.S_ISREG(fst.st_mode):  # replaced between stat and open
        os.close(fd)
        raise ImageDecodeError(f"not a regular file ({describe_file_kind(fst.st_mode)})")
    return os.fdopen(fd, "rb")


def _pixel_limit() -> int:
    """MAX_PIXELS, or Pillow's own limit where the application made it stricter than Pillow's default."""
    pillow = Image.MAX_IMAGE_PIXELS
    if pillow is not None and pillow < _PILLOW_DEFAULT_LIMIT:
        return min(MAX_PIXELS, int(pillow))
    return MAX_PIXELS


def _pillow_warning(message: str) -> str:
    """One of Pillow's warnings as our one-line sentence."""
    text = " ".join(message.split())
    if "exif" in text.lower():
        detail = re.sub(r"^(possibly )?corrupt exif data\.?\s*", "", text, flags=re.IGNORECASE).rstrip(". ")
        return "corrupt EXIF data, ignored (the image is used unrotated)" + (f": {detail}" if detail else "")
    return f"Pillow warned: {text}"


@contextlib.contextmanager
def _pillow_warnings(notes: list[str]) -> object:
    """Collect Pillow's warnings into ``notes`` instead of the terminal. Warning filters are process-wide and
    not thread-safe, so these sections are serialised (headers and metadata only, never pixel decoding)."""
    with _OPEN_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # We enforce MAX_PIXELS ourselves and say when Pillow's softer threshold is passed (_open_image).
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            yield
        finally:
            for item in caught:
                note = _pillow_warning(str(item.message))
                if note not in notes:
                    notes.append(note)


def _open_image(fp: io.BufferedReader, notes: list[str]) -> Image.Image:
    """Parse the header and refuse oversized images before any pixel is decoded."""
    with _pillow_warnings(notes):
        im = Image.open(fp)
    width, height = im.size
    if width * height > _pixel_limit():
        raise ImageDecodeError(f"image too large ({_megapixels(width * height)} megapixels)")
    if width < 1 or height < 1:
        raise ImageDecodeError("image has zero width or height")
    bomb = Image.MAX_IMAGE_PIXELS
    if bomb is not None and width * height > bomb:
        notes.append(f"very large image ({_megapixels(width * height)} megapixels, over Pillow's decompression-bomb "
                     f"warning limit of {_megapixels(int(bomb))} MP): used, but slow to decode (a smaller copy loads faster)")
    return im


def _scale_integer(arr: np.ndarray) -> np.ndarray:
    """Integer pixels to uint8 by the range of the data type they came in (16-bit: / 257)."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype in (np.uint16, np.dtype(">u2"), np.dtype("<u2")):
        return ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)
    wide = arr.astype(np.int64)
    lo, hi = int(wide.min()), int(wide.max())
    if lo >= 0 and hi <= 65535:  # mode "I" holding 16-bit data (PNG/TIFF/PGM 16-bit)
        return ((wide + 128) // 257).astype(np.uint8)
    if hi == lo:
        return np.zeros(arr.shape, np.uint8)
    return ((wide - lo) * 255 // (hi - lo)).astype(np.uint8)


def _scale_float(arr: np.ndarray) -> np.ndarray:
    """Float pixels to uint8: [0, 1] when the maximum is at most 1, else min-max."""
    arr = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    hi = float(arr.max()) if arr.size else 0.0
    if hi <= 1.0:
        scaled = np.clip(arr, 0.0, 1.0) * 255.0
    else:
        lo = float(arr.min())
        scaled = (arr - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _on_white(im: Image.Image) -> Image.Image:
    """Composite an image with alpha (any mode Pillow can turn into RGBA) on white."""
    rgba = im.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    background.alpha_composite(rgba)
    return background.convert("RGB")


def to_8bit(im: Image.Image, channels: int) -> Image.Image:
    """Convert any Pillow mode to "L" (channels=1) or "RGB" (channels=3), alpha on white."""
    target = "L" if channels == 1 else "RGB"
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "I;32", "I;32B", "I;32L"):
        im = Image.fromarray(_scale_integer(np.asarray(im)), "L")
    elif mode == "F" or mode.startswith("F;"):
        im = Image.fromarray(_scale_float(np.asarray(im)), "L")
    elif mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in im.info:
        im = _on_white(im)
    elif mode not in ("L", "RGB"):
        # 1, P, CMYK, YCbCr, LAB, HSV, RGBX, BGR;xx: Pillow knows the colour maths.
        im = im.convert("RGB")
    return im if im.mode == target else im.convert(target)


def _resize_center_square(im: Image.Image, image_size: int) -> Image.Image:
    """Resample the centred square of side min(w, h) to ``image_size`` in one pass."""
    width, height = im.size
    side = min(width, height)
    left = (width - side) / 2
    top = (height - side) / 2
    box = (left, top, left + side, top + side)
    if side == image_size and left.is_integer() and top.is_integer():
        return im.crop((int(left), int(top), int(left) + side, int(top) + side))
    if side > image_size:
        return im.resize((image_size, image_size), Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)
    return im.resize((image_size, image_size), Image.Resampling.BICUBIC, box=box)


#: Modes whose pixels can be box-averaged as they are (no palette, no alpha to composite first).
_REDUCIBLE = frozenset({"L", "RGB", "I", "F", "CMYK", "YCbCr", "LAB", "HSV"})


def _reduce_early(im: Image.Image, image_size: int) -> Image.Image:
    """A huge image's centre square, box-averaged in its own mode to >= 3x the target size, before any conversion.

    Converting first would copy the full image once per step (a 100-megapixel 1-bit PNG of 12 KB grew to
    ~400 MB through "RGB"); Pillow's resize would reduce the same way afterwards (reducing_gap=3), so the
    result is the same within rounding. Palette and alpha images keep the exact path (their pixels must
    not be averaged before compositing); JPEG is already reduced by ``draft``.
    """
    width, height = im.size
    side = min(width, height)
    factor = side // (3 * image_size)
    if factor < 2 or "transparency" in im.info:
        return im
    left, top = (width - side) // 2, (height - side) // 2
    box = (left, top, left + side, top + side)
    if im.mode == "1":
        im = im.convert("L")
    if im.mode in _REDUCIBLE:
        return im.reduce(factor, box=box)
    if im.mode.startswith("I;16"):  # Pillow cannot reduce 16-bit modes: average blocks in numpy, a band at a time
        k = side // factor
        out = np.empty((k, k), dtype=np.uint16)
        for i in range(k):
            band = np.asarray(im.crop((left, top + i * factor, left + k * factor, top + (i + 1) * factor)), dtype=np.float64)
            out[i] = np.rint(band.reshape(factor, k, factor).mean(axis=(0, 2)))
        return Image.fromarray(out)
    return im


def _decode(im: Image.Image, image_size: int, channels: int, notes: list[str]) -> np.ndarray:
    # Image.open leaves animated GIF/WebP/TIFF on frame 0; never ask n_frames (scans the file).
    if im.format == "JPEG" and min(im.size) >= 4 * image_size:
        # DCT-domain downscale (1/2 .. 1/8) while keeping >= 2x the target for a clean resample.
        im.draft(im.mode, (2 * image_size, 2 * image_size))
    im.load()
    with contextlib.suppress(Exception), _pillow_warnings(notes):  # malformed EXIF must not lose a fine image
        ImageOps.exif_transpose(im, in_place=True)
    im = _reduce_early(im, image_size)
    small = _resize_center_square(to_8bit(im, channels), image_size)
    arr = np.asarray(small, dtype=np.uint8)
    arr = arr[None, :, :] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return np.ascontiguousarray(arr)


def _reason(exc: BaseException, fp: io.BufferedReader) -> str:
    """A short human-readable reason for an exception raised while decoding the file ``fp``."""
    if isinstance(exc, Image.DecompressionBombError):
        match = re.search(r"\((\d+) pixels\)", str(exc))
        if match:
            return f"image too large ({_megapixels(int(match.group(1)))} megapixels)"
        return "image too large"
    if isinstance(exc, UnidentifiedImageError):
        fmt = _sniff_format(fp)
        return f"truncated or corrupt {fmt} file" if fmt else "not an image"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, MemoryError):
        return "out of memory while decoding"
    text = _safe_text(str(exc))
    lowered = text.lower()
    if isinstance(exc, EOFError) or "truncated" in lowered or "broken data stream" in lowered:
        return "truncated file"
    detail = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return f"corrupt or unsupported image ({detail})"


def decode_image(path: str | os.PathLike[str], image_size: int, channels: int) -> DecodedImage:
    """The file's pixels as (channels, image_size, image_size) uint8, its warnings and header. Raises ImageDecodeError.

    Safe to call from several threads at once (Pillow releases the GIL while decoding).
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3 (got {channels})")
    if image_size < 1:
        raise ValueError(f"image_size must be positive (got {image_size})")
    p = os.fspath(path)
    notes: list[str] = []
    with _open_regular(p) as fp:
        try:
            im = _open_image(fp, notes)
            try:
                width, height, mode = *im.size, im.mode
                pixels = _decode(im, image_size, channels, notes)
            finally:
                im.close()
        except ImageDecodeError:
            raise
        except Exception as exc:  # Pillow plugins raise anything on malformed data
            raise ImageDecodeError(_reason(exc, fp)) from exc
    return DecodedImage(pixels, tuple(notes), width, height, mode)


def load_image(path: str | os.PathLike[str], image_size: int, channels: int) -> np.ndarray:
    """-> uint8 array (channels, image_size, image_size), logging each warning as one line naming the file
    (training's decode path). Raises ImageDecodeError."""
    decoded = decode_image(path, image_size, channels)
    for note in decoded.warnings:
        logger.warning("%s: %s", display_path(path), note)
    return decoded.pixels
