"""``--source earthengine``, offline: the native lattice, the licence-wide clear share, image ids in
the cube and the Landsat 5/7 archive (issue 22, items 2, 4 and 6, and the archive).

Uses the fake server of :mod:`tests.test_earthengine` (the real ``ee`` client over a fake HTTP layer).
Where a test needs the service's documented behaviour the fake server does not model (the native
lattice of the imagery, ``ee.Image.unmask``'s footprint), it wraps the fake server's answer here.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httplib2
import numpy as np
import pytest
import rasterio
from affine import Affine
from shapely.geometry import box

from gmsense.config import EarthEngineSettings, Settings
from gmsense.sources.earthengine import _graph as graphs
from gmsense.sources.earthengine._fetch import RequestLimiter, grid_key
from tests.test_earthengine import (  # noqa: F401  (offline, server: the fixtures behind ``fake``)
    DAY_MS,
    FAST,
    GOLDEN,
    LICENCE,
    T0_MS,
    UTM50N,
    FakeServer,
    _cfg,
    _load,
    offline,
    server,
)

LANDSAT_PX = 30.0
LC08_ID = f"{graphs.LANDSAT_COLLECTIONS[0]}/LC08_119027_20210614"
LT05_ID = f"{graphs.LT05_COLLECTION}/LT05_119027_19900612"
LE07_ID = f"{graphs.LE07_COLLECTION}/LE07_119027_20050620"
T1990_MS = 645_148_800_000  # 1990-06-12 00:00 UTC
T2005_MS = 1_119_225_600_000  # 2005-06-20 00:00 UTC


# --------------------------------------------------------------------------------------------
# helpers: the scene on the native Landsat lattice, the expression's unmask calls


@pytest.fixture
def fake(request: pytest.FixtureRequest) -> FakeServer:
    """The ``server`` fixture of :mod:`tests.test_earthengine` (the real client over a :class:`FakeServer`)."""
    return request.getfixturevalue("server")


def native_centre(v: np.ndarray) -> np.ndarray:
    """The centre of the Landsat pixel (centres on multiples of 30 m, edges at 30 k + 15 m) a
    requested coordinate falls in; a coordinate on an edge falls in the pixel above/right of it."""
    return LANDSAT_PX * np.floor((np.asarray(v, "float64") - LANDSAT_PX / 2) / LANDSAT_PX) + LANDSAT_PX


def scene(xs: np.ndarray, ys: np.ndarray) -> dict[str, np.ndarray]:
    """Reflectance of one scene as a function of the native pixel centres ``xs`` (columns) and ``ys``
    (rows), metres: every pixel different from its neighbours."""
    col = np.rint(xs / LANDSAT_PX)[None, :]
    row = np.rint(ys / LANDSAT_PX)[:, None]
    out = {"blue": 0.01 * (col % 50) + 0 * row, "green": 0.01 * (row % 50) + 0 * col,
           "red": 0.1 + 0.001 * ((col + 7 * row) % 97), "nir": 0.3 + 0.002 * ((3 * col + row) % 89)}
    out["swir1"] = out["red"] + 0.05
    out["swir2"] = out["nir"] - 0.2
    return {k: v.astype("float32") for k, v in out.items()}


def native_pixels(fake: FakeServer) -> None:
    """Answer computePixels like the service over an image on the native Landsat lattice: each
    requested pixel takes the value of the imagery pixel its centre falls in (nearest neighbour)."""
    plain = fake._pixels

    def pixels(image_id: str, grid: dict[str, Any]) -> np.ndarray:
        out = plain(image_id, grid)
        dims, t = grid["dimensions"], grid["affineTransform"]
        xs = native_centre(t["translateX"] + t["scaleX"] * (np.arange(dims["width"]) + 0.5))
        ys = native_centre(t["translateY"] + t["scaleY"] * (np.arange(dims["height"]) + 0.5))
        for band, values in scene(xs, ys).items():
            out[band] = values
        return out

    fake._pixels = pixels  # type: ignore[method-assign]


def invocations(encoded: Any, function: str) -> list[dict[str, Any]]:
    """The arguments of every call of ``function`` in a Cloud API expression (``{"result": ref,
    "values": {ref: node}}``; a node shared by several calls is written once and referenced by
    ``valueReference``, so each call is counted once), references in the arguments resolved."""
    table = encoded.get("values", {}) if isinstance(encoded, dict) else {}

    def expand(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {"valueReference"}:
                return expand(table[node["valueReference"]])
            return {k: expand(v) for k, v in node.items()}
        if isinstance(node, list):
            return [expand(v) for v in node]
        return node

    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("functionName") == function:
                found.append(expand(node.get("arguments", {})))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(encoded)
    return found


def unmask_calls(encoded: Any) -> list[dict[str, Any]]:
    """The arguments of every ``Image.unmask`` invocation in a Cloud API expression (JSON)."""
    return invocations(encoded, "Image.unmask")


def licence_wide(expression: Any) -> bool:
    """True when every unmask of the expression extends over the whole grid (``sameFootprint`` false)."""
    calls = unmask_calls(expression)
    return bool(calls) and all(c.get("sameFootprint") == {"constantValue": False} for c in calls)


def _landsat_images(fake: FakeServer, images: dict[str, tuple[int, float, int]]) -> None:
    fake.images = dict(images)


# --------------------------------------------------------------------------------------------
# 1. the request grid on the native lattice


def test_each_collection_grid_sits_on_its_native_lattice() -> None:
    from gmsense.sources.earthengine import collection_grid, licence_grid

    for key in ("landsat", "landsat-archive"):
        grid = collection_grid(LICENCE, UTM50N, graphs.SPECS[key])
        assert grid.transform.c % 30 == 15
        assert grid.transform.f % 30 == 15
        assert (grid.xs() % 30 == 0).all(), "pixel centres on multiples of 30 m"
        assert (grid.ys() % 30 == 0).all()
        minx, miny, maxx, maxy = LICENCE.bounds
        assert grid.bounds[0] < minx
        assert grid.bounds[1] < miny
        assert grid.bounds[2] > maxx
        assert grid.bounds[3] > maxy
        # The new key of a Landsat licence (the caches of the grid anchored at the origin are left behind).
        assert grid_key(grid) == "EPSG:32650|30.0,0.0,499965.0,0.0,-30.0,5000355.0|16x13"
    s2 = collection_grid(LICENCE, UTM50N, graphs.SPECS["sentinel-2"])
    assert s2 == licence_grid(LICENCE, UTM50N, 10.0)
    assert grid_key(s2) == "EPSG:32650|10.0,0.0,499990.0,0.0,-10.0,5000310.0|42x32", "Sentinel-2 caches stay valid"


def _write_native_geotiff(folder: Path) -> Path:
    """A Landsat scene on its native lattice (edges at odd multiples of 15 m) around the licence."""
    x0, y0, width, height = 499_785.0, 5_000_535.0, 30, 30  # 499785 = 16659.5 x 30
    transform = Affine(LANDSAT_PX, 0, x0, 0, -LANDSAT_PX, y0)
    xs = x0 + LANDSAT_PX * (np.arange(width) + 0.5)
    ys = y0 - LANDSAT_PX * (np.arange(height) + 0.5)
    bands = scene(xs, ys)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "2021-06-14_LC08_119027.tif"
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=7, dtype="float32",
                       crs="EPSG:32650", transform=transform) as dst:
        for i, name in enumerate([*graphs.COMMON_BANDS, "clear"], start=1):
            dst.write(bands[name] if name in bands else np.ones((height, width), "float32"), i)
            dst.set_band_description(i, name)
    return path


def test_local_geotiff_and_earth_engine_put_the_same_pixel_in_the_same_place(fake: FakeServer,
                                                                             tmp_path: Path) -> None:
    from gmsense.sources.earthengine import clear_listing_memo, load_cube
    from gmsense.sources.local import read_local_cube

    _landsat_images(fake, {LC08_ID: (T0_MS + 12 * DAY_MS, 0.9, 2)})
    native_pixels(fake)
    local = read_local_cube(_write_native_geotiff(tmp_path / "imagery").parent, LICENCE, UTM50N,
                            start="2021-06-01", end="2021-06-30").compute()
    clear_listing_memo()
    ee_cube = load_cube(_cfg(tmp_path, collection="landsat"), LICENCE, UTM50N, "2021-06-01", "2021-06-30",
                        site_id="L-1", limiter=RequestLimiter(2), policy=FAST).cube.compute()
    np.testing.assert_array_equal(ee_cube.x.values, local.x.values)
    np.testing.assert_array_equal(ee_cube.y.values, local.y.values)
    assert (ee_cube.x.values % 30 == 0).all()
    for band in graphs.COMMON_BANDS:
        np.testing.assert_array_equal(ee_cube[band].values[0], local[band].values[0], err_msg=band)
    np.testing.assert_array_equal(ee_cube.clear.values, local.clear.values)
    # Meaningful: neighbouring pixels differ, so a grid half a pixel off would not match.
    assert (np.diff(local.red.values[0], axis=1) != 0).all()
    assert (np.diff(local.red.values[0], axis=0) != 0).all()


# --------------------------------------------------------------------------------------------
# 2. the clear share over the whole licence grid


@pytest.mark.parametrize("collection", sorted(graphs.SPECS))
def test_every_unmask_extends_over_the_whole_grid(fake: FakeServer, collection: str) -> None:
    spec = graphs.SPECS[collection]
    rect = graphs.rectangle(LICENCE.bounds, "EPSG:32650")
    for image_id in (f"{cid}/X_20210614" for cid in spec.collections):
        image = unmask_calls(graphs.encode(graphs.image_graph(spec, image_id, 0.6)))
        assert len(image) == 2, "observed and clear"
        assert licence_wide(graphs.encode(graphs.image_graph(spec, image_id, 0.6)))
    listing = graphs.encode(graphs.listing_graph(spec, rect, "2021-05-01", "2021-10-01", 0.6))
    assert len(unmask_calls(listing)) == 2
    assert licence_wide(listing)


class FootprintServer:
    """Wraps a :class:`FakeServer` to answer as the service does for images covering only the first
    ``columns`` of the licence grid, by ``ee.Image.unmask``'s documented footprint rule: with
    ``sameFootprint`` false the qa band is 0 outside the image and the listing's mean counts the
    whole rectangle; otherwise pixels outside stay masked, drop out of the mean, and come back from
    computePixels with whatever value the service fills them with (here 2, "clear")."""

    def __init__(self, fake: FakeServer, partial: dict[str, float], columns: int) -> None:
        self.fake, self.partial, self.columns = fake, partial, columns
        self.plain = fake.request
        fake.request = self.request  # type: ignore[method-assign]

    def request(self, uri: str, method: str = "GET", body: Any = None, headers: Any = None, **kw: Any) -> Any:
        response, content = self.plain(uri, method, body, headers, **kw)
        payload = json.loads(body) if body else {}
        if response.status != 200 or "expression" not in payload:
            return response, content
        wide = licence_wide(payload["expression"])
        if uri.split("?")[0].endswith("value:compute") and isinstance(json.loads(content)["result"], list):
            rows = [[i, t, share * self.partial[i] if wide and i in self.partial else share]
                    for i, t, share in json.loads(content)["result"]]
            return response, json.dumps({"result": rows}).encode()
        if "image:computePixels" in uri:
            image_id = next((i for i in self.partial if i in json.dumps(payload["expression"])), None)
            if image_id is not None:
                array = np.load(io.BytesIO(content), allow_pickle=False)
                array["qa"][:, self.columns:] = 0 if wide else graphs.QA_CLEAR
                buf = io.BytesIO()
                np.save(buf, array, allow_pickle=False)
                return httplib2.Response({"status": 200, "content-type": "application/octet-stream"}), buf.getvalue()
        return response, content


def test_an_image_covering_a_sliver_of_the_licence_is_not_clear_over_it(fake: FakeServer, tmp_path: Path) -> None:
    sliver = f"{graphs.S2_COLLECTION}/20210602_T50TQT"  # covers 2 of the grid's 42 columns, all clear
    fake.images[sliver] = (T0_MS + 3 * DAY_MS, 1.0, 2)
    FootprintServer(fake, {sliver: 2 / 42}, columns=2)
    kept = _load(fake, tmp_path / "a", cfg={"min_clear_fraction": 0.5})
    assert sliver not in [r.image_id for r in kept.images], "a 5 % sliver does not pass min_clear_fraction"
    res = _load(fake, tmp_path / "b")
    day = [i for i, ids in enumerate(res.cube.image_id.values) if ids == sliver]
    assert len(day) == 1
    clear = res.cube.clear.isel(time=day[0]).values
    assert clear[:, :2].all()
    assert not clear[:, 2:].any(), "outside the image: not observed, whatever the service fills masked pixels with"
    assert np.isnan(res.cube.red.isel(time=day[0]).values[:, 2:]).all()


# --------------------------------------------------------------------------------------------
# 3. provenance: image ids per date


def test_the_cube_names_the_images_of_each_date(fake: FakeServer, tmp_path: Path) -> None:
    second_tile = f"{graphs.S2_COLLECTION}/20210600_T50TQT"
    fake.images[second_tile] = (T0_MS + 1000, 0.4, 1)
    ids = list(fake.images)
    res = _load(fake, tmp_path)
    expected = [f"{ids[0]}+{second_tile}", ids[1], ids[2], ids[3]]
    assert list(res.cube.image_id.values) == expected
    assert res.cube.image_id.dims == ("time",)
    again = _load(fake, tmp_path)  # from the cache
    assert list(again.cube.image_id.values) == expected


def test_patch_evidence_names_the_earth_engine_images(fake: FakeServer, tmp_path: Path) -> None:
    from gmsense.pipeline import _evidence, _image_ids, season_index

    cube = _load(fake, tmp_path).cube
    _source, _dates, season, _ndvi = season_index(cube, Settings(), "L-1")
    names = _image_ids(season, cube.attrs)
    assert names == [str(v) for v in cube.image_id.values[_dates]]
    assert all(n.startswith(graphs.S2_COLLECTION + "/") for n in names)
    times = season.time.values
    patch = SimpleNamespace(first_detected=times[2], confirmed_on=times[3])
    evidence = _evidence(times, np.ones(times.size), patch, names)
    assert evidence["before_image"] == names[1]
    assert evidence["after_image"] == names[2]
    assert evidence["confirm_image"] == names[3]


# --------------------------------------------------------------------------------------------
# 4. Landsat 5 TM and 7 ETM+ (the archive)


def test_archive_band_numbering_per_sensor() -> None:
    spec = graphs.SPECS["landsat-archive"]
    assert spec.collections == (graphs.LT05_COLLECTION, graphs.LE07_COLLECTION, *graphs.LANDSAT_COLLECTIONS)
    tm = ("SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B7")
    oli = ("SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7")
    assert spec.source_names(LT05_ID) == tm
    assert spec.source_names(LE07_ID) == tm
    assert spec.source_names(LC08_ID) == oli
    assert spec.source_names(f"{graphs.LANDSAT_COLLECTIONS[1]}/LC09_119027_20220614") == oli
    with pytest.raises(ValueError, match="belongs to none"):
        spec.source_names(f"{graphs.S2_COLLECTION}/20210614T030541_20210614T030540_T50TPT")
    assert (spec.scale, spec.offset, spec.resolution_m) == (0.0000275, -0.2, 30.0)
    assert spec.bytes_per_pixel == graphs.SPECS["landsat"].bytes_per_pixel
    assert spec.first_date < "1990-01-01"
    assert EarthEngineSettings(collection="landsat-archive").collection == "landsat-archive"


def _select_renames(encoded: Any) -> list[tuple[list[str], list[str]]]:
    """``(source names, new names)`` of every band selection that renames, in a Cloud API expression."""

    def names(node: dict[str, Any]) -> list[str]:
        if "constantValue" in node:
            return list(node["constantValue"])
        return [v.get("constantValue") for v in node["arrayValue"]["values"]]

    return [(names(args["bandSelectors"]), names(args["newNames"]))
            for args in invocations(encoded, "Image.select") if "newNames" in args]


def test_archive_graphs_match_golden_file(fake: FakeServer) -> None:
    from gmsense.sources.earthengine import collection_grid, date_window

    spec = graphs.SPECS["landsat-archive"]
    grid = collection_grid(LICENCE, UTM50N, spec)
    start, end = date_window(spec, "1990-05-01", "2021-09-30")
    rect = graphs.rectangle(grid.bounds, "EPSG:32650")
    got = {"listing": graphs.encode(graphs.listing_graph(spec, rect, start, end, 0.6)),
           **{f"image_{i.split('/')[1]}": graphs.encode(graphs.image_graph(spec, i, 0.6))
              for i in (LT05_ID, LE07_ID, LC08_ID)}}
    path = GOLDEN / "landsat-archive.json"
    if os.environ.get("GMSENSE_UPDATE_GOLDEN"):
        path.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    assert got == json.loads(path.read_text()), f"graph differs from {path}; GMSENSE_UPDATE_GOLDEN=1 to accept"

    common = [*graphs.COMMON_BANDS, "QA_PIXEL", "QA_RADSAT"]
    tm = ["SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B7", "QA_PIXEL", "QA_RADSAT"]
    oli = ["SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7", "QA_PIXEL", "QA_RADSAT"]
    assert _select_renames(got["image_LT05"]) == [(tm, common)]
    assert _select_renames(got["image_LE07"]) == [(tm, common)]
    assert _select_renames(got["image_LC08"]) == [(oli, common)]
    # The listing renames each collection by its own numbering before merging them (the serializer
    # writes identical selections once).
    assert {(tuple(s), tuple(n)) for s, n in _select_renames(got["listing"])} == {
        (tuple(tm), tuple(common)), (tuple(oli), tuple(common))}
    text = json.dumps(got)
    for cid in spec.collections:
        assert f'"{cid}"' in text
    assert '"1990-05-01"' in text
    assert "2.75e-05" in text
    assert "63" in text  # QA_PIXEL bits 0-5
    assert "[499965.0, 4999965.0, 500445.0, 5000355.0]" in text.replace("\n", "")


@pytest.fixture
def archive_server(fake: FakeServer) -> FakeServer:
    """The fake server holding a Landsat 5 (1990), a Landsat 7 SLC-off (2005) and a Landsat 8 (2021)
    image; the ETM+ image has the scan-line gaps of SLC-off (not observed) every 5th column."""
    _landsat_images(fake, {LT05_ID: (T1990_MS, 0.9, 2), LE07_ID: (T2005_MS, 0.8, 2),
                             LC08_ID: (T0_MS + 12 * DAY_MS, 0.9, 2)})
    native_pixels(fake)
    with_gaps = fake._pixels

    def pixels(image_id: str, grid: dict[str, Any]) -> np.ndarray:
        out = with_gaps(image_id, grid)
        if image_id == LE07_ID:
            x0 = grid["affineTransform"]["translateX"]
            cols = np.rint((x0 - 499_965.0) / LANDSAT_PX).astype(int) + np.arange(grid["dimensions"]["width"])
            out["qa"][:, cols % 5 == 0] = graphs.QA_NO_DATA
        return out

    fake._pixels = pixels  # type: ignore[method-assign]
    return fake


def test_archive_cube_reaches_before_2013(archive_server: FakeServer, tmp_path: Path) -> None:
    from gmsense.sources.earthengine import clear_listing_memo, load_cube

    clear_listing_memo()
    res = load_cube(_cfg(tmp_path, collection="landsat-archive"), LICENCE, UTM50N, "1990-01-01", "2021-12-31",
                    site_id="L-1", limiter=RequestLimiter(2), policy=FAST)
    cube = res.cube
    assert [str(t)[:10] for t in cube.time.values] == ["1990-06-12", "2005-06-20", "2021-06-14"]
    assert list(cube.image_id.values) == [LT05_ID, LE07_ID, LC08_ID]
    assert cube.attrs["platform"] == "landsat"
    assert cube.attrs["resolution_m"] == 30.0
    assert (cube.x.values % 30 == 0).all()
    listing = json.dumps(archive_server.value_calls[0]["expression"])
    for cid in graphs.LANDSAT_ARCHIVE_COLLECTIONS:
        assert f'"{cid}"' in listing
    sent = {i: json.dumps(c["expression"]) for c in archive_server.pixel_calls
            for i in (LT05_ID, LE07_ID, LC08_ID) if i in json.dumps(c["expression"])}
    assert '"SR_B1"' in sent[LT05_ID]
    assert '"SR_B1"' in sent[LE07_ID]
    assert '"SR_B1"' not in sent[LC08_ID]
    assert '"SR_B6"' in sent[LC08_ID]
    loaded = cube.compute()
    gaps = (np.arange(cube.sizes["x"]) % 5) == 0
    etm = loaded.isel(time=1)
    assert np.isnan(etm.red.values[:, gaps]).all(), "SLC-off gaps are not observed"
    assert not etm.clear.values[:, gaps].any()
    assert etm.clear.values[:, ~gaps].all()
    # the same scene, same pixels: the TM day made OLI-like (Roy et al. 2016, Table 2 OLS), the OLI day as is
    assert list(cube.sensor.values) == ["TM", "ETM+", "OLI"]
    assert cube.attrs["harmonise"] == "roy2016_ols"
    assert cube.attrs["harmonised_dates"] == 2
    np.testing.assert_allclose(loaded.red.values[0], 0.0061 + 0.9047 * loaded.red.values[2], rtol=1e-6)
    np.testing.assert_allclose(loaded.nir.values[0], 0.0412 + 0.8462 * loaded.nir.values[2], rtol=1e-6)


def test_archive_harmonisation_can_be_turned_off(archive_server: FakeServer, tmp_path: Path) -> None:
    from gmsense.sources.earthengine import clear_listing_memo, load_cube

    clear_listing_memo()
    res = load_cube(_cfg(tmp_path, collection="landsat-archive", harmonise="none"), LICENCE, UTM50N, "1990-01-01",
                    "2021-12-31", site_id="L-1", limiter=RequestLimiter(2), policy=FAST)
    assert list(res.cube.sensor.values) == ["TM", "ETM+", "OLI"]
    assert res.cube.attrs["harmonise"] == "none"
    loaded = res.cube.compute()
    np.testing.assert_array_equal(loaded.red.values[0], loaded.red.values[2])  # the same scene, as fetched


def test_archive_is_planned_as_landsat() -> None:
    from gmsense.geo.sites import Site
    from gmsense.sources import EarthEngineSource

    settings = Settings().with_overrides({"earthengine.collection": "landsat-archive"})
    shape = EarthEngineSource.describe(SimpleNamespace(settings=settings),  # type: ignore[arg-type]
                                       Site("L-1", box(0, 0, 1, 1), UTM50N), "2000-01-01", "2001-12-31")
    assert shape.resolution_m == 30.0
