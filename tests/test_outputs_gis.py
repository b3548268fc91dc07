"""Outputs for GIS, catalogues and the field: GeoParquet, per-licence COGs with a STAC catalogue,
QGIS layer styles beside GeoPackages, GPX / KML waypoints of patches; bad input exits 2 and
writes nothing."""

from __future__ import annotations

import json
import typing
import xml.etree.ElementTree as ET
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import pystac
import pytest
import rasterio
from pystac.validation import JsonSchemaSTACValidator
from rasterio.features import rasterize
from shapely import wkt
from shapely.geometry import shape

from gmsense.config import Severity
from gmsense.outputs.export import STYLES_DIR
from gmsense.outputs.rasters import CLASS_CODES, LAYERS, date_code
from gmsense.records import DISTURBANCE_CLASSES
from gmsense.store import Store
from gmsense.testutils import run_cli

invoke = run_cli
SEVERITIES = typing.get_args(Severity)


@pytest.fixture(scope="module")
def demo_db(demo_folder: Path) -> Path:
    return demo_folder / "gmsense.db"


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*"))


# --- GeoParquet ----------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("what", ["patches", "flags", "recovery"])
def test_geoparquet_has_the_crs_rows_and_values_of_the_gpkg_export(demo_db: Path, tmp_path: Path, what: str) -> None:
    target = tmp_path / f"{what}.parquet"
    code, output = invoke("export", what, "--format", "parquet", "--out", target, "--db", demo_db)
    assert code == 0, output
    store = Store(str(demo_db), create=False)
    if what == "recovery":
        frame = pd.read_parquet(target)
        assert len(frame) == len(store.recovery_rows()) > 0
        assert list(frame.columns) == ["patch_id", "season", "index_name", "n_obs", "patch_value", "ring_value",
                                       "relative"]
        return
    frame = gpd.read_parquet(target)
    assert frame.crs.to_epsg() == 4326
    assert len(frame) == len(store.patch_rows() if what == "patches" else store.flag_rows()) > 0
    gpkg = tmp_path / f"{what}.gpkg"
    code, output = invoke("export", what, "--format", "gpkg", "--out", gpkg, "--db", demo_db)
    assert code == 0, output
    reference = gpd.read_file(gpkg)
    assert list(frame.columns) == list(reference.columns)
    key = "patch_id" if what == "patches" else "flag_id"
    frame, reference = frame.sort_values(key).reset_index(drop=True), reference.sort_values(key).reset_index(drop=True)
    assert frame[key].tolist() == reference[key].tolist()
    number = "area_m2" if what == "patches" else "created_scan_id"
    np.testing.assert_allclose(frame[number].astype(float), reference[number].astype(float))
    assert all(a.equals(b) for a, b in zip(frame.geometry, reference.geometry, strict=True))  # GPKG may make Multi
    if what == "patches":
        rows = {r.patch_id: r for r in store.patch_rows()}
        assert frame["disturbance_class"].tolist() == [rows[p].disturbance_class for p in frame["patch_id"]]
        assert frame["first_detected"].tolist() == [rows[p].first_detected for p in frame["patch_id"]]
    assert not _leftovers(tmp_path)


# --- rasters and STAC ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rasters(demo_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rasters") / "out"
    code, output = invoke("export", "rasters", "--out", out, "--db", demo_db)
    assert code == 0, output
    assert "STAC catalogue" in output
    return out


def _pixels_of_each_patch(patches: list, crs: pyproj.CRS, transform, shape) -> dict[str, tuple[int, int]]:
    """A pixel whose centre lies in each patch and in no other patch (where there is one)."""
    from gmsense.geo.sites import reproject_geometry

    local = {p.patch_id: reproject_geometry(wkt.loads(p.local_wkt), pyproj.CRS(p.local_crs), crs) for p in patches}
    found = {}
    for patch_id, geom in local.items():
        mine = rasterize([(geom, 1)], out_shape=shape, transform=transform, fill=0, dtype="uint8")
        others = [(g, 1) for other, g in local.items() if other != patch_id]
        theirs = rasterize(others, out_shape=shape, transform=transform, fill=0, dtype="uint8") if others else 0
        rows, cols = np.nonzero((mine == 1) & (theirs == 0))
        if len(rows):
            found[patch_id] = (int(rows[0]), int(cols[0]))
    return found


