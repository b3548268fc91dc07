"""``gmsense restoration composites --source earthengine``, offline: the server-side composite graph (collections,
season, clear mask, TM / ETM+ harmonisation, median or medoid, count) and the tiles fetched through the real
``ee`` client over the fake HTTP layer of :mod:`tests.test_earthengine`, written as the YYYY.tif folder
``restoration run`` reads.

The fake server cannot run a median over images; it checks what it receives (the collections, the season's
dates, the grid on the native Landsat lattice) and answers each tile with constructed pixels that say where
and for which season they were asked (``blue`` = x, ``green`` = y of the pixel centre, ``red`` = the season's
year), so the test can check each pixel landed where it belongs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ee
import geopandas as gpd
import httplib2
import numpy as np
import pytest
import rasterio
from ee import apitestcase
from shapely.geometry import box

from gmsense.cube.harmonise import TRANSFORMS
from gmsense.restoration.earthengine_archive import BYTES_PER_PIXEL, COMPOSITE_BANDS
from gmsense.sources.earthengine import _graph as graphs
from gmsense.sources.earthengine.composites import composite_graph
from gmsense.testutils import run_cli
from tests.test_earthengine import (  # noqa: F401  (offline: the fixture the server below needs)
    GOLDEN,
    UTM50N,
    FakeServer,
    _join_fetch_threads,
    _npy,
    decode_graph,
    graph_calls,
    grid_violations,
    offline,
)

ARCHIVE = graphs.SPECS["landsat-archive"]
#: 30 x 20 pixels of the native lattice in UTM 50N.
AREA = box(500_000, 5_000_000, 500_900, 5_000_600)
#: What a composite request returns: six float32 reflectance bands, the float32 count and the uint8 qa.
ANSWER = np.dtype([(b, "<f4") for b in COMPOSITE_BANDS] + [(graphs.QA_BAND, "u1")])


class CompositeServer(FakeServer):
    """The fake server, also answering composite requests (see the module docstring); ``composites`` keeps
    what each asked: its collections, date ranges, grid, reducers and harmonisation constants. Pixels in
    column ``empty_col`` of the grid have no clear observation (count 0, qa no data)."""

    def __init__(self) -> None:
        super().__init__()
        self.composites: list[dict[str, Any]] = []
        self.empty_col = 3

    def _compute_pixels(self, payload: dict[str, Any]) -> Any:
        graph = decode_graph(payload["expression"])
        if not graph_calls(graph, "reduce.median"):
            return super()._compute_pixels(payload)
        collections = sorted(c["id"] for c in graph_calls(graph, "ImageCollection.load"))
        specs = [s for s in graphs.SPECS.values() if sorted(s.collections) == collections]
        problems = [] if specs else [f"a composite of collections {collections}: not one of graphs.SPECS"]
        problems += grid_violations(payload["grid"], specs[0]) if specs else []
        ranges = {(d["start"], d["end"]) for d in graph_calls(graph, "DateRange")}
        if len(ranges) != 1:
            problems.append(f"a composite over date ranges {ranges}, not one season")
        if problems:
            return self._refuse(problems)
        dims, t = payload["grid"]["dimensions"], payload["grid"]["affineTransform"]
        size = dims["width"] * dims["height"] * BYTES_PER_PIXEL
        if size > self.byte_limit:
            with self.lock:
                self.rejected.append(payload)
            return self._error(400, f"Total request size ({size} bytes) must be less than or equal to "
                                    f"{self.byte_limit} bytes.")
        (start, end), = ranges
        constants = [c["value"] for c in graph_calls(graph, "Image.constant") if isinstance(c["value"], list)]
        with self.lock:
            self.composites.append({"collections": collections, "season": (start, end), "grid": payload["grid"],
                                    "medoid": bool(graph_calls(graph, "ImageCollection.qualityMosaic")),
                                    "count": bool(graph_calls(graph, "reduce.count")), "constants": constants})
        h, w = dims["height"], dims["width"]
        xs = t["translateX"] + t["scaleX"] * (np.arange(w) + 0.5)
        ys = t["translateY"] + t["scaleY"] * (np.arange(h) + 0.5)
        out = np.zeros((h, w), ANSWER)
        out["blue"], out["green"] = xs[None, :], ys[:, None]
        out["red"] = int(start[:4])  # the season's year (May-September)
        out["nir"], out["swir1"], out["swir2"] = 0.4, 0.2, 0.1
        out["clear_count"] = 5.0
        out["qa"] = graphs.QA_CLEAR
        column = np.rint((xs - self.grid_x0) / 30).astype(int) == self.empty_col
        out["clear_count"][:, column] = 0.0
        out["qa"][:, column] = graphs.QA_NO_DATA
        out["red"][:, column] = 0.0  # what the service returns for masked pixels
        return httplib2.Response({"status": 200, "content-type": "application/octet-stream"}), _npy(out)

    grid_x0 = 0.0


@pytest.fixture
def server(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[CompositeServer]:
    """The ee client initialised as in ``ee.apitestcase`` (offline: no network, no credentials) and wired
    to a :class:`CompositeServer`."""
    request.getfixturevalue("offline")
    monkeypatch.setattr(ee.data, "_install_cloud_api_resource", lambda: None)
    monkeypatch.setattr(ee.data, "getAlgorithms", apitestcase.GetAlgorithms)
    ee.Initialize(None, "", project="my-project")
    fake = CompositeServer()
    with apitestcase.UsingCloudApi(mock_http=fake):
        yield fake
    _join_fetch_threads()
    assert fake.violations == [], "the fake server received requests the service would not accept"


def _aoi(tmp_path: Path) -> Path:
    path = tmp_path / "aoi.geojson"
    gpd.GeoDataFrame(geometry=[AREA], crs=UTM50N).to_crs(4326).to_file(path)
    return path


def test_composite_graph_matches_golden_file(server: CompositeServer) -> None:
    rect = graphs.rectangle((499_965.0, 4_999_965.0, 500_445.0, 5_000_355.0), "EPSG:32650")
    got = {method: graphs.encode(composite_graph(ARCHIVE, rect, "2014-05-01", "2014-10-01", method, 0.6,
                                                 "roy2016_ols", "clear_count")) for method in ("median", "medoid")}
    path = GOLDEN / "composite-landsat-archive.json"
    if os.environ.get("GMSENSE_UPDATE_GOLDEN"):
        path.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    assert got == json.loads(path.read_text()), f"graph differs from {path}; GMSENSE_UPDATE_GOLDEN=1 to accept"
    median = decode_graph(got["median"])
    assert sorted(c["id"] for c in graph_calls(median, "ImageCollection.load")) == sorted(ARCHIVE.collections)
    assert graph_calls(median, "DateRange") == [{"start": "2014-05-01", "end": "2014-10-01"}]
    assert not graph_calls(median, "ImageCollection.qualityMosaic")
    medoid = graph_calls(decode_graph(got["medoid"]), "ImageCollection.qualityMosaic")
    assert [c["qualityBand"] for c in medoid] == ["closeness"]


def _harmonised_collections(graph: Any, slopes: list[float]) -> set[str]:
    """The collections whose images are multiplied by ``slopes`` (a constant image) in ``graph``."""
    found = set()
    for call in graph_calls(graph, "Collection.map"):
        body = json.dumps(call["baseAlgorithm"], default=str)
        if json.dumps(slopes) in body:
            found |= {c["id"] for c in graph_calls(call["collection"], "ImageCollection.load")}
    return found


@pytest.mark.parametrize("method", ["roy2016_ols", "roy2016_rma", "none"])
def test_tm_and_etm_are_made_oli_like_on_the_server(server: CompositeServer, method: str) -> None:
    rect = graphs.rectangle(AREA.bounds, "EPSG:32650")
    graph = decode_graph(graphs.encode(composite_graph(ARCHIVE, rect, "2005-05-01", "2005-10-01", "median", 0.6,
                                                       method, "clear_count")))
    constants = [c["value"] for c in graph_calls(graph, "Image.constant") if isinstance(c["value"], list)]
    if method == "none":
        assert constants == [[0.0] * 6], "only the empty placeholder"
        return
    transform = TRANSFORMS[method]
    slopes = [transform.slopes[b] for b in graphs.COMMON_BANDS]
    intercepts = [transform.intercepts[b] for b in graphs.COMMON_BANDS]
    assert slopes in constants
    assert intercepts in constants
    assert _harmonised_collections(graph, slopes) == {graphs.LT05_COLLECTION, graphs.LE07_COLLECTION}, \
        "TM and ETM+ images, never OLI"


def test_command_writes_each_tile_where_it_belongs(server: CompositeServer, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from gmsense.restoration import earthengine_archive

    monkeypatch.setattr(earthengine_archive, "TILE_PX", 8)  # many tiles over a small area
    server.grid_x0 = 499_985.0  # the grid's left edge: the area plus a pixel, on the lattice
    out = tmp_path / "composites"
    code, output = run_cli("restoration", "composites", "--source", "earthengine", "--aoi", _aoi(tmp_path),
                           "--start-year", 2011, "--end-year", 2013, "--out", out)
    assert code == 0, output
    assert "3 written, 0 already there, 0 without imagery" in " ".join(output.split())
    with rasterio.open(out / "2012.tif") as src:
        data = src.read()
        names = list(src.descriptions)
        t = src.transform
        assert src.crs.to_epsg() == 32650
        tags = src.tags()
    assert names == [*graphs.COMMON_BANDS, "clear_count"]
    assert (t.a, t.c % 30, t.f % 30) == (30.0, 15.0, 15.0), "the native Landsat lattice"
    xs = t.c + 30 * (np.arange(data.shape[2]) + 0.5)
    ys = t.f - 30 * (np.arange(data.shape[1]) + 0.5)
    observed = np.ones(data.shape[2], bool)
    observed[3] = False
    np.testing.assert_array_equal(data[0][:, observed], np.broadcast_to(xs[observed], (ys.size, observed.sum())))
    np.testing.assert_array_equal(data[1][:, observed], np.broadcast_to(ys[:, None], (ys.size, data.shape[2]))[
        :, observed])
    assert (data[2][:, observed] == 2012).all(), "the 2012 season's answer"
    assert np.isnan(data[:6, :, 3]).all(), "no clear observation: no data"
    assert (data[6][:, 3] == 0).all()
    assert (data[6][:, observed] == 5).all()
    n_tiles = -(-data.shape[1] // 8) * -(-data.shape[2] // 8)
    assert len(server.composites) == 3 * n_tiles
    assert {c["season"] for c in server.composites} == {("2011-05-01", "2011-10-01"), ("2012-05-01", "2012-10-01"),
                                                         ("2013-05-01", "2013-10-01")}
    assert all(c["collections"] == sorted(ARCHIVE.collections) for c in server.composites)
    assert all(c["count"] and not c["medoid"] for c in server.composites)
    assert tags["GMSENSE_COMPOSITE_SOURCE"].startswith("earthengine landsat-archive")
    # resumed: the years are there, nothing is asked again; a new year is
    server.composites.clear()
    code, output = run_cli("restoration", "composites", "--source", "earthengine", "--aoi", _aoi(tmp_path),
                           "--start-year", 2011, "--end-year", 2014, "--out", out)
    assert code == 0, output
    assert "1 written, 3 already there" in " ".join(output.split())
    assert {c["season"] for c in server.composites} == {("2014-05-01", "2014-10-01")}


def test_too_large_requests_are_halved_and_years_before_the_collection_skipped(server: CompositeServer,
                                                                               tmp_path: Path) -> None:
    server.grid_x0 = 499_985.0
    server.byte_limit = 200 * BYTES_PER_PIXEL  # a 32 x 22 px grid in one tile is refused: halved until it fits
    out = tmp_path / "composites"
    code, output = run_cli("restoration", "composites", "--source", "earthengine", "--collection", "landsat",
                           "--aoi", _aoi(tmp_path), "--start-year", 2012, "--end-year", 2013, "--out", out,
                           "--method", "medoid")
    assert code == 0, output
    assert "1 written, 0 already there, 1 without imagery" in " ".join(output.split()), \
        "Landsat 8 starts in 2013: no 2012"
    assert server.rejected, "the first requests were too large"
    assert all(c["medoid"] for c in server.composites)
    with rasterio.open(out / "2013.tif") as src:
        blue = src.read(1)
        x0 = src.transform.c
    observed = np.arange(blue.shape[1]) != 3
    np.testing.assert_array_equal(blue[:, observed], np.broadcast_to(
        x0 + 30 * (np.arange(blue.shape[1])[observed] + 0.5), (blue.shape[0], observed.sum())))


def test_server_errors_leave_no_year_behind(server: CompositeServer, tmp_path: Path) -> None:
    server.grid_x0 = 499_985.0
    original = server._compute_pixels

    def failing(payload: dict[str, Any]) -> Any:
        graph = decode_graph(payload["expression"])
        if any(d["start"].startswith("2013") for d in graph_calls(graph, "DateRange")):
            return server._error(400, "User memory limit exceeded.")
        return original(payload)

    server._compute_pixels = failing  # type: ignore[method-assign]
    out = tmp_path / "composites"
    code, output = run_cli("restoration", "composites", "--source", "earthengine", "--aoi", _aoi(tmp_path),
                           "--start-year", 2012, "--end-year", 2014, "--out", out)
    assert code == 1, output
    assert "Earth Engine refused the 2013 composite" in " ".join(output.split())
    assert "User memory limit exceeded" in output
    assert sorted(p.name for p in out.iterdir()) == ["2012.tif"], "no 2013.tif, no temporary file"
