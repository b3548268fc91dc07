"""Licence areas: reading in any format/CRS, validation messages, repair, attrs, writing.

Every file is made here with geopandas in ``tmp_path``; coordinates are in Heilongjiang
(lon 127-133 E, lat 46-48 N; UTM zones 52 and 53).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import geopandas
import numpy as np
import pandas as pd
import pyproj
import pytest
import shapely
from shapely.geometry import (
    GeometryCollection,
    LineString,
    MultiPolygon,
    Point,
    Polygon,
    box,
)
from shapely.geometry.base import BaseGeometry

from gmsense.errors import EXIT_BAD_INPUT, SitesError
from gmsense.geo.sites import (
    Site,
    SiteRepairWarning,
    read_sites,
    reproject_geometry,
    sites_frame,
    utm_crs_for,
    write_sites,
)

GEOD = pyproj.Geod(ellps="WGS84")
UTM52 = pyproj.CRS.from_epsg(32652)
UTM53 = pyproj.CRS.from_epsg(32653)

# Pytest ids -> file suffixes read by read_sites.
FORMATS = [".geojson", ".gpkg", ".shp"]


def licence(lon: float = 128.5, lat: float = 47.2, w: float = 0.03, h: float = 0.02) -> Polygon:
    """A slightly irregular licence polygon in EPSG:4326 with its SW corner at lon, lat (degrees)."""
    return Polygon(
        [
            (lon, lat),
            (lon + w, lat),
            (lon + w, lat + h),
            (lon + w / 2, lat + 1.3 * h),
            (lon, lat + h),
        ]
    )


def bowtie(lon: float = 128.6, lat: float = 47.3, d: float = 0.02) -> Polygon:
    """A self-intersecting 'figure eight' polygon in EPSG:4326 (two triangles meeting at a point)."""
    return Polygon([(lon, lat), (lon + d, lat + d), (lon + d, lat), (lon, lat + d)])


def geodesic_area_m2(geom_wgs84: BaseGeometry) -> float:
    """Area on the WGS 84 ellipsoid (m²) of a lon/lat geometry: the reference for UTM areas."""
    return abs(GEOD.geometry_area_perimeter(geom_wgs84)[0])


def write(
    tmp_path: Path,
    name: str,
    rows: list[dict[str, Any]],
    geometries: list[BaseGeometry | None],
    crs: Any = "EPSG:4326",
) -> Path:
    """Write ``rows`` + ``geometries`` (given in EPSG:4326) as ``name``, reprojected to ``crs``.

    ``crs=None`` writes the lon/lat coordinates with no CRS at all.
    """
    frame = geopandas.GeoDataFrame(
        pd.DataFrame(rows), geometry=geopandas.GeoSeries(geometries), crs="EPSG:4326"
    )
    frame = frame.set_crs(None, allow_override=True) if crs is None else frame.to_crs(crs)
    path = tmp_path / name
    with warnings.catch_warnings():
        # Shapefile field-name truncation and GDAL laundering notices: expected, not under test.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        frame.to_file(path, engine="pyogrio")
    return path


def write_raw_geojson(
    tmp_path: Path, name: str, features: list[dict[str, Any]], **extra: Any
) -> Path:
    """Write a GeoJSON FeatureCollection by hand (for what geopandas will not write)."""
    path = tmp_path / name
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features, **extra}))
    return path


def feature(props: dict[str, Any], geometry: dict[str, Any] | None) -> dict[str, Any]:
    return {"type": "Feature", "properties": props, "geometry": geometry}


def message_of(path: Path, **kwargs: Any) -> str:
    """The SitesError message read_sites raises for ``path``."""
    with pytest.raises(SitesError) as excinfo:
        read_sites(path, **kwargs)
    return str(excinfo.value)


# ---------------------------------------------------------------------------------------------
# Round trips: formats x CRSs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("crs", ["EPSG:4326", "EPSG:4552", "EPSG:32652", "EPSG:4490"])
def test_round_trip_any_format_and_crs_ends_in_local_utm(
    tmp_path: Path, suffix: str, crs: str
) -> None:
    originals = [licence(128.5, 47.2), licence(129.4, 46.6, w=0.05), licence(127.8, 47.9)]
    rows = [{"site_id": f"HLJ-{i}", "name": f"licence {i}"} for i in range(3)]
    path = write(tmp_path, f"sites{suffix}", rows, originals, crs=crs)

    with warnings.catch_warnings():
        warnings.simplefilter("error", SiteRepairWarning)
        sites = read_sites(path)

    assert [s.site_id for s in sites] == ["HLJ-0", "HLJ-1", "HLJ-2"]
    for site, original in zip(sites, originals, strict=True):
        assert site.crs == UTM52  # 126-132 E is UTM zone 52N
        assert site.geometry.is_valid
        assert site.geometry.geom_type == "Polygon"
        expected = geodesic_area_m2(original)
        assert site.geometry.area == pytest.approx(expected, rel=0.005)
        # Back in lon/lat the licence sits where it was drawn (< ~1 m; CGCS2000 ~ WGS 84).
        assert site.geometry_wgs84.hausdorff_distance(original) < 1e-5
        assert site.attrs["name"].startswith("licence ")


def test_each_site_gets_the_utm_zone_of_its_own_centroid(tmp_path: Path) -> None:
    # One file spanning three zones: 125.5 E (51N), 128.5 E (52N), 132.5 E (53N).
    originals = [licence(125.5, 47.5), licence(128.5, 47.2), licence(132.5, 46.8)]
    path = write(
        tmp_path,
        "zones.gpkg",
        [{"site_id": s} for s in ("W", "C", "E")],
        originals,
        crs="EPSG:4326",
    )
    sites = read_sites(path)
    assert [s.crs.to_epsg() for s in sites] == [32651, 32652, 32653]
    for site, original in zip(sites, originals, strict=True):
        assert site.geometry.area == pytest.approx(geodesic_area_m2(original), rel=0.005)


def test_site_straddling_a_zone_boundary_uses_its_centroid_zone(tmp_path: Path) -> None:
    # Mostly east of 132 E: centroid in zone 53 though the west edge is in zone 52.
    original = box(131.99, 46.5, 132.1, 46.55)
    sites = read_sites(write(tmp_path, "edge.geojson", [{"site_id": "Z"}], [original]))
    assert sites[0].crs == UTM53
    assert sites[0].crs == utm_crs_for(original.centroid.x, original.centroid.y)


def test_multipolygon_kept_and_site_id_coerced_to_str(tmp_path: Path) -> None:
    multi = MultiPolygon([licence(128.5, 47.2), licence(128.6, 47.2)])
    path = write(tmp_path, "multi.gpkg", [{"site_id": 101}, {"site_id": 7}], [multi, licence()])
    sites = read_sites(path)
    assert [s.site_id for s in sites] == ["101", "7"]
    assert all(isinstance(s.site_id, str) for s in sites)
    assert sites[0].geometry.geom_type == "MultiPolygon"
    assert len(sites[0].geometry.geoms) == 2
    assert sites[0].geometry.area == pytest.approx(geodesic_area_m2(multi), rel=0.005)


def test_geometry_collection_keeps_only_polygon_parts(tmp_path: Path) -> None:
    poly = licence()
    collection = GeometryCollection(
        [poly, LineString([(128.0, 47.0), (128.2, 47.1)]), Point(128, 47)]
    )
    path = write_raw_geojson(
        tmp_path, "gc.geojson", [feature({"site_id": "GC"}, shapely.geometry.mapping(collection))]
    )
    (site,) = read_sites(path)
    assert site.geometry.geom_type == "Polygon"
    assert site.geometry.area == pytest.approx(geodesic_area_m2(poly), rel=0.005)


def test_z_coordinates_are_dropped(tmp_path: Path) -> None:
    poly_z = Polygon([(x, y, 150.0) for x, y in licence().exterior.coords])
    (site,) = read_sites(write(tmp_path, "z.gpkg", [{"site_id": "Z"}], [poly_z]))
    assert not site.geometry.has_z


# ---------------------------------------------------------------------------------------------
# attrs
# ---------------------------------------------------------------------------------------------


def contract_row(site_id: str = "A-1", **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "site_id": site_id,
        "name": "鸡西石墨矿",
        "holder": "Heilongjiang Mining Co.",
        "licence_type": "mining",
        "mineral_class": "non_metal",
        "province": "黑龙江省",
        "city": "鸡西市",
        "county": "恒山区",
        "licence_start": "2018-05-01",
        "licence_end": "2028-04-30",
        "status": "active",
        "reclamation_due": "2029-10-31",
        "permitted_disturbance_ha": 12.5,
    }
    row.update(overrides)
    return row


@pytest.mark.parametrize("suffix", FORMATS)
def test_contract_attrs_are_json_values_with_iso_dates(tmp_path: Path, suffix: str) -> None:
    path = write(tmp_path, f"attrs{suffix}", [contract_row()], [licence()])
    (site,) = read_sites(path)
    assert site.attrs == {k: v for k, v in contract_row().items() if k != "site_id"}
    json.dumps(site.attrs)  # JSON-serialisable as is


def test_datetime_columns_become_iso_date_strings(tmp_path: Path) -> None:
    rows = [
        {
            "site_id": "D",
            "licence_start": pd.Timestamp("2019-03-01"),
            "inspected": pd.Timestamp("2023-07-15"),
            "surveyed_at": pd.Timestamp("2023-07-15 10:30:00"),
        }
    ]
    (site,) = read_sites(write(tmp_path, "dates.gpkg", rows, [licence()]))
    assert site.attrs["licence_start"] == "2019-03-01"
    assert site.attrs["inspected"] == "2023-07-15"
    assert site.attrs["surveyed_at"].startswith("2023-07-15T10:30:00")
    assert all(isinstance(v, str) for v in site.attrs.values())


def test_numpy_scalars_become_python_scalars_and_nulls_are_dropped(tmp_path: Path) -> None:
    rows = [
        {
            "site_id": "N1",
            "boreholes": np.int64(4),
            "depth_m": np.float32(12.5),
            "drilled": True,
            "note": "x",
        },
        {
            "site_id": "N2",
            "boreholes": np.int64(0),
            "depth_m": np.nan,
            "drilled": False,
            "note": None,
        },
    ]
    first, second = read_sites(write(tmp_path, "numbers.gpkg", rows, [licence(), licence(129)]))
    assert first.attrs == {"boreholes": 4, "depth_m": 12.5, "drilled": True, "note": "x"}
    assert type(first.attrs["boreholes"]) is int
    assert type(first.attrs["depth_m"]) is float
    assert type(first.attrs["drilled"]) is bool
    assert second.attrs == {"boreholes": 0, "drilled": False}
    json.dumps([first.attrs, second.attrs])


def test_contract_values_are_normalised(tmp_path: Path) -> None:
    row = contract_row(
        licence_type=" Mining ",
        mineral_class="Non-Metal",
        licence_start="2018/05/01",
        licence_end="20280430",
        permitted_disturbance_ha="7",
    )
    (site,) = read_sites(write(tmp_path, "norm.geojson", [row], [licence()]))
    assert site.attrs["licence_type"] == "mining"
    assert site.attrs["mineral_class"] == "non_metal"
    assert site.attrs["licence_start"] == "2018-05-01"
    assert site.attrs["licence_end"] == "2028-04-30"
    assert site.attrs["permitted_disturbance_ha"] == 7.0


def test_upper_case_and_truncated_names_map_to_contract_names(tmp_path: Path) -> None:
    rows = [{"SITE_ID": "U-1", "Licence_Ty": "exploration", "permitted_": 3}]
    (site,) = read_sites(write(tmp_path, "upper.gpkg", rows, [licence()]))
    assert site.site_id == "U-1"
    assert site.attrs == {"licence_type": "exploration", "permitted_disturbance_ha": 3.0}


# ---------------------------------------------------------------------------------------------
# Invalid polygons: repair or refuse
# ---------------------------------------------------------------------------------------------


def test_bowtie_is_repaired_with_a_warning_naming_the_site(tmp_path: Path) -> None:
    path = write(
        tmp_path, "bowtie.geojson", [{"site_id": "B-7"}, {"site_id": "OK"}], [bowtie(), licence()]
    )
    with pytest.warns(SiteRepairWarning, match="B-7") as record:
        sites = read_sites(path)
    messages = [str(w.message) for w in record if issubclass(w.category, SiteRepairWarning)]
    assert len(messages) == 1  # the valid licence is not mentioned
    assert "Self-intersection" in messages[0]
    repaired = sites[0]
    assert repaired.site_id == "B-7"
    assert repaired.geometry.is_valid
    assert repaired.geometry.geom_type == "MultiPolygon"
    assert len(repaired.geometry.geoms) == 2
    # Two triangles, each a quarter of the d x d square.
    d = 0.02
    expected = geodesic_area_m2(box(128.6, 47.3, 128.6 + d, 47.3 + d)) / 2
    assert repaired.geometry.area == pytest.approx(expected, rel=0.005)


def test_bowtie_without_repair_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "bowtie.gpkg", [{"site_id": "B-7"}], [bowtie()])
    message = message_of(path, repair_invalid=False)
    assert "feature 1 (site_id 'B-7')" in message
    assert "polygon is invalid: Self-intersection" in message
    assert "repair_invalid=True" in message


def test_repair_that_leaves_no_area_is_an_error(tmp_path: Path) -> None:
    flat = Polygon([(128.0, 47.0), (128.1, 47.0), (128.2, 47.0), (128.0, 47.0)])  # collinear
    path = write(tmp_path, "flat.geojson", [{"site_id": "F-1"}], [flat])
    message = message_of(path)
    assert "feature 1 (site_id 'F-1')" in message
    assert "leaves no area" in message


# ---------------------------------------------------------------------------------------------
# File-level errors
# ---------------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.geojson"
    message = message_of(path)
    assert str(path) in message
    assert "does not exist" in message
    with pytest.raises(SitesError) as excinfo:
        read_sites(path)
    assert excinfo.value.exit_code == EXIT_BAD_INPUT


def test_folder_instead_of_file(tmp_path: Path) -> None:
    assert "is a folder" in message_of(tmp_path)


@pytest.mark.parametrize(
    ("name", "content"),
    [("notes.geojson", "licence A: somewhere near Jixi"), ("scan.gpkg", "\x00\x01 not sqlite")],
)
def test_unreadable_file_is_a_sites_error(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    message = message_of(path)
    assert "cannot be read as a vector file" in message
    assert "GeoJSON, GeoPackage or Shapefile" in message


def test_no_features(tmp_path: Path) -> None:
    path = write_raw_geojson(tmp_path, "empty.geojson", [])
    assert "has no features" in message_of(path)


def test_missing_site_id_column_names_the_columns_found(tmp_path: Path) -> None:
    path = write(tmp_path, "noid.geojson", [{"licence_no": "A-1", "name": "x"}], [licence()])
    message = message_of(path)
    assert "no site_id property" in message
    assert "licence_no" in message
    assert "add a site_id property" in message


def test_no_crs(tmp_path: Path) -> None:
    path = write(tmp_path, "nocrs.gpkg", [{"site_id": "A"}], [licence()], crs=None)
    message = message_of(path)
    assert "no coordinate reference system" in message
    assert "ogr2ogr -a_srs EPSG:4326" in message


def test_shapefile_without_prj_has_no_crs(tmp_path: Path) -> None:
    path = write(tmp_path, "noprj.shp", [{"site_id": "A"}], [licence()])
    path.with_suffix(".prj").unlink()
    assert "no coordinate reference system" in message_of(path)


def test_projected_coordinates_in_a_geojson_without_crs_suggest_wrong_crs(tmp_path: Path) -> None:
    # RFC 7946 GeoJSON has no crs member: GDAL reads it as EPSG:4326, but these are metres.
    metres = reproject_geometry(licence(), pyproj.CRS.from_epsg(4326), pyproj.CRS.from_epsg(4552))
    path = write_raw_geojson(
        tmp_path, "metres.geojson", [feature({"site_id": "M"}, shapely.geometry.mapping(metres))]
    )
    message = message_of(path)
    assert "outside the longitude/latitude range" in message
    assert "EPSG:4326" in message
    assert "CRS is probably wrong" in message
    assert "ogr2ogr -a_srs" in message


def test_degrees_labelled_as_projected_crs(tmp_path: Path) -> None:
    frame = geopandas.GeoDataFrame({"site_id": ["P"]}, geometry=[licence()], crs="EPSG:32652")
    path = tmp_path / "mislabelled.gpkg"
    frame.to_file(path, engine="pyogrio")
    message = message_of(path)
    assert "looks like longitude/latitude degrees" in message
    assert "EPSG:32652" in message


def test_geopackage_with_several_layers(tmp_path: Path) -> None:
    path = tmp_path / "many.gpkg"
    sites = geopandas.GeoDataFrame({"site_id": ["L"]}, geometry=[licence()], crs="EPSG:4326")
    roads = geopandas.GeoDataFrame({"id": [1]}, geometry=[licence(129)], crs="EPSG:4326")
    roads.to_file(path, layer="roads", engine="pyogrio")
    sites.to_file(path, layer="licences", engine="pyogrio")
    message = message_of(path)
    assert "2 layers (roads, licences)" in message
    assert [s.site_id for s in read_sites(path, layer="licences")] == ["L"]
    assert "no layer 'parcels'" in message_of(path, layer="parcels")
    sites.to_file(path, layer="sites", engine="pyogrio")
    assert [s.site_id for s in read_sites(path)] == ["L"]


# ---------------------------------------------------------------------------------------------
# Per-feature errors, all in one message
# ---------------------------------------------------------------------------------------------


def test_null_and_blank_site_ids(tmp_path: Path) -> None:
    rows = [{"site_id": "A"}, {"site_id": None}, {"site_id": "   "}]
    path = write(tmp_path, "ids.geojson", rows, [licence(), licence(129), licence(129.5)])
    message = message_of(path)
    assert "feature 2: site_id is missing" in message
    assert "feature 3: site_id is missing" in message
    assert "feature 1" not in message
    assert "unique, non-empty site_id" in message


def test_duplicate_site_ids_are_named(tmp_path: Path) -> None:
    rows = [
        {"site_id": "A-1"},
        {"site_id": "B-2"},
        {"site_id": "A-1"},
        {"site_id": "B-2"},
        {"site_id": "C"},
    ]
    geoms = [licence(128 + i * 0.1) for i in range(5)]
    message = message_of(write(tmp_path, "dups.gpkg", rows, geoms))
    assert "duplicate site_id 'A-1' (features 1, 3)" in message
    assert "duplicate site_id 'B-2' (features 2, 4)" in message
    assert "'C'" not in message
    assert "must be unique" in message


def test_empty_and_missing_geometries(tmp_path: Path) -> None:
    rows = [{"site_id": "E-1"}, {"site_id": "E-2"}, {"site_id": "OK"}]
    path = write(tmp_path, "empty.geojson", rows, [None, Polygon(), licence()])
    message = message_of(path)
    assert "feature 1 (site_id 'E-1'): geometry is empty or missing" in message
    assert "feature 2 (site_id 'E-2'): geometry is empty or missing" in message
    assert "'OK'" not in message


@pytest.mark.parametrize(
    ("geometry", "kind"),
    [
        (LineString([(128.0, 47.0), (128.1, 47.1)]), "LineString"),
        (Point(128.5, 47.2), "Point"),
        (
            GeometryCollection([Point(128.5, 47.2), LineString([(128.0, 47.0), (128.1, 47.1)])]),
            "GeometryCollection",
        ),
    ],
)
def test_non_polygonal_geometry(tmp_path: Path, geometry: BaseGeometry, kind: str) -> None:
    path = write_raw_geojson(
        tmp_path,
        "lines.geojson",
        [
            feature({"site_id": "OK"}, shapely.geometry.mapping(licence())),
            feature({"site_id": "A-2"}, shapely.geometry.mapping(geometry)),
        ],
    )
    message = message_of(path)
    assert (
        f"feature 2 (site_id 'A-2'): geometry is a {kind}, expected a Polygon or MultiPolygon"
        in message
    )
    assert "closed polygon" in message


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("licence_type", "quarry", "licence_type is 'quarry', expected one of exploration, mining"),
        (
            "mineral_class",
            "gold",
            "mineral_class is 'gold', expected one of energy, metal, non_metal, water_gas",
        ),
        (
            "licence_start",
            "next spring",
            "licence_start is 'next spring', not a date (write dates as YYYY-MM-DD)",
        ),
        ("licence_end", "2021-02-30", "licence_end is '2021-02-30', not a date"),
        ("reclamation_due", "soon", "reclamation_due is 'soon', not a date"),
        (
            "permitted_disturbance_ha",
            -3.5,
            "permitted_disturbance_ha is -3.5, expected a non-negative number of hectares",
        ),
        (
            "permitted_disturbance_ha",
            "lots",
            "permitted_disturbance_ha is 'lots', expected a non-negative number",
        ),
    ],
)
def test_bad_contract_values(tmp_path: Path, field: str, value: Any, expected: str) -> None:
    rows = [contract_row("GOOD"), contract_row("BAD", **{field: value})]
    path = write_raw_geojson(
        tmp_path,
        "bad.geojson",
        [feature(row, shapely.geometry.mapping(licence(128 + i))) for i, row in enumerate(rows)],
    )
    message = message_of(path)
    assert f"feature 2 (site_id 'BAD'): {expected}" in message
    assert "GOOD" not in message


def test_licence_end_before_start(tmp_path: Path) -> None:
    row = contract_row("T", licence_start="2020-01-01", licence_end="2019-12-31")
    message = message_of(write(tmp_path, "order.geojson", [row], [licence()]))
    assert "licence_end 2019-12-31 is before licence_start 2020-01-01" in message


def test_every_problem_in_one_message(tmp_path: Path) -> None:
    features = [
        feature({"site_id": "OK"}, shapely.geometry.mapping(licence())),
        feature({"site_id": None}, shapely.geometry.mapping(licence(129))),
        feature(
            {"site_id": "A-2"}, shapely.geometry.mapping(LineString([(128, 47), (128.1, 47.1)]))
        ),
        feature(
            {"site_id": "OK", "licence_type": "quarry"}, shapely.geometry.mapping(licence(129.5))
        ),
        feature({"site_id": "B-7"}, shapely.geometry.mapping(bowtie())),
    ]
    path = write_raw_geojson(tmp_path, "sites.geojson", features)
    message = message_of(path, repair_invalid=False)
    assert message.startswith(f"{path}: ")
    for part in (
        "duplicate site_id 'OK' (features 1, 4)",
        "feature 2: site_id is missing",
        "feature 3 (site_id 'A-2'): geometry is a LineString",
        "feature 4 (site_id 'OK'): licence_type is 'quarry'",
        "feature 5 (site_id 'B-7'): polygon is invalid",
    ):
        assert part in message
    assert "\n" not in message  # the CLI prints it on one line


def test_long_problem_lists_are_capped(tmp_path: Path) -> None:
    rows = [{"site_id": None} for _ in range(60)]
    message = message_of(
        write(tmp_path, "many.geojson", rows, [licence(128 + i / 100) for i in range(60)])
    )
    assert "feature 50: site_id is missing" in message
    assert "feature 51:" not in message
    assert message.endswith("and 10 more problems")


# ---------------------------------------------------------------------------------------------
# sites_frame / write_sites
# ---------------------------------------------------------------------------------------------


def test_sites_frame_is_wgs84_with_attr_columns(tmp_path: Path) -> None:
    rows = [contract_row("A-1"), {"site_id": "B-2", "extra": 5}]
    sites = read_sites(write(tmp_path, "frame.geojson", rows, [licence(), licence(129)]))
    frame = sites_frame(sites)
    assert frame.crs == pyproj.CRS.from_epsg(4326)
    assert list(frame["site_id"]) == ["A-1", "B-2"]
    assert frame.columns[0] == "site_id"
    assert {"licence_type", "licence_start", "extra"} <= set(frame.columns)
    assert frame.loc[0, "licence_start"] == "2018-05-01"
    assert pd.isna(frame.loc[1, "licence_type"])
    assert frame.geometry.iloc[1].hausdorff_distance(licence(129)) < 1e-6


@pytest.mark.parametrize("suffix", [".geojson", ".gpkg", ".shp"])
def test_write_then_read_is_lossless(tmp_path: Path, suffix: str) -> None:
    rows = [
        contract_row("A-1"),
        contract_row("A-2", licence_type="exploration", mineral_class="metal"),
    ]
    path = write(tmp_path, "in.gpkg", rows, [licence(), bowtie()], crs="EPSG:4552")
    with pytest.warns(SiteRepairWarning, match="A-2"):
        first = read_sites(path)
    out = tmp_path / f"out{suffix}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Shapefile field-name truncation
        warnings.simplefilter("ignore", RuntimeWarning)
        assert write_sites(first, out) == out
    with warnings.catch_warnings():
        warnings.simplefilter("error", SiteRepairWarning)
        second = read_sites(out, repair_invalid=False)  # repaired polygons stay valid
    assert [s.site_id for s in second] == ["A-1", "A-2"]
    for a, b in zip(first, second, strict=True):
        assert a.crs == b.crs
        assert a.attrs == b.attrs
        assert b.geometry.area == pytest.approx(a.geometry.area, rel=1e-6)
        assert b.geometry.symmetric_difference(a.geometry).area < 1e-3 * a.geometry.area


def test_write_sites_in_geojson_is_epsg4326(tmp_path: Path) -> None:
    site = Site(
        "S", reproject_geometry(licence(), pyproj.CRS.from_epsg(4326), UTM52), UTM52, {"a": 1}
    )
    out = write_sites([site], tmp_path / "out.geojson")
    data = json.loads(out.read_text())
    (feat,) = data["features"]
    assert feat["properties"] == {"site_id": "S", "a": 1}
    lon, lat = feat["geometry"]["coordinates"][0][0]
    assert 128 < lon < 129
    assert 47 < lat < 48


def test_write_sites_rejects_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(SitesError, match=r"\.csv"):
        write_sites([], tmp_path / "sites.csv")


def test_coordinates_off_the_earth_in_a_projected_crs(tmp_path: Path) -> None:
    frame = geopandas.GeoDataFrame(
        {"site_id": ["OK", "FAR"]},
        geometry=[
            reproject_geometry(licence(), pyproj.CRS.from_epsg(4326), UTM52),
            box(1e9, 5.2e6, 1e9 + 1000, 5.2e6 + 1000),  # x off by orders of magnitude
        ],
        crs=UTM52,
    )
    path = tmp_path / "far.gpkg"
    frame.to_file(path, engine="pyogrio")
    message = message_of(path)
    assert (
        "feature 2 (site_id 'FAR'): coordinates do not map to valid longitude/latitude" in message
    )
    assert "EPSG:32652" in message
    assert "'OK'" not in message