@pytest.mark.slow
def test_rasters_are_cogs_on_the_licence_grid_with_each_patchs_values(demo_db: Path, rasters: Path) -> None:
    store = Store(str(demo_db), create=False)
    checked = 0
    for site in store.site_rows():
        patches = [p for p in store.patch_rows() if p.site_id == site.site_id]
        folder = rasters / site.site_id
        layers = {}
        for layer in LAYERS:
            with rasterio.open(folder / f"{site.site_id}_{layer.name}.tif") as src:
                assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
                assert src.overviews(1), "a COG with internal overviews"
                assert src.dtypes[0] == layer.dtype
                assert abs(src.transform.a) == pytest.approx(10.0)  # the scan's resolution
                assert src.transform.e == pytest.approx(-10.0)
                layers[layer.name] = src.read(1)
                crs, transform, shape = pyproj.CRS(src.crs.to_wkt()), src.transform, src.shape
        expected_crs = pyproj.CRS(patches[0].local_crs) if patches else pyproj.CRS(store.last_unit(site.site_id)
                                                                                     .stats["crs"])
        assert crs.equals(expected_crs)
        if not patches:
            assert not layers["patch_id"].any()
            assert np.isnan(layers["magnitude"]).all()
            continue
        codes = {name: code for code, name in CLASS_CODES.items()}
        pixels = _pixels_of_each_patch(patches, crs, transform, shape)
        assert len(pixels) >= len(patches) // 2
        for patch in patches:
            if patch.patch_id not in pixels:
                continue
            row, col = pixels[patch.patch_id]
            assert layers["patch_id"][row, col] == int(patch.patch_id.rsplit("-P", 1)[1])
            assert CLASS_CODES[int(layers["class"][row, col])] == patch.disturbance_class
            assert layers["class"][row, col] == codes[patch.disturbance_class]
            assert layers["first_detected"][row, col] == int(patch.first_detected.replace("-", ""))
            assert layers["confirmed_on"][row, col] == date_code(patch.confirmed_on)
            assert layers["magnitude"][row, col] == pytest.approx(patch.metrics["magnitude"], abs=1e-5)
            checked += 1
        outside = layers["patch_id"] == 0
        assert outside.any()
        assert not layers["class"][outside].any()
        assert np.isnan(layers["magnitude"][outside]).all()
    assert checked >= 5
    assert not _leftovers(rasters.parent)


