"""The library a notebook uses: gmsense.analyse, open_imagery, load_model."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import xarray as xr
from shapely.geometry import box

import gmsense
from gmsense.errors import GmsenseError, ImageryError, InputError
from gmsense.records import DISTURBANCE_CLASSES
from gmsense.testutils import PlantedBreak, make_cube, run_cli

BUFFER_M = 100.0


@pytest.fixture(scope="module")
def cube() -> xr.Dataset:
    """80 x 80 pixels (800 m) of forest, 2019-2021, a clearing and a narrow strip cut in 2020, and
    a cloud over part of the scene on some dates."""
    cube = make_cube(ny=80, nx=80, breaks=(PlantedBreak(slice(20, 32), slice(20, 34), "2020-06-20"),
                                           PlantedBreak(slice(50, 52), slice(15, 60), "2020-07-10", 0.7)),
                     seed=4, cloud_share=0.0)
    for t in range(7, cube.sizes["time"], 11):
        cube["clear"][t, 55:75, 40:70] = False
        for band in ("blue", "green", "red", "nir", "swir1", "swir2"):
            cube[band][t, 55:75, 40:70] = 0.6
    return cube


@pytest.fixture(scope="module")
def licence(cube: xr.Dataset) -> gpd.GeoDataFrame:
    """A licence 150 m inside the cube's edges, in the cube's CRS, with contract attributes."""
    x, y = cube["x"].values, cube["y"].values
    geom = box(x.min() + 150, y.min() + 150, x.max() - 150, y.max() - 150)
    return gpd.GeoDataFrame({"site_id": ["API-1"], "licence_type": ["exploration"]}, geometry=[geom],
                            crs=cube.rio.crs)


@pytest.fixture(scope="module")
def settings() -> gmsense.Settings:
    return gmsense.load_settings(overrides={"sites.buffer_m": BUFFER_M})


def test_the_public_api_is_explicit() -> None:
    assert {"analyse", "open_imagery", "load_model", "Settings", "Result"} <= set(gmsense.__all__)
    for name in gmsense.__all__:
        assert getattr(gmsense, name) is not None
    with pytest.raises(AttributeError):
        _ = gmsense.no_such_thing


def test_analyse_returns_typed_patches_flags_and_breaks(cube: xr.Dataset, licence: gpd.GeoDataFrame,
                                                       settings: gmsense.Settings) -> None:
    result = gmsense.analyse(cube, licence, settings=settings)
    patches = result.patches
    assert result.site_id == "API-1"
    assert isinstance(patches, gpd.GeoDataFrame)
    assert patches.crs == cube.rio.crs
    assert len(patches) >= 2
    assert str(patches["first_detected"].dtype).startswith("datetime64")
    assert patches["area_m2"].dtype == np.float64
    assert patches["inside_licence"].dtype == bool
    assert set(patches["disturbance_class"]) <= set(DISTURBANCE_CLASSES)
    # the clearing block (12 x 14 px = 16,800 m2) is found where it was planted, in 2020
    clearing = patches.loc[patches.area.idxmax()]
    x0, y0 = float(cube.x[20]), float(cube.y[20])
    assert clearing.geometry.intersects(box(x0, y0 - 110, x0 + 130, y0))
    assert clearing["first_detected"].year == 2020
    assert 12_000 < clearing["area_m2"] < 22_000
    # the model labelled them, as `gmsense scan` does by default
    assert all("rule_class" in m for m in patches["metrics"])
    # breaks: per pixel on the cube's grid, true where the clearing is
    breaks = result.breaks
    assert {"first_detected", "confirmed_on", "magnitude", "disturbed"} <= set(breaks.data_vars)
    assert bool(breaks["disturbed"].sel(x=float(cube.x[26]), y=float(cube.y[26])))
    assert not bool(breaks["disturbed"].sel(x=float(cube.x[5]), y=float(cube.y[75])))
    assert breaks.rio.crs == cube.rio.crs
    assert list(result.flags.columns)[:3] == ["rule", "severity", "message"]
    assert result.stats["n_dates"] > 0


def test_the_rule_baseline_and_a_loaded_model(cube: xr.Dataset, licence: gpd.GeoDataFrame,
                                              settings: gmsense.Settings) -> None:
    rules = gmsense.analyse(cube, licence, settings=settings, model=None)
    assert not any("rule_class" in m for m in rules.patches["metrics"])
    model = gmsense.load_model("default")
    loaded = gmsense.analyse(cube, licence, settings=settings, model=model)
    default = gmsense.analyse(cube, licence, settings=settings)
    assert list(loaded.patches["disturbance_class"]) == list(default.patches["disturbance_class"])
    assert gmsense.load_model("rules") is None
    with pytest.raises(InputError, match="no model"):
        gmsense.load_model("no-such-model")


def test_a_shapely_geometry_in_another_crs_is_the_same_licence(cube: xr.Dataset, licence: gpd.GeoDataFrame,
                                                                  settings: gmsense.Settings) -> None:
    lonlat = licence.to_crs("EPSG:4326")
    by_frame = gmsense.analyse(cube, licence, settings=settings, model=None)
    by_geometry = gmsense.analyse(cube, lonlat.geometry.iloc[0], crs="EPSG:4326", site_id="API-1",
                                  settings=settings, model=None)
    assert len(by_frame.patches) == len(by_geometry.patches)
    assert np.allclose(sorted(by_frame.patches["area_m2"]), sorted(by_geometry.patches["area_m2"]), atol=1.0)


def test_bad_inputs_are_clear_errors(cube: xr.Dataset, licence: gpd.GeoDataFrame) -> None:
    with pytest.raises(ImageryError, match="clear"):
        gmsense.analyse(cube.drop_vars("clear"), licence)
    with pytest.raises(ImageryError, match="float32"):
        gmsense.analyse(cube.assign(red=cube["red"].astype("float64")), licence)
    with pytest.raises(InputError, match="one licence"):
        gmsense.analyse(cube, gpd.GeoDataFrame(geometry=[licence.geometry.iloc[0]] * 2, crs=licence.crs))
    with pytest.raises(InputError, match="no CRS"):
        gmsense.analyse(cube, gpd.GeoDataFrame(geometry=[licence.geometry.iloc[0]]))
    with pytest.raises(InputError, match="outside the cube"):
        gmsense.analyse(cube, box(0, 0, 100, 100))
    with pytest.raises(InputError, match="licence must be"):
        gmsense.analyse(cube, "HLJ-1")
    # every library error is a GmsenseError and names no command-line flag
    with pytest.raises(GmsenseError, match="growing season") as refused:
        gmsense.analyse(cube.sel(time=cube.time.dt.month == 1), licence)
    assert "--" not in str(refused.value)


@pytest.mark.slow
def test_a_notebook_gets_what_gmsense_scan_stores(cube: xr.Dataset, licence: gpd.GeoDataFrame,
                                                  settings: gmsense.Settings, tmp_path: Path) -> None:
    """The same cube through `gmsense scan --source local` and through gmsense.analyse: the same
    patches (geometry, class, confidence, dates, recovery) and the same flags."""
    imagery = tmp_path / "cube.nc"
    cube.to_netcdf(imagery)
    sites = tmp_path / "licences.gpkg"
    licence.to_file(sites)
    db = tmp_path / "scan.db"
    code, output = run_cli("scan", "--sites", sites, "--source", "local", "--imagery", imagery, "--db", db,
                           "--buffer", BUFFER_M, "--no-progress")
    assert code == 0, output
    out = tmp_path / "patches.gpkg"
    code, output = run_cli("export", "patches", "--format", "gpkg", "--out", out, "--db", db)
    assert code == 0, output
    scanned = gpd.read_file(out).to_crs(cube.rio.crs).sort_values("area_m2").reset_index(drop=True)

    result = gmsense.analyse(gmsense.open_imagery(imagery), licence, settings=settings)
    mine = result.patches.sort_values("area_m2").reset_index(drop=True)
    assert len(scanned) == len(mine) >= 2
    assert list(scanned["disturbance_class"]) == list(mine["disturbance_class"])
    assert np.allclose(scanned["confidence"], mine["confidence"])
    assert np.allclose(scanned["area_m2"], mine["area_m2"], atol=0.2)
    assert list(scanned["first_detected"]) == [d.strftime("%Y-%m-%d") for d in mine["first_detected"]]
    assert list(scanned["recovery_status"]) == list(mine["recovery_status"])
    for a, b in zip(scanned.geometry, mine.geometry, strict=True):
        assert a.symmetric_difference(b).area < 0.01 * b.area
    flags = gpd.read_file(tmp_path / "patches.gpkg")  # patches only; flags via the store's export
    assert len(flags) == len(mine)
    code, output = run_cli("export", "flags", "--format", "csv", "--out", tmp_path / "flags.csv", "--db", db)
    assert code == 0, output
    stored_rules = sorted(gpd.pd.read_csv(tmp_path / "flags.csv")["rule"])
    assert stored_rules == sorted(result.flags["rule"])


def test_open_imagery_reads_a_whole_cube_or_a_region(cube: xr.Dataset, tmp_path: Path) -> None:
    imagery = tmp_path / "cube.nc"
    cube.to_netcdf(imagery)
    whole = gmsense.open_imagery(imagery)
    assert whole.sizes["x"] == cube.sizes["x"]
    assert whole.sizes["y"] == cube.sizes["y"]
    x, y = cube["x"].values, cube["y"].values
    part = gmsense.open_imagery(imagery, region=box(x[10], y[30], x[29], y[11]), start="2020-01-01")
    assert part.sizes["x"] < 30
    assert part.sizes["y"] < 30
    assert str(part.time.values.min())[:4] == "2020"
    with pytest.raises(ImageryError, match="does not exist"):
        gmsense.open_imagery(tmp_path / "missing.nc")
