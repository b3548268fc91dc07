"""Local imagery reader: GeoTIFF folders, NetCDF/Zarr cubes, masks, scaling, grids and errors.

Synthetic files are written with rasterio into ``tmp_path`` (UTM 52N near 128 E, 47 N; 30 x 30
pixels at 10 m). The real Sentinel-2 cubes over Romania (EPSG:3035) come from
``../shared/data/real/nrt_romania_s2`` (the ``real_data`` fixture) (see its README.txt) and are read in place.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pyproj
import pytest
import rasterio
import xarray as xr
from affine import Affine
from rasterio.enums import Resampling
from rasterio.warp import calculate_default_transform, reproject
from shapely.geometry import box

from gmsense.cube.contract import validate_cube
from gmsense.errors import ImageryError
from gmsense.sources._bands import (
    QA_CLOUD,
    QA_CLOUD_SHADOW,
    QA_DILATED_CLOUD,
    QA_FILL,
    QA_SNOW,
    decode_clear,
    plan_bands,
)
from gmsense.sources.local import MissingMaskWarning, read_local_cube

UTM52 = pyproj.CRS.from_epsg(32652)
LAEA = pyproj.CRS.from_epsg(3035)
X0, Y0, RES, N = 424_000.0, 5_205_800.0, 10.0, 30  # top-left corner (m), pixel size (m), size (px)
TRANSFORM = Affine(RES, 0.0, X0, 0.0, -RES, Y0)
FULL = box(X0, Y0 - N * RES, X0 + N * RES, Y0)  # the image footprint in UTM 52N
S2_BANDS = ("B02", "B03", "B04", "B08", "B11", "B12")
COMMON = ("blue", "green", "red", "nir", "swir1", "swir2")
BASE_DN = {"B02": 300, "B03": 500, "B04": 400, "B08": 3000, "B11": 1800, "B12": 900}



def dn_field(band: str, shift: int = 0) -> np.ndarray:
    """Distinct uint16 DN per pixel: base + 10 * col + row (+ shift)."""
    rows, cols = np.mgrid[0:N, 0:N]
    return (BASE_DN[band] + 10 * cols + rows + shift).astype("uint16")


def scl_field() -> np.ndarray:
    """SCL: vegetation (4) with a block of each not-clear class and clear-but-unusual classes."""
    scl = np.full((N, N), 4, dtype="uint16")
    scl[0:5, 0:5] = 0  # no data (bands are nodata there too)
    scl[5:10, 0:5] = 3  # cloud shadow
    scl[10:15, 0:5] = 8  # cloud medium
    scl[15:20, 0:5] = 9  # cloud high
    scl[20:25, 0:5] = 10  # cirrus
    scl[25:30, 0:5] = 11  # snow
    scl[0:5, 10:15] = 1  # saturated
    scl[10:15, 10:15] = 5  # bare soil: clear
    scl[20:25, 10:15] = 6  # water: clear
    scl[25:30, 25:30] = 7  # unclassified: clear
    return scl


def write_tif(path: Path, layers: dict[str, np.ndarray], *, crs: pyproj.CRS = UTM52,
              transform: Affine = TRANSFORM, nodata: float | None = 0, scales: dict[str, float] | None = None,
              dtype: str | None = None) -> Path:
    """A GeoTIFF with one band per ``layers`` item, its key as band description."""
    first = next(iter(layers.values()))
    profile = {"driver": "GTiff", "height": first.shape[0], "width": first.shape[1], "count": len(layers),
               "dtype": dtype or str(first.dtype), "crs": crs.to_wkt(), "transform": transform, "nodata": nodata}
    with rasterio.open(path, "w", **profile) as dst:
        for k, (name, arr) in enumerate(layers.items(), start=1):
            dst.write(arr.astype(profile["dtype"]), k)
            dst.set_band_description(k, name)
        if scales:
            dst.scales = [scales.get(name, 1.0) for name in layers]
    return path


def s2_layers(shift: int = 0, scl: np.ndarray | None = None) -> dict[str, np.ndarray]:
    scl = scl_field() if scl is None else scl
    layers = {b: dn_field(b, shift) for b in S2_BANDS}
    for arr in layers.values():
        arr[scl == 0] = 0  # nodata where SCL says no data
    layers["SCL"] = scl
    return layers


DATES = ("2021-06-14", "2021-05-03", "2021-07-20")


def s2_folder(folder: Path, *, scaled: bool) -> Path:
    """Three dated S2 files (written out of date order), plus files the reader must ignore."""
    folder.mkdir(parents=True, exist_ok=True)
    scales = dict.fromkeys(S2_BANDS, 1e-4) if scaled else None
    for k, day in enumerate(DATES):
        write_tif(folder / f"{day}_S2L2A.tif", s2_layers(shift=k), scales=scales)
    write_tif(folder / "mosaic_S2L2A.tif", s2_layers(shift=99))  # no leading date: ignored
    (folder / "2021-06-30_notes.txt").write_text("not imagery")  # not a GeoTIFF: ignored
    return folder


def at(ds: xr.Dataset, var: str, day: str, row: int, col: int) -> float:
    """Value of ``var`` at the image pixel (row, col) of the synthetic files (by coordinates)."""
    x, y = X0 + (col + 0.5) * RES, Y0 - (row + 0.5) * RES
    return ds[var].sel(time=day, x=x, y=y, method="nearest").values.item()


# ---------------------------------------------------------------------------------------------
# GeoTIFF folder


@pytest.mark.parametrize("scaled", [True, False], ids=["scale-in-metadata", "no-scale-auto"])
def test_folder_values_nodata_mask_time(tmp_path: Path, scaled: bool) -> None:
    folder = s2_folder(tmp_path / "imagery", scaled=scaled)
    ds = read_local_cube(folder, FULL, UTM52, site_id="HLJ-001")

    assert tuple(ds["red"].dims) == ("time", "y", "x")
    assert list(ds.data_vars) == [*COMMON, "clear"]
    assert all(ds[b].dtype == np.float32 for b in COMMON)
    assert ds["clear"].dtype == bool
    assert ds["red"].chunks is not None  # lazy
    assert [str(t)[:10] for t in ds.time.values] == sorted(DATES)
    assert ds.time.dtype == np.dtype("datetime64[ns]")
    assert ds.rio.crs.to_epsg() == 32652
    assert ds.attrs["source"] == "local"
    assert ds.attrs["platform"] == "sentinel-2"
    assert ds.attrs["resolution_m"] == 10.0
    assert ds.attrs["path"] == str(folder)
    if scaled:
        assert "dn_scale_applied" not in ds.attrs
    else:
        assert ds.attrs["dn_scale_applied"] == pytest.approx(1e-4)

    # values: DN * 1e-4; the 2021-06-14 file has shift 0, 2021-05-03 shift 1
    assert at(ds, "red", "2021-06-14", 12, 20) == pytest.approx((400 + 200 + 12) * 1e-4, rel=1e-6)
    assert at(ds, "nir", "2021-05-03", 29, 29) == pytest.approx((3000 + 290 + 29 + 1) * 1e-4, rel=1e-6)
    assert at(ds, "swir2", "2021-07-20", 7, 8) == pytest.approx((900 + 80 + 7 + 2) * 1e-4, rel=1e-6)
    # nodata (0) -> NaN in every band, never clear
    assert np.isnan(at(ds, "blue", "2021-06-14", 2, 2))
    assert not at(ds, "clear", "2021-06-14", 2, 2)

    # clear mask matches SCL exactly over the image (crop pads one pixel of NaN around it)
    inner = ds.sel(x=slice(X0, X0 + N * RES), y=slice(Y0, Y0 - N * RES)).compute()
    assert inner.sizes == {"time": 3, "y": N, "x": N}
    scl = scl_field()
    expected = ~np.isin(scl, [0, 1, 3, 8, 9, 10, 11])
    for t in range(3):
        np.testing.assert_array_equal(inner["clear"].values[t], expected)
    assert float(inner["red"].max()) < 0.1
    # the one-pixel pad outside the image is NaN and not clear
    edge = ds.isel(x=0).compute()
    assert bool(np.isnan(edge["red"]).all())
    assert not bool(edge["clear"].any())


def test_crop_to_region_bbox_plus_one_pixel(tmp_path: Path) -> None:
    folder = s2_folder(tmp_path / "imagery", scaled=True)
    region = box(X0 + 55, Y0 - 195, X0 + 142, Y0 - 101)  # cols 5..14, rows 10..19 touched
    ds = read_local_cube(folder, region, UTM52)
    assert ds.sizes["x"] == 10 + 2
    assert ds.sizes["y"] == 10 + 2
    assert ds.x.values[0] == pytest.approx(X0 + 4.5 * RES)
    assert ds.x.values[-1] == pytest.approx(X0 + 15.5 * RES)
    assert ds.y.values[0] == pytest.approx(Y0 - 9.5 * RES)  # north-up: y descending
    assert ds.y.values[-1] == pytest.approx(Y0 - 20.5 * RES)
    assert ds.rio.transform().c == pytest.approx(X0 + 4 * RES)
    assert at(ds, "green", "2021-06-14", 10, 4) == pytest.approx((500 + 40 + 10) * 1e-4, rel=1e-6)


def test_region_in_other_crs_and_partly_outside(tmp_path: Path) -> None:
    folder = s2_folder(tmp_path / "imagery", scaled=True)
    # a region in EPSG:4326 whose eastern half lies beyond the image
    to_ll = pyproj.Transformer.from_crs(UTM52, 4326, always_xy=True)
    w, s = to_ll.transform(X0 + 200, Y0 - 250)
    e, n = to_ll.transform(X0 + 500, Y0 - 50)
    ds = read_local_cube(folder, box(w, s, e, n), pyproj.CRS.from_epsg(4326))
    assert ds.rio.crs.to_epsg() == 32652  # the imagery's own projected grid, not the region's
    assert ds.x.values.max() > X0 + N * RES  # extends beyond the image ...
    outside = ds.sel(x=slice(X0 + N * RES, None)).compute()
    assert outside.sizes["x"] > 0
    assert bool(np.isnan(outside["nir"]).all())
    assert not bool(outside["clear"].any())
    inside = ds.sel(x=slice(None, X0 + N * RES)).compute()
    assert bool(np.isfinite(inside["nir"]).any())


def test_date_filter_inclusive_and_no_dates_error(tmp_path: Path) -> None:
    folder = s2_folder(tmp_path / "imagery", scaled=True)
    ds = read_local_cube(folder, FULL, UTM52, start="2021-05-03", end="2021-06-14")
    assert [str(t)[:10] for t in ds.time.values] == ["2021-05-03", "2021-06-14"]
    with pytest.raises(ImageryError, match=r"no acquisition within 2022-01-01\.\..*HLJ-9.*2021-05-03\.\.2021-07-20"):
        read_local_cube(folder, FULL, UTM52, start="2022-01-01", site_id="HLJ-9")


def test_same_date_files_merge_first_valid_wins(tmp_path: Path) -> None:
    folder = tmp_path / "imagery"
    folder.mkdir()
    a = s2_layers(shift=0)
    for arr in a.values():
        arr[:, 15:] = 0  # a: right half nodata
    b = s2_layers(shift=500)  # b: everything valid, different values
    write_tif(folder / "2021-06-14_a.tif", a, scales=dict.fromkeys(S2_BANDS, 1e-4))
    write_tif(folder / "2021-06-14_b.tif", b, scales=dict.fromkeys(S2_BANDS, 1e-4))
    ds = read_local_cube(folder, FULL, UTM52)
    assert ds.sizes["time"] == 1
    assert at(ds, "red", "2021-06-14", 12, 7) == pytest.approx((400 + 70 + 12) * 1e-4, rel=1e-6)  # from a
    assert at(ds, "red", "2021-06-14", 12, 20) == pytest.approx((400 + 200 + 12 + 500) * 1e-4, rel=1e-6)  # from b
    assert at(ds, "clear", "2021-06-14", 12, 20)  # b's SCL says vegetation there
    assert not at(ds, "clear", "2021-06-14", 7, 2)  # shadow in both


def test_shifted_grid_file_is_aligned_onto_first(tmp_path: Path) -> None:
    folder = tmp_path / "imagery"
    folder.mkdir()
    scales = dict.fromkeys(S2_BANDS, 1e-4)
    write_tif(folder / "2021-06-01.tif", s2_layers(), scales=scales)
    # second acquisition: same lattice, origin 3 px east and 2 px south
    shifted = TRANSFORM @ Affine.translation(3, 2)
    write_tif(folder / "2021-06-11.tif", s2_layers(), transform=shifted, scales=scales)
    ds = read_local_cube(folder, FULL, UTM52)
    # pixel (row 12, col 20) of the second file lies at first-grid (row 14, col 23)
    assert at(ds, "red", "2021-06-11", 14, 23) == pytest.approx((400 + 200 + 12) * 1e-4, rel=1e-6)
    # first-grid pixels west of the shifted file are NaN for that date
    assert np.isnan(at(ds, "red", "2021-06-11", 14, 1))
    assert not at(ds, "clear", "2021-06-11", 14, 1)


def test_file_in_other_crs_is_reprojected(tmp_path: Path) -> None:
    folder = tmp_path / "imagery"
    folder.mkdir()
    rows, cols = np.mgrid[0:N, 0:N]
    ramp = (1000 + 20 * cols + 10 * rows).astype("uint16")  # linear in x, y: bilinear keeps it
    scl = np.where(cols < 15, 4, 9).astype("uint16")  # west clear, east cloud
    layers = {**{b: ramp.copy() for b in S2_BANDS}, "SCL": scl}
    write_tif(folder / "2021-06-01.tif", layers, nodata=None)

    # the same scene warped to EPSG:4326 (finer than 10 m so nothing is lost)
    ll = pyproj.CRS.from_epsg(4326)
    dst_t, w, h = calculate_default_transform(UTM52.to_wkt(), ll.to_wkt(), N, N, *FULL.bounds, resolution=5e-5)
    warped = {}
    for name, arr in layers.items():
        out = np.zeros((h, w), dtype="uint16")
        reproject(arr, out, src_transform=TRANSFORM, src_crs=UTM52.to_wkt(), dst_transform=dst_t,
                  dst_crs=ll.to_wkt(), src_nodata=None, dst_nodata=0,
                  resampling=Resampling.nearest if name == "SCL" else Resampling.bilinear)
        warped[name] = out
    write_tif(folder / "2021-06-21.tif", warped, crs=ll, transform=dst_t, nodata=0)

    ds = read_local_cube(folder, FULL, UTM52).compute()
    assert ds.rio.crs.to_epsg() == 32652
    first, second = ds.isel(time=0), ds.isel(time=1)
    both = np.isfinite(first["red"]) & np.isfinite(second["red"])
    assert int(both.sum()) > 0.8 * N * N  # most of the image survives the round trip
    diff = np.abs(first["red"] - second["red"]).where(both)
    assert float(diff.median()) < 0.0005  # ramp steps are 0.001-0.002 per pixel
    assert float(diff.max()) < 0.004
    agree = (first["clear"] == second["clear"]).where(both)
    assert float(agree.mean()) > 0.95  # nearest resampling keeps the mask; edges may shift by a pixel


def test_geographic_imagery_is_reprojected_to_region_crs(tmp_path: Path) -> None:
    folder = tmp_path / "imagery"
    folder.mkdir()
    ll = pyproj.CRS.from_epsg(4326)
    t = Affine(1e-4, 0, 127.99, 0, -1e-4, 47.01)
    layers = {b: np.full((200, 200), BASE_DN[b], dtype="uint16") for b in S2_BANDS}
    layers["SCL"] = np.full((200, 200), 4, dtype="uint16")
    write_tif(folder / "2021-06-01.tif", layers, crs=ll, transform=t)
    region = box(X0, Y0 - 300, X0 + 300, Y0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        ds = read_local_cube(folder, region, UTM52)
    assert ds.rio.crs.to_epsg() == 32652
    assert 5.0 <= ds.attrs["resolution_m"] <= 12.0
    red = ds["red"].compute()
    assert float(red.min()) == pytest.approx(0.04, rel=1e-5)
    assert bool(ds["clear"].all())


def test_landsat_qa_pixel_bits_and_scaling(tmp_path: Path) -> None:
    folder = tmp_path / "imagery"
    folder.mkdir()
    # 12000 DN * 2.75e-5 - 0.2 = 0.13 reflectance
    layers = {f"SR_B{i}": np.full((N, N), 10000 + 1000 * i, dtype="uint16") for i in range(2, 8)}
    qa = np.full((N, N), 1 << 6, dtype="uint16")  # bit 6: clear
    qa[0, :] = QA_FILL
    qa[1, :] = QA_DILATED_CLOUD | (1 << 6)
    qa[2, :] = 1 << 2  # cirrus
    qa[3, :] = QA_CLOUD
    qa[4, :] = QA_CLOUD_SHADOW
    qa[5, :] = QA_SNOW
    qa[6, :] = (1 << 7) | (1 << 6)  # water + clear bit: usable
    qa[7, :] = (1 << 8) | (1 << 6)  # cloud-confidence bits only: usable by the brief's rule
    layers["QA_PIXEL"] = qa
    write_tif(folder / "2022-08-02_LC09_L2SP.tif", layers, nodata=None)
    ds = read_local_cube(folder, FULL, UTM52).compute()
    assert ds.attrs["platform"] == "landsat"
    assert ds.attrs["dn_scale_applied"] == pytest.approx(2.75e-5)
    assert ds.attrs["dn_offset_applied"] == pytest.approx(-0.2)
    assert at(ds, "red", "2022-08-02", 10, 10) == pytest.approx(14000 * 2.75e-5 - 0.2, rel=1e-5)  # SR_B4
    assert at(ds, "nir", "2022-08-02", 10, 10) == pytest.approx(15000 * 2.75e-5 - 0.2, rel=1e-5)  # SR_B5
    assert at(ds, "swir2", "2022-08-02", 10, 10) == pytest.approx(17000 * 2.75e-5 - 0.2, rel=1e-5)  # SR_B7
    clear_rows = [bool(at(ds, "clear", "2022-08-02", r, 3)) for r in range(10)]
    assert clear_rows == [False, False, False, False, False, False, True, True, True, True]


def test_no_mask_band_warns_and_clear_is_finite(tmp_path: Path) -> None:
    folder = tmp_path / "imagery"
    folder.mkdir()
    layers = {name.lower(): arr for name, arr in zip(COMMON, (dn_field(b) for b in S2_BANDS), strict=True)}
    layers["red"][3:6, 3:6] = 0
    write_tif(folder / "2021-06-01_common.tif", {k.upper(): v for k, v in layers.items()})  # upper-case names
    with pytest.warns(MissingMaskWarning, match="without a mask band"):
        ds = read_local_cube(folder, FULL, UTM52, dn_scale=1e-4).compute()
    assert ds.attrs["dn_scale_applied"] == 1e-4
    assert ds.attrs["platform"] == "unknown"
    assert not at(ds, "clear", "2021-06-01", 4, 4)
    assert np.isfinite(at(ds, "nir", "2021-06-01", 4, 4))  # other bands kept; only clear is False
    assert at(ds, "clear", "2021-06-01", 10, 10)


def test_explicit_dn_scale_one_keeps_values(tmp_path: Path) -> None:
    folder = tmp_path / "imagery"
    folder.mkdir()
    layers = {b: np.full((N, N), 0.05 + 0.01 * k, dtype="float32")
              for k, b in enumerate(("blue", "green", "red", "nir"))}
    layers["cloud"] = np.zeros((N, N), dtype="float32")
    layers["cloud"][:10] = 1
    write_tif(folder / "2021-06-01.tif", layers, nodata=None)
    ds = read_local_cube(folder, FULL, UTM52).compute()  # auto: values already reflectance
    assert "dn_scale_applied" not in ds.attrs
    assert at(ds, "red", "2021-06-01", 20, 20) == pytest.approx(0.07)
    assert not at(ds, "clear", "2021-06-01", 5, 5)
    assert at(ds, "clear", "2021-06-01", 15, 5)
    assert "swir1" not in ds  # only the bands found


# ---------------------------------------------------------------------------------------------
# errors


def test_corrupt_file_is_named(tmp_path: Path) -> None:
    folder = s2_folder(tmp_path / "imagery", scaled=True)
    bad = folder / "2021-06-20_S2L2A.tif"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ImageryError, match=r"2021-06-20_S2L2A\.tif cannot be read") as err:
        read_local_cube(folder, FULL, UTM52)
    assert "\n" not in str(err.value)


def test_region_outside_imagery_names_site(tmp_path: Path) -> None:
    folder = s2_folder(tmp_path / "imagery", scaled=True)
    far = box(X0 + 50_000, Y0, X0 + 51_000, Y0 + 1_000)
    with pytest.raises(ImageryError, match=r"does not cover licence HLJ-042; it covers lon 128\.00.*lat 46\.99"
                                           r".*the licence is at lon 128\.6"):
        read_local_cube(folder, far, UTM52, site_id="HLJ-042")


def test_missing_path_empty_folder_and_missing_bands(tmp_path: Path) -> None:
    with pytest.raises(ImageryError, match=r"does not exist.*HLJ-1"):
        read_local_cube(tmp_path / "nope", FULL, UTM52, site_id="HLJ-1")
    empty = tmp_path / "empty"
    empty.mkdir()
    write_tif(empty / "scene.tif", s2_layers())
    with pytest.raises(ImageryError, match="no GeoTIFF named YYYY-MM-DD"):
        read_local_cube(empty, FULL, UTM52)
    nonir = tmp_path / "nonir"
    nonir.mkdir()
    layers = s2_layers()
    del layers["B08"]
    write_tif(nonir / "2021-06-01.tif", layers)
    with pytest.raises(ImageryError, match=r"lacks band\(s\) nir.*accepted names: .*B08.*SR_B2"):
        read_local_cube(nonir, FULL, UTM52)


def test_no_crs_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "imagery"
    folder.mkdir()
    layers = s2_layers()
    with rasterio.open(folder / "2021-06-01.tif", "w", driver="GTiff", height=N, width=N, count=len(layers),
                       dtype="uint16", transform=TRANSFORM) as dst:
        for k, (name, arr) in enumerate(layers.items(), start=1):
            dst.write(arr, k)
            dst.set_band_description(k, name)
    with pytest.raises(ImageryError, match="has no CRS"):
        read_local_cube(folder, FULL, UTM52)


# ---------------------------------------------------------------------------------------------
# band names and masks (pure helpers)


def test_band_plan_names_and_b8a() -> None:
    plan = plan_bands(["b2", "B3", "b04", "B8A", "B11", "b12", "B05", "B06", "B07", "scl"])
    assert plan.bands == {"blue": "b2", "green": "B3", "red": "b04", "nir": "B8A", "swir1": "B11",
                          "swir2": "b12", "rededge1": "B05", "rededge2": "B06", "rededge3": "B07"}
    assert plan.mask == ("scl", "scl")
    assert plan.platform == "sentinel-2"
    with_b08 = plan_bands(["B04", "B8A", "B08"])
    assert with_b08.bands == {"red": "B04", "nir": "B08"}  # B8A ignored when B08 exists
    common = plan_bands(["Red", "NIR", "swir16", "swir22", "Cloud", None, "elevation"])
    assert common.bands == {"red": "Red", "nir": "NIR", "swir1": "swir16", "swir2": "swir22"}
    assert common.mask == ("cloud", "Cloud")
    assert common.platform == "unknown"


def test_decode_clear_scl_and_qa() -> None:
    scl = np.arange(12, dtype="float32")
    assert decode_clear("scl", scl).tolist() == [False, False, True, False, True, True, True, True,
                                                 False, False, False, False]
    assert not decode_clear("scl", np.array([np.nan]))[0]
    qa = np.array([0b1000000, 0b1, 0b10, 0b100, 0b1000, 0b10000, 0b100000, 0b11000000], dtype="uint16")
    assert decode_clear("qa_pixel", qa).tolist() == [True, False, False, False, False, False, False, True]
    assert decode_clear("clear", np.array([1.0, 0.0, np.nan])).tolist() == [True, False, False]
    assert decode_clear("cloud", np.array([1, 0], dtype="uint8")).tolist() == [False, True]


# ---------------------------------------------------------------------------------------------
# NetCDF / Zarr cubes


@pytest.mark.filterwarnings("ignore:Consolidated metadata is currently not part")
@pytest.mark.parametrize("consolidated", [True, False])
def test_zarr_round_trip(tmp_path: Path, consolidated: bool) -> None:
    folder = s2_folder(tmp_path / "imagery", scaled=True)
    ds = read_local_cube(folder, FULL, UTM52).compute()
    store = tmp_path / "cube.zarr"
    ds.drop_vars("image_id").to_zarr(store, consolidated=consolidated)
    back = read_local_cube(store, FULL, UTM52).compute()
    assert back.rio.crs.to_epsg() == 32652
    assert back.sizes == ds.sizes
    assert "dn_scale_applied" not in back.attrs  # reflectance already
    for var in [*COMMON, "clear"]:
        np.testing.assert_array_equal(back[var].values, ds[var].values)
    np.testing.assert_allclose(back.x.values, ds.x.values)
    np.testing.assert_allclose(back.y.values, ds.y.values)
    assert back.attrs["source"] == "local"


def test_store_without_crs_and_with_s2_names(tmp_path: Path) -> None:
    times = np.array(["2021-06-02", "2021-06-01"], dtype="datetime64[ns]")  # unsorted on purpose
    xs = X0 + (np.arange(N) + 0.5) * RES
    ys = Y0 - (np.arange(N) + 0.5) * RES
    data = {b: (("time", "y", "x"), np.stack([dn_field(b), dn_field(b, 1)]).astype("int16")) for b in S2_BANDS}
    data["SCL"] = (("time", "y", "x"), np.stack([scl_field(), scl_field()]).astype("uint8"))
    ds = xr.Dataset(data, coords={"time": times, "y": ys, "x": xs})
    bare = tmp_path / "nocrs.nc"
    ds.to_netcdf(bare)
    with pytest.raises(ImageryError, match="has no CRS"):
        read_local_cube(bare, FULL, UTM52)
    good = tmp_path / "s2.nc"
    ds.rio.write_crs(UTM52).to_netcdf(good)
    cube = read_local_cube(good, FULL, UTM52).compute()
    assert [str(t)[:10] for t in cube.time.values] == ["2021-06-01", "2021-06-02"]
    assert cube.attrs["dn_scale_applied"] == pytest.approx(1e-4)
    assert at(cube, "red", "2021-06-02", 3, 4) == pytest.approx((400 + 40 + 3) * 1e-4, rel=1e-6)
    assert at(cube, "red", "2021-06-01", 3, 4) == pytest.approx((400 + 40 + 3 + 1) * 1e-4, rel=1e-6)
    inner = cube.sel(x=slice(X0, X0 + N * RES), y=slice(Y0, Y0 - N * RES))
    np.testing.assert_array_equal(inner["clear"].values[0], ~np.isin(scl_field(), [0, 1, 3, 8, 9, 10, 11]))


def _centre_region(path: Path, half: float) -> tuple[xr.Dataset, object]:
    raw = xr.open_dataset(path)
    cx, cy = float(raw.x.mean()), float(raw.y.mean())
    return raw, box(cx - half, cy - half, cx + half, cy + half)


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("name", "res", "bands"),
    [("sentinel2_cube_subset_romania_10m.nc", 10.0, ["blue", "green", "red", "nir"]),
     ("sentinel2_cube_subset_romania_20m.nc", 20.0, ["green", "red", "nir", "swir1"])],
    ids=["10m", "20m"],
)
def test_real_romania_cube(real_data: Path, name: str, res: float, bands: list[str]) -> None:
    path = real_data / "nrt_romania_s2" / name
    raw = xr.open_dataset(path, decode_coords="all")
    n = raw.sizes["x"]
    region = box(*raw.rio.bounds()).buffer(-1.0)  # the whole image, EPSG:3035
    ds = read_local_cube(path, region, LAEA, site_id="RO-1")
    assert ds.rio.crs.to_epsg() == 3035
    assert list(ds.data_vars) == [*bands, "clear"]  # 10 m: no swir; 20 m: no blue, no swir2
    assert ds.attrs["resolution_m"] == res
    assert ds.attrs["platform"] == "sentinel-2"
    assert ds.attrs["dn_scale_applied"] == pytest.approx(1e-4)
    assert ds.sizes["time"] == 140
    assert ds.sizes["x"] == n + 2
    assert ds.sizes["y"] == n + 2
    assert ds["red"].chunks is not None

    ds = ds.compute()
    inner = ds.isel(x=slice(1, -1), y=slice(1, -1))
    assert float(np.isfinite(inner["red"]).mean()) > 0.999  # the 20 m B4 has one NaN pixel
    assert not bool((inner["clear"] & np.isnan(inner["red"])).any())  # NaN is never clear
    assert float(inner["red"].min()) > 0
    assert float(inner["red"].max()) < 2.0  # reflectance, clouds included
    clear = inner.where(inner["clear"])
    assert float(clear["red"].median()) < 0.06  # forest: dark in red ...
    assert 0.2 < float(clear["nir"].median()) < 0.45  # ... bright in NIR
    ndvi = (clear["nir"] - clear["red"]) / (clear["nir"] + clear["red"])
    assert 0.7 < float(ndvi.median()) < 0.92
    # README: classes 4/5/7 are ~79 % of pixels per date (median); our clear also counts SCL 2
    # (dark area) and 6 (water), which the brief does not exclude -> ~0.88 here
    per_date = inner["clear"].mean(("y", "x"))
    assert 0.75 < float(per_date.median()) < 0.95
    assert float(per_date.min()) < 0.2  # some dates are cloudy
    assert float(per_date.max()) > 0.99  # some are cloud-free

    # the same pixels as the raw file (DN * 1e-4) at the grid's own coordinates, no resampling
    sub = raw["B4"].sel(x=ds.x.values[1:-1], y=ds.y.values[1:-1], method="nearest")
    np.testing.assert_allclose(sub.x.values, ds.x.values[1:-1])
    np.testing.assert_allclose(ds["red"].isel(x=slice(1, -1), y=slice(1, -1)).values, sub.values * 1e-4, rtol=1e-6)
    scl = raw["SCL"].sel(x=ds.x.values[1:-1], y=ds.y.values[1:-1], method="nearest").values
    observed = np.isfinite(sub.values)
    for b in raw.data_vars:
        if b != "SCL":
            observed &= np.isfinite(raw[b].sel(x=sub.x, y=sub.y).values)
    expected = ~np.isin(scl, [0, 1, 3, 8, 9, 10, 11]) & observed
    np.testing.assert_array_equal(ds["clear"].isel(x=slice(1, -1), y=slice(1, -1)).values, expected)


@pytest.mark.realdata
def test_real_cube_date_filter_and_outside_region(real_data: Path) -> None:
    path = real_data / "nrt_romania_s2" / "sentinel2_cube_subset_romania_20m.nc"
    raw, region = _centre_region(path, 200.0)  # 400 m square around the centre, EPSG:3035
    ds = read_local_cube(path, region, LAEA, start="2016-01-01", end="2016-12-31")
    assert 20 + 2 <= ds.sizes["x"] <= 20 + 3
    assert 20 + 2 <= ds.sizes["y"] <= 20 + 3
    red = ds["red"].isel(x=slice(1, -1), y=slice(1, -1)).values
    sub = raw["B4"].sel(time=ds.time, x=ds.x.values[1:-1], y=ds.y.values[1:-1]).values
    np.testing.assert_allclose(red, sub * 1e-4, rtol=1e-6)
    years = ds.time.dt.year.values
    assert len(years) > 0
    assert (years == 2016).all()
    with pytest.raises(ImageryError, match=r"does not cover licence RO-2.*lon 22\.1"):
        read_local_cube(path, box(0, 0, 1000, 1000), LAEA, site_id="RO-2")


# ---------------------------------------------------------------------------------------------
# the contract checker


def _tiny_cube() -> xr.Dataset:
    times = np.array(["2021-06-01", "2021-06-11"], dtype="datetime64[ns]")
    red = np.full((2, 3, 4), 0.1, dtype="float32")
    ds = xr.Dataset(
        {"red": (("time", "y", "x"), red), "nir": (("time", "y", "x"), red + 0.2),
         "clear": (("time", "y", "x"), np.ones((2, 3, 4), bool))},
        coords={"time": times, "y": [25.0, 15.0, 5.0], "x": [5.0, 15.0, 25.0, 35.0]},
        attrs={"source": "test", "platform": "unknown", "resolution_m": 10.0},
    )
    return ds.rio.write_crs(UTM52)


def test_validate_cube_accepts_and_rejects() -> None:
    good = _tiny_cube()
    assert validate_cube(good) is good
    with pytest.raises(ImageryError, match="float32"):
        validate_cube(good.assign(red=good["red"].astype("float64")))
    with pytest.raises(ImageryError, match="'clear' must be boolean"):
        validate_cube(good.assign(clear=good["clear"].astype("uint8")))
    with pytest.raises(ImageryError, match="not sorted"):
        validate_cube(good.isel(time=[1, 0]))
    with pytest.raises(ImageryError, match="not projected"):
        validate_cube(good.rio.write_crs(4326))
    with pytest.raises(ImageryError, match="no CRS"):
        validate_cube(good.drop_vars("spatial_ref"))
    with pytest.raises(ImageryError, match="'x' coordinate is not strictly monotonic"):
        validate_cube(good.isel(x=[0, 2, 1, 3]))
    with pytest.raises(ImageryError, match="dims"):
        validate_cube(good.assign(nir=good["nir"].transpose("time", "x", "y")))
    with pytest.raises(ImageryError, match="missing required band"):
        validate_cube(good.drop_vars("nir"))
    with pytest.raises(ImageryError, match="resolution_m"):
        validate_cube(good.drop_attrs().rio.write_crs(UTM52))


def test_geographic_store_is_reprojected(tmp_path: Path) -> None:
    lons = 127.99 + (np.arange(200) + 0.5) * 1e-4
    lats = 47.01 - (np.arange(200) + 0.5) * 1e-4
    times = np.array(["2021-06-01"], dtype="datetime64[ns]")
    shape = (1, 200, 200)
    cols = np.broadcast_to(np.arange(200), shape)
    ds = xr.Dataset(
        {"red": (("time", "lat", "lon"), np.full(shape, 0.04, dtype="float32")),
         "nir": (("time", "lat", "lon"), np.full(shape, 0.3, dtype="float32")),
         "cloud": (("time", "lat", "lon"), (cols >= 100).astype("uint8"))},  # eastern half cloudy
        coords={"time": times, "lat": lats, "lon": lons},
    )
    store = tmp_path / "geo.nc"
    ds.rio.set_spatial_dims(x_dim="lon", y_dim="lat").rio.write_crs(4326).to_netcdf(store)
    region = box(X0, Y0 - 300, X0 + 300, Y0)
    cube = read_local_cube(store, region, UTM52).compute()
    assert cube.rio.crs.to_epsg() == 32652
    assert float(cube["red"].min()) == pytest.approx(0.04)
    assert float(cube["nir"].max()) == pytest.approx(0.3)
    lon_of_x = pyproj.Transformer.from_crs(UTM52, 4326, always_xy=True).transform(
        cube.x.values, np.full(cube.sizes["x"], Y0 - 150))[0]
    west, east = lon_of_x < lons[95], lon_of_x > lons[105]
    assert bool(cube["clear"].values[0][:, west].all())
    assert not bool(cube["clear"].values[0][:, east].any())


@pytest.mark.parametrize("lazy", [False, True], ids=["numpy", "dask"])
@pytest.mark.parametrize("offset_px", [0.0, 0.5], ids=["same-lattice", "other-lattice"])
def test_a_store_window_is_its_reindex_onto_the_grid(lazy: bool, offset_px: float) -> None:
    """A store cut onto a grid that reaches one pixel past it each way (as every read's grid does):
    slices and padding give exactly the nearest-neighbour reindex (integer bands NaN outside, so not
    observed there); a grid on another lattice is reindexed as before (nothing matches: all NaN)."""
    from gmsense.geo.grid import crop_grid
    from gmsense.sources.local import _on_lattice

    rng = np.random.default_rng(3)
    xs, ys = 500_005.0 + 10 * np.arange(12), 5_200_115.0 - 10 * np.arange(12)
    ds = xr.Dataset({"B04": (("time", "y", "x"), rng.integers(1, 9_000, (3, 12, 12)).astype("uint16")),
                     "B08": (("time", "y", "x"), rng.random((3, 12, 12), dtype="float32")),
                     "SCL": (("time", "y", "x"), rng.integers(0, 11, (3, 12, 12)).astype("uint8"))},
                    coords={"time": np.arange(3).astype("datetime64[D]"), "y": ys, "x": xs})
    if lazy:
        ds = ds.chunk({"time": -1, "y": 5, "x": 5})
    shift = offset_px * 10
    grid = crop_grid(pyproj.CRS.from_epsg(32652), Affine(10, 0, 500_000 + shift, 0, -10, 5_200_120 + shift),
                     (500_000 + shift, 5_200_000 + shift, 500_120 + shift, 5_200_120 + shift))
    got = _on_lattice(ds, grid, ["B04", "B08"]).compute()
    expected = ds.reindex(y=grid.ys(), method="nearest", tolerance=2.5).reindex(
        x=grid.xs(), method="nearest", tolerance=2.5).compute()
    assert got.sizes == expected.sizes == {"time": 3, "y": 14, "x": 14}
    for band in ("B04", "B08"):
        np.testing.assert_array_equal(got[band].values.astype("float64"), expected[band].values.astype("float64"))
    if offset_px == 0:
        assert got["B04"].dtype.kind == "f"
        assert np.isnan(got["B04"].values[:, 0, :]).all()
        assert np.isnan(got["B04"].values[:, :, -1]).all()
        np.testing.assert_array_equal(got["SCL"].values[:, 1:-1, 1:-1], ds["SCL"].values)
    else:
        assert np.isnan(got["B08"].values).all()


@pytest.mark.filterwarnings("ignore:Consolidated metadata is currently not part")
def test_a_store_window_is_read_in_few_chunks_of_whole_store_chunks(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A window is read from the store straight into as few dask chunks as fit the limit (every
    date, whole rows aligned to the store's chunks): the same values however it is cut."""
    import gmsense.sources.local as local

    folder = s2_folder(tmp_path / "imagery", scaled=True)
    ds = read_local_cube(folder, FULL, UTM52).compute().drop_vars("image_id")
    store = tmp_path / "cube.zarr"
    ds.chunk({"time": -1, "y": 4, "x": 5}).to_zarr(store, consolidated=False)
    whole = read_local_cube(store, FULL, UTM52)
    assert whole["red"].chunks[:2] == ((ds.sizes["time"],), (ds.sizes["y"],))
    row_bytes = 4 * ds.sizes["time"] * ds.sizes["x"]
    monkeypatch.setattr(local, "READ_CHUNK_BYTES", 9 * row_bytes)
    cut = read_local_cube(store, FULL, UTM52)
    rows = cut["red"].chunks[1]
    assert rows[1:3] == (8, 8), rows  # 9 rows fit: two store chunks of 4
    whole, cut = whole.compute(), cut.compute()
    for var in [*COMMON, "clear"]:
        np.testing.assert_array_equal(cut[var].values, whole[var].values)
        np.testing.assert_array_equal(whole[var].values, ds[var].values)


def test_read_chunks_are_few_even_and_whole_store_chunks() -> None:
    from gmsense.sources.local import _read_chunks

    def window(time: int, y: int, x: int, native_y: int | None) -> xr.Dataset:
        var = xr.Variable(("time", "y", "x"), np.broadcast_to(np.float32(0), (time, y, x)))
        if native_y is not None:
            var.encoding["preferred_chunks"] = {"time": time, "y": native_y, "x": 100}
        return xr.Dataset({"red": var})

    mib = 2**20
    assert _read_chunks(window(66, 432, 802, 100), 128 * mib) == {"time": -1, "y": -1, "x": -1}
    # 170 MB in 64 MiB: three chunks, rounded up to whole store chunks while that still fits
    assert _read_chunks(window(66, 802, 802, 100), 64 * mib)["y"] == 300
    # a store chunk taller than the limit allows: one store chunk per dask chunk
    assert _read_chunks(window(66, 802, 802, 400), 64 * mib)["y"] == 400
    # no chunks in the file (contiguous NetCDF): even rows
    assert _read_chunks(window(66, 802, 802, None), 64 * mib)["y"] == 268


def test_a_store_is_decoded_where_decoding_changes_values(tmp_path: Path) -> None:
    """Bands stored as integers with a fill value and a scale are masked and scaled, float bands with
    a NaN fill read as they are, as xarray's own decoding reads them, and the cube can be written
    again (the fill value in the encoding, not the attributes)."""
    from gmsense.sources.local import _open_store

    rng = np.random.default_rng(5)
    dn = rng.integers(1, 9_000, (2, 4, 4)).astype("uint16")
    dn[0, 0, 0] = 0
    reflectance = np.where(dn == 0, np.nan, dn * 1e-4).astype("float32")  # stored as DN by the encoding below
    ds = xr.Dataset({"red": (("time", "y", "x"), reflectance),
                     "nir": (("time", "y", "x"), rng.random((2, 4, 4), dtype="float32"))},
                    coords={"time": np.arange(2).astype("datetime64[D]"), "y": np.arange(4.0), "x": np.arange(4.0)})
    ds["nir"][1, 2, 2] = np.nan
    ds["red"].encoding.update(_FillValue=0, scale_factor=1e-4, dtype="uint16")
    ds["nir"].encoding.update(_FillValue=np.nan)
    for path in (tmp_path / "cube.zarr", tmp_path / "cube.nc"):
        (ds.to_zarr(path) if path.suffix == ".zarr" else ds.to_netcdf(path))
        got = _open_store(path).load()
        expected = xr.open_dataset(path, engine="zarr" if path.suffix == ".zarr" else None).load()
        for band in ("red", "nir"):
            np.testing.assert_array_equal(got[band].values, expected[band].values)
        assert np.isnan(got["red"].values[0, 0, 0])
        assert got["red"].values[1, 1, 1] == pytest.approx(dn[1, 1, 1] * 1e-4, rel=1e-4)
        assert "_FillValue" not in got["nir"].attrs
        got.to_netcdf(tmp_path / f"again-{path.suffix[1:]}.nc")


@pytest.mark.parametrize("kind", ["scl", "qa_pixel", "clear", "cloud"])
@pytest.mark.parametrize("dtype", ["float32", "float64", "uint8", "uint16", "int16", "bool"])
def test_decode_clear_takes_each_dtype_as_the_float_path_does(kind: str, dtype: str) -> None:
    """Integer and boolean masks skip the float path's NaN filling and rounding: the same answer as
    decoding the values as floats (the general path), with NaN never clear."""
    rng = np.random.default_rng(7)
    top = 2 if dtype == "bool" else 256 if kind == "qa_pixel" else 13
    values = rng.integers(0, top, size=(6, 40, 40)).astype(dtype)
    as_float = values.astype("float64")
    if dtype.startswith("float"):
        values[0, :3] = np.nan
        as_float[0, :3] = np.nan
    decoded = decode_clear(kind, values)
    assert decoded.dtype == bool
    assert decoded.shape == values.shape
    assert np.array_equal(decoded, decode_clear(kind, as_float))
    if dtype != "bool" or kind in ("clear", "cloud"):  # (codes 0 and 1 are both "not clear" for scl and qa)
        assert 0 < decoded.mean() < 1
    if dtype.startswith("float"):
        assert not decoded[0, :3].any()
