import dataclasses

import pytest

from ddpm_studio.services import config as c
from ddpm_studio.services import config_files


def test_defaults_are_valid_and_round_trip_through_toml(tmp_path):
    cfg = c.RunConfig()
    assert c.validate(cfg) == []
    path = tmp_path / "run.toml"
    config_files.save_config_file(cfg, path)
    assert config_files.load_config_file(path) == cfg
    custom = c.from_dict({"model": {"channel_mults": "1,2"}, "optim": {"lr": "1e-3", "batch_size": 8}})
    config_files.save_config_file(custom, path)
    loaded = config_files.load_config_file(path)
    assert loaded == custom and loaded.model.channel_mults == (1, 2) and loaded.optim.lr == 1e-3


def test_range_and_choice_messages_are_readable():
    cfg = c.from_dict({"optim": {"batch_size": 0, "lr": 5.0}, "diffusion": {"schedule": "sigmoidal"}})
    errors = c.validate(cfg)
    assert "Batch size must be between 1 and 4096 (got 0)" in errors
    assert "Learning rate must be between 1e-07 and 0.1 (got 5)" in errors
    assert any(e.startswith("Noise schedule must be one of linear, cosine") for e in errors)


def test_wrong_types_and_unknown_keys():
    with pytest.raises(c.ConfigError) as info:
        c.from_dict({"optim": {"batch_size": "many", "lerning_rate": 1}, "misc": {}})
    errors = info.value.errors
    assert "Batch size must be a whole number (got 'many')" in errors
    assert any("Unknown setting 'lerning_rate' in [optim]" in e for e in errors)
    assert any("Unknown section [misc]" in e for e in errors)
    with pytest.raises(c.ConfigError, match="true or false"):
        c.from_dict({"data": {"hflip": "maybe"}})
    with pytest.raises(c.ConfigError, match="whole number"):
        c.from_dict({"optim": {"total_steps": 2.5}})


def test_cross_field_checks(tmp_path):
    errors = c.validate(c.from_dict({"data": {"source": "folder", "data_path": str(tmp_path / "nope")}}))
    assert any("does not exist" in e for e in errors)
    assert "Choose a data folder" in c.validate(c.from_dict({"data": {"source": "folder"}}))
    assert any("Channels must be 1" in e for e in c.validate(c.from_dict({"data": {"channels": 2}})))
    assert any("multiple of 32" in e for e in c.validate(c.from_dict({"model": {"base_channels": 48}})))


def test_bad_config_files(tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text("[optim\nlr = 1")
    with pytest.raises(c.ConfigError, match="not valid TOML"):
        config_files.load_config_file(broken)
    with pytest.raises(c.ConfigError, match="Cannot read"):
        config_files.load_config_file(tmp_path / "missing.toml")


def test_every_field_has_label_and_help():
    for cls in [*c.SECTION_TYPES.values(), c.SampleConfig, c.InterpolationConfig]:
        for f in dataclasses.fields(cls):
            assert f.metadata["label"] and f.metadata["help"], f.name
            c.field_kind(f)


@pytest.mark.parametrize("section, key, saved, new", [
    ("diffusion", "prediction", "epsilon", "v"),  # runs saved before v-prediction existed trained ε
    ("model", "preset", "laptop", "fast"),  # runs saved before the small preset became the default were the laptop
])
def test_a_saved_run_without_a_newer_setting_keeps_the_value_it_was_trained_with(tmp_path, section, key, saved, new):
    """A run's config.toml that lacks a setting predates it: it must not be read as the new default."""
    path = tmp_path / "config.toml"
    config_files.save_config_file(c.RunConfig(), path)
    text = path.read_text(encoding="utf-8")
    old = "\n".join(line for line in text.splitlines() if not line.startswith(f"{key} ="))
    assert old != text
    path.write_text(old, encoding="utf-8")
    assert getattr(getattr(config_files.load_config_file(path, saved_run=True), section), key) == saved
    assert getattr(getattr(config_files.load_config_file(path), section), key) == new  # a template for a new run
