"""Imagery as delivered: Sentinel-2 L2A SAFE (folders and zips), Landsat Collection 2 Level-2 (folders and
tars) and STAC (catalogues and ItemCollections), built small and valid in ``tmp_path`` (tests/packaging.py)
and read back through :func:`read_local_cube`: values (offsets and scales), masks, dates, sensors, grids,
and the message of every product that cannot be read."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pyproj
import pytest
from affine import Affine
from shapely.geometry import box

from gmsense.errors import ImageryError
from gmsense.sources._bands import QA_CLOUD, QA_CLOUD_SHADOW, QA_FILL, QA_SNOW
from gmsense.sources.local import check_imagery, imagery_footprint, latest_date, read_local_cube
from gmsense.sources.local.layouts import detect_layout
from tests.product_factory import (
    landsat_id,
    write_landsat,
    write_raster,
    write_safe,
    write_stac,
)

UTM52 = pyproj.CRS.from_epsg(32652)
UTM51 = pyproj.CRS.from_epsg(32651)
X0, Y0, N = 424_000.0, 5_205_800.0, 20  # 20 x 20 pixels at 10 m (10 x 10 at 20 m)
T10 = Affine(10.0, 0.0, X0, 0.0, -10.0, Y0)
REGION = box(X0 + 20, Y0 - 180, X0 + 180, Y0 - 20)  # inside the footprint, in UTM 52N


def ramp(base: int, shift: int = 0, n: int = N) -> np.ndarray:
    """Distinct DNs: base + 10 * col + row (+ shift)."""
    rows, cols = np.mgrid[0:n, 0:n]
    return (base + 10 * cols + rows + shift).astype("uint16")


def s2_arrays(shift: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    dn10 = {"B02": ramp(1300, shift), "B03": ramp(1500, shift), "B04": ramp(1400, shift), "B08": ramp(4000, shift)}
    dn20 = {"B11": np.full((N // 2, N // 2), 2800, "uint16"), "B12": np.full((N // 2, N // 2), 1900, "uint16")}
    scl = np.full((N // 2, N // 2), 4, "uint8")
    scl[2, 3] = 9  # cloud high: 10 m pixels rows 4-5, cols 6-7
    scl[6, 6] = 3  # cloud shadow: rows 12-13, cols 12-13
    return dn10, dn20, scl


def value(ds, var: str, row: int, col: int, t: int = 0, transform: Affine = T10) -> float:
    x, y = transform * (col + 0.5, row + 0.5)
    return float(ds[var].isel(time=t).sel(x=x, y=y, method="nearest").values)


def first_product_name(path: Path) -> str:
    return next(path.iterdir()).name


# --------------------------------------------------------------------------------------------
# Sentinel-2 SAFE


def test_safe_baseline_04_offsets_scl_and_20m_bands(tmp_path: Path) -> None:
    dn10, dn20, scl = s2_arrays()
    write_safe(tmp_path, "2022-06-14", dn10, dn20, scl, UTM52, T10, offsets=dict.fromkeys(dn10 | dn20, -1000))
    write_safe(tmp_path, "2022-07-04", *s2_arrays(shift=5), UTM52, T10, offsets=dict.fromkeys(dn10 | dn20, -1000),
               as_zip=True)
    assert detect_layout(tmp_path) == "safe"
    ds = read_local_cube(tmp_path, REGION, UTM52, harmonise_method="none").compute()
    assert [str(t)[:10] for t in ds.time.values] == ["2022-06-14", "2022-07-04"]
    assert list(ds.sensor.values) == ["MSI", "MSI"]
    assert ds.attrs["platform"] == "sentinel-2"
    assert ds.attrs["layout"] == "safe"
    assert ds.rio.crs.to_epsg() == 32652
    assert ds.attrs["resolution_m"] == 10.0
    # (DN + BOA_ADD_OFFSET) / 10000, on the 10 m lattice
    assert value(ds, "red", 8, 9) == pytest.approx((1400 + 90 + 8 - 1000) / 1e4, abs=1e-6)
    assert value(ds, "nir", 8, 9, t=1) == pytest.approx((4000 + 90 + 8 + 5 - 1000) / 1e4, abs=1e-6)
    # 20 m SWIR bilinear onto 10 m (a constant stays the constant)
    assert value(ds, "swir1", 9, 9) == pytest.approx(0.18, abs=1e-6)
    assert value(ds, "swir2", 9, 9) == pytest.approx(0.09, abs=1e-6)
    # 20 m SCL by nearest: one 20 m cloud pixel masks 2 x 2 10 m pixels, and only those
    clear = ds.clear.isel(time=0)
    assert not any(bool(clear.sel(x=T10.c + (c + 0.5) * 10, y=T10.f - (r + 0.5) * 10, method="nearest"))
                   for r in (4, 5) for c in (6, 7))
    assert not bool(clear.sel(x=X0 + 125, y=Y0 - 125, method="nearest"))  # cloud shadow
    assert bool(clear.sel(x=X0 + 85, y=Y0 - 45, method="nearest"))  # beside the cloud
    assert int((~clear).sum()) == 8
    assert ds.image_id.values[1].startswith("S2A_MSIL2A_20220704")


@pytest.mark.parametrize(("baseline", "offsets", "expected_offset"), [
    ("03.00", None, 0.0),  # before 04.00: no offset
    ("04.00", None, -1000.0),  # 04.00 without offsets in the metadata: the baseline's -1000
    ("05.10", {"B04": -1000.0, "B08": -1000.0}, -1000.0),
])
def test_safe_offset_by_baseline(tmp_path: Path, baseline: str, offsets: dict | None, expected_offset: float) -> None:
    dn10, dn20, scl = s2_arrays()
    write_safe(tmp_path, "2021-06-14", dn10, dn20, scl, UTM52, T10, baseline=baseline, offsets=offsets,
               as_zip=True)
    ds = read_local_cube(tmp_path, REGION, UTM52).compute()
    assert value(ds, "red", 3, 4) == pytest.approx((1400 + 43 + expected_offset) / 1e4, abs=1e-6)


def test_safe_tiles_in_two_utm_zones_onto_one_grid(tmp_path: Path) -> None:
    """Two products of one day, one in UTM 51N covering the region's east half: merged on the 52N grid."""
    dn10, dn20, scl = s2_arrays()
    dn10 = {b: a.copy() for b, a in dn10.items()}
    for a in dn10.values():
        a[:, 10:] = 0  # the 52N tile sees only the west half (0 = no data)
    write_safe(tmp_path, "2021-06-14", dn10, dn20, scl, UTM52, T10, tile="52TDM")
    west, _south, east, north = pyproj.Transformer.from_crs(UTM52, UTM51, always_xy=True).transform_bounds(
        X0 - 50, Y0 - 250, X0 + 250, Y0 + 50)
    t51 = Affine(10.0, 0.0, round(west, -1), 0.0, -10.0, round(north, -1))
    n51 = int((east - west) / 10) + 2
    const = {b: np.full((n51, n51), v, "uint16") for b, v in (("B02", 1300), ("B03", 1500), ("B04", 2500),
                                                               ("B08", 4500))}
    c20 = {b: np.full((n51 // 2, n51 // 2), 2800, "uint16") for b in ("B11", "B12")}
    write_safe(tmp_path, "2021-06-14", const, c20, np.full((n51 // 2, n51 // 2), 4, "uint8"), UTM51, t51,
               tile="51TYM")
    ds = read_local_cube(tmp_path, REGION, UTM52).compute()
    assert ds.sizes["time"] == 1
    assert ds.rio.crs.to_epsg() == 32652
    assert "+" in str(ds.image_id.values[0])  # both tiles
    red = ds.red.isel(time=0)
    assert value(ds, "red", 5, 3) == pytest.approx((1400 + 30 + 5 - 1000) / 1e4, abs=1e-6)  # west: the 52N tile
    east_half = red.sel(x=slice(X0 + 105, None)).values
    assert np.isfinite(east_half).all()
    assert np.allclose(east_half, 0.15, atol=1e-5)  # east: the warped 51N tile ((2500 - 1000) / 1e4)


def test_safe_errors_name_the_product_and_the_fix(tmp_path: Path) -> None:
    dn10, dn20, scl = s2_arrays()
    no_scl = write_safe(tmp_path / "a", "2021-06-14", dn10, dn20, scl, UTM52, T10, omit=("SCL",))
    with pytest.raises(ImageryError, match=r"no scene classification .*SCL_20m\.jp2.*download Sentinel-2 product"):
        check_imagery(no_scl)
    no_red = write_safe(tmp_path / "b", "2021-06-14", dn10, dn20, scl, UTM52, T10, omit=("B04",), as_zip=True)
    with pytest.raises(ImageryError, match=r"lacks band file\(s\) B04 \(10 m\)"):
        read_local_cube(no_red.parent, REGION, UTM52)
    no_mtd = write_safe(tmp_path / "c", "2021-06-14", dn10, dn20, scl, UTM52, T10, metadata=False)
    with pytest.raises(ImageryError, match=r"has no MTD_MSIL2A\.xml"):
        check_imagery(no_mtd)
    old = write_safe(tmp_path / "d", "2021-06-14", dn10, dn20, scl, UTM52, T10, baseline="01.00")
    with pytest.raises(ImageryError, match=r"processing baseline 01\.00, which this reader does not support"):
        check_imagery(old)
    broken = write_safe(tmp_path / "e", "2021-06-14", dn10, dn20, scl, UTM52, T10)
    jp2 = next(broken.rglob("*_B08_10m.jp2"))
    jp2.write_bytes(jp2.read_bytes()[:200])  # a truncated JPEG 2000
    with pytest.raises(ImageryError, match=r"_B08_10m\.jp2 cannot be read .*download Sentinel-2 product"):
        check_imagery(broken)
    bad_zip = tmp_path / "f" / "S2B_MSIL2A_20210614T025551_N0400_R032_T52TDM_20210614T060237.zip"
    bad_zip.parent.mkdir()
    bad_zip.write_bytes(b"not a zip")
    with pytest.raises(ImageryError, match="is not a readable zip"):
        check_imagery(bad_zip.parent)


def test_layout_override_and_detection_errors(tmp_path: Path) -> None:
    dn10, dn20, scl = s2_arrays()
    safe = write_safe(tmp_path, "2021-06-14", dn10, dn20, scl, UTM52, T10)
    with pytest.raises(ImageryError, match=r"is not Landsat Collection 2 Level-2 products .*as the layout 'landsat'"):
        check_imagery(tmp_path, "landsat")
    assert detect_layout(safe, "safe") == "safe"
    with pytest.raises(ImageryError, match="unknown imagery layout 'jp2'"):
        detect_layout(tmp_path, "jp2")
    other = tmp_path / "notes.txt"
    other.write_text("x")
    with pytest.raises(ImageryError, match="is none of the layouts gmsense reads"):
        read_local_cube(other, REGION, UTM52)


# --------------------------------------------------------------------------------------------
# Landsat Collection 2 Level-2


def qa_field(n: int = N) -> np.ndarray:
    qa = np.full((n, n), 1 << 6, "uint16")  # clear
    qa[0, 0] = QA_FILL
    qa[1, 1] = QA_CLOUD
    qa[2, 2] = QA_CLOUD_SHADOW
    qa[3, 3] = QA_SNOW
    qa[4, 4] = 1 << 7  # water: clear
    return qa


def oli_sr(shift: int = 0) -> dict[str, np.ndarray]:
    base = {"blue": 8000, "green": 9000, "red": 9500, "nir": 20000, "swir1": 15000, "swir2": 11000}
    return {c: ramp(b, shift) for c, b in base.items()}


T30 = Affine(30.0, 0.0, X0, 0.0, -30.0, Y0)


def test_landsat_folder_and_tar_scaling_qa_and_sensors(tmp_path: Path) -> None:
    write_landsat(tmp_path, "2021-06-14", oli_sr(), qa_field(), UTM52, T30, mult=2.75e-5, add=-0.2)
    # Landsat 7 ETM+ in a tar with an MTL.xml: SR_B3 is red, SR_B4 nir
    write_landsat(tmp_path, "2005-06-20", oli_sr(shift=3), qa_field(), UTM52, T30, prefix="LE07", mtl="xml",
                  as_tar=True)
    region = box(X0 + 30, Y0 - 500, X0 + 500, Y0 - 30)
    assert detect_layout(tmp_path) == "landsat"
    ds = read_local_cube(tmp_path, region, UTM52, harmonise_method="none").compute()
    assert [str(t)[:10] for t in ds.time.values] == ["2005-06-20", "2021-06-14"]
    assert list(ds.sensor.values) == ["ETM+", "OLI"]
    assert ds.attrs["resolution_m"] == 30.0
    assert ds.attrs["platform"] == "landsat"
    # DN x REFLECTANCE_MULT + REFLECTANCE_ADD of the Level-2 group (not the Level-1 TOA rescaling)
    assert value(ds, "red", 5, 6, t=1, transform=T30) == pytest.approx((9500 + 65) * 2.75e-5 - 0.2, abs=1e-6)
    assert value(ds, "nir", 5, 6, t=0, transform=T30) == pytest.approx((20000 + 68) * 2.75e-5 - 0.2, abs=1e-6)
    clear = ds.clear.isel(time=1)
    for rc, expected in (((1, 1), False), ((2, 2), False), ((3, 3), False), ((4, 4), True), ((5, 5), True)):
        x, y = T30 * (rc[1] + 0.5, rc[0] + 0.5)
        assert bool(clear.sel(x=x, y=y, method="nearest")) is expected, rc
    assert latest_date(tmp_path) == "2021-06-14"
    footprint, crs = imagery_footprint(tmp_path)
    assert crs.to_epsg() == 32652
    assert footprint.area == pytest.approx((N * 30) ** 2)


def test_landsat_tm_etm_dates_are_harmonised(tmp_path: Path) -> None:
    write_landsat(tmp_path, "2021-06-14", oli_sr(), qa_field(), UTM52, T30)
    write_landsat(tmp_path, "2005-06-20", oli_sr(), qa_field(), UTM52, T30, prefix="LT05")
    region = box(X0 + 30, Y0 - 500, X0 + 500, Y0 - 30)
    ds = read_local_cube(tmp_path, region, UTM52).compute()
    assert ds.attrs["harmonise"] == "roy2016_ols"
    assert ds.attrs["harmonised_dates"] == 1
    raw = (9500 + 65) * 2.75e-5 - 0.2
    assert value(ds, "red", 5, 6, t=0, transform=T30) == pytest.approx(0.0061 + 0.9047 * raw, abs=1e-5)  # TM
    assert value(ds, "red", 5, 6, t=1, transform=T30) == pytest.approx(raw, abs=1e-6)  # OLI as it is


def test_landsat_errors(tmp_path: Path) -> None:
    no_mtl = write_landsat(tmp_path / "a", "2021-06-14", oli_sr(), qa_field(), UTM52, T30, mtl=None)
    with pytest.raises(ImageryError, match=r"has no LC08_L2SP_.*_MTL\.txt \(or _MTL\.xml\).*download Landsat product"):
        check_imagery(no_mtl)
    no_qa = write_landsat(tmp_path / "b", "2021-06-14", oli_sr(), qa_field(), UTM52, T30, omit=("QA_PIXEL",),
                          as_tar=True)
    with pytest.raises(ImageryError, match=r"has no .*_QA_PIXEL\.TIF, needed to mask clouds"):
        check_imagery(no_qa)
    no_red = write_landsat(tmp_path / "c", "2021-06-14", oli_sr(), qa_field(), UTM52, T30, omit=("red",))
    with pytest.raises(ImageryError, match=r"lacks surface reflectance file\(s\) .*_SR_B4\.TIF \(red\)"):
        check_imagery(no_red)
    far = box(X0 + 50_000, Y0 - 60_000, X0 + 51_000, Y0 - 59_000)
    ok = write_landsat(tmp_path / "d", "2021-06-14", oli_sr(), qa_field(), UTM52, T30)
    with pytest.raises(ImageryError, match="does not cover licence L-1"):
        read_local_cube(ok, far, UTM52, site_id="L-1")
    assert landsat_id("2021-06-14") in str(ok)


def test_mixed_safe_and_landsat_folder_is_one_cube(tmp_path: Path) -> None:
    dn10, dn20, scl = s2_arrays()
    write_safe(tmp_path, "2021-06-14", dn10, dn20, scl, UTM52, T10)
    write_landsat(tmp_path, "2021-06-22", oli_sr(), qa_field(), UTM52, T30)
    assert detect_layout(tmp_path) == "products"
    ds = read_local_cube(tmp_path, REGION, UTM52).compute()
    assert list(ds.sensor.values) == ["MSI", "OLI"]
    assert ds.attrs["resolution_m"] == 10.0
    assert ds.attrs["platform"] == "landsat+sentinel-2"
    assert np.isfinite(ds.red.isel(time=1).values).all()  # Landsat resampled onto the 10 m lattice


# --------------------------------------------------------------------------------------------
# STAC


def stac_items(folder: Path, *, red: bool = True) -> list[dict]:
    dn10, _dn20, scl = s2_arrays()
    bbox = list(pyproj.Transformer.from_crs(UTM52, 4326, always_xy=True).transform_bounds(X0, Y0 - 200, X0 + 200, Y0))
    items = []
    for k, day in enumerate(("2022-06-14", "2022-05-30")):
        d = folder / "data" / day
        assets = {
            "blue": (write_raster(d / "B02.tif", dn10["B02"], UTM52, T10, nodata=0), "blue", {"scale": 1e-4,
                                                                                              "offset": -0.1}),
            "green": (write_raster(d / "B03.tif", dn10["B03"], UTM52, T10, nodata=0), "green", {"scale": 1e-4,
                                                                                                "offset": -0.1}),
            "nir": (write_raster(d / "B08.tif", dn10["B08"] + k, UTM52, T10, nodata=0), "nir", {"scale": 1e-4,
                                                                                                "offset": -0.1}),
            # B8A given too: the broad nir must win whatever the asset order
            "nir08": (write_raster(d / "B8A.tif", dn10["B08"] * 0 + 7777, UTM52, T10), "nir08", {"scale": 1e-4}),
            "scl": (write_raster(d / "SCL.tif", np.kron(scl, np.ones((2, 2), "uint8")), UTM52, T10), None, None),
            "thumbnail": (d / "thumb.png", None, None),
        }
        if red:
            assets["red"] = (write_raster(d / "B04.tif", dn10["B04"], UTM52, T10, nodata=0), "red",
                             {"scale": 1e-4, "offset": -0.1})
        items.append({"id": f"S2B_52TDM_{day.replace('-', '')}_L2A", "datetime": f"{day}T02:55:51+00:00",
                      "bbox": bbox, "assets": assets,
                      "properties": {"platform": "sentinel-2b", "instruments": ["msi"]}})
    return items


@pytest.mark.parametrize("kind", ["catalog", "items"])
def test_stac_catalogue_and_item_collection(tmp_path: Path, kind: str) -> None:
    path = write_stac(tmp_path, stac_items(tmp_path), kind=kind)
    assert detect_layout(path) == "stac"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every band present, a mask: no warning
        ds = read_local_cube(path, REGION, UTM52).compute()
    assert [str(t)[:10] for t in ds.time.values] == ["2022-05-30", "2022-06-14"]
    assert list(ds.data_vars) == ["blue", "green", "red", "nir", "clear"]  # no SWIR assets: left out
    assert list(ds.sensor.values) == ["MSI", "MSI"]
    assert value(ds, "red", 8, 9) == pytest.approx((1400 + 98) * 1e-4 - 0.1, abs=1e-6)  # raster:bands scale/offset
    assert value(ds, "nir", 8, 9, t=0) == pytest.approx((4000 + 98 + 1) * 1e-4 - 0.1, abs=1e-6)  # B08, not B8A
    assert int((~ds.clear.isel(time=0)).sum()) == 8  # SCL cloud and shadow
    assert latest_date(path) == "2022-06-14"
    if kind == "catalog":
        assert detect_layout(tmp_path) == "stac"  # a folder holding catalog.json
        assert json.loads((tmp_path / "catalog.json").read_text())["type"] == "Catalog"


def test_stac_errors(tmp_path: Path) -> None:
    path = write_stac(tmp_path / "a", stac_items(tmp_path / "a", red=False), kind="items")
    with pytest.raises(ImageryError, match=r"STAC item S2B_52TDM_2022.* has no asset for band\(s\) red \(its assets: "):
        check_imagery(path)
    missing = write_stac(tmp_path / "b", stac_items(tmp_path / "b"))
    next((tmp_path / "b" / "data").rglob("B04.tif")).unlink()
    with pytest.raises(ImageryError, match=r"B04\.tif cannot be read .*fix the assets of STAC item"):
        check_imagery(missing)
    bad = tmp_path / "c.json"
    bad.write_text('{"type": "Catalog", "stac_version": "1.0.0", ')
    with pytest.raises(ImageryError, match="cannot be read as JSON"):
        check_imagery(bad)


def test_planner_shape_of_each_product_layout(tmp_path: Path) -> None:
    from gmsense.config import SeasonSettings
    from gmsense.sources.local.shape import describe_imagery

    dn10, dn20, scl = s2_arrays()
    write_safe(tmp_path / "safe", "2021-06-14", dn10, dn20, scl, UTM52, T10, as_zip=True)
    write_safe(tmp_path / "safe", "2021-12-14", dn10, dn20, scl, UTM52, T10)
    write_landsat(tmp_path / "landsat", "2021-06-14", oli_sr(), qa_field(), UTM52, T30, as_tar=True)
    stac = write_stac(tmp_path / "stac", stac_items(tmp_path / "stac"), kind="items")
    season = SeasonSettings()
    safe = describe_imagery(tmp_path / "safe", None, None, season)
    assert (safe.resolution_m, safe.dates, safe.season_dates) == (10.0, 2, 1)
    assert describe_imagery(tmp_path / "landsat", None, None, season, layout="landsat").resolution_m == 30.0
    shape = describe_imagery(stac, "2022-06-01", None, season)
    assert (shape.resolution_m, shape.dates) == (10.0, 1)
