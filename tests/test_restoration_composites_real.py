"""``gmsense restoration composites`` on real imagery (``../shared/data/real``, the ``real_data`` fixture).

The shared data hold no Landsat Collection 2 product archive; they hold two real Sentinel-2 L2A archives the
command reads: the SW Romania NetCDF cube (140 dates 2015-2021, scene classification SCL, DN x 1e-4) and the
THEIA products of a spruce forest in NE France (187 dates 2015-2020, per-band files, 20 m cloud masks).
On the cube every composite value is recomputed here from the file with xarray alone; on the THEIA products
the counts are bounded by the products of each season, and the forest's greenness follows the known
2018-2020 bark-beetle dieback. Then ``restoration run`` reads the Romanian composites: stable forest must
not read as damaged mine land.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import xarray as xr
from shapely.geometry import box

from gmsense.sources._bands import SCL_NOT_CLEAR
from gmsense.store import Store
from gmsense.testutils import run_cli

ROMANIA = "nrt_romania_s2/sentinel2_cube_subset_romania_10m.nc"
THEIA = "fordead_theia_zonetest/SENTINEL_ZoneTest"
YEARS = range(2016, 2021)


def _aoi(path: Path, geometry: object, epsg: int) -> Path:
    gpd.GeoDataFrame(geometry=[geometry], crs=epsg).to_crs(4326).to_file(path)
    return path


@pytest.fixture(scope="module")
def romania(real_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("romania")
    aoi = _aoi(folder / "aoi.geojson", box(5_272_000, 2_532_020, 5_272_970, 2_532_990), 3035)
    code, output = run_cli("restoration", "composites", "--imagery", real_data / ROMANIA, "--aoi", aoi,
                           "--start-year", min(YEARS), "--end-year", max(YEARS), "--out", folder / "composites")
    assert code == 0, output
    assert "5 written" in output
    return folder


def test_romania_composites_equal_the_cube_recomputed(romania: Path, real_data: Path) -> None:
    cube = xr.open_dataset(real_data / ROMANIA)
    months = cube["time"].dt.month
    manifest = json.loads((romania / "composites" / "composites.json").read_text())
    for year in YEARS:
        season = cube.sel(time=(cube["time"].dt.year == year) & (months >= 5) & (months <= 9))
        bands = {b: season[v].values * 1e-4 for b, v in (("blue", "B2"), ("green", "B3"), ("red", "B4"),
                                                          ("nir", "B8"))}
        clear = ~np.isin(season["SCL"].values, SCL_NOT_CLEAR) & np.isfinite(season["SCL"].values)
        for values in bands.values():
            clear &= np.isfinite(values)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            want = {b: np.nanmedian(np.where(clear, v, np.nan), axis=0) for b, v in bands.items()}
        with rasterio.open(romania / "composites" / f"{year}.tif") as src:
            got = {name: src.read(i + 1) for i, name in enumerate(src.descriptions)}
            t = src.transform
        # the composite's grid is the cube's lattice over the AOI (plus a pixel): cut it to the cube's pixels
        col = round((float(cube.x.values[0]) - (t.c + t.a / 2)) / t.a)
        row = round((float(cube.y.values[0]) - (t.f + t.e / 2)) / t.e)
        n = cube.sizes["x"]
        cut = {k: v[max(row, 0):row + n, max(col, 0):col + n] for k, v in got.items()}
        lo_r, lo_c = max(-row, 0), max(-col, 0)
        h, w = cut["red"].shape
        assert h * w >= 97 * 97, "nearly the whole 100 x 100 px cube compared"
        np.testing.assert_array_equal(cut["clear_count"], clear.sum(axis=0)[lo_r:lo_r + h, lo_c:lo_c + w],
                                      err_msg=str(year))
        for band in bands:
            np.testing.assert_allclose(cut[band], want[band][lo_r:lo_r + h, lo_c:lo_c + w], rtol=1e-5, atol=1e-6,
                                       err_msg=f"{year} {band}")
        ndvi = (cut["nir"] - cut["red"]) / (cut["nir"] + cut["red"])
        # the README's observation of this forest: summer-median NDVI about 0.85-0.90
        assert 0.82 < float(np.nanmedian(ndvi)) < 0.92, year
        assert manifest["years"][str(year)]["images"] == int(clear.any(axis=(1, 2)).sum())


def test_stable_real_forest_is_not_damaged_mine_land(romania: Path, tmp_path: Path) -> None:
    db = str(tmp_path / "store.db")
    register = tmp_path / "register.gpkg"
    centre = box(5_272_400, 2_532_400, 5_272_600, 2_532_600)  # 200 m of forest in the middle of the cube
    gpd.GeoDataFrame([{"register_id": "RO-FOREST", "kind": "other", "mineral_class": "metal",
                       "responsible_party": "none: historical", "province": "HLJ", "city": "Hegang", "county": "A",
                       "geometry": centre}], crs=3035).to_file(register)
    assert run_cli("register", "import", register, "--db", db)[0] == 0
    code, output = run_cli("restoration", "run", "--imagery", romania / "composites", "--db", db)
    assert code == 0, output
    assert "1 of 1 register polygon analysed, years 2016-2020" in output
    rows = Store(db).restoration_rows()
    assert len(rows) == 5
    assert all(r.status != "damaged" for r in rows)
    assert all(0.85 < r.ratio < 1.15 for r in rows), [r.ratio for r in rows]
    assert all(r.reference_ndvi > 0.8 for r in rows)


def test_theia_products_composed(real_data: Path, tmp_path: Path) -> None:
    archive = real_data / THEIA
    aoi = _aoi(tmp_path / "aoi.geojson", box(670_560, 5_460_720, 671_320, 5_461_480), 32631)
    out = tmp_path / "composites"
    code, output = run_cli("restoration", "composites", "--imagery", archive, "--aoi", aoi, "--start-year", 2016,
                           "--end-year", 2019, "--out", out)
    assert code == 0, output
    manifest = json.loads((out / "composites.json").read_text())
    with rasterio.open(real_data / "fordead_theia_zonetest" / "BDForet_ZoneTest.tif") as src:
        forest_mask, forest_transform = src.read(1) == 1, src.transform
    forest_ndvi = {}
    for year in range(2016, 2020):
        in_season = [p for p in archive.iterdir() if p.name[11:15] == str(year) and "05" <= p.name[15:17] <= "09"]
        with rasterio.open(out / f"{year}.tif") as src:
            data = {name: src.read(i + 1) for i, name in enumerate(src.descriptions)}
            t = src.transform
        assert data["clear_count"].max() <= len(in_season), year
        assert manifest["years"][str(year)]["images"] <= len(in_season)
        assert manifest["years"][str(year)]["sensors"] == {"sentinel-2": manifest["years"][str(year)]["images"]}
        assert (data["clear_count"] > 0).all(), "every pixel seen at least once a season"
        col, row = round((t.c - forest_transform.c) / 10), round((forest_transform.f - t.f) / 10)
        forest = forest_mask[row:row + data["red"].shape[0], col:col + data["red"].shape[1]]
        ndvi = (data["nir"] - data["red"]) / (data["nir"] + data["red"])
        forest_ndvi[year] = float(np.nanmedian(ndvi[forest]))
    assert forest_ndvi[2016] > 0.9, forest_ndvi
    assert forest_ndvi[2019] < forest_ndvi[2016] - 0.05, f"the 2018-2020 dieback: {forest_ndvi}"
