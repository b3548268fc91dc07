"""The synthetic world: determinism, truth contract, truth agrees with imagery, confounders and
imperfections are present, the GeoTIFF layout round-trips, the preview is drawn."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import xarray as xr
from scipy import ndimage

from gmsense.config import Settings, configs_dir
from gmsense.cube import ops as cubeops
from gmsense.geo.sites import read_sites
from gmsense.sources.local import read_local_cube
from gmsense.sources.synthetic import ANTHROPOGENIC, TRUTH_COLUMNS, synthesize
from gmsense.sources.synthetic._events import Event, truth_status
from gmsense.sources.synthetic._landscape import fraction
from gmsense.sources.synthetic.io import write_scene

SETTINGS = Settings()
SITES = {s.site_id: s for s in read_sites(configs_dir() / "demo_sites.geojson")}
MIXED_SEEDS = range(1, 9)
CONFOUNDERS = {"fire", "flood", "windthrow", "harvest"}
STATUSES = {"active", "not_recovering", "recovering", "recovered"}


@cache
def _scene(site_id: str, seed: int = 0, scenario: str | None = None) -> tuple[xr.Dataset, gpd.GeoDataFrame]:
    site = SITES[site_id]
    return synthesize(site, site.buffered(500), SETTINGS.synthetic, seed=seed, scenario=scenario)


def _mixed(seed: int) -> tuple[xr.Dataset, gpd.GeoDataFrame]:
    return _scene("HLJ-EXP-001", seed, "mixed")


def _ndvi(cube: xr.Dataset) -> xr.DataArray:
    return cubeops.index(cubeops.masked(cube), "ndvi")


def _transform(cube: xr.Dataset):
    return cube.rio.transform()


def test_same_seed_same_scene_other_seed_other_scene() -> None:
    site = SITES["HLJ-EXP-001"]
    a, truth_a = _scene("HLJ-EXP-001")
    b, truth_b = synthesize(site, site.buffered(500), SETTINGS.synthetic)
    _c, truth_c = _scene("HLJ-EXP-001", 1)
    assert a.identical(b)
    assert truth_a.equals(truth_b)
    assert len(truth_a) != len(truth_c) or not truth_a.geometry.geom_equals(truth_c.geometry).all()


def test_cube_contract() -> None:
    cube, _ = _scene("HLJ-MIN-003")
    assert cube["red"].dims == ("time", "y", "x")
    assert all(cube[b].dtype == np.float32 for b in ("blue", "green", "red", "nir", "swir1", "swir2"))
    assert cube["clear"].dtype == bool
    assert cube["scl"].dtype == np.uint8
    assert cube.rio.crs.to_epsg() == 32652
    assert np.all(np.diff(cube["time"].values) > np.timedelta64(0))
    gaps = np.diff(cube["time"].values).astype("timedelta64[D]").astype(int)
    in_season = gaps[gaps < 100]
    assert in_season.min() >= 5, "acquisitions every 5-15 days in season"
    assert in_season.max() <= 15
    assert 0.5 < float(cube["clear"].mean()) < 1.0, "some clouds, mostly clear"
    assert {3, 4, 5, 6, 8, 9, 11} <= set(np.unique(cube["scl"].values)), "shadow, veg, bare, water, cloud, snow"


def test_truth_contract_over_mixed_seeds() -> None:
    kinds: set[str] = set()
    statuses: set[str] = set()
    for seed in MIXED_SEEDS:
        cube, truth = _mixed(seed)
        assert list(truth.columns) == TRUTH_COLUMNS
        assert truth.crs == cube.rio.crs
        assert truth.event_id.is_unique
        assert set(truth.disturbance_class) <= {*ANTHROPOGENIC, "natural"}
        assert (truth.disturbance_class == truth.kind.where(truth.kind.isin(ANTHROPOGENIC), "natural")).all()
        first_year = str(cube["time"].values[0])[:4]
        for _, row in truth.iterrows():
            if row.kind != "harvest":
                assert row.start[:4] > first_year, f"{row.event_id} has no season of history"
            if row.first_observed:
                assert row.first_observed >= row.start
                assert 5 <= int(row.first_observed[5:7]) <= 9
            assert row.area_m2 == pytest.approx(row.geometry.area)
        kinds |= set(truth.kind)
        statuses |= set(truth.recovery_status)
        assert (truth.inside_licence == truth.geometry.within(SITES["HLJ-EXP-001"].geometry)).all()
    assert CONFOUNDERS | set(ANTHROPOGENIC) <= kinds, f"missing kinds: {CONFOUNDERS | set(ANTHROPOGENIC) - kinds}"
    assert statuses == STATUSES


def test_mixed_scenes_have_human_damage_inside_and_outside() -> None:
    inside = outside = 0
    for seed in MIXED_SEEDS:
        _, truth = _mixed(seed)
        human = truth[truth.disturbance_class.isin(ANTHROPOGENIC)]
        inside += int(human.inside_licence.sum())
        outside += int((~human.inside_licence).sum())
    assert inside >= 3
    assert outside >= 3


def test_truth_status_follows_the_recovery_definitions() -> None:
    from shapely.geometry import Point

    last = np.datetime64("2022-10-20")

    def status(start: str, years: float) -> str:
        return truth_status(Event("e", "pad", Point(0, 0).buffer(10), np.datetime64(start), years), last)

    assert status("2022-06-01", 1.0) == "active"
    assert status("2020-06-01", 0.0) == "not_recovering"
    assert status("2020-06-01", 1.5) == "recovered"
    assert status("2021-06-01", 3.0) == "recovering"  # r = 1.39 / 3 = 0.46
    assert status("2021-06-01", 8.0) == "not_recovering"  # r = 0.17
    # a work dug after the 2021 season is first seen in 2022's, the latest: active, as a scan says
    assert status("2021-11-10", 0.0) == "active"
    assert status("2021-09-30", 0.0) == "not_recovering"
    # before the next season begins, the latest season is still the last one
    assert truth_status(Event("e", "pad", Point(0, 0).buffer(10), np.datetime64("2022-06-01"), 1.0),
                        np.datetime64("2023-04-01")) == "active"


def test_index_drops_inside_human_footprints_after_first_observed() -> None:
    checked = 0
    for seed in (0, *MIXED_SEEDS):
        cube, truth = _scene("HLJ-EXP-001", seed) if seed == 0 else _mixed(seed)
        ndvi = _ndvi(cube)
        shape = (cube.sizes["y"], cube.sizes["x"])
        for _, event in truth[truth.disturbance_class.isin(ANTHROPOGENIC)].iterrows():
            if not event.first_observed:
                continue
            share = fraction(event.geometry, shape, _transform(cube))
            core = share >= max(0.5 * share.max(), 0.15)
            year = int(event.start[:4])
            before = ndvi.sel(time=slice(f"{year - 1}-07-01", f"{year - 1}-08-31")).values[:, core]
            after = ndvi.sel(time=slice(event.first_observed, f"{year}-09-30")).values[:, core]
            if not np.isfinite(after).any() or not np.isfinite(before).any():
                continue
            drop = np.nanmedian(before) - np.nanmedian(after)
            expected = 0.15 * float(share[core].mean())
            assert drop > max(expected, 0.03), f"seed {seed} {event.event_id} ({event.kind}) drop {drop:.3f}"
            checked += 1
    assert checked >= 15


def test_quiet_scene_has_the_landscape_but_no_events() -> None:
    cube, truth = _scene("HLJ-MIN-003")
    assert set(truth.kind) == {"harvest"}, "quiet: only the crop fields' harvests"
    ndvi = _ndvi(cube)
    water = (np.nanmedian(ndvi.values, axis=0) < 0)
    assert water.sum() > 50, "a lake"
    field = truth.geometry.iloc[0]
    share = fraction(field, water.shape, _transform(cube))
    values = ndvi.values[:, share > 0.9]
    seen = np.isfinite(values).any(axis=1)
    series = np.full(values.shape[0], np.nan)
    series[seen] = np.nanmedian(values[seen], axis=1)
    years = cube["time"].dt.year.values
    months = cube["time"].dt.month.values
    for year in np.unique(years):
        july = series[(years == year) & (months == 7)]
        october = series[(years == year) & (months == 10)]
        if np.isfinite(july).any() and np.isfinite(october).any():
            assert np.nanmax(july) - np.nanmin(october) > 0.3, f"field harvested in {year}"


def test_drought_year_lowers_grassland_ndvi() -> None:
    cube, _ = _scene("HLJ-MIN-003")
    ndvi = _ndvi(cube)
    summer = ndvi.sel(time=ndvi["time"].dt.month.isin([7, 8]))
    by_year = summer.groupby("time.year").median("time")
    scene = by_year.median(("y", "x")).to_series()
    drought = int(cube.attrs["drought_year"])
    assert scene[drought] < scene.drop(drought).min()


def test_scl_misses_thin_cloud_edges() -> None:
    cube, _ = _scene("HLJ-EXP-001")
    scl = cube["scl"].values
    blue = cube["blue"].values
    months = cube["time"].dt.month.values
    season = (months >= 5) & (months <= 9)
    clear = cube["clear"].values
    reference = np.nanmedian(np.where(clear[season], blue[season], np.nan), axis=0)
    brighter = rim_pixels = 0
    for t in np.flatnonzero(season):
        cloud = np.isin(scl[t], (8, 9))
        if not cloud.any():
            continue
        rim = ndimage.binary_dilation(cloud, iterations=2) & ~cloud & clear[t]
        rim_pixels += int(rim.sum())
        brighter += int((blue[t][rim] - reference[rim] > 0.02).sum())
    assert rim_pixels > 100
    assert brighter > 0.3 * rim_pixels, "clear-flagged pixels next to clouds are hazier than on clear dates"


def test_some_cloud_shadows_are_missed() -> None:
    cube, _ = _scene("HLJ-EXP-001")
    scl = cube["scl"].values
    nir = cube["nir"].values
    months = cube["time"].dt.month.values
    season = (months >= 6) & (months <= 8)
    reference = np.nanmedian(np.where(cube["clear"].values[season], nir[season], np.nan), axis=0)
    missed = 0
    for t in np.flatnonzero(season):
        dark = (nir[t] < 0.6 * reference) & np.isin(scl[t], (4, 5))
        missed += int(dark.sum())
    assert missed > 100, "dark, shadowed pixels that SCL calls vegetation or bare"


def test_dates_are_misregistered_by_a_fraction_of_a_pixel() -> None:
    cube, _ = _scene("HLJ-MIN-003")
    nir = cube["nir"].values
    months = cube["time"].dt.month.values
    water = np.nanmedian(nir, axis=0) < 0.06
    rows, cols = np.flatnonzero(water.any(axis=1)), np.flatnonzero(water.any(axis=0))
    window = (slice(rows[0] - 6, rows[-1] + 7), slice(cols[0] - 6, cols[-1] + 7))
    clear = cube["clear"].values
    yy, xx = np.mgrid[window]
    centroids = []
    for t in np.flatnonzero((months >= 5) & (months <= 9)):
        if not clear[t][window].all():
            continue
        dark = np.clip((0.15 - nir[t][window]) / 0.13, 0, 1)
        centroids.append(((dark * yy).sum() / dark.sum(), (dark * xx).sum() / dark.sum()))
    offsets = np.array(centroids) - np.median(centroids, axis=0)
    radial = np.hypot(offsets[:, 0], offsets[:, 1])
    assert len(centroids) >= 10
    assert 0.2 < np.median(radial) < 0.9, f"per-date shift of the lake edge {np.median(radial):.2f} px"


def test_written_scene_round_trips_through_the_local_reader(tmp_path: Path) -> None:
    site = SITES["HLJ-EXP-002"]
    settings = Settings.model_validate({"synthetic": {"start": "2021-04-01", "end": "2022-10-31"}})
    folder = write_scene(site, settings, tmp_path / "scene", preview=True)
    files = sorted(folder.glob("*.tif"))
    cube, truth = synthesize(site, site.buffered(500), settings.synthetic)
    assert len(files) == cube.sizes["time"]
    with rasterio.open(files[3]) as src:
        assert src.descriptions == ("B02", "B03", "B04", "B08", "B11", "B12", "SCL")
        assert src.scales[0] == pytest.approx(1e-4)
    read = read_local_cube(folder, site.buffered(500), site.crs, site_id=site.site_id)
    assert read.sizes["time"] == cube.sizes["time"]
    red = read["red"].sel(x=cube["x"], y=cube["y"], method="nearest").values
    np.testing.assert_allclose(np.where(cube["clear"].values, red, 0),
                               np.where(cube["clear"].values, cube["red"].values, 0), atol=6e-5)
    np.testing.assert_array_equal(read["clear"].sel(x=cube["x"], y=cube["y"], method="nearest").values,
                                  cube["clear"].values)
    written_truth = gpd.read_file(folder / "truth.geojson")
    assert list(written_truth.columns) == TRUTH_COLUMNS
    assert len(written_truth) == len(truth)
    assert written_truth.crs.to_epsg() == 4326
    preview = folder / "preview.png"
    assert preview.stat().st_size > 10_000
    assert preview.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_events_inside_and_outside_by_scenario() -> None:
    _, truth = _scene("HLJ-EXP-002")
    human = truth[truth.disturbance_class.isin(ANTHROPOGENIC)]
    assert (~human.inside_licence).sum() >= 2, "the boundary scenario puts damage across and outside the line"
    _, exploration = _scene("HLJ-EXP-001")
    trenches = exploration[exploration.kind == "trench"]
    assert len(trenches) == 3
    assert trenches.inside_licence.all()


def test_unknown_scenario_is_an_error() -> None:
    site = SITES["HLJ-MIN-003"]
    with pytest.raises(ValueError, match="unknown synthetic scenario"):
        synthesize(site, site.buffered(500), SETTINGS.synthetic, scenario="volcano")
