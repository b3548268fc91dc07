"""Settings: defaults equal configs/default.yaml, overrides, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gmsense.config import Settings, configs_dir, load_settings
from gmsense.errors import ConfigError


def test_default_yaml_equals_builtin_defaults() -> None:
    shipped = yaml.safe_load((configs_dir() / "default.yaml").read_text())
    assert Settings.model_validate(shipped) == Settings()
    assert set(shipped) | {"rules"} == set(Settings.model_fields), "rules live in configs/rules.yaml"


def test_file_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("sites:\n  buffer_m: 250\ndetect:\n  z_threshold: 5\n")
    settings = load_settings(path, {"sites.buffer_m": 100, "detect.min_drop": None})
    assert settings.sites.buffer_m == 100
    assert settings.detect.z_threshold == 5
    assert settings.detect.min_drop == Settings().detect.min_drop
    assert settings.config_hash() != Settings().config_hash()
    assert load_settings(path).config_hash() == load_settings(path).config_hash()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("season:\n  start_month: 9\n  end_month: 5\n", "end_month must not come before"),
        ("detect:\n  z_treshold: 3\n", "detect.z_treshold"),
        ("- just\n- a list\n", "mapping"),
        ("season: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_settings_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(path)
