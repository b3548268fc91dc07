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
        ("season:\n  start_month: 13\n", "season.start_month"),
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


def test_a_southern_season_runs_across_new_year_and_is_named_by_its_end(tmp_path: Path) -> None:
    import numpy as np

    from gmsense.cube.ops import in_season, season_year

    path = tmp_path / "south.yaml"
    path.write_text("season:\n  start_month: 10\n  end_month: 4\n")
    season = load_settings(path).season
    assert season.crosses_new_year
    days = np.array(["2020-09-30", "2020-10-01", "2020-12-31", "2021-01-01", "2021-04-30", "2021-05-01"],
                    dtype="datetime64[ns]")
    np.testing.assert_array_equal(in_season(days, season), [False, True, True, True, True, False])
    np.testing.assert_array_equal(season_year(days, season), [2020, 2021, 2021, 2021, 2021, 2021])
    north = Settings().season
    assert not north.crosses_new_year
    np.testing.assert_array_equal(season_year(days, north), [2020, 2020, 2020, 2021, 2021, 2021])
    assert int(season_year(np.datetime64("2020-11-15"), season)) == 2021
