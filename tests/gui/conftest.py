"""Fixtures for the desktop app's tests: offscreen Qt, temporary runs/settings/cache folders, no blocking dialogs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("PySide6")
pytest.importorskip("pyqtgraph")
pytest.importorskip("pytestqt")

#: A run that takes ~50 ms per step on a CPU: tiny U-Net, 16x16 images, 50 timesteps.
TINY = {
    "data": {"image_size": 16, "cache": False},
    "model": {"preset": "tiny"},
    "diffusion": {"timesteps": 50},
    "optim": {"batch_size": 8, "total_steps": 100_000, "warmup_steps": 2, "lr": 1e-3, "device": "cpu",
              "mixed_precision": "off"},
    "schedule": {"preview_every": 3, "preview_minutes": 0.0, "preview_steps": 5, "preview_images": 4,
                 "checkpoint_every": 0, "checkpoint_minutes": 0.0, "log_every": 2, "keep_last": 3,
                 "preview_budget": 1.0},  # previews at their exact steps (not spaced out by the time budget)
}


@pytest.fixture(autouse=True, scope="session")
def _join_background_jobs() -> Any:
    """Leave no worker thread running when the interpreter exits (a QThread destroyed while running aborts it)."""
    yield
    from ddpm_studio.gui.workers import wait_for_threads

    wait_for_threads(30)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> Any:
    """One intra-op thread: on a shared 2-core box, OpenMP threads competing with other processes can make
    a tiny model's step 100x slower, and the tests time out. The GUI's behaviour does not depend on it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own runs folder, settings file and cache folder; nothing touches the user's."""
    monkeypatch.setenv("DDPM_STUDIO_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("DDPM_STUDIO_SETTINGS", str(tmp_path / "settings.ini"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


class Dialogs:
    """Scripted answers for every dialog the app can open (so nothing blocks)."""

    def __init__(self) -> None:
        self.answers: list[int] = []
        self.asked: list[str] = []
        self.directory = ""
        self.open_file = ""
        self.save_file = ""

    def ask(self, _parent: Any, title: str, _text: str, _buttons: tuple[str, ...], default: int = 0) -> int:
        self.asked.append(title)
        return self.answers.pop(0) if self.answers else 0


@pytest.fixture
def dialogs(monkeypatch: pytest.MonkeyPatch) -> Dialogs:
    from PySide6.QtWidgets import QFileDialog, QMessageBox

    from ddpm_studio.gui import dialogs as dlg

    script = Dialogs()
    monkeypatch.setattr(dlg, "ask", script.ask)
    monkeypatch.setattr(dlg, "choose_directory", lambda *a, **k: script.directory)
    monkeypatch.setattr(dlg, "choose_open_file", lambda *a, **k: script.open_file)
    monkeypatch.setattr(dlg, "choose_save_file", lambda *a, **k: script.save_file)
    # Belts and braces: nothing may open a blocking Qt dialog in a test.
    monkeypatch.setattr(QMessageBox, "exec", lambda self: 0)
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: script.directory))
    dlg.shown_errors.clear()
    return script


@pytest.fixture
def app_handle(qtbot: Any, dialogs: Dialogs, isolated: Path) -> Any:
    """The real main window, shown offscreen; torn down with no thread left running."""
    from ddpm_studio.gui.app import create_app

    handle = create_app(exec_app=False, settings_path=str(isolated / "settings.ini"))
    qtbot.waitUntil(lambda: handle.studio.torch_ready, timeout=60_000)
    yield handle
    studio = handle.studio
    studio.shutdown()
    if handle.window.isVisible():
        handle.window.close()
    qtbot.waitUntil(lambda: not studio.training.is_running() and not studio.generate.is_running(), timeout=60_000)
    handle.window.deleteLater()
    from ddpm_studio.gui.workers import wait_for_threads

    wait_for_threads(30)
    import logging

    logging.captureWarnings(False)


def tiny_config(**sections: dict[str, Any]) -> Any:
    from ddpm_studio.services import config as c

    values = {k: dict(v) for k, v in TINY.items()}
    for name, extra in sections.items():
        values.setdefault(name, {}).update(extra)
    return c.from_dict(values)


def write_pngs(folder: Path, n: int = 40, size: int = 20) -> Path:
    """A small folder of coloured squares (and one non-image file, which must be skipped)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        colour = ((i * 53) % 256, (i * 97) % 256, (i * 31) % 256)
        im = Image.new("RGB", (size, size), "white")
        im.paste(colour, (3 + i % 5, 3 + i % 7, 12 + i % 5, 12 + i % 7))
        im.save(folder / f"img_{i:03d}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder
