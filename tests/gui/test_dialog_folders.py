"""File dialogs start where the user last went for that purpose (remembered across launches), else in Pictures or
the home folder: never in the current directory, which for README's command is the source checkout."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtWidgets import QFileDialog

from ddpm_studio.gui import dialogs as dlg

REAL = {name: getattr(dlg, name) for name in ("choose_directory", "choose_open_file", "choose_save_file")}


@pytest.fixture
def file_dialogs(monkeypatch: pytest.MonkeyPatch, app_handle) -> dict[str, Any]:
    """The real QtDialogs path down to QFileDialog, whose static choosers record where they would open."""
    for name, function in REAL.items():  # (the dialogs fixture replaced these with scripted answers)
        monkeypatch.setattr(dlg, name, function)
    script: dict[str, Any] = {"starts": [], "answer": ""}

    def chooser(_parent: Any, _title: str, start: str = "", *_rest: Any, **_kw: Any) -> Any:
        script["starts"].append(start)
        return script["answer"]

    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(chooser))
    for name in ("getSaveFileName", "getOpenFileName"):
        monkeypatch.setattr(QFileDialog, name, staticmethod(lambda *a, **k: (chooser(*a, **k), "")))
    return script


def outside_the_checkout(start: str) -> bool:
    return os.path.isabs(start) and not Path(start).resolve().is_relative_to(Path.cwd().resolve())


def test_save_and_open_dialogs_start_in_the_last_folder_for_their_purpose(app_handle, file_dialogs, tmp_path: Path,
                                                                        qtbot) -> None:
    """main: Save settings… opened at "ddpm-run.toml" (the current directory) and forgot the folder chosen."""
    studio = app_handle.studio
    studio.settings.save_file()  # the first time: a sensible default, with the suggested name
    first = file_dialogs["starts"][-1]
    assert outside_the_checkout(first) and first.endswith("ddpm-run.toml"), first

    configs = tmp_path / "my configs"
    configs.mkdir()
    file_dialogs["answer"] = str(configs / "mine.toml")
    studio.settings.save_file()
    assert (configs / "mine.toml").is_file()
    studio.settings.save_file()
    assert file_dialogs["starts"][-1] == str(configs / "ddpm-run.toml")  # where the last one was saved
    file_dialogs["answer"] = ""
    studio.settings.load_file()  # loading settings is the same purpose: the same folder
    assert file_dialogs["starts"][-1] == str(configs)

    photos = tmp_path / "photos"
    photos.mkdir()
    studio.settings.browse_folder()  # another purpose: not the settings' folder
    assert outside_the_checkout(file_dialogs["starts"][-1]) and file_dialogs["starts"][-1] != str(configs)
    file_dialogs["answer"] = str(photos)
    studio.settings.browse_folder()
    file_dialogs["answer"] = ""
    studio.prefs.runs_dir().mkdir(parents=True, exist_ok=True)
    studio.models.browse()  # a checkpoint: the runs folder until one was chosen
    assert file_dialogs["starts"][-1] == str(studio.prefs.runs_dir())
    studio.settings.browse_folder()
    assert file_dialogs["starts"][-1] == str(photos)

    # The folders outlive the session (the app's preferences).
    from ddpm_studio.gui.preferences import Preferences, open_settings

    studio.prefs.sync()
    again = Preferences(open_settings(os.environ["DDPM_STUDIO_SETTINGS"]))
    assert again.dialog_folder("settings_file") == str(configs) and again.dialog_folder("data_folder") == str(photos)


def test_a_remembered_folder_that_is_gone_falls_back_to_pictures_or_home(app_handle, file_dialogs, tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    app_handle.studio.prefs.remember_dialog_folder("images", str(gone))
    dlg.QtDialogs(None, app_handle.studio.prefs).choose_directory("Save images to folder", "images")
    start = file_dialogs["starts"][-1]
    assert start in (dlg.standard_folder("pictures"), str(Path.home())) and outside_the_checkout(start)
