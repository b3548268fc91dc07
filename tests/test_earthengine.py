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
import http.client
import io
import itertools
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
import requests
import urllib3
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
    forget_service_answered,
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
HOUR_MS = 3_600_000
T0_MS = 1_622_592_000_000  # 2021-06-02 00:00 UTC


# --------------------------------------------------------------------------------------------
# the fake server (HTTP layer under the real client)


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


#: Bands the graphs select besides a collection's reflectance bands (graphs.SPECS' source names):
#: Sentinel-2's scene class and Cloud Score+, Landsat Collection 2's QA bands, and the graphs' own qa.
MASK_BANDS = frozenset({"SCL", "cs_cdf", "QA_PIXEL", "QA_RADSAT", graphs.QA_BAND})
#: Collections a graph may load besides those of graphs.SPECS (linked for its masks).
LINKED_COLLECTIONS = frozenset({graphs.CLOUD_SCORE_PLUS})


def _dropped(reason: str, cause: BaseException) -> BaseException:
    from urllib3.exceptions import ProtocolError

    return requests.exceptions.ConnectionError(ProtocolError(reason, cause))


def _unreachable(cause: BaseException) -> BaseException:
    from urllib3.exceptions import MaxRetryError

    return requests.exceptions.ConnectionError(MaxRetryError(None, "/v1/projects/my-project", cause))  # type: ignore[arg-type]


def _refused() -> BaseException:
    from urllib3.exceptions import NewConnectionError

    return _unreachable(NewConnectionError(None, "Failed to establish a new connection: [Errno 111] "  # type: ignore[arg-type]
                                                 "Connection refused"))


def _no_dns() -> BaseException:
    from urllib3.exceptions import NameResolutionError

    return _unreachable(NameResolutionError("earthengine.googleapis.com", None,  # type: ignore[arg-type]
                                            socket.gaierror(socket.EAI_NONAME, "Name or service not known")))


#: Connection failures as requests raises them (shapes taken from a local socket server that resets,
#: cuts a chunked answer or refuses), by the names tests script them with.
REQUESTS_FAILURES: dict[str, Callable[[], BaseException]] = {
    "reset": lambda: _dropped("Connection aborted.",
                              ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")),
    "disconnect": lambda: _dropped("Connection aborted.", http.client.RemoteDisconnected(
        "Remote end closed connection without response")),
    "chunked": lambda: requests.exceptions.ChunkedEncodingError(urllib3.exceptions.ProtocolError(
        "Connection broken: IncompleteRead(9186238 bytes read, 1299762 more expected)",
        http.client.IncompleteRead(b"", 1_299_762))),
    "refused": _refused,
    "dns": _no_dns,
}


class _FailingSession:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def request(self, *_a: Any, **_k: Any) -> Any:
        raise self.exc


def raise_as_ee_does(kind: str) -> None:
    """Raise the connection failure ``kind`` of :data:`REQUESTS_FAILURES` through ee's own HTTP layer
    (``ee._cloud_api_utils._Http``), which turns requests' ConnectionError and ChunkedEncodingError
    into the builtin ConnectionError, as the real client does."""
    from ee._cloud_api_utils import _Http

    _Http(_FailingSession(REQUESTS_FAILURES[kind]())).request("https://earthengine.googleapis.com/v1", "POST")  # type: ignore[arg-type]


class Call(dict):
    """A function call of a decoded graph: ``{"fn": name, "args": {...}}``."""


def decode_graph(encoded: dict[str, Any]) -> Any:
    """The Cloud API JSON of an expression as nested :class:`Call`s and constants (shared values decoded once)."""
    values, memo = encoded["values"], {}

    def ref(key: str) -> Any:
        if key not in memo:
            memo[key] = node(values[key])
        return memo[key]

    def node(v: dict[str, Any]) -> Any:
        if "constantValue" in v:
            return v["constantValue"]
        if "valueReference" in v:
            return ref(v["valueReference"])
        if "arrayValue" in v:
            return [node(x) for x in v["arrayValue"]["values"]]
        if "dictionaryValue" in v:
            return {k: node(x) for k, x in v["dictionaryValue"]["values"].items()}
        if "functionInvocationValue" in v:
            f = v["functionInvocationValue"]
            return Call(fn=f["functionName"], args={k: node(x) for k, x in f.get("arguments", {}).items()})
        if "functionDefinitionValue" in v:
            return ref(v["functionDefinitionValue"]["body"])
        return v  # argumentReference

    return ref(encoded["result"])


def graph_calls(graph: Any, fn: str) -> list[dict[str, Any]]:
    """The arguments of every call of ``fn`` in a decoded graph."""
    found, seen, todo = [], set(), [graph]
    while todo:
        item = todo.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, Call):
            if item["fn"] == fn:
                found.append(item["args"])
            todo.append(item["args"])
        elif isinstance(item, dict):
            todo += list(item.values())
        elif isinstance(item, list):
            todo += item
    return found