@pytest.mark.slow
def test_stac_catalogue_describes_every_raster_with_its_provenance(demo_db: Path, rasters: Path) -> None:
    store = Store(str(demo_db), create=False)
    catalog = pystac.Catalog.from_file(str(rasters / "catalog.json"))
    items = {item.id: item for item in catalog.get_items()}
    assert set(items) == {s.site_id for s in store.site_rows()}
    # pystac's own validator, offline: the core STAC schemas ship with pystac; the projection
    # extension's schema is only online (stac-extensions.github.io), so it is not validated here.
    validator = JsonSchemaSTACValidator()
    validator.validate_core(catalog.to_dict(), pystac.STACObjectType.CATALOG, "1.1.0")
    scans = {s.id: s for s in store.scans()}
    for site_id, item in items.items():
        validator.validate_core(item.to_dict(), pystac.STACObjectType.ITEM, "1.1.0")
        props = item.properties
        assert props["gmsense:class_codes"] == {str(k): v for k, v in CLASS_CODES.items()}
        assert props["gmsense:level"] == "patch"
        unit = store.last_unit(site_id)
        scan = scans[unit.scan_id]
        assert props["gmsense:scan_id"] == scan.id
        assert props["gmsense:gmsense_version"] == scan.gmsense_version
        assert props["gmsense:config_hash"] == scan.config_hash
        assert props["gmsense:model_version"] == scan.model_version
        assert props["gmsense:imagery_source"] == scan.source == "synthetic"
        patch_ids = [p.patch_id for p in store.patch_rows() if p.site_id == site_id]
        assert sorted(props["gmsense:patch_ids"].values()) == sorted(patch_ids)
        assert set(item.assets) == {layer.name for layer in LAYERS}
        for key, asset in item.assets.items():
            assert asset.media_type == pystac.MediaType.COG
            assert asset.roles == ["data"]
            path = Path(asset.get_absolute_href())
            assert path.is_file()
            assert path.name == f"{site_id}_{key}.tif"
            with rasterio.open(path) as src:
                assert props["proj:shape"] == [src.height, src.width]
                assert props["proj:transform"] == pytest.approx(list(src.transform)[:6])
                assert props["proj:code"] == f"EPSG:{src.crs.to_epsg()}"
        licence = wkt.loads(next(s for s in store.site_rows() if s.site_id == site_id).geometry_wkt)
        assert licence.representative_point().within(shape(item.geometry)), "the footprint covers the licence"
        assert props["start_datetime"] <= props["end_datetime"]
    # links are relative: the folder can be moved or served as it is
    for path in rasters.rglob("*.json"):
        data = json.loads(path.read_text())
        hrefs = [link["href"] for link in data.get("links", [])] + [a["href"] for a in data.get("assets", {}).values()]
        assert hrefs, path
        assert all(h.startswith(("./", "../")) for h in hrefs), path


@pytest.mark.slow
def test_rasters_of_one_licence_and_an_earlier_export_is_replaced(demo_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    code, output = invoke("export", "rasters", "--out", out, "--db", demo_db, "--site", "HLJ-EXP-002")
    assert code == 0, output
    assert sorted(p.name for p in out.iterdir()) == ["HLJ-EXP-002", "catalog.json"]
    code, output = invoke("export", "rasters", "--out", out, "--db", demo_db, "--site", "HLJ-EXP-001")
    assert code == 0, output
    assert sorted(p.name for p in out.iterdir()) == ["HLJ-EXP-001", "catalog.json"]
    assert not _leftovers(tmp_path)


# --- bad input: one clear line, exit 2, nothing written --------------------------------------------

def _one_line(output: str) -> str:
    assert "Traceback" not in output
    return " ".join(line for line in output.splitlines() if line.strip())


@pytest.mark.slow
def test_rasters_of_an_unknown_licence(demo_db: Path, tmp_path: Path) -> None:
    code, output = invoke("export", "rasters", "--out", tmp_path / "r", "--db", demo_db, "--site", "NOPE-9")
    assert code == 2, output
    assert "no licence 'NOPE-9'" in _one_line(output)
    assert list(tmp_path.iterdir()) == []


def test_rasters_of_an_empty_store(tmp_path: Path) -> None:
    db = tmp_path / "empty.db"
    Store(str(db))  # created, never scanned
    code, output = invoke("export", "rasters", "--out", tmp_path / "r", "--db", db)
    assert code == 2, output
    assert "holds no licence" in _one_line(output)
    assert not (tmp_path / "r").exists()


def test_rasters_refuse_a_folder_of_other_files_and_other_formats(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.docx").write_text("precious")
    code, output = invoke("export", "rasters", "--out", mine, "--db", tmp_path / "none.db")
    assert code == 2, output
    assert "holds other files" in _one_line(output)
    assert (mine / "thesis.docx").read_text() == "precious"
    code, output = invoke("export", "rasters", "--format", "gpkg", "--out", tmp_path / "r", "--db", tmp_path / "x.db")
    assert code == 2, output
    assert "Cloud-Optimized GeoTIFF" in _one_line(output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["export", "flags", "--format", "gpx"], "export patches, not flags"),
        (["export", "patches", "--format", "shp"], "unknown export format 'shp'"),
        (["export", "patches", "--format", "kml", "--site", "X"], "--site selects licences"),
    ],
)
def test_bad_export_formats(tmp_path: Path, args: list[str], expected: str) -> None:
    code, output = invoke(*args, "--out", tmp_path / "x.out", "--db", tmp_path / "none.db")
    assert code == 2, output
    assert expected in _one_line(output)
    assert list(tmp_path.iterdir()) == []


