"""Local imagery in two layouts it was not shaped for: THEIA/MAJA Sentinel-2 product folders and annual composites.

Real data is read in place from ``../shared/data/real`` (the ``real_data`` fixture; README.txt in each folder):
``fordead_theia_zonetest/SENTINEL_ZoneTest`` (187 THEIA L2A products, EPSG:32631) and
``specrec_bc06_wildfire`` (annual Landsat composites, EPSG:26910). Every value the reader returns is
checked against rasterio reads of the files themselves. Error cases use tiny THEIA-like products
written with rasterio into ``tmp_path`` (UTM 31N, 8 x 8 px at 10 m, 4 x 4 at 20 m).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyproj
import pytest
import rasterio
import xarray as xr
from affine import Affine
from shapely.geometry import box
from typer.testing import CliRunner

import gmsense
from gmsense.cli import app
from gmsense.errors import ImageryError
from gmsense.sources.local import MissingMaskWarning, RescaledImageryWarning, latest_date, read_local_cube
from gmsense.store import Store

runner = CliRunner()
THEIA = "fordead_theia_zonetest/SENTINEL_ZoneTest"
BAP = "specrec_bc06_wildfire/bap_30m_minmax_normalized"
C10 = "specrec_bc06_wildfire/composites_10m_reflectance"
BAP_NAMES = ["blue", "green", "red", "nir", "swir16", "swir22"]
THEIA_FILES = {"blue": "B2", "green": "B3", "red": "B4", "nir": "B8A", "swir1": "B11", "swir2": "B12"}
COMMON = list(THEIA_FILES)


def _scan(*args: object) -> tuple[int, str]:
    result = runner.invoke(app, ["scan", "--no-progress", *[str(a) for a in args]])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def _sites(path: Path, geometry: object, crs: int) -> Path:
    gpd.GeoDataFrame({"site_id": ["REAL-1"], "licence_type": ["exploration"]}, geometry=[geometry],
                     crs=crs).to_file(path)
    return path


def _read(path: Path, band: int = 1) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(band).astype("float64")


def _product_files(product: Path) -> dict[str, Path]:
    files = {common: next(product.glob(f"*_FRE_{band}.tif")) for common, band in THEIA_FILES.items()}
    files["clm"] = next((product / "MASKS").glob("*_CLM_R2.tif"))
    return files


# ---------------------------------------------------------------------------------------------
# THEIA, real


@pytest.fixture(scope="module")
def theia_cube(real_data: Path) -> xr.Dataset:
    return gmsense.open_imagery(real_data / THEIA).load()


def _theia_expected(product: Path) -> dict[str, np.ndarray]:
    """The product on the 10 m grid by an independent route: 20 m arrays repeated 2 x 2 (nearest),
    -10000 as NaN, reflectance x 1e-4, clear = CLM == 0 and all bands valid."""
    raw = {k: _read(p) for k, p in _product_files(product).items()}
    up = {k: (np.repeat(np.repeat(v, 2, 0), 2, 1) if v.shape == (40, 40) else v) for k, v in raw.items()}
    bands = {k: np.where(up[k] == -10000, np.nan, up[k] * 1e-4) for k in COMMON}
    valid = np.all([np.isfinite(v) for v in bands.values()], axis=0)
    return {**bands, "clear": (up["clm"] == 0) & valid, "raw_nir": raw["nir"]}


@pytest.mark.realdata
def test_theia_real_dates_grid_and_attrs(real_data: Path, theia_cube: xr.Dataset) -> None:
    folders = sorted(p.name for p in (real_data / THEIA).iterdir() if p.is_dir())
    assert theia_cube.sizes == {"time": len(folders), "y": 80, "x": 80}
    assert len(folders) == 187
    days = sorted(f"{n[11:15]}-{n[15:17]}-{n[17:19]}" for n in folders)
    assert [str(t)[:10] for t in theia_cube["time"].values] == days
    assert theia_cube.rio.crs.to_epsg() == 32631
    assert theia_cube.rio.transform() == Affine(10.0, 0.0, 670540.0, 0.0, -10.0, 5461500.0)
    assert theia_cube.attrs["nir_band"] == "B8A"
    assert theia_cube.attrs["dn_scale_applied"] == 1e-4
    assert theia_cube.attrs["platform"] == "sentinel-2"
    assert list(theia_cube["image_id"].values) == sorted(folders, key=lambda n: n[11:26])
    assert latest_date(real_data / THEIA) == "2020-06-24"
    assert latest_date(real_data / THEIA, end="2019-12-31") == "2019-12-29"


@pytest.mark.realdata
@pytest.mark.parametrize("stamp", ["20180826", "20151230", "20170612", "20151203"],
                         ids=["clear", "part-cloudy", "cloud-bits", "all-nodata"])
def test_theia_real_values_and_clear_match_the_files(real_data: Path, theia_cube: xr.Dataset, stamp: str) -> None:
    product = next((real_data / THEIA).glob(f"SENTINEL2?_{stamp}-*"))
    expected = _theia_expected(product)
    got = theia_cube.sel(time=f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:]}")
    for band in ("blue", "green", "red"):  # 10 m: the file's pixels as they are
        np.testing.assert_allclose(got[band].values, expected[band], rtol=1e-6, equal_nan=True)
    for band in ("nir", "swir1", "swir2"):  # 20 m: bilinear, so not equal to a 2 x 2 repeat but finite alike
        assert np.array_equal(np.isfinite(got[band].values), np.isfinite(expected[band]))
    np.testing.assert_array_equal(got["clear"].values, expected["clear"])
    if np.isfinite(expected["nir"]).all():
        # interior 10 m pixel (r, c): bilinear between 20 m centres at (r/2 - 1/4, c/2 - 1/4)
        b8a = expected["raw_nir"]
        for r, c in [(10, 21), (33, 50), (61, 7)]:
            fy, fx = r / 2 - 0.25, c / 2 - 0.25
            y0, x0 = int(np.floor(fy)), int(np.floor(fx))
            wy, wx = fy - y0, fx - x0
            want = ((1 - wy) * (1 - wx) * b8a[y0, x0] + (1 - wy) * wx * b8a[y0, x0 + 1]
                    + wy * (1 - wx) * b8a[y0 + 1, x0] + wy * wx * b8a[y0 + 1, x0 + 1]) * 1e-4
            assert got["nir"].values[r, c] == pytest.approx(want, rel=1e-5)
        assert np.nanmean(got["nir"].values) == pytest.approx(np.nanmean(expected["nir"]), rel=0.01)


@pytest.mark.realdata
def test_theia_real_clear_share_per_date_matches_the_masks(real_data: Path, theia_cube: xr.Dataset) -> None:
    products = sorted((p for p in (real_data / THEIA).iterdir() if p.is_dir()), key=lambda p: p.name[11:26])
    sample = products[::9]
    shares = []
    for product in sample:
        files = _product_files(product)
        clm, red, b12 = _read(files["clm"]), _read(files["red"]), _read(files["swir2"])
        ok = (np.repeat(np.repeat((clm == 0) & (b12 != -10000), 2, 0), 2, 1)) & (red != -10000)
        shares.append(ok.mean())
    got = theia_cube["clear"].mean(("y", "x")).values[::9]
    np.testing.assert_allclose(got, shares, atol=1e-9)
    assert 0 < np.mean(shares) < 1, "the sample holds clear, cloudy and empty dates"


@pytest.mark.realdata
def test_theia_real_region_read_is_cropped_and_padded(real_data: Path) -> None:
    region = box(670700, 5460900, 670900, 5461100)
    cube = read_local_cube(real_data / THEIA, region, pyproj.CRS.from_epsg(32631), start="2018-08-01",
                           end="2018-08-31")
    august = sorted(f"2018-08-{p.name[17:19]}" for p in (real_data / THEIA).glob("SENTINEL2?_201808*"))
    assert [str(t)[:10] for t in cube["time"].values] == august
    assert len(august) == 7
    assert cube.sizes["x"] == 22
    assert cube.sizes["y"] == 22
    whole = gmsense.open_imagery(real_data / THEIA, start="2018-08-26", end="2018-08-26")
    np.testing.assert_array_equal(cube["red"].sel(time="2018-08-26").values,
                                  whole["red"].isel(time=0).sel(x=cube.x, y=cube.y).values)


@pytest.mark.realdata
@pytest.mark.slow
def test_theia_real_scan_through_the_cli(real_data: Path, tmp_path: Path) -> None:
    sites = _sites(tmp_path / "fr.gpkg", box(670640, 5460800, 671240, 5461400), 32631)  # 100 m inside the scene
    db = tmp_path / "fr.db"
    code, output = _scan("--sites", sites, "--source", "local", "--imagery", real_data / THEIA, "--db", db,
                         "--buffer", "100")
    assert code == 0, output
    [unit] = Store(str(db)).scan(1)[1]
    assert unit.status == "done"
    assert unit.stats["n_dates"] == 187
    assert unit.stats["crs"] == "EPSG:32631"
    in_season = sum(1 for p in (real_data / THEIA).iterdir() if p.is_dir() and 5 <= int(p.name[15:17]) <= 9)
    assert unit.stats["n_season_dates"] == in_season
    assert unit.stats["shape"] == [82, 82]  # the scene plus the reader's one-pixel margin
    patches = Store(str(db)).patch_rows()
    assert patches, "the 2018-2020 dieback is detected"
    assert all(p.first_detected >= "2016" for p in patches)


# ---------------------------------------------------------------------------------------------
# annual composites, real


@pytest.mark.realdata
def test_composites_10m_dates_values_and_clear(real_data: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cube = gmsense.open_imagery(real_data / C10).load()
    assert not [w for w in caught if issubclass(w.category, MissingMaskWarning)], "composites are cloud-screened"
    assert not [w for w in caught if issubclass(w.category, RescaledImageryWarning)], "reflectance, not rescaled"
    assert "rescaled_per_image" not in cube.attrs
    years = sorted(int(p.stem) for p in (real_data / C10).glob("*.tif"))
    assert [str(t)[:10] for t in cube["time"].values] == [f"{y}-07-15" for y in years]
    assert cube.attrs["composite"] == "annual"
    assert "dn_scale_applied" not in cube.attrs, "0..1 floats are reflectance already"
    for year in (2005, 2011):
        with rasterio.open(real_data / C10 / f"{year}.tif") as src:
            raw = src.read().astype("float32")
            assert src.descriptions == ("blue", "green", "red", "nir", "swir1", "swir2")
        fill = np.all(raw == 0, axis=0) | np.any(~np.isfinite(raw), axis=0)
        got = cube.sel(time=f"{year}-07-15")
        for k, band in enumerate(("blue", "green", "red", "nir", "swir1", "swir2")):
            want = np.where(raw[k] == 0, np.nan, raw[k])
            np.testing.assert_array_equal(got[band].values, want)
        np.testing.assert_array_equal(got["clear"].values, ~fill)
    assert cube["clear"].sel(time="2011-07-15").mean() == pytest.approx(1 - 0.6279, abs=1e-3)


@pytest.mark.realdata
def test_bap_30m_needs_band_names_and_then_reads_the_files(real_data: Path) -> None:
    with pytest.raises(ImageryError, match=r"no descriptions.*local\.band_names"):
        gmsense.open_imagery(real_data / BAP)
    with pytest.warns(RescaledImageryWarning, match="min-max rescaled per image"):
        cube = gmsense.open_imagery(real_data / BAP, band_names=BAP_NAMES).load()
    assert cube.attrs["rescaled_per_image"] == 1, "the data's README: every band of every year spans 0..1"
    assert cube.sizes == {"time": 23, "y": 34, "x": 56}
    assert str(cube["time"].values[0])[:10] == "2002-07-15"
    assert str(cube["time"].values[-1])[:10] == "2024-07-15"
    assert cube.attrs["resolution_m"] == 30.0
    assert cube.rio.crs.to_epsg() == 26910
    raw = np.stack([_read(real_data / BAP / "2006.tif", b) for b in range(1, 7)])
    got = cube.sel(time="2006-07-15")
    for k, band in enumerate(("blue", "green", "red", "nir", "swir1", "swir2")):  # swir16/swir22 -> swir1/swir2
        want = np.where(raw[k] == 0, np.nan, raw[k]).astype("float32")
        np.testing.assert_array_equal(got[band].values, want)
    assert float(np.nanmax(got["nir"].values)) == 1.0, "min-max rescaled values are left as they are"
    np.testing.assert_array_equal(got["clear"].values, np.all(raw != 0, axis=0))
    with pytest.raises(ImageryError, match="names 4"):
        gmsense.open_imagery(real_data / BAP, band_names=BAP_NAMES[:4])


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize("series", [BAP, C10])
def test_composite_scan_through_the_cli(real_data: Path, tmp_path: Path, series: str) -> None:
    sites = _sites(tmp_path / "bc.gpkg", box(492500, 5967100, 493100, 5967600), 26910)
    config = tmp_path / "bc.yaml"
    config.write_text("local:\n  band_names: [" + ", ".join(BAP_NAMES) + "]\n")
    db = tmp_path / "bc.db"
    code, output = _scan("--sites", sites, "--source", "local", "--imagery", real_data / series, "--db", db,
                         "--buffer", "100", "--config", config)
    assert code == 0, output
    [unit] = Store(str(db)).scan(1)[1]
    assert unit.status == "done"
    n_years = len(list((real_data / series).glob("*.tif")))
    assert unit.stats["n_dates"] == unit.stats["n_season_dates"] == n_years, "one mid-July date per year"
    assert unit.stats["first_date"] == "2002-07-15"
    assert unit.stats["crs"] == "EPSG:26910"
    # the licence's window misses the images' extremes; the folder's small files are checked whole
    assert ("rescaled per image" in unit.stats.get("imagery_warning", "")) == (series == BAP)
    assert ("rescaled imagery" in output) == (series == BAP)


# ---------------------------------------------------------------------------------------------
# THEIA-like products written here: reading rules and errors

UTM31 = pyproj.CRS.from_epsg(32631)
X0, Y0 = 670_000.0, 5_460_080.0
BASE = {"B2": 300, "B3": 500, "B4": 400, "B8": 3100, "B8A": 3000, "B11": 1800, "B12": 900}


def _write(path: Path, values: np.ndarray, res: float, dtype: str) -> None:
    profile = {"driver": "GTiff", "height": values.shape[0], "width": values.shape[1], "count": 1, "dtype": dtype,
               "crs": UTM31.to_wkt(), "transform": Affine(res, 0, X0, 0, -res, Y0)}  # THEIA declares no nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(values.astype(dtype), 1)


def theia_product(root: Path, day: str = "20180826", *, skip: tuple[str, ...] = (), clm: np.ndarray | None = None,
                  nodata_20m: tuple[int, int] | None = None, with_b8: bool = False, mask: str = "CLM_R2") -> Path:
    """A THEIA-like product: DN = base + 10 col + row at each band's resolution (8 x 8 at 10 m, 4 x 4 at 20 m)."""
    folder = root / f"SENTINEL2A_{day}-104155-257_L2A_T31UFQ_D_V1-8"
    (folder / "MASKS").mkdir(parents=True)
    bands = {"B2": 10, "B3": 10, "B4": 10, "B8A": 20, "B11": 20, "B12": 20} | ({"B8": 10} if with_b8 else {})
    for band, res in bands.items():
        if band in skip:
            continue
        n = 80 // res
        rows, cols = np.mgrid[0:n, 0:n]
        values = BASE[band] + 10 * cols + rows
        if nodata_20m is not None and res == 20 and band == "B11":
            values[nodata_20m] = -10000
        _write(folder / f"{folder.name}_FRE_{band}.tif", values, res, "int16")
    if mask:
        res = 20 if mask.endswith("R2") else 10
        _write(folder / "MASKS" / f"{folder.name}_{mask}.tif", np.zeros((80 // res,) * 2) if clm is None else clm,
               res, "uint8")
    return folder


def _whole(folder: Path, **kwargs: object) -> xr.Dataset:
    return read_local_cube(folder, box(X0, Y0 - 80, X0 + 80, Y0), UTM31, **kwargs).load()


def test_theia_like_values_nodata_mask_and_resampling(tmp_path: Path) -> None:
    clm = np.zeros((4, 4))
    clm[0, 3] = 2  # one cloud bit (20 m pixel row 0, col 3)
    theia_product(tmp_path / "series", clm=clm, nodata_20m=(2, 1))
    theia_product(tmp_path / "series", day="20180705")
    cube = _whole(tmp_path / "series")
    assert cube.sizes == {"time": 2, "y": 10, "x": 10}  # 8 x 8 plus the reader's one-pixel margin
    got = cube.sel(time="2018-08-26").isel(y=slice(1, 9), x=slice(1, 9))  # the image itself
    rows, cols = np.mgrid[0:8, 0:8]
    np.testing.assert_allclose(got["red"].values, (400 + 10 * cols + rows) * 1e-4, rtol=1e-6)
    # B8A is linear in row/col, so bilinear onto the 10 m centres is exact inside the image
    inner = (slice(1, 7), slice(1, 7))
    want_nir = (3000 + 10 * (cols / 2 - 0.25) + (rows / 2 - 0.25)) * 1e-4
    np.testing.assert_allclose(got["nir"].values[inner], want_nir[inner], rtol=1e-5)
    # the -10000 20 m pixel (row 2, col 1) stays no data on its four 10 m pixels, and is not clear
    gone = np.zeros((8, 8), bool)
    gone[4:6, 2:4] = True
    assert np.isnan(got["swir1"].values[gone]).all()
    assert np.isfinite(got["swir1"].values[~gone]).all()
    cloud = np.zeros((8, 8), bool)
    cloud[0:2, 6:8] = True  # the CLM pixel, nearest onto 10 m
    np.testing.assert_array_equal(got["clear"].values, ~gone & ~cloud)
    assert not cube["clear"].isel(y=0).any(), "the margin outside the files is not observed"
    assert cube.attrs["nir_band"] == "B8A"
    assert list(cube["image_id"].values) == sorted(p.name for p in (tmp_path / "series").iterdir())  # by date


def test_theia_like_prefers_b8_when_every_product_has_it_and_explicit_dn_scale(tmp_path: Path) -> None:
    theia_product(tmp_path / "b8", with_b8=True, mask="CLM_R1")
    cube = _whole(tmp_path / "b8", dn_scale=1.0)
    assert cube.attrs["nir_band"] == "B8"
    assert cube.attrs["dn_scale_applied"] == 1.0
    assert cube["nir"].values[0, 1, 1] == 3100  # B8 at 10 m, as stored (dn_scale 1)
    theia_product(tmp_path / "b8", day="20180901")  # no B8 in this one: back to B8A for all
    assert _whole(tmp_path / "b8").attrs["nir_band"] == "B8A"


def test_theia_product_folder_itself_is_readable(tmp_path: Path) -> None:
    product = theia_product(tmp_path)
    cube = _whole(product)
    assert cube.sizes["time"] == 1
    assert latest_date(product) == "2018-08-26"


def test_theia_product_missing_a_band_is_named(tmp_path: Path) -> None:
    theia_product(tmp_path / "s")
    broken = theia_product(tmp_path / "s", day="20180901", skip=("B11",))
    with pytest.raises(ImageryError, match=rf"{broken.name}.*lacks band file.*_FRE_B11\.tif.*download") as err:
        _whole(tmp_path / "s")
    assert "\n" not in str(err.value)


def test_theia_product_missing_its_cloud_mask_is_named(tmp_path: Path) -> None:
    broken = theia_product(tmp_path / "s", mask="")
    with pytest.raises(ImageryError, match=rf"{broken.name} has no cloud mask MASKS/.*_CLM_R2\.tif"):
        gmsense.open_imagery(tmp_path / "s")


def test_theia_corrupt_tif_is_named_with_its_product(tmp_path: Path) -> None:
    product = theia_product(tmp_path / "s")
    bad = product / f"{product.name}_FRE_B4.tif"
    bad.write_bytes(b"II*\x00 this is not a tiff" * 20)
    with pytest.raises(ImageryError, match=rf"{bad.name} cannot be read.*download THEIA product {product.name} "
                                           "again, or remove its folder"):
        _whole(tmp_path / "s")


def test_theia_zipped_products_say_unzip(tmp_path: Path) -> None:
    (tmp_path / "z").mkdir()
    (tmp_path / "z" / "SENTINEL2A_20180826-104155-257_L2A_T31UFQ_D_V1-8.zip").write_bytes(b"PK")
    with pytest.raises(ImageryError, match="unzip"):
        gmsense.open_imagery(tmp_path / "z")


def test_scan_stops_on_a_broken_theia_product_before_writing(tmp_path: Path) -> None:
    theia_product(tmp_path / "s")
    theia_product(tmp_path / "s", day="20180901", skip=("B12",))
    sites = _sites(tmp_path / "t.gpkg", box(X0 + 20, Y0 - 60, X0 + 60, Y0 - 20), 32631)
    db = tmp_path / "t.db"
    code, output = _scan("--sites", sites, "--source", "local", "--imagery", tmp_path / "s", "--db", db,
                         "--buffer", "10")
    assert code == 2, output
    assert "_FRE_B12.tif" in " ".join(output.split())
    assert "Traceback" not in output
    assert not db.exists()


def test_folder_mixing_annual_and_dated_files_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("2005.tif", "2006-07-01_S2.tif"):
        _write(folder / name, np.ones((4, 4)), 10, "float32")
    with pytest.raises(ImageryError, match=r"mixes annual composites \(YYYY\.tif\) with per-acquisition files"):
        gmsense.open_imagery(folder)


def test_rescaled_per_image_tells_rescaled_from_clipped_reflectance() -> None:
    from gmsense.sources.local import rescaled_per_image
    from gmsense.testutils import make_cube

    cube = make_cube(ny=20, nx=20, years=(2020,), every_days=30, cloud_share=0.0, seed=1)
    bands = [b for b in ("blue", "green", "red", "nir", "swir1", "swir2") if b in cube.data_vars]
    assert not rescaled_per_image(cube), "reflectance"
    rescaled = cube.copy()
    for band in bands:
        v = rescaled[band]
        low, high = v.min(dim=("y", "x")), v.max(dim=("y", "x"))
        rescaled[band] = ((v - low) / (high - low)).astype("float32")
    assert rescaled_per_image(rescaled)
    clipped = cube.copy()
    for band in bands:  # a bright cloud saturating a tenth of every image
        clipped[band] = clipped[band].where(clipped["x"] > clipped["x"][1], 1.0).where(
            clipped["x"] > clipped["x"][0], 0.0).astype("float32")
    assert not rescaled_per_image(clipped), "whole clouds at 1 are clipped reflectance, not a rescaling"