def specs_of_collection(collection: str) -> list[graphs.CollectionSpec]:
    return [spec for spec in graphs.SPECS.values() if collection in spec.collections]


def lattice_offsets(spec: graphs.CollectionSpec) -> set[float]:
    """Where a request grid's pixel edges may fall, modulo the pixel size: on its multiples (the
    lattice anchored at the CRS origin; Sentinel-2's native 10/20/60 m lattice) or, for Landsat, half
    a pixel off (Collection 2 pixel centres on multiples of 30 m, edges on odd multiples of 15 m).
    Either Landsat anchoring passes, so the check holds before and after the grid is re-anchored."""
    offsets = {0.0}
    if any(c.startswith("LANDSAT/") for c in spec.collections):
        offsets.add(spec.resolution_m / 2)
    return offsets


def grid_violations(grid: dict[str, Any], spec: graphs.CollectionSpec) -> list[str]:
    """What is wrong with a computePixels ``grid`` for ``spec``: pixel size, shear, lattice, CRS."""
    t, res = grid["affineTransform"], spec.resolution_m
    out = []
    if (t["scaleX"], t["scaleY"], t.get("shearX", 0), t.get("shearY", 0)) != (res, -res, 0, 0):
        out.append(f"grid transform {t} is not a north-up {res:g} m grid")
    for axis in ("translateX", "translateY"):
        offset = t[axis] % res
        if not any(math.isclose(offset, o, abs_tol=1e-6) or math.isclose(offset, o + res, abs_tol=1e-6)
                   for o in lattice_offsets(spec)):
            out.append(f"grid {axis} {t[axis]} is off the {spec.key} lattice (offset {offset:g} m of {res:g} m)")
    if not re.fullmatch(r"EPSG:\d+", str(grid.get("crsCode", ""))):
        out.append(f"grid crsCode {grid.get('crsCode')!r} is not an EPSG code")
    return out


def band_violations(graph: Any, spec: graphs.CollectionSpec) -> list[str]:
    """Bands selected or named in ``graph`` that ``spec`` does not have."""
    # Each collection's own band names, and the common names a merged archive selects after renaming.
    known = {b for _, names in spec.sources for b in names} | set(spec.common_names) | MASK_BANDS
    out = [f"band {b!r} is not a band of {spec.key}" for sel in graph_calls(graph, "Image.select")
           for b in (sel["bandSelectors"] if isinstance(sel["bandSelectors"], list) else [sel["bandSelectors"]])
           if isinstance(b, str) and b not in known]
    renamed = [r["names"] for r in graph_calls(graph, "Image.rename")]
    return out + [f"bands renamed to {names}, not {spec.common_names}" for names in renamed
                  if names not in (spec.common_names, [graphs.QA_BAND])]