# --- QGIS styles ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "attribute", "values"), [("patches.qml", "disturbance_class", DISTURBANCE_CLASSES),
                                                          ("flags.qml", "severity", SEVERITIES)])
def test_shipped_qgis_styles_have_a_category_for_every_value(name: str, attribute: str, values: tuple) -> None:
    root = ET.parse(STYLES_DIR / name).getroot()
    assert root.tag == "qgis"
    renderer = root.find("renderer-v2")
    assert renderer is not None
    assert renderer.get("type") == "categorizedSymbol"
    assert renderer.get("attr") == attribute
    categories = {c.get("value"): c.get("symbol") for c in renderer.iter("category")}
    symbols = {s.get("name") for s in renderer.find("symbols")}
    assert set(values) <= set(categories), f"{name} lacks {set(values) - set(categories)}"
    assert set(categories.values()) <= symbols, "every category has its symbol"


@pytest.mark.slow
def test_gpkg_exports_get_their_style_beside_them(demo_db: Path, tmp_path: Path) -> None:
    for what in ("patches", "flags"):
        target = tmp_path / f"{what}.gpkg"
        code, output = invoke("export", what, "--format", "gpkg", "--out", target, "--db", demo_db)
        assert code == 0, output
        assert (tmp_path / f"{what}.qml").read_bytes() == (STYLES_DIR / f"{what}.qml").read_bytes()
        column = "disturbance_class" if what == "patches" else "severity"
        categories = {c.get("value") for c in ET.parse(tmp_path / f"{what}.qml").getroot().iter("category")}
        assert set(gpd.read_file(target)[column]) <= categories
    code, output = invoke("export", "sites", "--format", "gpkg", "--out", tmp_path / "sites.gpkg", "--db", demo_db)
    assert code == 0, output
    assert not (tmp_path / "sites.qml").exists()
    assert not _leftovers(tmp_path)


# --- GPX and KML for the field -----------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["gpx", "kml"])
def test_field_waypoints_name_each_patch_inside_it(demo_db: Path, tmp_path: Path, fmt: str) -> None:
    target = tmp_path / f"patches.{fmt}"
    code, output = invoke("export", "patches", "--format", fmt, "--out", target, "--db", demo_db)
    assert code == 0, output
    patches = {p.patch_id: p for p in Store(str(demo_db), create=False).patch_rows()}
    points = gpd.read_file(target, layer="waypoints") if fmt == "gpx" else gpd.read_file(target)
    name, desc = ("name", "desc") if fmt == "gpx" else ("Name", "description")
    assert sorted(points[name]) == sorted(patches)
    for row in points.itertuples():
        patch = patches[getattr(row, name)]
        text = getattr(row, desc)
        assert patch.disturbance_class in text
        assert f"{patch.area_m2:.0f} m2" in text
        assert patch.first_detected in text
        assert row.geometry.geom_type == "Point"
        assert wkt.loads(patch.geometry_wkt).buffer(1e-9).contains(row.geometry)
    # plain XML too: what a phone app without GDAL reads
    root = ET.parse(target).getroot()
    ns = {"g": "http://www.topografix.com/GPX/1/1"} if fmt == "gpx" else {"g": "http://www.opengis.net/kml/2.2"}
    tag = "g:wpt" if fmt == "gpx" else ".//g:Placemark"
    elements = root.findall(tag, ns)
    assert len(elements) == len(patches)
    assert {e.findtext("g:name", namespaces=ns) for e in elements} == set(patches)
