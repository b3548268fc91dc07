"""Patch features: index changes as robust z-scores, persistence, and the patch against its surroundings."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from shapely.geometry import box

from gmsense.config import DetectSettings, Settings
from gmsense.detect.features import add_patch_context, context_rings, ring_anomaly
from gmsense.detect.lines import ring
from gmsense.detect.patches import Patch
from gmsense.pipeline import analyse_cube
from gmsense.testutils import PlantedBreak, cube_site, make_cube

WORK = PlantedBreak(slice(14, 20), slice(14, 22), "2021-06-20")


def _patch(cube: object) -> dict:
    result = analyse_cube(cube_site(cube), cube, Settings())
    assert result.patches, "the planted break is found"
    return max(result.patches, key=lambda p: p.area_m2).metrics


def test_bare_soil_in_quiet_forest() -> None:
    metrics = _patch(make_cube(ny=36, nx=36, breaks=(WORK,), seed=2, noise=0.01, cloud_share=0.0))
    assert metrics["z_ndvi"] < -5
    assert metrics["z_nbr"] < -5
    assert metrics["z_ndmi"] < -3
    assert metrics["z_bsi"] > 5, "bare soil: the bare soil index rises"
    assert metrics["persistence"] > 0.9, "the soil stays bare to the end of the series"
    assert abs(metrics["ring_drop_near"]) < 0.2, "the forest around is quiet"
    assert abs(metrics["ring_drop_far"]) < 0.2, "the forest around is quiet"
    assert metrics["contrast_after"] < -0.3
    assert metrics["ring_ndvi_before"] > 0.6, "forest around"
    assert metrics["line_share"] == 0.0
    assert metrics["ridge"] >= 0


def test_change_that_the_surroundings_share_reads_as_such() -> None:
    # The whole scene loses vegetation on the same day, a little less outside the block.
    regional = PlantedBreak(slice(0, 36), slice(0, 36), WORK.date, 0.5)
    metrics = _patch(make_cube(ny=36, nx=36, breaks=(regional, WORK), seed=2, noise=0.01, cloud_share=0.0))
    assert metrics["ring_drop_near"] > 0.3
    assert metrics["ring_drop_far"] > 0.3


@pytest.mark.parametrize("regrow", [False, True])
def test_persistence_falls_when_the_vegetation_returns(regrow: bool) -> None:
    cube = make_cube(ny=36, nx=36, breaks=(WORK,), seed=2, noise=0.01, cloud_share=0.0, years=(2019, 2020, 2021, 2022))
    if regrow:
        later = cube["time"].values >= np.datetime64("2022-01-01")
        undisturbed = make_cube(ny=36, nx=36, seed=2, noise=0.01, cloud_share=0.0, years=(2019, 2020, 2021, 2022))
        for band in ("blue", "green", "red", "nir", "swir1", "swir2"):
            cube[band].values[later] = undisturbed[band].values[later]
    persistence = _patch(cube)["persistence"]
    assert (persistence < 0.6) if regrow else (persistence > 0.9)


@pytest.mark.parametrize(("pixel_m", "near", "far"), [
    (10.0, (1, 3), (3, 10)),  # as before: 10 m out is one step already
    (20.0, (1, 2), (2, 5)),
    (30.0, (1, 2), (2, 3)),
    (60.0, (1, 2), (2, 3)),
])
def test_the_context_rings_never_hold_a_pixel_next_to_the_patch(pixel_m: float, near: tuple, far: tuple) -> None:
    """10 m rounds to 0 steps at 20 and 30 m; the rings start one step out all the same (the pixels
    sharing an edge with the patch share its drop), and the far ring where the near one ends."""
    assert context_rings(DetectSettings(), pixel_m) == (near, far)
    mask = np.zeros((31, 31), dtype=bool)
    mask[12:15, 9:18] = True
    mask[15, 12] = True
    next_to = ndimage.binary_dilation(mask) & ~mask  # 4-connected: the pixels sharing an edge with it
    for steps in (near, far):
        around = ring(mask, steps)
        assert around.any()
        assert not (around & (next_to | mask)).any()
    assert not (ring(mask, near) & ring(mask, far)).any()


def _context_with_mixed_edge(pixel_m: float) -> dict[str, float]:
    """Quiet land at NDVI 0.8; a 5 x 7 patch falls to 0.3 on 2021-06-20 and the pixels next to it
    lose half as much (mixed pixels, misregistration), nothing else changes."""
    days = np.arange(np.datetime64("2020-05-01"), np.datetime64("2021-10-01"), np.timedelta64(8, "D"))
    times = days[np.isin(days.astype("datetime64[M]").astype(int) % 12 + 1, range(5, 10))]
    rng = np.random.default_rng(3)
    index = 0.8 + rng.normal(0, 0.005, (times.size, 30, 30))
    mask = np.zeros((30, 30), dtype=bool)
    mask[12:17, 11:18] = True
    edge = ndimage.binary_dilation(mask) & ~mask
    after = times >= np.datetime64("2021-06-20")
    index[after] = np.where(mask, index[after] - 0.5, np.where(edge, index[after] - 0.25, index[after]))
    labels = mask.astype("int32")
    patch = Patch(1, box(11, 12, 18, 17), np.datetime64("2021-06-20"), np.datetime64("2021-07-06"),
                  int(mask.sum()), 0.5)
    add_patch_context([patch], labels, index, times, np.where(mask, 0.5, np.nan), DetectSettings(), pixel_m)
    return patch.context


@pytest.mark.parametrize("pixel_m", [10.0, 20.0, 30.0])
def test_a_patch_whose_edge_pixels_share_its_drop_is_in_quiet_land(pixel_m: float) -> None:
    context = _context_with_mixed_edge(pixel_m)
    assert abs(context["ring_drop_near"]) < 0.1, "the edge pixels are the patch's own drop, not its surroundings'"
    assert abs(context["ring_drop_far"]) < 0.1
    assert context["contrast_after"] < -0.4


def _fields_falling(dry_year: bool) -> dict[str, float]:
    """A 5 x 7 patch drops to bare on 2021-08-20 amid land that falls every year from 20 August
    (fields harvested: the yearly cycle) or, with ``dry_year``, only in 2021."""
    days = np.arange(np.datetime64("2020-05-01"), np.datetime64("2021-10-01"), np.timedelta64(5, "D"))
    times = days[np.isin(days.astype("datetime64[M]").astype(int) % 12 + 1, range(5, 10))]
    doy = (times - times.astype("datetime64[Y]")).astype("timedelta64[D]").astype(int)
    this_year = times >= np.datetime64("2021-01-01")
    falls = (doy >= 231) & (this_year if dry_year else True)
    rng = np.random.default_rng(5)
    index = np.where(falls, 0.35, 0.8)[:, None, None] + rng.normal(0, 0.005, (times.size, 30, 30))
    mask = np.zeros((30, 30), dtype=bool)
    mask[12:17, 11:18] = True
    index[this_year & (doy >= 231)] = np.where(mask, 0.25, index[this_year & (doy >= 231)])
    patch = Patch(1, box(11, 12, 18, 17), np.datetime64("2021-08-20"), np.datetime64("2021-09-05"),
                  int(mask.sum()), 0.5)
    add_patch_context([patch], mask.astype("int32"), index, times, np.where(mask, 0.5, np.nan), DetectSettings(),
                      10.0)
    return patch.context


def test_a_yearly_cycle_around_a_patch_is_no_anomaly_a_dry_year_is() -> None:
    cycle, dry = _fields_falling(dry_year=False), _fields_falling(dry_year=True)
    for context in (cycle, dry):
        for side in ("near", "far"):
            assert context[f"ring_drop_{side}"] > 0.6, "the land around fell as well"
    for side in ("near", "far"):
        assert abs(cycle[f"ring_anomaly_{side}"]) < 0.1, "it fell at the same days the season before"
        assert dry[f"ring_anomaly_{side}"] > 0.6, "it did not fall the season before"


def test_ring_anomaly_needs_the_season_before() -> None:
    values = np.full((6, 4), 0.5)
    days = np.array([150, 180, 210, 150, 180, 210])
    assert np.isnan(ring_anomaly(values, days, np.array([0]), np.array([3, 4, 5]))), "one date is no curve"
    assert ring_anomaly(values - np.array([0, 0, 0, 0, 0.2, 0.2])[:, None], days, np.array([0, 1, 2]),
                        np.array([4, 5])) == pytest.approx(0.2)
    outside = np.array([100, 180, 210, 300, 310, 320])
    assert np.isnan(ring_anomaly(values, outside, np.array([0, 1, 2]), np.array([3, 4, 5]))), \
        "no date after lies within the season before's span"