class FakeServer:
    """An httplib2-like ``request`` answering the Earth Engine Cloud API.

    ``images``: image id -> (time ms, clear share, qa) where qa is 2 (clear), 1 (cloudy); pixels
    of column 0 of ``nodata_ids`` are not observed. Band values tell where they came from: ``blue``
    = x of the pixel centre, ``green`` = y (metres, UTM), ``red`` = the image's number in
    ``images``. The listing answers the images of the collections and dates the expression asks for.

    Scripted failures, so which thread asks first does not matter: ``outcomes`` per image id (a
    deque each, served in order: an int status, ``"timeout"``, or a connection failure of
    :data:`REQUESTS_FAILURES` raised as ee's HTTP layer raises it; empty = 200), ``value_outcomes``
    the same per listing page (keyed by the page's start date). ``fail_ids``: image id -> a status
    it always gets.

    Like the service, it refuses (HTTP 400 "Total request size (N bytes) must be less than or equal
    to L bytes.") any request whose size by the service's rule (:func:`service_request_bytes`)
    exceeds ``byte_limit``; refused requests are kept in ``rejected``. It checks what it receives
    (collection ids and band names against graphs.SPECS, the grid's pixel size and lattice): a
    request that fails a check is answered with HTTP 400 and listed in ``violations`` (the fixture
    fails a test that leaves any).
    """

    def __init__(self) -> None:
        self.images: dict[str, tuple[int, float, int]] = {}
        self.nodata_ids: set[str] = set()
        self.outcomes: dict[str, deque[int | str]] = {}
        self.value_outcomes: dict[str, deque[int | str]] = {}
        self.fail_ids: dict[str, int] = {}
        self.byte_limit = REQUEST_BYTE_LIMIT
        self.rejected: list[dict[str, Any]] = []
        self.violations: list[str] = []
        self.gate: Callable[[], None] | None = None
        self.latency_s = 0.0
        self.lock = threading.Lock()
        self.in_flight = 0
        self.peak = 0
        self.pixel_calls: list[dict[str, Any]] = []
        self.value_calls: list[dict[str, Any]] = []
        self.pages: list[tuple[str, str]] = []

    def reset_counts(self) -> None:
        self.pixel_calls.clear()
        self.value_calls.clear()
        self.pages.clear()
        self.peak = 0

    def _error(self, status: int, message: str) -> tuple[httplib2.Response, bytes]:
        body = {"error": {"code": status, "message": message, "status": "ERROR"}}
        return httplib2.Response({"status": status, "content-type": "application/json"}), json.dumps(body).encode()

    def _refuse(self, problems: list[str]) -> tuple[httplib2.Response, bytes]:
        with self.lock:
            self.violations += problems
        return self._error(400, "FakeServer: " + "; ".join(problems))

    def _fail(self, outcome: int | str, messages: dict[int, str]) -> tuple[httplib2.Response, bytes] | None:
        """Raise or answer a scripted failure; None for 200."""
        if outcome == "timeout":
            raise TimeoutError("The read operation timed out")
        if isinstance(outcome, str):
            raise_as_ee_does(outcome)
        if outcome != 200:
            return self._error(int(outcome), messages.get(int(outcome), "error"))
        return None

    @staticmethod
    def _next(script: deque[int | str] | None) -> int | str:
        return script.popleft() if script else 200

    def request(self, uri: str, method: str = "GET", body: Any = None, headers: Any = None, **_: Any) -> Any:
        payload = json.loads(body) if body else {}
        if uri.split("?")[0].endswith("value:compute"):
            return self._compute_value(payload)
        if "image:computePixels" not in uri:
            return self._error(404, f"unexpected call {uri}")
        return self._compute_pixels(payload)

    # -- computeValue: the `sources check` probe and the listing

    def _compute_value(self, payload: dict[str, Any]) -> Any:
        with self.lock:
            self.value_calls.append(payload)
        graph = decode_graph(payload["expression"])
        if graph_calls(graph, "Number.add"):  # the `sources check` probe: 1 + 1
            return self._json(2)
        collections = {c["id"] for c in graph_calls(graph, "ImageCollection.load")} - LINKED_COLLECTIONS
        specs = [s for s in graphs.SPECS.values() if set(s.collections) == collections]
        [dates] = graph_calls(graph, "DateRange") or [{"start": None, "end": None}]
        if not specs or dates["start"] is None:
            return self._refuse([f"listing of collections {sorted(collections)} dated {dates}: not a listing of "
                                 "one of graphs.SPECS' collections over a date range"])
        if problems := band_violations(graph, specs[0]):
            return self._refuse(problems)
        with self.lock:
            self.pages.append((dates["start"], dates["end"]))
            outcome = self._next(self.value_outcomes.get(dates["start"]))
        failed = self._fail(outcome, {503: "Service unavailable."})
        if failed is not None:
            return failed
        lo, hi = (pd_ms(dates["start"]), pd_ms(dates["end"]))
        return self._json([[image_id, t, share] for image_id, (t, share, _qa) in self.images.items()
                           if image_id.rsplit("/", 1)[0] in collections and lo <= t < hi])

    @staticmethod
    def _json(result: Any) -> tuple[httplib2.Response, bytes]:
        return httplib2.Response({"status": 200, "content-type": "application/json"}), json.dumps(
            {"result": result}).encode()

    # -- computePixels

    def _check_pixels(self, graph: Any, grid: dict[str, Any]) -> tuple[str | None, list[str]]:
        """The image id a computePixels expression fetches, and what is wrong with the request."""
        ids = [c["id"] for c in graph_calls(graph, "Image.load")]
        own = [i for i in ids if specs_of_collection(i.rsplit("/", 1)[0])]
        problems = [f"image {i} is in no collection of graphs.SPECS" for i in ids if i not in own
                    and i.rsplit("/", 1)[0] not in LINKED_COLLECTIONS]
        if len(own) != 1:
            return None, [*problems, f"expected one image of graphs.SPECS' collections, got {ids}"]
        spec = specs_of_collection(own[0].rsplit("/", 1)[0])[0]
        if own[0] not in self.images:
            problems.append(f"image {own[0]} was never listed")
        return own[0], problems + band_violations(graph, spec) + grid_violations(grid, spec)

    def _compute_pixels(self, payload: dict[str, Any]) -> Any:
        image_id, problems = self._check_pixels(decode_graph(payload["expression"]), payload["grid"])
        if problems or image_id is None:
            return self._refuse(problems)
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
            outcome = self._next(self.outcomes.get(image_id))
        try:
            if self.gate is not None:
                self.gate()
            if self.latency_s:
                time.sleep(self.latency_s)
            failed = self._fail(self.fail_ids.get(image_id, outcome),
                                {429: "Too many concurrent aggregations.", 400: "User memory limit exceeded.",
                                 503: "Service unavailable.", 500: "An internal error has occurred."})
            if failed is not None:
                return failed
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


