"""The app's run presets: each sets every setting it governs, so applying one after another leaves nothing behind."""

from __future__ import annotations

import dataclasses

from ddpm_studio.services import config as c
from ddpm_studio.services.run_presets import DATASET_CHOICE, GUI_DEFAULTS, RUN_PRESETS, apply_preset, default_config

DEFAULTS = "Laptop CPU (default)"


def differences(a: c.RunConfig, b: c.RunConfig) -> list[str]:
    return [f"{section}.{f.name}: {getattr(getattr(a, section), f.name)!r} != {getattr(getattr(b, section), f.name)!r}"
            for section, kind in c.SECTION_TYPES.items() for f in dataclasses.fields(kind)
            if getattr(getattr(a, section), f.name) != getattr(getattr(b, section), f.name)]


def test_the_defaults_preset_restores_every_default_after_another_preset() -> None:
    """main: after Paper CIFAR-10, Laptop CPU (default) left Noise schedule = linear and Prediction = epsilon."""
    folder = c.from_dict({"data": {"source": "folder", "data_path": "/photos", "channels": 1, "hflip": False}})
    restored = apply_preset(apply_preset(folder, "Paper CIFAR-10 (GPU, days)"), DEFAULTS)
    # The app's defaults are the engine's (RunConfig()) but for the preview cadence it shows: compared field by field.
    expected = c.from_dict({**GUI_DEFAULTS, "data": {f: getattr(folder.data, f) for f in DATASET_CHOICE}})
    assert differences(restored, expected) == []
    assert differences(default_config(), c.RunConfig()) == [
        f"schedule.{name}: {getattr(default_config().schedule, name)!r} != {getattr(c.RunConfig().schedule, name)!r}"
        for name in GUI_DEFAULTS["schedule"]]
    assert (restored.data.source, restored.data.data_path, restored.data.channels) == ("folder", "/photos", 1)


def test_every_preset_is_independent_of_what_was_applied_before() -> None:
    for name in RUN_PRESETS:
        outcomes = {str(apply_preset(apply_preset(c.RunConfig(), other), name)) for other in RUN_PRESETS}
        assert len(outcomes) == 1, name
        assert c.validate(apply_preset(c.RunConfig(), name)) == [], name
