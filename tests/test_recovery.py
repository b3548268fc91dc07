"""Recovery against a reference ring: trajectory, ratio, status."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from shapely.geometry import box

from gmsense.config import RecoverySettings
from gmsense.cube.ops import season_year
from gmsense.records import RecoveryObservation
from gmsense.recovery import ratio_series, recovery_status, regrowth_ceiling, ring_mask, trajectory, uses_cover


def _series(patch_by_year: dict[int, float],
            ring: float = 0.8) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    times = np.array([f"{y}-{m:02d}-15" for y in patch_by_year for m in (6, 7, 8)], dtype="datetime64[ns]")
    index = np.full((times.size, 30, 30), ring)
    pmask = np.zeros((30, 30), dtype=bool)
    pmask[12:18, 12:18] = True
    years = season_year(times)
    for y, value in patch_by_year.items():
        index[np.ix_(years == y, np.arange(30), np.arange(30))] = np.where(pmask, value, ring)
    ring_px = ~pmask
    return index, times, pmask, ring_px


@pytest.mark.parametrize(
    ("trajectory_values", "expected_status", "expected_ratio"),
    [
        ({2019: 0.8, 2020: 0.3, 2021: 0.35, 2022: 0.4}, "not_recovering", 0.2),
        ({2019: 0.8, 2020: 0.3, 2021: 0.45, 2022: 0.55}, "recovering", 0.5),
        ({2019: 0.8, 2020: 0.3, 2021: 0.6, 2022: 0.78}, "recovered", 0.96),
    ],
)
def test_status_from_ratio(trajectory_values: dict[int, float], expected_status: str, expected_ratio: float) -> None:
    index, times, pmask, ring = _series(trajectory_values)
    obs = trajectory(index, times, pmask, ring, np.datetime64("2020-06-15"), "ndvi")
    assert [o.season for o in obs] == [2019, 2020, 2021, 2022]
    assert obs[0].relative == pytest.approx(0.0)
    plain = RecoverySettings(herbaceous_ndvi=None)  # the ratios as they are, whatever the ring
    status, ratio = recovery_status(obs, np.datetime64("2020-06-15"), 2022, plain)
    assert status == expected_status
    assert ratio == pytest.approx(expected_ratio, abs=0.01)


def test_detected_this_season_is_active() -> None:
    index, times, pmask, ring = _series({2021: 0.8, 2022: 0.3})
    obs = trajectory(index, times, pmask, ring, np.datetime64("2022-06-15"), "ndvi")
    assert recovery_status(obs, np.datetime64("2022-06-15"), 2022, RecoverySettings()) == ("active", 0.0)


def _observations(patch: dict[int, float], ring: dict[int, float], index: str = "ndvi") -> list[RecoveryObservation]:
    return [RecoveryObservation(season, index, 3, patch[season], ring[season], patch[season] - ring[season])
            for season in sorted(patch)]


def test_a_drought_that_thins_patch_and_ring_alike_leaves_the_ratio() -> None:
    """Drought thins vegetation: patch and ring both move towards bare ground by the same factor
    (their cover over the soil shrinks alike), which the relative cover cancels; the plain
    difference reads the thinner gap as regrowth."""
    soil, thinned = 0.1, 0.6
    patch = {2019: 0.8, 2020: 0.3, 2021: soil + thinned * (0.55 - soil)}
    ring = {2019: 0.8, 2020: 0.8, 2021: soil + thinned * (0.8 - soil)}
    obs = _observations(patch, ring)
    plain = RecoverySettings(herbaceous_ndvi=None)
    assert recovery_status(obs, np.datetime64("2020-06-15"), 2021, plain) == ("recovering", 0.5)  # as without drought
    difference = RecoverySettings(herbaceous_ndvi=None, ratio_measure="difference")
    assert recovery_status(obs, np.datetime64("2020-06-15"), 2021, difference) == ("recovering", 0.7)


def test_bare_ground_stays_not_recovering_when_its_ring_dries() -> None:
    """A pit that stays bare (NDVI 0.15) while the grassland around it dries from 0.6 to 0.4: no
    cover regained. The difference patch - ring shrinks with the ring and read 44 % "regrown"."""
    patch = {2019: 0.6, 2020: 0.15, 2021: 0.15, 2022: 0.15}
    ring = {2019: 0.6, 2020: 0.6, 2021: 0.45, 2022: 0.4}
    obs = _observations(patch, ring)
    status, ratio = recovery_status(obs, np.datetime64("2020-06-15"), 2022, RecoverySettings())
    assert status == "not_recovering"
    assert ratio == pytest.approx((0.05 / 0.3 - 0.1) / 0.9, abs=1e-3)
    old = recovery_status(obs, np.datetime64("2020-06-15"), 2022, RecoverySettings(ratio_measure="difference"))
    assert old == ("recovering", pytest.approx(0.444, abs=1e-3))


def test_cover_needs_a_vegetated_ring_and_ndvi() -> None:
    """A ring less than 0.1 greener than bare ground in some season, or another index, is no
    reference for a cover: the ratio is taken on the difference there."""
    patch = {2019: 0.6, 2020: 0.15, 2021: 0.3}
    green = _observations(patch, {2019: 0.6, 2020: 0.6, 2021: 0.6})
    settings = RecoverySettings()
    assert uses_cover(green, settings)
    assert not uses_cover(_observations(patch, {2019: 0.6, 2020: 0.15, 2021: 0.6}), settings)
    assert not uses_cover(_observations(patch, {2019: 0.6, 2020: 0.6, 2021: 0.6}, index="nbr"), settings)
    assert not uses_cover(green, RecoverySettings(ratio_measure="difference"))
    seasons, series = ratio_series(green, settings)
    assert list(seasons) == [2019, 2020, 2021]
    np.testing.assert_allclose(series, [1.0, 0.1, 0.4])


def test_ring_excludes_patches() -> None:
    transform = Affine(10, 0, 0, 0, -10, 300)
    patch = box(100, 100, 150, 150)
    other = box(180, 100, 200, 150)
    mask = ring_mask(patch, [patch, other], (30, 30), transform)
    assert mask.any()
    row, col = 30 - 12, 19  # a pixel inside `other`
    assert not mask[row, col]
    assert not mask[30 - 12, 12], "the patch itself is not in its ring"


def test_recovery_metrics_on_a_known_trajectory() -> None:
    from gmsense.recovery import recovery_metrics

    seasons = np.arange(2015, 2026)
    # Baseline 0 before 2017, loss of 0.5 in 2017, linear regrowth of 0.05 per season.
    relative = np.where(seasons < 2017, 0.0, -0.5 + 0.05 * (seasons - 2017))
    m = recovery_metrics(seasons, relative, 2017, reference_seasons=(2015, 2016), absolute=relative + 0.8)
    assert m["trough_season"] == 2017
    assert m["magnitude"] == pytest.approx(0.5)
    assert m["recovery_ratio"] == pytest.approx(0.8)
    assert m["y2r"] == 8
    assert m["rri"] == pytest.approx((0.05 * 5) / 0.5)
    assert m["yryr"] == pytest.approx(0.05)
    assert m["slope"] == pytest.approx(0.05)
    assert m["r80p"] == pytest.approx((0.8 - 0.25) / (0.8 * 0.8))


@pytest.mark.parametrize("pixel_m", [10.0, 20.0, 30.0])
def test_rings_burnt_in_a_window_equal_the_whole_grid_burnt(pixel_m: float) -> None:
    """The ring outlines made in one vectorised call per thread, burnt in their window only, are the
    masks of the whole grid burnt one ring at a time, including rings cut by the grid's edge."""
    from rasterio.features import geometry_mask
    from shapely.geometry import Point

    from gmsense.recovery import RING_OUTER_M, burn, ring_exclusion, ring_outlines

    rng = np.random.default_rng(5)
    transform = Affine(pixel_m, 0, 600_000.0, 0, -pixel_m, 5_290_000.0)
    shape = (90, 70)
    patches = [Point(600_000.0 + x * pixel_m, 5_290_000.0 - y * pixel_m).buffer(r * pixel_m, quad_segs=3)
               for x, y, r in zip(rng.uniform(0, 70, 9), rng.uniform(0, 90, 9), rng.uniform(0.6, 4, 9), strict=True)]
    exclusion = ring_exclusion(patches)
    outlines = ring_outlines(patches, exclusion, threads=2)
    assert len(outlines) == len(patches)
    for patch, outline in zip(patches, outlines, strict=True):
        whole = patch.buffer(RING_OUTER_M).difference(exclusion)
        assert outline.equals_exact(whole, 0.0)
        expected = geometry_mask([whole], out_shape=shape, transform=transform, invert=True)
        assert np.array_equal(burn(outline, shape, transform), expected)
        assert np.array_equal(ring_mask(patch, patches, shape, transform), expected)
    assert not burn(box(0, 0, 10, 10), shape, transform).any(), "a shape off the grid burns nothing"