def pd_ms(iso: str) -> int:
    """Milliseconds since 1970 (UTC) of an ISO date."""
    return int(np.datetime64(iso, "ms").astype("int64"))


def image_of(payload: dict[str, Any]) -> str:
    """The image id a computePixels request fetched."""
    ids = [c["id"] for c in graph_calls(decode_graph(payload["expression"]), "Image.load")]
    return next(i for i in ids if specs_of_collection(i.rsplit("/", 1)[0]))


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
    forget_service_answered()
    yield
    ee.Reset()
    forget_service_answered()


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
    _join_fetch_threads()
    assert fake.violations == [], "the fake server received requests the service would not accept"


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
    first = (next(iter(server.images)) if collection == "sentinel-2"
             else f"{graphs.LANDSAT_COLLECTIONS[0]}/LC08_119027_20210614")
    server.images = {first: (T0_MS, 0.9, 2)}
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
    per_image = Counter(image_of(c) for c in server.rejected)
    # The first failure cancels the rest; no image is tried more than a full halving tree allows.
    assert max(per_image.values()) <= 2 ** (MAX_SIZE_SPLITS + 1) - 1
    assert server.pixel_calls == []


def test_never_more_than_max_concurrent_in_flight(server: FakeServer, tmp_path: Path) -> None:
    for i in range(12):  # within the window listed (June 2021)
        server.images[f"{graphs.S2_COLLECTION}/202107{i:02d}_T50TPT"] = (T0_MS + i * DAY_MS + HOUR_MS, 0.9, 2)
    n_requests = 16 * 2  # 16 images, 2 tiles each
    server.latency_s = 0.002  # requests overlap (how much depends on the machine: only the bound is asserted)
    res = _load(server, tmp_path, cfg={"max_concurrent": 3}, byte_limit=35 * 800)
    assert res.stats.tiles_per_image == 2
    assert res.stats.requests == len(server.pixel_calls) == n_requests, "every request answered, none twice"
    assert Counter(image_of(c) for c in server.pixel_calls) == dict.fromkeys(server.images, 2)
    assert 1 <= server.peak <= 3, "never a fourth request in flight"
    assert 1 <= res.stats.peak_in_flight <= 3


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
    calls = Counter(image_of(c) for c in server.pixel_calls)
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
            T0_MS + i * 14 * HOUR_MS + HOUR_MS, 0.9, 2)  # within the window listed (June 2021)
    gate = FullHouseGate(server, 8, 48)
    server.gate = gate
    res = _load(server, tmp_path, cfg={"max_concurrent": 8, "min_clear_fraction": 0.0})
    assert res.stats.images_fetched == 48
    assert len(server.pixel_calls) == 48, "every image fetched once"
    # A liveness check, not a stopwatch: a request starves only if the fetcher leaves slots idle for
    # the gate's whole patience (60 s), whatever the machine's load.
    assert gate.starved == 0
    assert server.peak <= 8


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


