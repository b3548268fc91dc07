"""Phenology groups (gmsense.detect.phenology): fields on other calendars get a reference that
shares their calendar, so a work in a field is not hidden by the field's own spread; groups that
do not earn their place (forest at the spread floor, an event that happened to share a curve) are
not used; and the groups do not depend on how the licence's sample is cut or ordered."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
import shapely.wkt

from gmsense.batch.planner import tile_grid
from gmsense.batch.request import ScanRequest
from gmsense.batch.tiles import analyse_in_tiles
from gmsense.config import Settings
from gmsense.detect.context import SceneSample, merge_samples
from gmsense.detect.phenology import MAX_LEVEL_RANGE, fit_groups
from gmsense.pipeline import analyse_cube, licence_sample, season_index
from gmsense.sources import LocalSource
from gmsense.testutils import PlantedBreak, cube_site, make_cube

SHIFTS = (-20.0, 0.0, 25.0)  # three crop calendars, days
WORK = PlantedBreak(slice(20, 26), slice(42, 48), "2021-06-20", 0.3)  # a 60 m pad in the late field


def _settings(on: bool) -> Settings:
    settings = Settings()
    return settings.model_copy(update={"detect": settings.detect.model_copy(update={"phenology_groups": on})})


@pytest.fixture(scope="module")
def fields() -> object:
    return make_cube(60, 60, years=(2018, 2019, 2020, 2021), breaks=(WORK,), noise=0.01, cloud_share=0.0, seed=3,
                     calendar_shifts=SHIFTS)


def _sample(cube: object, settings: Settings) -> tuple[SceneSample, object]:
    site = cube_site(cube)
    _, _, _, ndvi = season_index(cube, settings, site.site_id)
    return licence_sample(ndvi, site.buffered(0)), ndvi


def _on_work(cube: object, local_wkt: str) -> bool:
    """Whether a patch (local CRS WKT) touches the planted pad's pixels."""
    xs, ys = cube["x"].values[WORK.cols], cube["y"].values[WORK.rows]
    return shapely.wkt.loads(local_wkt).intersects(shapely.box(xs.min(), ys.min(), xs.max(), ys.max()))


def test_fields_on_their_own_calendars_get_groups_and_the_work_in_one_is_found(fields: object) -> None:
    site = cube_site(fields)
    off = analyse_cube(site, fields, _settings(False), threads=1)
    on = analyse_cube(site, fields, _settings(True), threads=1)
    # The field's spread under the scene median hides the pad: nothing of it, or a few pixels weeks late
    # (3 of 36, late July, with detect.persistence_informative).
    assert sum(p.area_m2 for p in off.patches if _on_work(fields, p.local_wkt)) < 0.25 * 36 * 100.0
    assert len(on.patches) == 1
    assert on.patches[0].first_detected[:7] == "2021-06"
    assert on.patches[0].area_m2 == pytest.approx(36 * 100.0, rel=0.15)
    assert _on_work(fields, on.patches[0].local_wkt)
    sample, _ = _sample(fields, _settings(True))
    context = merge_samples([sample], _settings(True))
    assert context.groups is not None
    assert (np.abs(context.groups.offsets).max(axis=0) > 0.05).sum() >= 2  # the early and the late fields


def test_a_forest_at_the_spread_floor_keeps_the_scene_median() -> None:
    cube = make_cube(40, 40, years=(2018, 2019, 2020, 2021), noise=0.01, cloud_share=0.0, seed=4)
    sample, _ = _sample(cube, _settings(True))
    assert merge_samples([sample], _settings(True)).groups is None


def test_a_group_whose_level_steps_is_an_event_not_a_calendar() -> None:
    """A clearing in the grouping seasons makes its own curve; its level then falls for good, so its
    median is no reference (it would follow the clearing and hide the next work there)."""
    clearing = PlantedBreak(slice(0, 20), slice(0, 20), "2019-06-10", 0.6)
    cube = make_cube(50, 50, years=(2017, 2018, 2019, 2020, 2021), breaks=(clearing,), noise=0.01,
                     cloud_share=0.0, seed=6)
    site = cube_site(cube)
    off = analyse_cube(site, cube, _settings(False), threads=1)
    on = analyse_cube(site, cube, _settings(True), threads=1)
    assert len(off.patches) == 1
    assert [(p.area_m2, p.first_detected) for p in on.patches] == [(p.area_m2, p.first_detected) for p in off.patches]
    sample, _ = _sample(cube, _settings(True))
    context = merge_samples([sample], _settings(True))
    if context.groups is not None:  # any group used follows a calendar, not the clearing
        years = context.times.astype("datetime64[Y]").astype(int) + 1970
        for column in context.groups.offsets.T[np.abs(context.groups.offsets).max(axis=0) > 0]:
            levels = [np.median(column[years == y]) for y in np.unique(years)]
            assert max(levels) - min(levels) <= MAX_LEVEL_RANGE


def test_groups_do_not_depend_on_how_the_sample_is_cut_or_ordered(fields: object) -> None:
    settings = _settings(True)
    sample, _ = _sample(fields, settings)
    whole = merge_samples([sample], settings)
    rng = np.random.default_rng(0)
    order = rng.permutation(sample.values.shape[1])
    parts = np.array_split(order, 3)
    pieces = [SceneSample(sample.times, sample.values[:, part]) for part in parts[::-1]]
    cut = merge_samples(pieces, settings)
    assert whole.groups is not None
    assert cut.groups is not None
    np.testing.assert_array_equal(whole.groups.centroids, cut.groups.centroids)
    np.testing.assert_array_equal(whole.groups.offsets, cut.groups.offsets)


def test_groups_need_a_long_enough_series(fields: object) -> None:
    settings = _settings(True)
    sample, _ = _sample(fields, settings)
    first_three = sample.times.astype("datetime64[Y]").astype(int) + 1970 < 2021
    short = sample.values[first_three]
    offset = np.zeros(short.shape[0])
    assert fit_groups(short, sample.times[first_three], offset, np.ones(short.shape[0], dtype=bool),
                      settings.detect, settings.season) is None


def test_the_fields_give_the_same_patches_in_tiles(fields: object, tmp_path: object) -> None:
    settings = _settings(True)
    path = tmp_path / "fields.nc"
    fields.to_netcdf(path)
    site = cube_site(fields)
    source = LocalSource(path, settings)
    request = ScanRequest([site], source, settings)
    whole = analyse_in_tiles(site, tile_grid(site.buffered(settings.sites.buffer_m), 1, 1), request)
    tiled = analyse_in_tiles(site, tile_grid(site.buffered(settings.sites.buffer_m), 2, 2), request)
    assert len(whole.patches) == 1
    assert [(p.area_m2, p.first_detected) for p in tiled.patches] == \
        [(p.area_m2, p.first_detected) for p in whole.patches]


def test_the_setting_changes_the_config_hash_only_when_on() -> None:
    assert _settings(True).config_hash() != _settings(False).config_hash()
