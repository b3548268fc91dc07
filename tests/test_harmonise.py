"""Cross-sensor harmonisation of TM / ETM+ to OLI (issue 19, long archive; gmsense.cube.harmonise):
the published coefficients on known values, the overlapping-years check on synthetic series, the
``sensor`` coordinate from local Landsat product names, and the settings."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pyproj
import pytest
import rasterio
import xarray as xr
from affine import Affine
from shapely.geometry import box

from gmsense.config import Settings
from gmsense.cube.contract import validate_cube
from gmsense.cube.harmonise import (
    BANDS,
    ETM,
    OLI,
    ROY_2016,
    SENSOR_COORD,
    TM,
    TRANSFORMS,
    harmonise,
    sensor_of,
    with_sensor,
)
from gmsense.sources._bands import plan_bands
from gmsense.sources.local import read_local_cube

UTM50N = pyproj.CRS.from_epsg(32650)
OLS = TRANSFORMS["roy2016_ols"]


def cube_of(values: dict[str, np.ndarray], times: list[str], sensors: list[str] | None = None,
            chunked: bool = False) -> xr.Dataset:
    """A cube-contract dataset of ``values`` (band -> (time, y, x)) on a small 30 m grid."""
    t, h, w = next(iter(values.values())).shape
    data = {b: (("time", "y", "x"), da.from_array(v.astype("float32")) if chunked else v.astype("float32"))
            for b, v in values.items()}
    data["clear"] = (("time", "y", "x"), np.ones((t, h, w), bool))
    coords = {"time": np.array(times, dtype="datetime64[ns]"), "y": 5_000_000.0 - 30.0 * np.arange(h),
              "x": 500_000.0 + 30.0 * np.arange(w)}
    if sensors is not None:
        coords[SENSOR_COORD] = ("time", sensors)
    ds = xr.Dataset(data, coords=coords).rio.write_crs(UTM50N)
    ds.attrs.update(source="test", platform="landsat", resolution_m=30.0)
    return ds


# --------------------------------------------------------------------------------------------
# the published transform


def test_roy2016_coefficients_are_table_2() -> None:
    # Roy et al. (2016) Table 2, as the Earth Engine community tutorial "Landsat ETM+ to OLI
    # Harmonization" transcribes it (OLS) and the LandTrendr scripts do (RMA).
    assert [OLS.slopes[b] for b in BANDS] == [0.8474, 0.8483, 0.9047, 0.8462, 0.8937, 0.9071]
    assert [OLS.intercepts[b] for b in BANDS] == [0.0003, 0.0088, 0.0061, 0.0412, 0.0254, 0.0172]
    rma = TRANSFORMS["roy2016_rma"]
    assert [rma.slopes[b] for b in BANDS] == [0.9785, 0.9542, 0.9825, 1.0073, 1.0171, 0.9949]
    assert [rma.intercepts[b] for b in BANDS] == [-0.0095, -0.0016, -0.0022, -0.0021, -0.0030, 0.0029]
    assert "10.1016/j.rse.2015.12.024" in ROY_2016


def test_known_values_tm_and_etm_moved_oli_kept() -> None:
    refl = {"blue": 0.1, "green": 0.1, "red": 0.1, "nir": 0.3, "swir1": 0.2, "swir2": 0.1}
    # OLI = intercept + slope x ETM+, worked by hand from Table 2 (OLS)
    expected = {"blue": 0.0003 + 0.08474, "green": 0.0088 + 0.08483, "red": 0.0061 + 0.09047,
                "nir": 0.0412 + 0.25386, "swir1": 0.0254 + 0.17874, "swir2": 0.0172 + 0.09071}
    values = {b: np.full((4, 2, 3), v) for b, v in refl.items()}
    values["red"][:, 0, 0] = np.nan  # not observed stays not observed
    cube = cube_of(values, ["1990-06-12", "2005-06-20", "2021-06-14", "2021-06-30"], [TM, ETM, OLI, ""])
    out = validate_cube(harmonise(cube))
    for band in BANDS:
        assert out[band].dtype == np.float32
        np.testing.assert_allclose(out[band].values[:2, 1, 1], expected[band], rtol=1e-6)
        np.testing.assert_array_equal(out[band].values[2:], cube[band].values[2:])  # OLI and unknown as they are
    assert np.isnan(out.red.values[:, 0, 0]).all()
    np.testing.assert_array_equal(out.clear.values, cube.clear.values)
    assert out.attrs["harmonise"] == "roy2016_ols"
    assert out.attrs["harmonise_citation"] == ROY_2016
    assert "OLS" in out.attrs["harmonise_form"]
    assert out.attrs["harmonised_dates"] == 2
    assert "harmonise" not in cube.attrs  # the input is not touched
    with pytest.raises(ValueError, match="already harmonised"):
        harmonise(out)


def test_none_and_unknown_methods() -> None:
    cube = cube_of({"red": np.full((1, 2, 2), 0.1), "nir": np.full((1, 2, 2), 0.3)}, ["2005-06-20"], [ETM])
    kept = harmonise(cube, "none")
    np.testing.assert_array_equal(kept.red.values, cube.red.values)
    assert kept.attrs["harmonise"] == "none"
    with pytest.raises(ValueError, match="roy2016_ols"):
        harmonise(cube, "roy2099")
    # a cube without a sensor coordinate has no TM/ETM+ date; sensors can be passed instead
    bare = cube.drop_vars(SENSOR_COORD)
    np.testing.assert_array_equal(harmonise(bare).red.values, cube.red.values)
    np.testing.assert_allclose(harmonise(bare, sensors=[TM]).red.values, 0.0061 + 0.9047 * 0.1, rtol=1e-6)


def test_harmonise_stays_lazy() -> None:
    cube = cube_of({"red": np.full((2, 2, 2), 0.1), "nir": np.full((2, 2, 2), 0.3)}, ["2005-06-20", "2021-06-14"],
                   [ETM, OLI], chunked=True)
    out = harmonise(cube)
    assert isinstance(out.red.data, da.Array)
    np.testing.assert_allclose(out.nir.values[0], 0.0412 + 0.8462 * 0.3, rtol=1e-6)


def test_a_day_merging_two_sensors_is_left_and_counted() -> None:
    assert sensor_of("a_LE07_x.tif+b_LC08_y.tif") == "ETM+|OLI"
    cube = cube_of({"red": np.full((2, 1, 1), 0.1), "nir": np.full((2, 1, 1), 0.3)}, ["2005-06-20", "2014-06-20"],
                   [ETM, "ETM+|OLI"])
    out = harmonise(cube)
    assert out.red.values[1, 0, 0] == np.float32(0.1)
    assert out.attrs["harmonised_dates"] == 1
    assert out.attrs["harmonise_skipped_mixed_dates"] == 1


# --------------------------------------------------------------------------------------------
# overlapping years: ETM+ and OLI over the same ground agree once harmonised


def _overlap_series(seed: int = 19) -> tuple[xr.Dataset, xr.Dataset, list[str]]:
    """OLI and ETM+ cubes of the same dates in the years both flew (2013-2020), 20 x 20 pixels of
    spoil, bare and vegetated ground: ETM+ = the inverse of the published transform of OLI plus
    sensor noise (0.005 reflectance)."""
    rng = np.random.default_rng(seed)
    times = [f"{y}-{m:02d}-{d:02d}" for y in range(2013, 2021) for m in (5, 6, 7, 8, 9) for d in (3, 19)]
    t, h, w = len(times), 20, 20
    ranges = {"blue": (0.02, 0.12), "green": (0.04, 0.16), "red": (0.03, 0.25), "nir": (0.15, 0.45),
              "swir1": (0.10, 0.35), "swir2": (0.05, 0.30)}
    ground = {b: rng.uniform(lo, hi, (1, h, w)) for b, (lo, hi) in ranges.items()}
    season = 1 + 0.1 * np.sin(np.linspace(0, 40 * np.pi, t))[:, None, None]
    oli = {b: g * season for b, g in ground.items()}
    etm = {b: OLS.invert(b, v) + rng.normal(0.0, 0.005, v.shape) for b, v in oli.items()}
    return cube_of(oli, times, [OLI] * t), cube_of(etm, times, [ETM] * t), times


def _ndvi(ds: xr.Dataset) -> np.ndarray:
    return ((ds.nir - ds.red) / (ds.nir + ds.red)).values


def test_overlapping_years_agree_after_harmonisation() -> None:
    oli, etm, _ = _overlap_series()
    fixed = harmonise(etm)
    for band in BANDS:
        before = float((etm[band] - oli[band]).mean())
        after = float((fixed[band] - oli[band]).mean())
        # per pixel, the mean difference over the overlapping years
        px_before = float(np.sqrt(((etm[band] - oli[band]).mean("time") ** 2).mean()))
        px_after = float(np.sqrt(((fixed[band] - oli[band]).mean("time") ** 2).mean()))
        assert abs(after) < 5e-4, (band, before, after)
        assert abs(after) < 0.1 * abs(before), (band, before, after)
        assert px_after < 0.2 * px_before, (band, px_before, px_after)
        slope = np.polyfit(oli[band].values.ravel(), fixed[band].values.ravel(), 1)[0]
        assert slope == pytest.approx(1.0, abs=0.02), band
    ndvi_before = float(np.mean(_ndvi(etm) - _ndvi(oli)))
    ndvi_after = float(np.mean(_ndvi(fixed) - _ndvi(oli)))
    assert abs(ndvi_after) < 2e-3
    assert abs(ndvi_after) < 0.1 * abs(ndvi_before)
    # the other way round does not fit: the RMA transform is a different line
    rma = harmonise(etm, "roy2016_rma")
    assert abs(float((rma.nir - oli.nir).mean())) > 10 * abs(float((fixed.nir - oli.nir).mean()))


def test_one_series_of_both_sensors_loses_its_step() -> None:
    """ETM+ and OLI dates interleaved (8 days apart, as the two satellites flew) over a stable surface:
    after harmonisation the ETM+ dates' mean is the OLI dates' mean, and the OLI dates are untouched."""
    oli, etm, times = _overlap_series(seed=7)
    t = len(times)
    pick_etm = np.arange(t) % 2 == 1
    mixed = {b: np.where(pick_etm[:, None, None], etm[b].values, oli[b].values) for b in BANDS}
    series = cube_of(mixed, times, [ETM if e else OLI for e in pick_etm])
    fixed = harmonise(series)
    for band in BANDS:
        o = series[band].values[~pick_etm]
        assert abs(float(fixed[band].values[pick_etm].mean() - oli[band].values[pick_etm].mean())) < 5e-4
        np.testing.assert_array_equal(fixed[band].values[~pick_etm], o)
    step_before = float(np.mean(_ndvi(series)[pick_etm]) - np.mean(_ndvi(oli)[pick_etm]))
    step_after = float(np.mean(_ndvi(fixed)[pick_etm]) - np.mean(_ndvi(oli)[pick_etm]))
    assert abs(step_after) < 0.1 * abs(step_before)


# --------------------------------------------------------------------------------------------
# the sensor of each date


@pytest.mark.parametrize(("image_id", "sensor"), [
    ("LANDSAT/LT05/C02/T1_L2/LT05_119027_19900612", TM),
    ("LANDSAT/LE07/C02/T1_L2/LE07_119027_20050620", ETM),
    ("LANDSAT/LC08/C02/T1_L2/LC08_119027_20210614", OLI),
    ("LANDSAT/LC09/C02/T1_L2/LC09_119027_20220802", OLI),
    ("LANDSAT/LE07/C02/T1_L2/LE07_119027_20050620+LANDSAT/LE07/C02/T1_L2/LE07_120027_20050620", ETM),
    ("1990-06-12_LT05_L2SP_119027_19900612_20200916_02_T1.tif", TM),
    ("2005-06-20_LE07_L2SP_119027_20050620_20200914_02_T1_SR.tif", ETM),
    ("2022-08-02_LC09_L2SP.tif", OLI),
    ("2021-06-14_S2L2A.tif", ""),
    ("COPERNICUS/S2_SR_HARMONIZED/20210614T022551_20210614T023322_T50TPK", ""),
    ("2021-06-14_XLC08.tif", ""),
])
def test_sensor_of_ids_and_product_names(image_id: str, sensor: str) -> None:
    assert sensor_of(image_id) == sensor


def test_with_sensor_needs_a_known_sensor() -> None:
    cube = cube_of({"red": np.full((2, 1, 1), 0.1), "nir": np.full((2, 1, 1), 0.3)}, ["2021-06-14", "2021-06-30"])
    s2 = with_sensor(cube.assign_coords(image_id=("time", ["a_S2L2A.tif", "b_S2L2A.tif"])))
    assert SENSOR_COORD not in s2.coords
    ls = with_sensor(cube.assign_coords(image_id=("time", ["LT05_a.tif", "LC08_b.tif"])))
    assert list(ls[SENSOR_COORD].values) == [TM, OLI]


def test_tm_band_numbering_only_for_tm_etm_files() -> None:
    names = ["SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B7", "QA_PIXEL"]
    tm = plan_bands(names, TM)
    assert tm.bands == {"blue": "SR_B1", "green": "SR_B2", "red": "SR_B3", "nir": "SR_B4", "swir1": "SR_B5",
                        "swir2": "SR_B7"}
    assert tm.platform == "landsat"
    oli = plan_bands([*names[:5], "SR_B6", "SR_B7"])
    assert oli.bands["blue"] == "SR_B2"
    assert oli.bands["nir"] == "SR_B5"


N, X0, Y0 = 8, 500_000.0 - 15.0, 5_000_000.0 + 15.0


def _write_landsat(path: Path, bands: dict[str, int]) -> None:
    """A Landsat C2 L2 SR GeoTIFF: each ``SR_B*`` a constant DN, QA_PIXEL clear (bit 6)."""
    layers = {name: np.full((N, N), dn, "uint16") for name, dn in bands.items()}
    layers["QA_PIXEL"] = np.full((N, N), 1 << 6, "uint16")
    profile = {"driver": "GTiff", "height": N, "width": N, "count": len(layers), "dtype": "uint16",
               "crs": UTM50N.to_wkt(), "transform": Affine(30.0, 0, X0, 0, -30.0, Y0)}
    with rasterio.open(path, "w", **profile) as dst:
        for k, (name, arr) in enumerate(layers.items(), start=1):
            dst.write(arr, k)
            dst.set_band_description(k, name)


def _dn(reflectance: float) -> int:
    return round((reflectance + 0.2) / 2.75e-5)


@pytest.mark.parametrize("method", ["roy2016_ols", "none"])
def test_local_landsat_products_carry_their_sensor_and_are_harmonised(tmp_path: Path, method: str) -> None:
    folder = tmp_path / "imagery"
    folder.mkdir()
    # the same ground (red 0.10, nir 0.30) seen by TM (SR_B3, SR_B4) and OLI (SR_B4, SR_B5)
    tm = {"SR_B1": _dn(0.05), "SR_B2": _dn(0.08), "SR_B3": _dn(0.10), "SR_B4": _dn(0.30), "SR_B5": _dn(0.20),
          "SR_B7": _dn(0.12)}
    oli = {"SR_B1": _dn(0.9), "SR_B2": _dn(0.05), "SR_B3": _dn(0.08), "SR_B4": _dn(0.10), "SR_B5": _dn(0.30),
           "SR_B6": _dn(0.20), "SR_B7": _dn(0.12)}
    _write_landsat(folder / "1990-06-12_LT05_L2SP_119027_19900612_20200916_02_T1.tif", tm)
    _write_landsat(folder / "2021-06-14_LC08_L2SP_119027_20210614_20210622_02_T1.tif", oli)
    region = box(X0, Y0 - N * 30.0, X0 + N * 30.0, Y0)
    cube = read_local_cube(folder, region, UTM50N, harmonise_method=method).compute()
    assert list(cube[SENSOR_COORD].values) == [TM, OLI]
    assert cube.attrs["harmonise"] == method
    raw = {"red": 0.10, "nir": 0.30, "blue": 0.05, "swir2": 0.12}
    for band, value in raw.items():
        inside = cube[band].values[:, 1:-1, 1:-1]  # the reader adds a pixel of margin (NaN) around the region
        np.testing.assert_allclose(inside[1], value, atol=1e-4)  # OLI as read
        want = OLS.apply(band, value) if method != "none" else value
        np.testing.assert_allclose(inside[0], want, atol=1e-4)  # TM numbering, then harmonised
    if method != "none":
        assert cube.attrs["harmonised_dates"] == 1
        assert cube.attrs["harmonise_citation"] == ROY_2016


def test_files_naming_no_sensor_get_no_sensor_nor_harmonisation(tmp_path: Path) -> None:
    folder = tmp_path / "imagery"
    folder.mkdir()
    _write_landsat(folder / "2021-06-14_L2.tif", {"SR_B2": _dn(0.05), "SR_B3": _dn(0.08), "SR_B4": _dn(0.1),
                                                  "SR_B5": _dn(0.3)})
    cube = read_local_cube(folder, box(X0, Y0 - N * 30.0, X0 + N * 30.0, Y0), UTM50N)
    assert SENSOR_COORD not in cube.coords
    assert "harmonise" not in cube.attrs


# --------------------------------------------------------------------------------------------
# settings


def test_harmonise_settings_and_the_config_hash() -> None:
    base = Settings()
    assert base.earthengine.harmonise == "roy2016_ols"
    assert base.local.harmonise == "roy2016_ols"
    # only the archive has TM/ETM+ dates: elsewhere the setting leaves the hash as it was
    assert base.with_overrides({"earthengine.harmonise": "none"}).config_hash() == base.config_hash()
    archive = base.with_overrides({"earthengine.collection": "landsat-archive"})
    assert archive.with_overrides({"earthengine.harmonise": "none"}).config_hash() != archive.config_hash()
    assert base.with_overrides({"local.harmonise": "none"}).config_hash() != base.config_hash()
