"""``--source earthengine``, offline.

The ``ee`` client is initialised the way earthengine-api's own tests do it (``ee.apitestcase``:
stubbed ``_install_cloud_api_resource``, its ``GetAlgorithms``, ``ee.Initialize(None, '',
project=...)``), then ``apitestcase.UsingCloudApi(mock_http=FakeServer)`` builds the real Cloud API
client over a fake HTTP layer: ``ee.data.computeValue`` / ``computePixels`` run for real down to
the HTTP call, which :class:`FakeServer` answers (NPY pixels, listings, 429s, 5xx, timeouts, a 400).
A socket guard makes any real network access fail.

Golden files: ``tests/golden/earthengine/*.json``; regenerate with ``GMSENSE_UPDATE_GOLDEN=1``.
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import re
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ee
import httplib2
import numpy as np
import pyproj
import pytest
from affine import Affine
from ee import apitestcase
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import box
from typer.testing import CliRunner

from gmsense.config import EarthEngineSettings, Settings
from gmsense.geo.grid import Grid
from gmsense.geo.sites import Site
from gmsense.sources.earthengine import _graph as graphs
from gmsense.sources.earthengine._fetch import (
    MAX_GRID_SIDE_PX,
    REQUEST_BYTE_LIMIT,
    EarthEngineError,
    PixelCache,
    RequestLimiter,
    RetryPolicy,
    Window,
    backoff_delay,
    classify_error,
    crs_code,
    grid_key,
    plan_tiles,
    request_bytes_per_pixel,
    request_grid,
)

GOLDEN = Path(__file__).parent / "golden" / "earthengine"
UTM50N = pyproj.CRS.from_epsg(32650)
# A 400 m x 300 m licence near Heilongjiang's mining districts, in UTM 50N (metres).
LICENCE = box(500_000, 5_000_000, 500_400, 5_000_300)
FAST = RetryPolicy(retries=3, base_delay_s=0.001, max_delay_s=0.005)
DAY_MS = 86_400_000
T0_MS = 1_622_592_000_000  # 2021-06-02 00:00 UTC


# --------------------------------------------------------------------------------------------
# the fake server (HTTP layer under the real client)


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


class FakeServer:
    """An httplib2-like ``request`` answering the Earth Engine Cloud API.

    ``images``: image id -> (time ms, clear share, qa) where qa is 2 (clear), 1 (cloudy); pixels
    of column 0 of ``nodata_ids`` are not observed. Band values tell where they came from: ``blue``
    = x of the pixel centre, ``green`` = y (metres, UTM), ``red`` = the image's number in
    ``images``. ``outcomes`` scripts the computePixels answers *per image id* (a deque each, in
    order: an int status, or ``"timeout"``; empty = 200), so which thread asks first does not
    matter. ``fail_ids``: image id -> a status it always gets.

    Like the service, it refuses (HTTP 400 "Total request size (N bytes) must be less than or equal
    to L bytes.") any request whose size by the service's rule (:func:`service_request_bytes`)
    exceeds ``byte_limit``; refused requests are kept in ``rejected``.
    """

    def __init__(self) -> None:
        self.images: dict[str, tuple[int, float, int]] = {}
        self.nodata_ids: set[str] = set()
        self.outcomes: dict[str, deque[int | str]] = {}
        self.fail_ids: dict[str, int] = {}
        self.byte_limit = REQUEST_BYTE_LIMIT
        self.rejected: list[dict[str, Any]] = []
        self.gate: Callable[[], None] | None = None
        self.latency_s = 0.0
        self.lock = threading.Lock()
        self.in_flight = 0
        self.peak = 0
        self.pixel_calls: list[dict[str, Any]] = []
        self.value_calls: list[dict[str, Any]] = []

    def reset_counts(self) -> None:
        self.pixel_calls.clear()
        self.value_calls.clear()
        self.peak = 0

    def _error(self, status: int, message: str) -> tuple[httplib2.Response, bytes]:
        body = {"error": {"code": status, "message": message, "status": "ERROR"}}
        return httplib2.Response({"status": status, "content-type": "application/json"}), json.dumps(body).encode()

    def request(self, uri: str, method: str = "GET", body: Any = None, headers: Any = None, **_: Any) -> Any:
        payload = json.loads(body) if body else {}
        if uri.split("?")[0].endswith("value:compute"):
            with self.lock:
                self.value_calls.append(payload)
            text = json.dumps(payload["expression"])
            if "Number.add" in text:  # the `sources check` probe: 1 + 1
                result: Any = 2
            else:
                result = [[image_id, t, share] for image_id, (t, share, _qa) in self.images.items()]
            return httplib2.Response({"status": 200, "content-type": "application/json"}), json.dumps(
                {"result": result}).encode()
        if "image:computePixels" not in uri:
            return self._error(404, f"unexpected call {uri}")
        image_id = re.search(r'"Image.load", "arguments": \{"id": \{"constantValue": "([^"]+)"',
                             json.dumps(payload["expression"])).group(1)
        dims = payload["grid"]["dimensions"]
        size = service_request_bytes(dims["width"], dims["height"], PIXEL_DTYPE)
        if size > self.byte_limit:
            with self.lock:
                self.rejected.append(payload)
            return self._error(400, f"Total request size ({size} bytes) must be less than or equal to "
                                    f"{self.byte_limit} bytes.")
        with self.lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            self.pixel_calls.append(payload)
            script = self.outcomes.get(image_id)
            outcome = script.popleft() if script else 200
        try:
            if self.gate is not None:
                self.gate()
            if self.latency_s:
                time.sleep(self.latency_s)
            if image_id in self.fail_ids:
                outcome = self.fail_ids[image_id]
            if outcome == "timeout":
                raise TimeoutError("The read operation timed out")
            if outcome != 200:
                messages = {429: "Too many concurrent aggregations.", 400: "User memory limit exceeded.",
                            503: "Service unavailable.", 500: "An internal error has occurred."}
                return self._error(int(outcome), messages.get(int(outcome), "error"))
            return httplib2.Response({"status": 200, "content-type": "application/octet-stream"}), _npy(
                self._pixels(image_id, payload["grid"]))
        finally:
            with self.lock:
                self.in_flight -= 1

    def _pixels(self, image_id: str, grid: dict[str, Any]) -> np.ndarray:
        dims, t = grid["dimensions"], grid["affineTransform"]
        h, w = dims["height"], dims["width"]
        xs = t["translateX"] + t["scaleX"] * (np.arange(w) + 0.5)
        ys = t["translateY"] + t["scaleY"] * (np.arange(h) + 0.5)
        out = np.zeros((h, w), PIXEL_DTYPE)
        out["blue"] = xs[None, :]
        out["green"] = ys[:, None]
        out["red"] = list(self.images).index(image_id)
        out["nir"], out["swir1"], out["swir2"] = 0.4, 0.2, 0.1
        out["qa"] = self.images[image_id][2]
        if image_id in self.nodata_ids and t["translateX"] == grid_origin_x():
            out["qa"][:, 0] = 0
            out["blue"][:, 0] = 0
        return out


#: What the fake server returns per pixel: the six float32 reflectance bands and the uint8 qa band.
PIXEL_DTYPE = np.dtype([(n, "<f4") for n in ("blue", "green", "red", "nir", "swir1", "swir2")] + [("qa", "u1")])


def service_request_bytes(width: int, height: int, dtype: np.dtype | list[str]) -> int:
    """The size the service charges a computePixels request: every band is cast to the widest band
    type and carries one mask byte (https://github.com/google/Xee/issues/209)."""
    sizes = [dtype.fields[name][0].itemsize for name in dtype.names] if isinstance(dtype, np.dtype) else [
        np.dtype(d).itemsize for d in dtype]
    return width * height * len(sizes) * (max(sizes) + 1)


def grid_origin_x() -> float:
    return 500_000 - 10.0  # the licence bounds minus one 10 m pixel


# --------------------------------------------------------------------------------------------
# fixtures


def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_a: Any, **_k: Any) -> Any:
        raise OSError(errno.ENETUNREACH, "Network is unreachable (test socket guard)")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: (_ for _ in ()).throw(
        socket.gaierror(socket.EAI_NONAME, "Name or service not known (test socket guard)")))


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No network, no credentials in the environment, ``ee`` not initialised."""
    from gmsense.sources import earthengine

    _no_network(monkeypatch)
    for var in ("GOOGLE_APPLICATION_CREDENTIALS", "GMSENSE_EE_CREDENTIALS", "GMSENSE_EE_PROJECT",
                "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CONFIG", "EE_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    ee.Reset()
    earthengine.clear_listing_memo()
    yield
    ee.Reset()


@pytest.fixture
def server(offline: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    """The ee client initialised as in ``ee.apitestcase`` and wired to a :class:`FakeServer`."""
    monkeypatch.setattr(ee.data, "_install_cloud_api_resource", lambda: None)
    monkeypatch.setattr(ee.data, "getAlgorithms", apitestcase.GetAlgorithms)
    ee.Initialize(None, "", project="my-project")
    fake = FakeServer()
    for i, (day, share, qa) in enumerate([(0, 0.9, 2), (5, 0.8, 2), (10, 0.5, 1), (15, 0.7, 2)]):
        fake.images[f"{graphs.S2_COLLECTION}/2021060{i}_T50TPT"] = (T0_MS + day * DAY_MS, share, qa)
    with apitestcase.UsingCloudApi(mock_http=fake):
        yield fake


def _cfg(tmp_path: Path, **kw: Any) -> EarthEngineSettings:
    return EarthEngineSettings(cache_dir=str(tmp_path / "cache"), **kw)


def _join_fetch_threads() -> None:
    """Wait for the fetcher's pool threads still finishing work after a failed fetch (they end once
    their current image is written; the timeout only bounds a failing test)."""
    for thread in threading.enumerate():
        if thread.name.startswith("gmsense-ee"):
            thread.join(timeout=60)


def _load(server: FakeServer, tmp_path: Path, **kw: Any) -> Any:
    from gmsense.sources.earthengine import clear_listing_memo, load_cube

    clear_listing_memo()
    cfg = _cfg(tmp_path, **kw.pop("cfg", {}))
    limiter = kw.pop("limiter", RequestLimiter(cfg.max_concurrent))
    return load_cube(cfg, LICENCE, UTM50N, "2021-06-01", "2021-06-30", site_id="L-1",
                     limiter=limiter, policy=kw.pop("policy", FAST), **kw)


# --------------------------------------------------------------------------------------------
# pure helpers


def test_plan_tiles_one_request_when_it_fits() -> None:
    assert plan_tiles(42, 31, 25) == [Window(0, 0, 42, 31)]
    # 4000 x 4000 px at 25 B = 400 MB: split, every tile under the limit
    tiles = plan_tiles(4000, 4000, 25)
    assert len(tiles) > 1
    assert all(t.width * t.height * 25 <= REQUEST_BYTE_LIMIT for t in tiles)


@settings(max_examples=60, deadline=None)
@given(width=st.integers(1, 3000), height=st.integers(1, 3000), bpp=st.integers(1, 40),
       limit=st.integers(2_000, 400_000), side=st.integers(16, 5000))
def test_plan_tiles_cover_the_grid_once_within_limits(width: int, height: int, bpp: int, limit: int,
                                                      side: int) -> None:
    if limit // bpp < 1:
        return
    tiles = plan_tiles(width, height, bpp, byte_limit=limit, max_side=side)
    cover = np.zeros((height, width), int)
    for t in tiles:
        assert t.width * t.height * bpp <= limit
        assert t.width <= side
        assert t.height <= side
        cover[t.row_off:t.row_off + t.height, t.col_off:t.col_off + t.width] += 1
    assert (cover == 1).all()


def test_request_size_follows_the_service_rule() -> None:
    # Xee issue 209: "Total request size (57353670 bytes)" = 1845 x 1727 px x 2 float64 bands x (8 + 1).
    assert service_request_bytes(1845, 1727, ["<f8", "<f8"]) == 57_353_670
    assert request_bytes_per_pixel([8, 8]) * 1845 * 1727 == 57_353_670
    # Mixed types are cast to the widest: a uint8 band costs as much as a float32 one.
    assert request_bytes_per_pixel([4, 4, 4, 4, 4, 4, 1]) == 7 * 5
    assert REQUEST_BYTE_LIMIT == 50_331_648
    for spec in graphs.SPECS.values():
        assert spec.bytes_per_pixel == 35
        assert spec.bytes_per_pixel == service_request_bytes(1, 1, PIXEL_DTYPE)


@pytest.mark.parametrize("resolution_m", [10.0, 30.0])
@pytest.mark.parametrize("n_float_bands", [1, 3, 6, 10])
@pytest.mark.parametrize("side_km", [(12.5, 11.0), (40.0, 25.0), (150.0, 90.0), (400.0, 30.0)])
def test_tiles_of_large_licences_are_never_refused_by_the_service(resolution_m: float, n_float_bands: int,
                                                                  side_km: tuple[float, float]) -> None:
    dtypes = ["<f4"] * n_float_bands + ["u1"]
    width, height = (math.ceil(km * 1000 / resolution_m) for km in side_km)
    tiles = plan_tiles(width, height, request_bytes_per_pixel([np.dtype(d).itemsize for d in dtypes]))
    for t in tiles:
        assert service_request_bytes(t.width, t.height, dtypes) <= REQUEST_BYTE_LIMIT
        assert t.width <= MAX_GRID_SIDE_PX
        assert t.height <= MAX_GRID_SIDE_PX
    assert sum(t.width * t.height for t in tiles) == width * height


def test_the_old_estimate_sent_requests_the_service_refuses() -> None:
    # One mask byte per pixel (6 x 4 + 1 = 25 B) let a 1300 x 1300 px Sentinel-2 licence go out as one
    # request of 59 MB by the service's rule; the service's rule cuts it in two.
    assert plan_tiles(1300, 1300, 25) == [Window(0, 0, 1300, 1300)]
    assert service_request_bytes(1300, 1300, PIXEL_DTYPE) > REQUEST_BYTE_LIMIT
    assert len(plan_tiles(1300, 1300, graphs.SPECS["sentinel-2"].bytes_per_pixel)) == 2


def test_plan_tiles_respects_the_side_limit() -> None:
    tiles = plan_tiles(70_000, 10, 1)
    assert max(t.width for t in tiles) <= 32_768
    assert sum(t.width for t in tiles) == 70_000


def test_backoff_grows_is_capped_and_jittered() -> None:
    assert backoff_delay(0, 1.0, 60.0, 1.0) == pytest.approx(1.0)
    assert backoff_delay(3, 1.0, 60.0, 1.0) == pytest.approx(8.0)
    assert backoff_delay(10, 1.0, 60.0, 1.0) == pytest.approx(60.0)
    assert backoff_delay(3, 1.0, 60.0, 0.0) == pytest.approx(4.0)


@pytest.mark.parametrize(("exc", "kind"), [
    (TimeoutError("read timed out"), "retry"),
    (ConnectionError("Name or service not known"), "network"),
    (ValueError("bad"), "fatal"),
])
def test_classify_plain_errors(exc: Exception, kind: str) -> None:
    assert classify_error(exc) == kind


def test_limiter_bounds_the_rate() -> None:
    limiter = RequestLimiter(50, max_rps=20)
    t0 = time.perf_counter()
    for _ in range(30):
        with limiter.slot():
            pass
    # 20 tokens at once, then 10 more at 20/s
    assert time.perf_counter() - t0 >= 0.4


def test_default_settings_stay_under_the_project_quota() -> None:
    cfg = Settings().earthengine
    assert cfg.max_concurrent <= 40 / 2
    assert cfg.max_rps <= 100 / 2
    assert cfg.cs_cdf_threshold == 0.60


# --------------------------------------------------------------------------------------------
# golden computation graphs


@pytest.mark.parametrize("collection", ["sentinel-2", "landsat"])
def test_graphs_match_golden_files(server: FakeServer, collection: str) -> None:
    from gmsense.sources.earthengine import date_window, licence_grid

    spec = graphs.SPECS[collection]
    grid = licence_grid(LICENCE, UTM50N, spec.resolution_m, spec.grid_origin_m)
    start, end = date_window(spec, "2021-05-01", "2021-09-30")
    t = grid.transform
    rect = graphs.rectangle((t.c, t.f + t.e * grid.height, t.c + t.a * grid.width, t.f), crs_code(grid.crs))
    image_id = (f"{graphs.S2_COLLECTION}/20210614T030541_20210614T030540_T50TPT" if collection == "sentinel-2"
                else f"{graphs.LANDSAT_COLLECTIONS[0]}/LC08_119027_20210614")
    got = {"listing": graphs.encode(graphs.listing_graph(spec, rect, start, end, 0.6)),
           "image": graphs.encode(graphs.image_graph(spec, image_id, 0.6))}
    path = GOLDEN / f"{collection}.json"
    if os.environ.get("GMSENSE_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    assert got == json.loads(path.read_text()), f"graph differs from {path}; GMSENSE_UPDATE_GOLDEN=1 to accept"

    text = json.dumps(got)
    assert (start, end) == ("2021-05-01", "2021-10-01")
    assert '"2021-05-01"' in text
    assert '"2021-10-01"' in text
    assert "[499990.0, 4999990.0, 500410.0, 5000310.0]" in text.replace("\n", "") or collection == "landsat"
    assert '"EPSG:32650"' in text
    for cid in spec.collections:
        assert f'"{cid}"' in text
    if collection == "sentinel-2":
        assert f'"{graphs.CLOUD_SCORE_PLUS}"' in text
        assert '"cs_cdf"' in text
        assert "0.6" in text
        assert "0.0001" in text
    else:
        assert "2.75e-05" in text
        assert "-0.2" in text
        assert '"QA_RADSAT"' in text
        assert "63" in text  # QA_PIXEL bits 0-5


# --------------------------------------------------------------------------------------------
# the fetch against the fake server


def test_cube_contract_values_and_same_day_merge(server: FakeServer, tmp_path: Path) -> None:
    # a second Sentinel-2 tile of the first day (overlapping MGRS tiles): merged, clear wins
    first_day = T0_MS
    server.images[f"{graphs.S2_COLLECTION}/20210600_T50TQT"] = (first_day + 1000, 0.4, 1)
    server.nodata_ids.add(f"{graphs.S2_COLLECTION}/20210601_T50TPT")
    res = _load(server, tmp_path)
    cube = res.cube
    assert res.stats.images_fetched == 5
    assert res.stats.tiles_per_image == 1
    assert cube.sizes == {"time": 4, "y": 32, "x": 42}
    assert str(cube.rio.crs) == "EPSG:32650"
    assert cube.attrs["source"] == "earthengine"
    assert cube.attrs["platform"] == "sentinel-2"
    assert cube.attrs["resolution_m"] == 10.0
    assert str(cube.time.dtype) == "datetime64[ns]"
    assert [str(t)[:10] for t in cube.time.values] == ["2021-06-02", "2021-06-07", "2021-06-12", "2021-06-17"]
    for band in ("blue", "green", "red", "nir", "swir1", "swir2"):
        assert cube[band].dtype == np.float32
    assert cube.clear.dtype == bool
    loaded = cube.compute()
    np.testing.assert_array_equal(loaded.blue.values[0], np.broadcast_to(cube.x.values, (32, 42)))
    np.testing.assert_array_equal(loaded.green.values[0].T[0], cube.y.values)
    # first day: the clear image (number 0) wins over the cloudy second tile (number 4)
    assert (loaded.red.values[0] == 0).all()
    assert loaded.clear.values[0].all()
    # no-data column -> NaN and not clear; cloudy image -> observed, not clear
    assert np.isnan(loaded.blue.values[1][:, 0]).all()
    assert not loaded.clear.values[1][:, 0].any()
    assert loaded.clear.values[1][:, 1:].all()
    assert not loaded.clear.values[2].any()
    assert np.isfinite(loaded.red.values[2]).all()
    assert server.pixel_calls[0]["fileFormat"] == "NPY"
    assert server.pixel_calls[0]["workloadTag"] == "gmsense-scan-sentinel-2"
    assert server.pixel_calls[0]["grid"]["crsCode"] == "EPSG:32650"


def test_tiles_stay_under_the_byte_limit(server: FakeServer, tmp_path: Path) -> None:
    limit = 35 * 200  # 200 pixels of 7 bands (6 float32 + the qa band cast to float32) x (4 + 1 mask byte)
    server.byte_limit = limit  # the server refuses anything larger, by its own rule
    res = _load(server, tmp_path, byte_limit=limit)
    assert res.stats.tiles_per_image > 1
    assert server.rejected == []
    assert res.stats.size_splits == 0
    sizes = [c["grid"]["dimensions"] for c in server.pixel_calls]
    assert len(sizes) == 4 * res.stats.tiles_per_image
    assert all(service_request_bytes(d["width"], d["height"], PIXEL_DTYPE) <= limit for d in sizes)
    loaded = res.cube.compute()
    np.testing.assert_array_equal(loaded.blue.values[0], np.broadcast_to(res.cube.x.values, (32, 42)))
    np.testing.assert_array_equal(loaded.green.values[3].T[0], res.cube.y.values)


class FullHouseGate:
    """Holds each request at the server until ``slots`` requests are in flight at once (or every
    request still to come is): proves, without timing, that the fetcher keeps every allowed slot
    busy. A request that waits ``patience_s`` without that happening is counted as starved (the
    timeout only bounds a failing test)."""

    def __init__(self, server: FakeServer, slots: int, total: int, patience_s: float = 60.0) -> None:
        self.server, self.slots, self.total, self.patience_s = server, slots, total, patience_s
        self.cond = threading.Condition()
        self.answered = 0
        self.round = 0
        self.starved = 0

    def _full(self) -> bool:
        return self.server.in_flight >= min(self.slots, self.total - self.answered)

    def __call__(self) -> None:
        with self.cond:
            my_round = self.round
            if self._full():
                self.round += 1
                self.cond.notify_all()
            elif not self.cond.wait_for(lambda: self.round > my_round or self._full(), timeout=self.patience_s):
                self.starved += 1
            self.answered += 1
            self.cond.notify_all()  # fewer requests remain: the others may now have a full house


@pytest.mark.parametrize(("collection", "resolution_m"), [("sentinel-2", 10.0), ("landsat", 30.0)])
def test_a_large_licence_is_fetched_without_a_refused_request(server: FakeServer, tmp_path: Path, collection: str,
                                                              resolution_m: float) -> None:
    from gmsense.sources.earthengine import clear_listing_memo, load_cube

    # 1300 x 1200 px: under the old estimate (25 B a pixel, 39 MB) one request; by the service's
    # rule 54.6 MB, over the 48 MiB limit of the real service (which the fake server enforces).
    first = next(iter(server.images))
    server.images = {first: server.images[first]}
    licence = box(500_000, 5_000_000, 500_000 + 1298 * resolution_m, 5_000_000 + 1198 * resolution_m)
    clear_listing_memo()
    res = load_cube(_cfg(tmp_path, collection=collection), licence, UTM50N, "2021-06-01", "2021-06-30",
                    site_id="BIG", limiter=RequestLimiter(2), policy=FAST)
    assert server.rejected == []
    assert res.stats.tiles_per_image == 2
    assert res.stats.size_splits == 0
    dims = [c["grid"]["dimensions"] for c in server.pixel_calls]
    n_pixels = res.cube.sizes["x"] * res.cube.sizes["y"]
    assert sum(d["width"] * d["height"] for d in dims) == n_pixels
    assert n_pixels * 25 <= REQUEST_BYTE_LIMIT < n_pixels * 35, "one request by the old estimate, too big really"
    cube = res.cube.isel(time=0).compute()
    np.testing.assert_array_equal(cube.blue.values[-1], cube.x.values.astype("float32"))
    np.testing.assert_array_equal(cube.green.values[:, -1], cube.y.values.astype("float32"))


def test_a_request_the_server_finds_too_large_is_halved_and_retried(server: FakeServer, tmp_path: Path) -> None:
    server.byte_limit = 35 * 400  # stricter than the client's own plan (one request of 42 x 32 px)
    res = _load(server, tmp_path)
    assert res.stats.tiles_per_image == 1
    assert len(server.rejected) == 4 * 3, "each image: the whole grid, then both halves, are refused"
    assert res.stats.size_splits == 12
    assert res.stats.images_fetched == 4
    dims = [c["grid"]["dimensions"] for c in server.pixel_calls]
    assert all(service_request_bytes(d["width"], d["height"], PIXEL_DTYPE) <= server.byte_limit for d in dims)
    assert sum(d["width"] * d["height"] for d in dims) == 4 * 42 * 32
    loaded = res.cube.compute()
    for k in range(4):
        np.testing.assert_array_equal(loaded.blue.values[k], np.broadcast_to(res.cube.x.values, (32, 42)))
        np.testing.assert_array_equal(loaded.green.values[k].T[0], res.cube.y.values)


def test_halving_a_refused_request_is_bounded(server: FakeServer, tmp_path: Path) -> None:
    from gmsense.sources.earthengine._fetch import MAX_SIZE_SPLITS

    server.byte_limit = 35 * 10  # 10 pixels: no piece of 1/16 of 42 x 32 px gets through
    with pytest.raises(EarthEngineError, match=r"HTTP 400\): Total request size \(\d+ bytes\) must be less than "
                                               r"or equal to 350 bytes.*halved 4 times"):
        _load(server, tmp_path, cfg={"max_concurrent": 1})
    _join_fetch_threads()
    per_image = Counter(re.search(r'"constantValue": "([^"]+_T50TPT)"', json.dumps(c["expression"])).group(1)
                        for c in server.rejected)
    # The first failure cancels the rest; no image is tried more than a full halving tree allows.
    assert max(per_image.values()) <= 2 ** (MAX_SIZE_SPLITS + 1) - 1
    assert server.pixel_calls == []


def test_never_more_than_max_concurrent_in_flight(server: FakeServer, tmp_path: Path) -> None:
    for i in range(12):
        server.images[f"{graphs.S2_COLLECTION}/202107{i:02d}_T50TPT"] = (T0_MS + (20 + i) * DAY_MS, 0.9, 2)
    n_requests = 16 * 2  # 16 images, 2 tiles each
    gate = FullHouseGate(server, 3, n_requests)
    server.gate = gate
    res = _load(server, tmp_path, cfg={"max_concurrent": 3}, byte_limit=35 * 800)
    assert res.stats.tiles_per_image == 2
    assert res.stats.requests == len(server.pixel_calls) == n_requests
    assert server.peak == 3, "all three allowed requests were in flight together, never a fourth"
    assert gate.starved == 0
    assert res.stats.peak_in_flight == 3


def test_shared_limiter_bounds_two_licences_at_once(server: FakeServer, tmp_path: Path) -> None:
    server.latency_s = 0.01
    limiter = RequestLimiter(2)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            _load(server, tmp_path / f"t{i}", limiter=limiter)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert server.peak <= 2


def test_retries_on_429_5xx_and_timeouts(server: FakeServer, tmp_path: Path) -> None:
    # Scripted per image: whichever thread fetches which image, and in whatever order, each image
    # meets exactly its own errors (FAST allows 3 retries, so none of them gives up).
    ids = list(server.images)
    server.outcomes = {ids[0]: deque([429, 503]), ids[1]: deque(["timeout"]), ids[2]: deque([500, 429, 503])}
    res = _load(server, tmp_path, cfg={"max_concurrent": 2})
    assert res.stats.retries == 6
    assert res.stats.images_fetched == 4
    assert len(server.pixel_calls) == 10
    calls = Counter(re.search(r'"constantValue": "([^"]+_T50TPT)"', json.dumps(c["expression"])).group(1)
                    for c in server.pixel_calls)
    assert calls == {ids[0]: 3, ids[1]: 2, ids[2]: 4, ids[3]: 1}
    assert all(not script for script in server.outcomes.values()), "every scripted error was served"
    loaded = res.cube.compute()
    np.testing.assert_array_equal(loaded.blue.values[0], np.broadcast_to(res.cube.x.values, (32, 42)))


def test_gives_up_after_the_retries(server: FakeServer, tmp_path: Path) -> None:
    server.fail_ids[f"{graphs.S2_COLLECTION}/20210602_T50TPT"] = 503
    with pytest.raises(EarthEngineError, match=r"HTTP 503.*Service unavailable.*after 3 retries"):
        _load(server, tmp_path, cfg={"max_concurrent": 1})


def test_bad_request_fails_at_once_with_the_server_message(server: FakeServer, tmp_path: Path) -> None:
    bad = f"{graphs.S2_COLLECTION}/20210601_T50TPT"
    server.fail_ids[bad] = 400
    waits: list[float] = []
    with pytest.raises(EarthEngineError, match=r"HTTP 400\): User memory limit exceeded") as info:
        _load(server, tmp_path, policy=RetryPolicy(retries=5, base_delay_s=1.0), sleep=waits.append)
    assert waits == [], "a 400 must not be retried (no back-off either)"
    assert "\n" not in str(info.value)
    assert bad in str(info.value)
    assert sum(bad in json.dumps(c["expression"]) for c in server.pixel_calls) == 1


def test_second_run_fetches_nothing_and_a_rescan_only_new_images(server: FakeServer, tmp_path: Path) -> None:
    first = _load(server, tmp_path)
    assert first.stats.images_fetched == 4
    server.reset_counts()
    again = _load(server, tmp_path)
    assert server.pixel_calls == []
    assert again.stats.images_cached == 4
    assert again.cube.compute().identical(first.cube.compute())
    server.images[f"{graphs.S2_COLLECTION}/20210620_T50TPT"] = (T0_MS + 20 * DAY_MS, 0.9, 2)
    server.reset_counts()
    later = _load(server, tmp_path)
    assert len(server.pixel_calls) == 1
    assert later.cube.sizes["time"] == 5


def test_interrupted_fetch_resumes(server: FakeServer, tmp_path: Path) -> None:
    bad = f"{graphs.S2_COLLECTION}/20210603_T50TPT"
    server.fail_ids[bad] = 400
    with pytest.raises(EarthEngineError):
        _load(server, tmp_path, cfg={"max_concurrent": 1})
    _join_fetch_threads()  # images already being fetched when the 400 came finish their cache write
    cached = {p.name for p in (tmp_path / "cache" / "sentinel-2").iterdir()}
    assert len(cached) == 1
    store = PixelCache(tmp_path / "cache" / "sentinel-2" / cached.pop())
    done = store.complete_ids()
    assert bad not in done
    # The bad image is the last one queued: it only starts once an earlier image is complete.
    assert 1 <= len(done) <= 3
    del server.fail_ids[bad]
    server.reset_counts()
    res = _load(server, tmp_path)
    assert len(server.pixel_calls) == 4 - len(done), "only the images not cached are fetched again"
    assert res.stats.images_cached == len(done)
    assert res.cube.sizes["time"] == 4


def test_images_without_clear_pixels_are_not_fetched(server: FakeServer, tmp_path: Path) -> None:
    server.images[f"{graphs.S2_COLLECTION}/20210625_T50TPT"] = (T0_MS + 23 * DAY_MS, 0.0, 1)
    res = _load(server, tmp_path, cfg={"min_clear_fraction": 0.6})
    assert res.cube.sizes["time"] == 3  # shares 0.9, 0.8, 0.7 are above 0.6; 0.5 and 0.0 are not


def test_source_registry_load_and_latest_date(server: FakeServer, tmp_path: Path) -> None:
    from gmsense.sources import SOURCE_NAMES, get_source

    settings = Settings().with_overrides({"earthengine.cache_dir": str(tmp_path / "cache"),
                                          "earthengine.retries": 0})
    source = get_source("earthengine", settings)
    assert "earthengine" in SOURCE_NAMES
    assert source.name == "earthengine"
    site = Site("L-2", LICENCE, UTM50N)
    assert source.latest_date(site, "2021-06-01", "2021-06-30") == "2021-06-17"
    cube = source.load(site, site.buffered(settings.sites.buffer_m), "2021-06-01", "2021-06-30")
    assert cube.sizes["time"] == 4
    assert len(server.value_calls) == 1, "latest_date's listing is reused by load"
    import pickle

    assert pickle.loads(pickle.dumps(source)) == source


def test_throughput_keeps_the_allowed_requests_busy(server: FakeServer, tmp_path: Path) -> None:
    # Not a stopwatch (a loaded machine makes any rate threshold flaky): every request is held at
    # the server until all 8 allowed requests are in flight (or all that remain), so the fetch only
    # completes without starving if the fetcher refills each freed slot while other threads decode
    # and write finished images to the Zarr cache.
    for i in range(44):
        server.images[f"{graphs.S2_COLLECTION}/2021{7 + i // 28:02d}{1 + i % 28:02d}_T50TPT"] = (
            T0_MS + (20 + i) * DAY_MS, 0.9, 2)
    gate = FullHouseGate(server, 8, 48)
    server.gate = gate
    res = _load(server, tmp_path, cfg={"max_concurrent": 8, "min_clear_fraction": 0.0})
    assert res.stats.images_fetched == 48
    assert gate.starved == 0
    assert server.peak == 8


def test_measure_throughput_runs_the_real_fetcher(tmp_path: Path) -> None:
    from gmsense.sources.earthengine import measure_throughput

    # A smoke test of the benchmark helper; its rates are for `gmsense bench`, not asserted here
    # (they depend on the machine's load).
    result = measure_throughput(12, latency_s=0.01, max_concurrent=4, size_px=16, cache_dir=tmp_path)
    assert result["requests"] == 12
    assert 1 <= result["peak_in_flight"] <= 4
    assert 0.0 < result["utilisation"] <= 1.0 + 1e-9


# --------------------------------------------------------------------------------------------
# no credentials, no network, the check command


def test_no_credentials_fails_within_seconds(offline: None) -> None:
    from gmsense.sources import get_source

    t0 = time.perf_counter()
    with pytest.raises(EarthEngineError, match="no usable Earth Engine credentials"):
        get_source("earthengine", Settings())
    assert time.perf_counter() - t0 < 30, "no hang (generous for a loaded machine)"


def test_missing_key_file_says_so(offline: None, tmp_path: Path) -> None:
    from gmsense.sources.earthengine import connect

    with pytest.raises(EarthEngineError, match="does not exist"):
        connect(EarthEngineSettings(credentials=str(tmp_path / "nope.json")))


def _service_account_key(path: Path) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "gmsense-test", "private_key_id": "0" * 40,
        "private_key": pem, "client_email": "scanner@gmsense-test.iam.gserviceaccount.com",
        "client_id": "1", "token_uri": "https://oauth2.googleapis.com/token"}))
    return path


def test_no_network_fails_within_seconds_with_one_line(offline: None, tmp_path: Path) -> None:
    from gmsense.sources.earthengine import connect

    key = _service_account_key(tmp_path / "key.json")
    t0 = time.perf_counter()
    with pytest.raises(EarthEngineError) as info:
        connect(EarthEngineSettings(credentials=str(key)), deadline_s=10)
    # The guard refuses at once; the bound only says "no hang" (generous for a loaded machine).
    assert time.perf_counter() - t0 < 30
    message = str(info.value)
    assert "\n" not in message
    assert "cannot reach Earth Engine" in message or "no answer from Earth Engine" in message


def test_sources_check_cli(offline: None) -> None:
    from gmsense.cli import app

    result = CliRunner().invoke(app, ["sources", "check", "earthengine"])
    assert result.exit_code == 1
    assert "no usable Earth Engine credentials" in result.output
    assert "Traceback" not in result.output


def test_sources_check_cli_reachable(server: FakeServer) -> None:
    from gmsense.cli import app

    result = CliRunner().invoke(app, ["sources", "check", "earthengine"])
    assert result.exit_code == 0, result.output
    assert "Earth Engine reachable" in result.output


def test_pixel_grid_request() -> None:
    grid = Grid(UTM50N, Affine(10, 0, 1000, 0, -10, 2000), 50, 40)
    req = request_grid(grid, Window(10, 20, 5, 4))
    assert req["dimensions"] == {"width": 5, "height": 4}
    assert req["affineTransform"]["translateX"] == 1100
    assert req["affineTransform"]["translateY"] == 1800
    assert req["crsCode"] == "EPSG:32650"


def test_grid_keys_and_cache_paths_stay_those_of_the_caches_on_disk(tmp_path: Path) -> None:
    """The licence grid, its key and the cache folder it names are those the fetcher used before
    the grid was shared (written out here): a changed key would orphan every cache on disk."""
    from gmsense.sources.earthengine import licence_grid

    grid = licence_grid(LICENCE, UTM50N, 10.0)
    assert (grid.crs, grid.width, grid.height) == (UTM50N, 42, 32)
    assert grid.bounds == (499_990.0, 4_999_990.0, 500_410.0, 5_000_310.0)
    assert grid_key(grid) == "EPSG:32650|10.0,0.0,499990.0,0.0,-10.0,5000310.0|42x32"
    assert grid_key(licence_grid(LICENCE, UTM50N, 30.0)) == "EPSG:32650|30.0,0.0,499950.0,0.0,-30.0,5000340.0|16x13"
    cache = PixelCache.for_key(tmp_path, "sentinel-2", "A/1", grid, ["blue", "red"], {"x": 1})
    assert cache.path == tmp_path / "sentinel-2" / "A_1-73f0c5da3d93.zarr"
    assert request_grid(grid, Window(1, 2, 3, 4)) == {
        "dimensions": {"width": 3, "height": 4},
        "affineTransform": {"scaleX": 10.0, "shearX": 0.0, "translateX": 500_000.0,
                            "shearY": 0.0, "scaleY": -10.0, "translateY": 5_000_290.0},
        "crsCode": "EPSG:32650",
    }
