"""Patch features: index changes as robust z-scores, persistence, and the patch against its surroundings."""

from __future__ import annotations

import numpy as np
import pytest

from gmsense.config import Settings
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