# --------------------------------------------------------------------------------------------
# dropped connections (issue 22 item 3)


@pytest.mark.parametrize(("kind", "expected"), [
    ("reset", "retry"), ("disconnect", "retry"), ("chunked", "retry"), ("refused", "network"), ("dns", "network"),
])
def test_connection_failures_as_the_ee_client_raises_them(kind: str, expected: str) -> None:
    with pytest.raises(ConnectionError) as info:  # ee's HTTP layer turns requests' errors into the builtin one
        raise_as_ee_does(kind)
    assert classify_error(info.value) == expected
    assert classify_error(ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")) == "retry"
    assert classify_error(OSError(errno.ENETUNREACH, "Network is unreachable")) == "network"


def test_dropped_connections_are_retried_per_image(server: FakeServer, tmp_path: Path) -> None:
    ids = list(server.images)
    server.outcomes = {ids[0]: deque(["reset", "reset"]), ids[1]: deque(["chunked"]),
                       ids[2]: deque(["disconnect", 503, "chunked"])}
    res = _load(server, tmp_path, cfg={"max_concurrent": 2})
    assert res.stats.images_fetched == 4
    assert res.stats.retries == 6
    assert Counter(image_of(c) for c in server.pixel_calls) == {ids[0]: 3, ids[1]: 2, ids[2]: 4, ids[3]: 1}
    assert all(not script for script in server.outcomes.values()), "every scripted failure was served"
    loaded = res.cube.compute()
    np.testing.assert_array_equal(loaded.blue.values[0], np.broadcast_to(res.cube.x.values, (32, 42)))


def test_a_connection_dropped_more_often_than_the_retries_fails_the_licence(server: FakeServer,
                                                                           tmp_path: Path) -> None:
    bad = list(server.images)[1]
    server.outcomes = {bad: deque(["reset", "chunked", "reset", "reset", "reset"])}  # FAST: 3 retries
    with pytest.raises(EarthEngineError) as info:
        _load(server, tmp_path, cfg={"max_concurrent": 1})
    message = str(info.value)
    assert "\n" not in message
    assert f"the connection to Earth Engine broke during the pixels of {bad}" in message
    assert "Connection reset by peer" in message
    assert message.endswith("(after 3 retries)")
    _join_fetch_threads()
    assert sum(image_of(c) == bad for c in server.pixel_calls) == 4


def test_an_unreachable_server_at_start_fails_at_once_with_one_line(server: FakeServer, tmp_path: Path) -> None:
    server.value_outcomes = {"2021-06-01": deque(["dns", "dns"])}
    with pytest.raises(EarthEngineError) as info:
        _load(server, tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("cannot reach Earth Engine for the image listing of licence L-1")
    assert "(after" not in message, "not retried"
    assert len(server.value_calls) == 1, "no retry before the service has ever answered"


def test_an_unreachable_server_mid_scan_is_retried(server: FakeServer, tmp_path: Path) -> None:
    ids = list(server.images)
    server.outcomes = {ids[2]: deque(["refused", "dns"])}  # the listing has answered by then
    res = _load(server, tmp_path, cfg={"max_concurrent": 1})
    assert res.stats.images_fetched == 4
    assert sum(image_of(c) == ids[2] for c in server.pixel_calls) == 3


# --------------------------------------------------------------------------------------------
# listing in pages (issue 22 item 5)


def _six_years(server: FakeServer) -> None:
    server.images.clear()
    for k in range(72):  # one image a month, 2018-2023, on the 10th
        year, month = 2018 + k // 12, 1 + k % 12
        server.images[f"{graphs.S2_COLLECTION}/{year}{month:02d}10_T50TPT"] = (
            pd_ms(f"{year}-{month:02d}-10") + HOUR_MS, 0.5 + (k % 5) / 10, 2)


def _list(server: FakeServer, tmp_path: Path, policy: RetryPolicy = FAST) -> list[Any]:
    from gmsense.sources.earthengine import EEClient, clear_listing_memo, date_window, licence_grid, list_images

    clear_listing_memo()
    cfg = _cfg(tmp_path)
    spec = graphs.SPECS[cfg.collection]
    return list_images(cfg, licence_grid(LICENCE, UTM50N, spec.resolution_m),
                       *date_window(spec, "2018-01-01", "2023-12-31"), client=EEClient(),
                       limiter=RequestLimiter(2), policy=policy, site_id="L-1")


def test_a_six_year_window_lists_in_pages_with_the_same_result(server: FakeServer, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from gmsense.sources import earthengine

    _six_years(server)
    paged = _list(server, tmp_path)
    pages = list(server.pages)
    assert len(pages) >= 6
    assert len(set(pages)) == len(pages), "each page asked once"
    assert sorted(pages)[0][0] == "2018-01-01"
    assert sorted(pages)[-1][1] == "2024-01-01"
    server.reset_counts()
    monkeypatch.setattr(earthengine, "page_months", lambda spec: 12 * 6)  # the whole window in one request
    single = _list(server, tmp_path)
    assert server.pages == [("2018-01-01", "2024-01-01")]
    assert paged == single
    assert len(paged) == 72
    assert [r.time_ms for r in paged] == sorted(r.time_ms for r in paged)


def test_a_listing_page_that_times_out_is_retried_alone(server: FakeServer, tmp_path: Path) -> None:
    _six_years(server)
    expected = _list(server, tmp_path)
    n_pages = len(server.pages)
    server.reset_counts()
    server.value_outcomes = {"2019-05-01": deque(["timeout"]), "2022-01-01": deque([503])}
    assert _list(server, tmp_path) == expected
    counts = Counter(server.pages)
    assert len(counts) == n_pages
    assert {page: n for page, n in counts.items() if n > 1} == {("2019-05-01", "2019-09-01"): 2,
                                                                 ("2022-01-01", "2022-05-01"): 2}


def test_listing_pages_cut_the_window_on_calendar_boundaries() -> None:
    from gmsense.sources.earthengine import listing_pages, page_months

    assert listing_pages("2021-06-01", "2021-07-01", 4) == [("2021-06-01", "2021-07-01")]
    pages = listing_pages("2018-03-05", "2024-02-01", 6)
    assert pages[0] == ("2018-03-05", "2018-07-01")
    assert pages[-1] == ("2024-01-01", "2024-02-01")
    assert all(a[1] == b[0] for a, b in itertools.pairwise(pages))
    assert 12 % page_months(graphs.SPECS["sentinel-2"]) == 0
    assert page_months(graphs.SPECS["landsat"]) >= page_months(graphs.SPECS["sentinel-2"])


# --------------------------------------------------------------------------------------------
# the fake server checks what it receives


def test_the_fake_server_refuses_what_the_service_would(server: FakeServer) -> None:
    from gmsense.sources.earthengine import EEClient, licence_grid

    image_id = next(iter(server.images))
    grid = licence_grid(LICENCE, UTM50N, 10.0)
    good = request_grid(grid, Window(0, 0, 4, 4))
    client = EEClient()
    assert client.compute_pixels(graphs.image_graph(graphs.SPECS["sentinel-2"], image_id, 0.6), good).shape == (4, 4)
    shifted = json.loads(json.dumps(good))
    shifted["affineTransform"]["translateX"] += 5.0
    cases = [(graphs.image_graph(graphs.SPECS["sentinel-2"], image_id, 0.6), shifted, "off the sentinel-2 lattice"),
             (graphs.image_graph(graphs.SPECS["landsat"], image_id, 0.6), good, "band 'SR_B2' is not a band of"),
             (graphs.image_graph(graphs.SPECS["sentinel-2"], "COPERNICUS/S2/20210601_T50TPT", 0.6), good,
              "in no collection of graphs.SPECS")]
    for expression, request, problem in cases:
        with pytest.raises(ee.EEException, match=re.escape(problem)):
            client.compute_pixels(expression, request)
    assert len(server.violations) >= 3
    server.violations.clear()
    too_big = request_grid(Grid(UTM50N, grid.transform, 1300, 1200), Window(0, 0, 1300, 1200))
    with pytest.raises(ee.EEException, match=r"Total request size \(54600000 bytes\) must be less than or equal "
                                             r"to 50331648 bytes"):
        client.compute_pixels(graphs.image_graph(graphs.SPECS["sentinel-2"], image_id, 0.6), too_big)


# --------------------------------------------------------------------------------------------
# the plan counts the requests (issue 22, done-when)


@pytest.mark.parametrize("collection", ["sentinel-2", "landsat"])
def test_the_plan_counts_the_requests_the_fetcher_sends(server: FakeServer, tmp_path: Path, collection: str) -> None:
    from gmsense.batch.forecast import forecast
    from gmsense.sources import EarthEngineSource
    from gmsense.sources.earthengine import clear_listing_memo, licence_grid, load_cube

    resolution = graphs.SPECS[collection].resolution_m
    # 14 km x 13 km at 10 m (issue 22: one oversized request before the service's rule); 1300 x 1200 px at 30 m
    big = box(500_000, 5_000_000, 500_000 + 1400 * resolution, 5_000_000 + 1300 * resolution)
    settings = Settings().with_overrides({"earthengine.collection": collection, "sites.buffer_m": 0.0,
                                          "earthengine.cache_dir": str(tmp_path / "cache")})
    site = Site("BIG", big, UTM50N)
    plan = forecast([site], settings, 10**13, 1, start="2021-06-01", end="2021-06-30",
                    source=EarthEngineSource(settings))
    [row] = plan.rows
    assert row.requests is not None
    assert row.requests.largest_bytes <= REQUEST_BYTE_LIMIT == 50_331_648
    grid = licence_grid(site.buffered(0.0), UTM50N, resolution)
    tiles = plan_tiles(grid.width, grid.height, graphs.SPECS[collection].bytes_per_pixel)
    assert len(tiles) >= 2
    images = EarthEngineSource(settings).describe(site, "2021-06-01", "2021-06-30").dates
    assert row.requests.pixels == images * len(tiles)
    assert plan.as_dict()["totals"]["pixel_requests"] == row.requests.pixels
    # what the fetcher really sends for that grid: one image listed, len(tiles) requests, all accepted
    server.images = {(f"{graphs.S2_COLLECTION}/20210602_T50TPT" if collection == "sentinel-2"
                      else f"{graphs.LANDSAT_COLLECTIONS[0]}/LC08_119027_20210602"): (T0_MS, 0.9, 2)}
    clear_listing_memo()
    res = load_cube(settings.earthengine, site.buffered(0.0), UTM50N, "2021-06-01", "2021-06-30", site_id="BIG",
                    limiter=RequestLimiter(2), policy=FAST)
    assert server.rejected == []
    assert len(server.pixel_calls) == res.stats.tiles_per_image == len(tiles)
    sizes = [service_request_bytes(c["grid"]["dimensions"]["width"], c["grid"]["dimensions"]["height"], PIXEL_DTYPE)
             for c in server.pixel_calls]
    assert max(sizes) == row.requests.largest_bytes
    assert row.requests.listing == len(server.pages) == 1