def test_grass_regrown_in_forest_is_recovered_and_the_same_ratio_on_steppe_is_not() -> None:
    # A pad in forest (ring NDVI 0.8) reclaimed with grass: bare at 0.2, fully grassed at 0.65, the
    # NDVI of established grass, which stays under the forest's. The plain ratio, 0.75 of the loss,
    # read "recovering" (the old estimator); all of the ground has regrown what it regrows first.
    index, times, pmask, ring = _series({2019: 0.8, 2020: 0.2, 2021: 0.45, 2022: 0.65}, ring=0.8)
    obs = trajectory(index, times, pmask, ring, np.datetime64("2020-06-15"), "ndvi")
    settings = RecoverySettings()
    assert recovery_status(obs, np.datetime64("2020-06-15"), 2022, RecoverySettings(herbaceous_ndvi=None)) == (
        "recovering", 0.75)
    assert regrowth_ceiling(0.8, settings) == pytest.approx((0.6 - 0.1) / (0.8 - 0.1))
    assert recovery_status(obs, np.datetime64("2020-06-15"), 2022, settings) == ("recovered", 0.75)
    # The same share of the loss regained on steppe (ring 0.5, no greener than grass) is 75 %:
    # the ceiling is 1 there and the status stays "recovering".
    index, times, pmask, ring = _series({2019: 0.5, 2020: 0.2, 2021: 0.35, 2022: 0.425}, ring=0.5)
    obs = trajectory(index, times, pmask, ring, np.datetime64("2020-06-15"), "ndvi")
    assert regrowth_ceiling(0.5, settings) == 1.0
    assert recovery_status(obs, np.datetime64("2020-06-15"), 2022, settings) == ("recovering", 0.75)


def test_a_herbaceous_ndvi_not_above_bare_ground_is_refused() -> None:
    with pytest.raises(ValueError, match="herbaceous_ndvi must be above soil_ndvi"):
        RecoverySettings(herbaceous_ndvi=0.1, soil_ndvi=0.2)
