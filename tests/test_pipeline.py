"""One licence end to end: the same result from numpy- and dask-backed cubes; features read per patch."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from gmsense.config import Settings
from gmsense.cube import ops as cubeops
from gmsense.detect.features import add_patch_spectra
from gmsense.detect.patches import Patch
from gmsense.pipeline import analyse_cube
from gmsense.testutils import PlantedBreak, cube_site, make_cube

BREAKS = (PlantedBreak(slice(4, 10), slice(3, 20), "2020-07-01"),
          PlantedBreak(slice(20, 28), slice(15, 25), "2021-06-20"))


def _records(result: object) -> list[tuple]:
    return [(r.disturbance_class, r.confidence, r.first_detected, r.confirmed_on, r.last_seen, r.area_m2,
             r.local_wkt, r.recovery_status, r.recovery_ratio, r.metrics, [tuple(vars(o).values()) for o in r.recovery])
            for r in result.patches]


def _cloudy_cube(**kwargs: object) -> object:
    """A cube with a few clouds (not clear, bright) on some dates, and one hazy observation."""
    cube = make_cube(cloud_share=0.0, **kwargs)
    clouds = [(slice(0, 5), slice(0, 6)), (slice(12, 20), slice(8, 12)), (slice(25, 32), slice(20, 30))]
    for k, (rows, cols) in enumerate(clouds):
        for t in range(10 + k, cube.sizes["time"], 9):
            cube["clear"][t, rows, cols] = False
            for band in ("blue", "green", "red", "nir", "swir1", "swir2"):
                cube[band][t, rows, cols] = 0.6
    cube["blue"][40, 1, 1] = 0.4
    return cube


def test_numpy_and_dask_cubes_give_the_same_result() -> None:
    cube = _cloudy_cube(ny=32, nx=30, breaks=BREAKS, seed=6)
    site = cube_site(cube, inset_m=20)
    settings = Settings()
    eager = analyse_cube(site, cube, settings)
    lazy = analyse_cube(site, cube.chunk({"time": 7, "y": 10, "x": 16}), settings)
    assert len(eager.patches) == 2
    assert repr(_records(eager)) == repr(_records(lazy))
    assert eager.stats == lazy.stats


def test_patch_spectra_read_per_patch_equal_those_of_the_masked_season() -> None:
    cube = make_cube(ny=20, nx=20, breaks=BREAKS[:1], seed=7, cloud_share=0.3)  # clouds: pixel noise
    settings = Settings()
    dates = np.flatnonzero(cubeops.in_season(cube["time"], settings.season))
    season = cubeops.growing_season(cube, settings.season)
    labels = np.zeros((20, 20), dtype="int32")
    labels[BREAKS[0].rows, BREAKS[0].cols] = 1
    labels[15:18, 2:5] = 2

    def patches() -> list[Patch]:
        return [Patch(label, None, np.datetime64("2020-07-03", "ns"), np.datetime64("2020-07-11", "ns"), 1, 0.5)
                for label in (1, 2)]

    reference, windowed = patches(), patches()
    add_patch_spectra(reference, labels, cubeops.masked(season))
    add_patch_spectra(windowed, labels, cube, clear=season["clear"].values, time_index=dates)
    assert ndimage.find_objects(labels)[1] is not None
    for a, b in zip(reference, windowed, strict=True):
        assert a.spectral.keys() == b.spectral.keys()
        np.testing.assert_array_equal(np.array(list(a.spectral.values())), np.array(list(b.spectral.values())))


def test_a_second_disturbance_on_recovered_ground_is_its_own_patch() -> None:
    ground = (slice(4, 12), slice(4, 14))
    breaks = (PlantedBreak(*ground, "2016-06-20", recovered_by="2018-06-01"), PlantedBreak(*ground, "2020-07-01"),
              PlantedBreak(slice(18, 26), slice(14, 24), "2016-06-20"))  # a clearing that stays cleared
    cube = make_cube(ny=30, nx=30, years=tuple(range(2015, 2023)), breaks=breaks, seed=11, cloud_share=0.0)
    site = cube_site(cube, inset_m=20)
    result = analyse_cube(site, cube, Settings())
    first, lasting, again = result.patches
    assert (first.first_detected, lasting.first_detected, again.first_detected) == ("2016-06-20",) * 2 + ("2020-07-06",)
    assert (first.confirmed_on, again.confirmed_on) == ("2016-06-28", "2020-07-14")
    assert first.area_m2 == again.area_m2 == 8000
    # The first is followed up to the second (recovered), which is followed from its own detection.
    assert (first.recovery_status, first.metrics["disturbed_again"], first.metrics["disturbed_again_share"]) \
        == ("recovered", "2020-07-06", 1.0)
    assert max(o.season for o in first.recovery) == 2020
    assert again.metrics["earlier_disturbance"] == "2016-06-20"
    assert [o.season for o in again.recovery] == [2019, 2020, 2021, 2022]
    assert (again.recovery_status, lasting.recovery_status) == ("not_recovering", "not_recovering")
    assert not {"disturbed_again", "earlier_disturbance"} & set(lasting.metrics)
    # The rules judge each (the second is a new disturbance of its own).
    assert {f.patch_index for f in result.flags} == {0, 1, 2}
    lazy = analyse_cube(site, cube.chunk({"time": 30, "y": 11, "x": 16}), Settings())
    assert repr(_records(result)) == repr(_records(lazy))


@pytest.mark.parametrize("threads", [2, 3])
def test_a_licence_in_threads_gives_the_one_thread_result(threads: int) -> None:
    # Masking, scene medians and detection split among threads: first and later disturbances, a
    # patch partly outside the licence, the same records and flags as one thread.
    ground = (slice(4, 12), slice(4, 14))
    breaks = (PlantedBreak(*ground, "2016-06-20", recovered_by="2018-06-01"), PlantedBreak(*ground, "2020-07-01"),
              PlantedBreak(slice(18, 26), slice(14, 24), "2016-06-20"), PlantedBreak(slice(0, 6), slice(22, 30),
                                                                                     "2019-07-01"))
    cube = make_cube(ny=30, nx=30, years=tuple(range(2015, 2023)), breaks=breaks, seed=12, cloud_share=0.0)
    site = cube_site(cube, inset_m=40)
    one = analyse_cube(site, cube, Settings(), threads=1)
    assert len(one.patches) >= 4
    assert any(not p.inside_licence for p in one.patches)
    assert any("earlier_disturbance" in p.metrics for p in one.patches)
    more = analyse_cube(site, cube, Settings(), threads=threads)
    assert repr(_records(more)) == repr(_records(one))
    assert repr(more.flags) == repr(one.flags)
    assert more.stats == one.stats


def test_a_southern_season_across_new_year_is_one_season() -> None:
    """October to April: a clearing whose pixels went in late December and mid-January is one patch
    of one season (named by the year it ends in), followed as such by recovery and the rules; the
    northern default window sees no growing-season date at all and says so."""
    from gmsense.config import SeasonSettings
    from gmsense.errors import ImageryError

    december = PlantedBreak(slice(4, 10), slice(4, 9), "2020-12-20")
    january = PlantedBreak(slice(4, 10), slice(9, 14), "2021-01-15")
    cube = make_cube(years=(2018, 2019, 2020, 2021, 2022), breaks=(december, january), southern=True, seed=4,
                     cloud_share=0.0)
    south = Settings().model_copy(update={"season": SeasonSettings(start_month=10, end_month=4)})
    result = analyse_cube(cube_site(cube), cube, south)
    assert len(result.patches) == 1
    patch = result.patches[0]
    assert "2020-12-20" <= patch.first_detected <= "2021-01-10"
    assert patch.area_m2 == pytest.approx(6 * 10 * 100.0, rel=0.1)
    seasons = [o.season for o in patch.recovery]
    assert seasons[0] == 2020  # the season before the disturbance: October 2019 to April 2020
    assert 2021 in seasons
    assert 2022 in seasons
    assert patch.recovery_status == "not_recovering"
    with pytest.raises(ImageryError, match="growing season"):
        analyse_cube(cube_site(cube), cube, Settings())


def test_annual_composites_keep_their_clear_mask() -> None:
    """Composites are made of clear pixels: no cloud buffer grows around their gaps and no haze test
    (blue high against red, as in per-image rescaled composites) removes them."""
    from gmsense.pipeline import season_index

    cube = make_cube(years=(2019, 2020, 2021), every_days=30, cloud_share=0.0, seed=3)
    cube["blue"] = cube["blue"] + 0.3  # would fail the haze (HOT) test
    cube["clear"][:, 5, 5] = False  # a gap: a cloud buffer would grow around it
    in_season = cubeops.in_season(cube["time"], Settings().season)
    acquisitions = season_index(cube, Settings(), "T-1")[2]["clear"].values
    composites = season_index(cube.assign_attrs(composite="annual"), Settings(), "T-1")[2]["clear"].values
    assert acquisitions.mean() < 0.5
    np.testing.assert_array_equal(composites, cube["clear"].values[in_season])


def _annual(cube: object) -> object:
    """One composite a year: the acquisition nearest 15 July, dated as the local reader dates them."""
    times = cube["time"].values
    years = times.astype("datetime64[Y]")
    picked = [int(np.argmin(np.abs(np.where(years == y, times - (y + np.timedelta64(195, "D")),
                                            np.timedelta64(10**6, "D")))))
              for y in np.unique(years)]
    return cube.isel(time=picked).assign_attrs(composite="annual")


def test_annual_composites_are_read_by_the_yearly_detector() -> None:
    """One date a season cannot fit a seasonal model: the yearly detector (a level per pixel over
    five years, two years of drops in a row) finds a clearing the dated-imagery detector cannot."""
    clearing = PlantedBreak(slice(6, 16), slice(5, 17), "2017-06-01", fraction=0.8)
    cube = _annual(make_cube(ny=24, nx=24, years=tuple(range(2012, 2021)), every_days=15, cloud_share=0.0,
                             breaks=(clearing,), seed=4))
    site = cube_site(cube)
    settings = Settings()
    result = analyse_cube(site, cube, settings)
    assert len(result.patches) == 1
    patch = result.patches[0]
    assert patch.first_detected.startswith("2017")
    assert patch.confirmed_on.startswith("2018")
    assert 0.8 * 10 * 12 * 100 <= patch.area_m2 <= 1.2 * 10 * 12 * 100
    as_dated = analyse_cube(site, cube.assign_attrs(composite=None), settings)
    assert not as_dated.patches, "the seasonal model needs several dates a season"


def test_the_yearly_detector_leaves_the_config_hash_of_dated_imagery_alone() -> None:
    settings = Settings()
    assert settings.for_cube({}) is settings
    changed = Settings.model_validate({**settings.model_dump(), "detect_annual": {"baseline_seasons": 4}})
    assert changed.config_hash() != settings.config_hash()
    annual = settings.for_cube({"composite": "annual"})
    assert (annual.detect.harmonics, annual.detect.confirm_obs, annual.detect.line_pass) == (0, 2, False)
    assert annual.mask.max_scene_dip is None


@pytest.mark.parametrize("threads", [1, 2])
def test_compiled_season_masking_equals_the_array_masking(threads: int) -> None:
    """The compiled one-pass masking (cloud buffer, haze, NDVI; gmsense.cube.ops.season_ndvi) gives the
    clear mask and NDVI of refine_clear + masked_index bit for bit, with clouds, hazy and unobserved
    pixels and pixels whose nir + red is 0."""
    from gmsense.config import MaskSettings

    cube = make_cube(ny=40, nx=36, cloud_share=0.25, seed=3)
    dates = np.flatnonzero(cubeops.in_season(cube["time"], Settings().season))
    cube["nir"].values[dates[2], 5:9, 5:9] = 0.0
    cube["red"].values[dates[2], 5:9, 5:9] = 0.0
    cube["red"].values[dates[4], 20:25, 3:8] = np.nan
    cube["blue"].values[dates[6], 10:30, 10:30] += 0.3
    settings = MaskSettings(cloud_buffer_m=20.0)
    clear, ndvi = cubeops.season_ndvi(cube, dates, settings, True, threads)
    season = cubeops.refine_clear(cube.isel(time=dates), settings)
    expected = cubeops.masked_index(season, "ndvi").values
    assert np.array_equal(clear.values, season["clear"].values)
    assert np.array_equal(ndvi.values, expected, equal_nan=True)
    assert np.isnan(ndvi.values[2, 5:9, 5:9]).all()
    assert np.isnan(ndvi.values[4, 20:25, 3:8]).all()
    assert 0 < np.isnan(ndvi.values).mean() < 1
