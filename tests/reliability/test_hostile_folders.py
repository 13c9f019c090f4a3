"""A hostile image folder through ``python -m ddpm_studio train``: it must finish, skip each bad entry with a reason,
and never hang, crash or print a traceback.

tests/core/test_images.py and test_datasets.py cover each entry kind against the decoder and the scanner;
this puts them all in one folder and runs the real command in a child process with a timeout (a named pipe
that got opened would block it forever), with a 100-megapixel image, an animated GIF and non-UTF-8 names.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image

from tests.reliability.conftest import TINY_TRAIN_FLAGS, child_env, cli_command

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="FIFOs, chmod and byte file names are POSIX")


def _png_header_only(width: int, height: int) -> bytes:
    """A 60-byte PNG whose header claims width x height: a decompression bomb's calling card."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def build_hostile_folder(root: Path) -> tuple[Path, int, dict[str, str]]:
    """(folder, number of usable images, {entry name: the reason the CLI must print for it})."""
    folder = Path(os.fsdecode(os.fsencode(str(root)) + b"/images-\xff"))  # the folder name itself is not UTF-8
    folder.mkdir()
    good = 0
    for i in range(12):
        Image.new("RGB", (20, 20), ((i * 40) % 256, 90, 200)).save(folder / f"ok_{i:02d}.png")
        good += 1
    Image.new("RGB", (20, 20), "red").save(os.fsdecode(os.fsencode(str(folder)) + b"/caf\xe9.png"))  # Latin-1 name
    good += 1
    frames = [Image.new("P", (24, 24), c) for c in (1, 2, 3)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    good += 1
    Image.new("1", (10_000, 10_000), 1).save(folder / "panorama_100mp.png")  # 12 KB on disk, 100 megapixels
    good += 1
    expect: dict[str, str] = {}
    os.mkfifo(folder / "pipe.png")
    expect["pipe.png"] = "named pipe"
    (folder / "bomb.png").write_bytes(_png_header_only(30_000, 30_000))
    expect["bomb.png"] = "image too large"
    (folder / "empty.png").write_bytes(b"")
    expect["empty.png"] = "empty file"
    (folder / "text.jpg").write_text("not a picture")
    expect["text.jpg"] = "not an image"
    data = (folder / "ok_00.png").read_bytes()
    (folder / "cut.png").write_bytes(data[: len(data) // 2])
    expect["cut.png"] = "truncated"
    os.symlink("nowhere.png", folder / "dangling.png")
    expect["dangling.png"] = "broken symbolic link"
    (folder / "sub").mkdir()
    os.symlink("..", folder / "sub" / "loop")  # a symlink loop back to the top
    Image.new("RGB", (20, 20), "blue").save(folder / "sub" / "deep.png")
    good += 1
    with open(os.fsencode(str(folder)) + b"/bad\xfe.jpg", "wb") as fh:  # a bad file with a non-UTF-8 name
        fh.write(b"junk")
    expect["bad\ufffd.jpg"] = "not an image"
    (folder / ".DS_Store").write_bytes(b"\0" * 10)
    (folder / "._ok_00.png").write_bytes(b"\0" * 10)
    locked = folder / "locked.png"
    Image.new("RGB", (20, 20), "green").save(locked)
    locked.chmod(0)
    locked_dir = folder / "locked_dir"
    locked_dir.mkdir()
    Image.new("RGB", (20, 20), "green").save(locked_dir / "inside.png")
    locked_dir.chmod(0)
    if os.geteuid() == 0:  # root reads them anyway (C4: record the uid rather than pretend)
        good += 2
    else:
        expect["locked.png"] = "permission denied"
        expect["locked_dir"] = "permission denied"
    return folder, good, expect


def test_hostile_folder_through_the_cli(tmp_path: Path) -> None:
    folder, good, expect = build_hostile_folder(tmp_path)
    try:
        args = [os.fsencode(a) for a in cli_command(
            "train", *TINY_TRAIN_FLAGS, "--total-steps", "1", "--checkpoint-every", "0", "--no-cache")]
        args[args.index(b"demo")] = b"folder"
        # Non-UTF-8 bytes in argv: the data path, and a run name.
        args += [b"--data-path", os.fsencode(str(folder)), b"--name", b"run-\xfe-../../escape"]
        done = subprocess.run(args, env=child_env(tmp_path), cwd=tmp_path, capture_output=True, timeout=150)
    finally:
        (folder / "locked.png").chmod(0o644)
        (folder / "locked_dir").chmod(0o755)
    err = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 0, err
    assert "Traceback" not in err
    match = re.search(r"Data: ([\d,]+) images from (.+?) \(([\d,]+) skipped\)", err)
    assert match, err
    assert int(match.group(1).replace(",", "")) == good, err
    assert "images-\ufffd" in match.group(2), "a non-UTF-8 folder name is shown with a replacement character"
    for name, reason in expect.items():
        line = next((ln for ln in err.splitlines() if "Skipping" in ln and name in ln), None)
        assert line is not None, (name, err)
        assert reason in line, (name, line)
    # The run folder stayed inside the runs folder, under a sanitised name.
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and runs[0].parent == tmp_path / "runs", runs
    assert not (tmp_path / "escape").exists()
    assert "Training completed at step 1" in err


def test_100_megapixel_image_peak_memory(tmp_path: Path) -> None:
    """A 12 KB PNG of 100 megapixels loads; peak memory stays near one decoded copy (it was ~4x before)."""
    path = tmp_path / "big.png"
    Image.new("L", (10_000, 10_000), 7).save(path)
    code = (
        "import resource, sys; from ddpm_studio.core.images import load_image;"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss;"
        "a = load_image(sys.argv[1], 32, 3);"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024, a.shape, int(a.mean()))"
    )
    done = subprocess.run([sys.executable, "-c", code, str(path)], env=child_env(tmp_path), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    growth_mb, shape, mean = done.stdout.split(" ", 1)[0], done.stdout.split(" ", 1)[1].rsplit(" ", 1)[0], done.stdout.split()[-1]
    assert shape == "(3, 32, 32)" and int(mean) == 7
    assert float(growth_mb) < 160, f"peak grew by {growth_mb} MB for a 100 MB grayscale image"
