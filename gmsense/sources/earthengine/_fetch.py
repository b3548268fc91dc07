"""The pixel fetcher behind the ``earthengine`` source (private): tiling, rate limits, retries, cache.

Nothing here imports ``ee``: a *client* (anything with ``compute_pixels(expression, grid)``, see
:class:`PixelClient`) does the talking, so the fetcher is tested against fakes and measured by
:func:`gmsense.sources.earthengine.measure_throughput`.

* :func:`plan_tiles` splits a licence's grid into requests under the computePixels limits;
* :class:`RequestLimiter` bounds requests in flight and requests started per second, shared by
  every thread of the process (:func:`shared_limiter`);
* :func:`call_with_retries` retries HTTP 429, 5xx, timeouts and dropped connections (a reset, a
  response cut short) with exponential back-off and jitter, an unreachable server only once the
  service has answered in this process, and fails at once (with the server's message) on anything
  else, e.g. a 400; a 400 for a request over the size limit ("Total request size") is instead halved
  and retried by :func:`fetch_to_cache` (at most :data:`MAX_SIZE_SPLITS` times deep);
* :func:`plan_requests` counts the computePixels requests of a grid without making any
  (``gmsense plan``);
* :class:`PixelCache` keeps fetched images in a Zarr store keyed by (collection, licence, grid,
  bands, image id), so a rescan fetches only new images and an interrupted fetch resumes;
* :func:`fetch_to_cache` puts it together for a list of images.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

import numpy as np
import pyproj
from affine import Affine

from gmsense.errors import GmsenseError
from gmsense.geo.grid import Grid

# --------------------------------------------------------------------------------------------
# limits (https://developers.google.com/earth-engine/apidocs/ee-data-computepixels and
# https://developers.google.com/earth-engine/reference/rest/v1/projects.image/computePixels:
# "Requests are limited to 48MB in uncompressed data per request, computed as the product of the
# request dimensions in pixels, the number of image bands requested, and the number of bytes per
# pixel for each band. Requests are also limited to at most 32K pixels in either dimension and at
# most 1024 bands. Requests exceeding these limits will result in an error code of 400.")
#
# What the service actually counts (https://github.com/google/Xee/issues/209, fixed in Xee the
# same way): every band costs its data bytes *plus one mask byte*, and a multi-band request is
# cast to the widest band type, so a pixel costs ``n_bands * (widest dtype size + 1)`` bytes. A
# refusal logged there reads "Total request size (57353670 bytes) must be less than or equal to
# 50331648 bytes" for 1845 x 1727 px x 2 float64 bands x (8 + 1). Our requests: 6 float32
# reflectance bands + the uint8 qa band, cast to float32: 7 x (4 + 1) = 35 bytes a pixel.

#: Uncompressed bytes one computePixels request may return (48 MiB = 50,331,648 bytes).
REQUEST_BYTE_LIMIT = 48 * 2**20
#: The mask byte the service counts per band and pixel, on top of the band's data bytes.
MASK_BYTES_PER_BAND = 1
#: How often a request the server still refuses as too large ("Total request size") is halved
#: and retried before the licence fails (2**4 = 16 pieces of the planned tile at most).
MAX_SIZE_SPLITS = 4
#: Widest / tallest grid one computePixels request may ask for, pixels ("32K").
MAX_GRID_SIDE_PX = 32_768
#: Bands one request may ask for.
MAX_BANDS = 1024
#: Project quotas (https://developers.google.com/earth-engine/guides/usage, "Adjustable quota
#: limits"): 40 concurrent interactive requests and 100 requests/s per project. The settings
#: ``earthengine.max_concurrent`` / ``max_rps`` are per process and must stay under them.
PROJECT_MAX_CONCURRENT = 40
PROJECT_MAX_RPS = 100.0
#: Seconds a failed fetch waits for the other running requests / cache writes before it raises.
FAIL_GRACE_S = 2.0
#: HTTP statuses worth retrying: too many requests, and server-side failures.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

T = TypeVar("T")


class EarthEngineError(GmsenseError):
    """Earth Engine cannot be used or refused a request; the message says what to fix."""


# --------------------------------------------------------------------------------------------
# tiling


def request_bytes_per_pixel(band_dtype_sizes: Sequence[int]) -> int:
    """Bytes one pixel of a computePixels request costs against :data:`REQUEST_BYTE_LIMIT`, by the
    service's rule: every band is cast to the widest band type and carries a mask byte, so
    ``len(bands) * (max(sizes) + MASK_BYTES_PER_BAND)``. ``band_dtype_sizes``: bytes per value of
    each band as requested (float32 4, uint8 1, float64 8, ...)."""
    if not band_dtype_sizes or min(band_dtype_sizes) < 1:
        raise ValueError("a request needs at least one band, each of at least one byte")
    return len(band_dtype_sizes) * (max(band_dtype_sizes) + MASK_BYTES_PER_BAND)


def is_request_too_large(exc: BaseException) -> bool:
    """The server's 400 for a request over the byte limit ("Total request size (N bytes) must be
    less than or equal to 50331648 bytes.")."""
    return http_status(exc) == 400 and "total request size" in str(exc).lower()


def halve(window: Window) -> tuple[Window, Window] | None:
    """``window`` cut in two across its longer side; None for a single pixel."""
    if window.width >= window.height and window.width > 1:
        left = window.width // 2
        return (Window(window.col_off, window.row_off, left, window.height),
                Window(window.col_off + left, window.row_off, window.width - left, window.height))
    if window.height > 1:
        top = window.height // 2
        return (Window(window.col_off, window.row_off, window.width, top),
                Window(window.col_off, window.row_off + top, window.width, window.height - top))
    return None


@dataclass(frozen=True)
class Window:
    """A block of the licence grid: offsets and size in pixels."""

    col_off: int
    row_off: int
    width: int
    height: int


def plan_tiles(width: int, height: int, bytes_per_pixel: int, *, byte_limit: int = REQUEST_BYTE_LIMIT,
               max_side: int = MAX_GRID_SIDE_PX) -> list[Window]:
    """Windows covering a ``width`` x ``height`` grid, each under ``byte_limit`` bytes and ``max_side``.

    One window when the whole grid fits (the usual case for a licence); otherwise the fewest
    columns of tiles that respect ``max_side``, then as few rows as the byte limit allows, sizes
    balanced so the last tile is not a sliver. Tiles are row-major and never overlap.
    """
    if width < 1 or height < 1 or bytes_per_pixel < 1:
        raise ValueError("grid and pixel size must be positive")
    max_pixels = byte_limit // bytes_per_pixel
    if max_pixels < 1:
        raise ValueError(f"one pixel ({bytes_per_pixel} bytes) exceeds the request limit of {byte_limit} bytes")
    if width * height <= max_pixels and width <= max_side and height <= max_side:
        return [Window(0, 0, width, height)]
    n_cols = math.ceil(width / max_side)
    while True:
        tile_w = math.ceil(width / n_cols)
        tile_h = min(max_side, max_pixels // tile_w, height)
        if tile_h >= 1:
            break
        n_cols += 1
    n_rows = math.ceil(height / tile_h)
    tile_h = math.ceil(height / n_rows)
    return [Window(c, r, min(tile_w, width - c), min(tile_h, height - r))
            for r in range(0, height, tile_h) for c in range(0, width, tile_w)]


@dataclass(frozen=True)
class RequestPlan:
    """The computePixels requests of one grid, counted without making any: tiles per image,
    requests for all images, and the largest request's size by the service's rule, bytes."""

    tiles_per_image: int
    requests: int
    largest_request_bytes: int


def plan_requests(width: int, height: int, bytes_per_pixel: int, images: int, *,
                  byte_limit: int = REQUEST_BYTE_LIMIT, max_side: int = MAX_GRID_SIDE_PX) -> RequestPlan:
    """The requests :func:`fetch_to_cache` sends for ``images`` images of a ``width`` x ``height``
    grid (the tiles of :func:`plan_tiles`, one request each), before any the server might still
    refuse and have halved."""
    tiles = plan_tiles(width, height, bytes_per_pixel, byte_limit=byte_limit, max_side=max_side)
    largest = max(t.width * t.height for t in tiles) * bytes_per_pixel
    return RequestPlan(len(tiles), images * len(tiles), largest)


def crs_code(crs: pyproj.CRS) -> str:
    """``EPSG:<code>``: how Earth Engine names a CRS (``crsCode``). The licence grids are built in
    an EPSG-coded projected CRS (:func:`gmsense.sources.earthengine.licence_grid` checks it)."""
    code = crs.to_epsg()
    if code is None:
        raise EarthEngineError(f"CRS {crs.name} has no EPSG code; Earth Engine names a CRS by its EPSG code")
    return f"EPSG:{code}"


def request_grid(grid: Grid, window: Window) -> dict[str, Any]:
    """The computePixels ``grid`` (PixelGrid JSON) of ``window`` of ``grid``: its size in pixels,
    the affine transform of its upper-left pixel corner (metres of the grid's CRS) and the CRS code."""
    t = grid.transform * Affine.translation(window.col_off, window.row_off)
    return {
        "dimensions": {"width": window.width, "height": window.height},
        "affineTransform": {"scaleX": t.a, "shearX": t.b, "translateX": t.c,
                            "shearY": t.d, "scaleY": t.e, "translateY": t.f},
        "crsCode": crs_code(grid.crs),
    }


def grid_key(grid: Grid) -> str:
    """A stable text naming ``grid`` (CRS code, transform, size) in the cache and listing keys.

    Caches on disk are keyed by it: its format must not change
    (``EPSG:32650|10.0,0.0,499990.0,0.0,-10.0,5000310.0|42x32``)."""
    t = grid.transform
    return f"{crs_code(grid.crs)}|{t.a!r},{t.b!r},{t.c!r},{t.d!r},{t.e!r},{t.f!r}|{grid.width}x{grid.height}"


# --------------------------------------------------------------------------------------------
# rate and concurrency limits


class RequestLimiter:
    """At most ``max_concurrent`` requests in flight and ``max_rps`` started per second (token
    bucket holding one second's worth), across every thread that uses this object.

    Also measures: ``peak`` requests in flight, ``started`` requests, and the busy integral from
    which :meth:`utilisation` (mean in-flight / ``max_concurrent``) is computed.
    """

    def __init__(self, max_concurrent: int, max_rps: float | None = None, *,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self.max_concurrent = max_concurrent
        self.max_rps = max_rps
        self._clock, self._sleep = clock, sleep
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._lock = threading.Lock()
        self._capacity = max(1.0, float(max_rps)) if max_rps else 0.0
        self._tokens = self._capacity
        self._refilled = clock()
        self.in_flight = 0
        self.reset_stats()

    def reset_stats(self) -> None:
        """Start measuring afresh (peak, started, utilisation)."""
        with self._lock:
            self.peak = self.in_flight
            self.started = 0
            self._area = 0.0
            self._since = self._last = self._clock()

    def _account(self, now: float) -> None:
        self._area += self.in_flight * (now - self._last)
        self._last = now

    def _take_token(self) -> None:
        if not self.max_rps:
            return
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(self._capacity, self._tokens + (now - self._refilled) * self.max_rps)
                self._refilled = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                wait_s = (1.0 - self._tokens) / self.max_rps
            self._sleep(wait_s)

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one request slot (waiting for a free slot, then for a rate token)."""
        self._slots.acquire()
        try:
            self._take_token()
            with self._lock:
                self._account(self._clock())
                self.in_flight += 1
                self.started += 1
                self.peak = max(self.peak, self.in_flight)
            try:
                yield
            finally:
                with self._lock:
                    self._account(self._clock())
                    self.in_flight -= 1
        finally:
            self._slots.release()

    def utilisation(self) -> float:
        """Mean requests in flight since :meth:`reset_stats`, as a share of ``max_concurrent``."""
        with self._lock:
            now = self._clock()
            self._account(now)
            elapsed = now - self._since
            return self._area / (self.max_concurrent * elapsed) if elapsed > 0 else 0.0


_LIMITERS: dict[tuple[int, float | None], RequestLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def shared_limiter(max_concurrent: int, max_rps: float | None) -> RequestLimiter:
    """The process-wide limiter for these limits: every licence loaded in this process (any thread)
    shares it, so concurrent licences together stay within ``max_concurrent`` and ``max_rps``."""
    with _LIMITERS_LOCK:
        key = (int(max_concurrent), float(max_rps) if max_rps else None)
        if key not in _LIMITERS:
            _LIMITERS[key] = RequestLimiter(*key)
        return _LIMITERS[key]


# --------------------------------------------------------------------------------------------
# errors and retries


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        reason = getattr(e, "reason", None)  # urllib3's MaxRetryError keeps the failed connection's error there
        todo += [e.__cause__, e.__context__, reason if isinstance(reason, BaseException) else None,
                 *(a for a in getattr(e, "args", ()) if isinstance(a, BaseException))]


def http_status(exc: BaseException) -> int | None:
    """The HTTP status behind ``exc``: ee raises ``EEException(reason)`` while handling the
    googleapiclient ``HttpError`` (``.resp.status``), so the status is found on the chain."""
    for e in _chain(exc):
        for value in (getattr(getattr(e, "resp", None), "status", None), getattr(e, "status_code", None)):
            with contextlib.suppress(TypeError, ValueError):
                if value is not None:
                    return int(value)
    return None


def _is_instance(exc: BaseException, module: str, name: str) -> bool:
    return any(type(e).__name__ == name and type(e).__module__.startswith(module) for e in _chain(exc))


def is_timeout(exc: BaseException) -> bool:
    """A request that timed out (socket, requests or httplib2 timeouts; ee maps them to TimeoutError)."""
    return any(isinstance(e, TimeoutError) for e in _chain(exc)) or _is_instance(exc, "requests", "Timeout") \
        or _is_instance(exc, "requests", "ReadTimeout") or _is_instance(exc, "requests", "ConnectTimeout")


def is_connection_error(exc: BaseException) -> bool:
    """The network is unreachable (DNS, refused, no route, proxy) or the token server is."""
    return any(isinstance(e, ConnectionError) for e in _chain(exc)) or _is_instance(
        exc, "requests", "ConnectionError") or _is_instance(exc, "google.auth", "TransportError") or _is_instance(
        exc, "httplib2", "ServerNotFoundError")


# How a connection failure shows up through the ee client (earthengine-api 1.x): its HTTP layer
# (``ee._cloud_api_utils._Http.request``) re-raises requests' ConnectionError and
# ChunkedEncodingError as the builtin ConnectionError (``from`` the original), precisely so that
# googleapiclient's own retry loop treats them as transient; with the client's retries off (ours
# are used instead) that ConnectionError reaches us. Below it, requests tells the two cases apart:
# a connection that could not be made is a urllib3 MaxRetryError whose ``reason`` is a
# NewConnectionError (NameResolutionError for DNS, ConnectionRefusedError inside for a refusal); a
# connection that broke during the request is a urllib3 ProtocolError ("Connection aborted.":
# ConnectionResetError, RemoteDisconnected) or, while the answer is read, requests'
# ChunkedEncodingError ("Connection broken: IncompleteRead(...)").

#: Errors on the chain meaning no connection could be made: DNS, refused, no route, proxy.
UNREACHABLE_ERRORS = (("urllib3", "NewConnectionError"), ("urllib3", "NameResolutionError"),
                      ("socket", "gaierror"), ("httplib2", "ServerNotFoundError"), ("urllib3", "ProxyError"),
                      ("requests", "ProxyError"))
#: Errnos of an unreachable network (no route, network down) when they come as a bare OSError.
UNREACHABLE_ERRNOS = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN})
#: Errors on the chain meaning an established connection broke: a reset, an aborted or half-read answer.
DROPPED_ERRORS = (("requests", "ChunkedEncodingError"), ("urllib3", "ProtocolError"),
                  ("http.client", "IncompleteRead"), ("http.client", "RemoteDisconnected"))


def _named(e: BaseException, names: Sequence[tuple[str, str]]) -> bool:
    return any(type(e).__name__ == name and type(e).__module__.startswith(module) for module, name in names)


def connection_failure(exc: BaseException) -> str | None:
    """``"unreachable"`` when no connection could be made (DNS, refused, no route, proxy),
    ``"dropped"`` when an established one broke (reset, aborted, answer cut short), None when
    ``exc`` is no connection failure. A failure showing signs of both counts as unreachable."""
    chain = list(_chain(exc))
    if any(_named(e, UNREACHABLE_ERRORS) or isinstance(e, ConnectionRefusedError)
           or (isinstance(e, OSError) and e.errno in UNREACHABLE_ERRNOS) for e in chain):
        return "unreachable"
    if any(_named(e, DROPPED_ERRORS) or isinstance(e, ConnectionResetError | ConnectionAbortedError | BrokenPipeError)
           for e in chain):
        return "dropped"
    return "unreachable" if is_connection_error(exc) else None


#: Set once Earth Engine has answered a request in this process. Before that, an unreachable
#: server is a set-up problem (network, proxy, firewall) and fails at once with one line; after
#: it, it is a blip in the middle of a scan and is retried like a timeout.
_SERVICE_ANSWERED = threading.Event()


def service_answered() -> bool:
    """Whether Earth Engine has answered a request in this process (see :data:`_SERVICE_ANSWERED`)."""
    return _SERVICE_ANSWERED.is_set()


def forget_service_answered() -> None:
    """Back to "nothing answered yet" (tests; a process that changes networks)."""
    _SERVICE_ANSWERED.clear()


def server_message(exc: BaseException) -> str:
    """One line: the server's message (ee puts it in the exception text)."""
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


def classify_error(exc: BaseException) -> str:
    """``"retry"`` for HTTP 429 / 5xx, timeouts and dropped connections (:func:`connection_failure`),
    ``"network"`` for an unreachable server, ``"fatal"`` otherwise."""
    status = http_status(exc)
    if status is not None:
        return "retry" if status in RETRY_STATUSES or 500 <= status < 600 else "fatal"
    if is_timeout(exc):
        return "retry"
    failure = connection_failure(exc)
    if failure == "dropped":
        return "retry"
    return "network" if failure == "unreachable" else "fatal"


def is_retryable(exc: BaseException) -> bool:
    """Worth another try: :func:`classify_error` says ``"retry"``, or ``"network"`` once the
    service has answered in this process (:func:`service_answered`)."""
    kind = classify_error(exc)
    return kind == "retry" or (kind == "network" and service_answered())


def backoff_delay(attempt: int, base_s: float, max_s: float, jitter: float) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): ``base_s * 2**attempt`` capped at
    ``max_s``, scaled by ``0.5 + jitter / 2`` (``jitter`` in [0, 1)) so threads do not retry in step."""
    return min(max_s, base_s * 2.0**attempt) * (0.5 + 0.5 * jitter)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry; the defaults suit the real service."""

    retries: int = 5
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0


@dataclass
class CallStats:
    """Counts shared by the calls of one fetch (thread-safe increments)."""

    requests: int = 0
    retries: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, requests: int = 0, retries: int = 0) -> None:
        with self.lock:
            self.requests += requests
            self.retries += retries


def describe_failure(exc: BaseException, what: str) -> str:
    """The one-line message for a request that failed for good."""
    status = http_status(exc)
    message = server_message(exc)
    if status in (401, 403):
        return (f"Earth Engine refused {what} (HTTP {status}): {message}; check the credentials and that the "
                "Cloud project is registered for Earth Engine (earthengine.project)")
    if status is not None:
        return f"Earth Engine refused {what} (HTTP {status}): {message}"
    if is_timeout(exc):
        return f"Earth Engine did not answer {what} in time ({message}); raise earthengine.timeout_s or retry later"
    if connection_failure(exc) == "dropped":
        return (f"the connection to Earth Engine broke during {what} ({message}); check the network and proxy "
                "(HTTPS_PROXY), or retry later")
    if is_connection_error(exc):
        return (f"cannot reach Earth Engine for {what} ({message}); check the network, proxy (HTTPS_PROXY) "
                "and firewall")
    return f"Earth Engine failed {what}: {message}"


def call_with_retries(fn: Callable[[], T], *, limiter: RequestLimiter, policy: RetryPolicy, what: str,
                      stats: CallStats | None = None, sleep: Callable[[float], None] = time.sleep,
                      rng: Callable[[], float] = random.random) -> T:
    """``fn()`` inside a limiter slot; retried on 429, 5xx, timeouts and dropped connections (and on
    an unreachable server once the service has answered: :func:`is_retryable`), the slot released
    while backing off; fails at once on anything else. Raises :class:`EarthEngineError`."""
    for attempt in range(policy.retries + 1):
        try:
            if stats is not None:
                stats.add(requests=1)
            with limiter.slot():
                value = fn()
            _SERVICE_ANSWERED.set()
            return value
        except EarthEngineError:
            raise
        except Exception as exc:
            if not is_retryable(exc) or attempt == policy.retries:
                suffix = f" (after {attempt} retries)" if attempt else ""
                raise EarthEngineError(describe_failure(exc, what) + suffix) from exc
            if stats is not None:
                stats.add(retries=1)
            sleep(backoff_delay(attempt, policy.base_delay_s, policy.max_delay_s, rng()))
    raise AssertionError("unreachable")  # pragma: no cover


# --------------------------------------------------------------------------------------------
# cache


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:120] or "_"


class PixelCache:
    """Fetched images of one (collection, licence, grid, bands, mask) in one Zarr store.

    One group per image (named after the image id) holding ``bands`` (float32, ``(band, y, x)``,
    reflectance, NaN = not observed) and ``qa`` (uint8, ``(y, x)``: 0 no data, 1 cloudy, 2 clear),
    with attrs ``image_id``, ``time_ms`` and ``complete``. ``complete`` is written last, so an image
    interrupted half-way is fetched again.
    """

    _locks: ClassVar[dict[str, threading.Lock]] = {}
    _locks_guard: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def for_key(cls, root: Path, collection: str, site_id: str, grid: Grid,
                bands: Sequence[str], extra: dict[str, Any]) -> PixelCache:
        """The cache of one licence: ``root/<collection>/<site_id>-<digest>.zarr``; the digest covers
        the grid, the bands and ``extra`` (collection ids, mask threshold, scale factors)."""
        blob = json.dumps({"grid": grid_key(grid), "bands": list(bands), **extra}, sort_keys=True, default=str)
        digest = hashlib.sha256(blob.encode()).hexdigest()[:12]
        return cls(Path(root).expanduser() / _safe(collection) / f"{_safe(site_id)}-{digest}.zarr")

    @property
    def _lock(self) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(str(self.path.resolve()), threading.Lock())

    @staticmethod
    def node(image_id: str) -> str:
        """The group name of an image id (ids hold slashes)."""
        return _safe(image_id.replace("/", "~"))

    def complete_ids(self) -> set[str]:
        """Ids of the images fully stored."""
        import zarr

        if not self.path.exists():
            return set()
        group = zarr.open_group(str(self.path), mode="r")
        done = set()
        for _name, sub in group.groups():
            attrs = sub.attrs
            if attrs.get("complete") and attrs.get("image_id"):
                done.add(str(attrs["image_id"]))
        return done

    def ensure(self) -> None:
        """Create the store (its root group) if it does not exist yet."""
        import zarr

        with self._lock:
            if not (self.path / "zarr.json").exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
                zarr.open_group(str(self.path), mode="a")

    def write(self, image_id: str, time_ms: int, bands: np.ndarray, qa: np.ndarray) -> None:
        """Store one image (``bands`` float32 ``(band, y, x)``, ``qa`` uint8 ``(y, x)``); marks it complete last.

        Images live in separate groups, so threads may write different images at once (Zarr v3
        writes no parent listing); the same image is written by one thread only.
        """
        import zarr

        self.ensure()
        root = zarr.open_group(str(self.path), mode="a")
        sub = root.create_group(self.node(image_id), overwrite=True)
        chunk = (bands.shape[0], min(bands.shape[1], 2048), min(bands.shape[2], 2048))
        sub.create_array("bands", data=np.asarray(bands, "float32"), chunks=chunk)
        sub.create_array("qa", data=np.asarray(qa, "uint8"), chunks=chunk[1:])
        sub.attrs.update({"image_id": image_id, "time_ms": int(time_ms), "complete": True})

    def read(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        """``(bands, qa)`` of a stored image."""
        import zarr

        sub = zarr.open_group(str(self.path), mode="r")[self.node(image_id)]
        return np.asarray(sub["bands"][...]), np.asarray(sub["qa"][...])


# --------------------------------------------------------------------------------------------
# the fetch


class PixelClient(Protocol):
    def compute_pixels(self, expression: Any, grid: dict[str, Any]) -> np.ndarray:
        """A structured array ``(height, width)`` with one field per band (computePixels, NUMPY_NDARRAY)."""
        ...


@dataclass(frozen=True)
class ImageRef:
    """One image of the listing: its ``system:id``, acquisition time (ms since 1970, UTC) and the
    clear share of the licence rectangle (0..1; None if the server could not tell)."""

    image_id: str
    time_ms: int
    clear_share: float | None = None


@dataclass
class FetchStats:
    """What one fetch did."""

    images_cached: int = 0
    images_fetched: int = 0
    requests: int = 0
    retries: int = 0
    tiles_per_image: int = 0
    seconds: float = 0.0
    peak_in_flight: int = 0
    utilisation: float = 0.0
    size_splits: int = 0  # requests the server refused as too large, halved and retried


def _split_fields(block: np.ndarray, bands: Sequence[str], qa_band: str) -> tuple[np.ndarray, np.ndarray]:
    names = block.dtype.names or ()
    missing = [b for b in (*bands, qa_band) if b not in names]
    if missing:
        raise EarthEngineError(f"Earth Engine returned bands {', '.join(names) or 'none'}; "
                               f"missing {', '.join(missing)}")
    qa = np.asarray(block[qa_band], "uint8")
    values = np.stack([np.asarray(block[b], "float32") for b in bands])
    values[:, qa == 0] = np.nan
    return values, qa


def fetch_block(client: PixelClient, expression: Any, grid: Grid, window: Window, *, bands: Sequence[str],
                qa_band: str, limiter: RequestLimiter, policy: RetryPolicy, label: str, calls: CallStats | None = None,
                sleep: Callable[[float], None] = time.sleep, on_split: Callable[[], None] | None = None,
                splits: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(values, qa)`` of ``window`` of ``grid``: one computePixels request of ``expression`` (retried by
    :func:`call_with_retries`), split into ``bands`` (float32 ``(band, y, x)``, NaN where qa is 0) and the
    uint8 ``qa_band``. A request the server still finds too large is halved and retried, at most
    :data:`MAX_SIZE_SPLITS` times deep (``on_split`` is called for each halving)."""
    try:
        block = call_with_retries(lambda: client.compute_pixels(expression, request_grid(grid, window)),
                                  limiter=limiter, policy=policy, what=label, stats=calls, sleep=sleep)
    except EarthEngineError as exc:
        halves = halve(window) if splits < MAX_SIZE_SPLITS and is_request_too_large(exc) else None
        if halves is None:
            if is_request_too_large(exc):
                raise EarthEngineError(f"{exc} (the request was halved {splits} times)") from exc
            raise
        if on_split is not None:
            on_split()
        parts = [fetch_block(client, expression, grid, half, bands=bands, qa_band=qa_band, limiter=limiter,
                             policy=policy, label=label, calls=calls, sleep=sleep, on_split=on_split,
                             splits=splits + 1) for half in halves]
        axis = 1 if halves[0].row_off == halves[1].row_off else 0  # side by side: columns; else rows
        return (np.concatenate([p[0] for p in parts], axis=axis + 1),
                np.concatenate([p[1] for p in parts], axis=axis))
    if block.shape != (window.height, window.width):
        raise EarthEngineError(f"Earth Engine returned {block.shape} pixels for {label}; asked for "
                               f"{(window.height, window.width)}")
    return _split_fields(block, bands, qa_band)


def fetch_to_cache(images: Sequence[ImageRef], *, grid: Grid, bands: Sequence[str], qa_band: str,
                   bytes_per_pixel: int, expression_for: Callable[[str], Any], client: PixelClient,
                   cache: PixelCache, limiter: RequestLimiter, policy: RetryPolicy,
                   byte_limit: int = REQUEST_BYTE_LIMIT, max_side: int = MAX_GRID_SIDE_PX,
                   sleep: Callable[[float], None] = time.sleep, what: str = "") -> FetchStats:
    """Fetch every image of ``images`` not yet in ``cache`` into it; returns what was done.

    Each image is one multi-band request per tile of :func:`plan_tiles`; all tiles of all images
    go through one thread pool (the limiter bounds requests for the process as a whole). The first
    request that fails for good cancels the rest and raises
    :class:`EarthEngineError`; images completed before it stay cached.
    """
    t0 = time.perf_counter()
    stats = FetchStats()
    done = cache.complete_ids()
    todo = [ref for ref in images if ref.image_id not in done]
    stats.images_cached = len(images) - len(todo)
    tiles = plan_tiles(grid.width, grid.height, bytes_per_pixel, byte_limit=byte_limit, max_side=max_side)
    stats.tiles_per_image = len(tiles)
    if not todo:
        return stats
    calls = CallStats()
    limiter.reset_stats()
    lock = threading.Lock()
    partial: dict[str, tuple[np.ndarray, np.ndarray, list[int]]] = {}

    def count_split() -> None:
        with lock:
            stats.size_splits += 1

    def fetch_tile(ref: ImageRef, window: Window) -> None:
        expression = expression_for(ref.image_id)
        label = f"the pixels of {ref.image_id}{what}"
        values, qa = fetch_block(client, expression, grid, window, bands=bands, qa_band=qa_band, limiter=limiter,
                                 policy=policy, label=label, calls=calls, sleep=sleep, on_split=count_split)
        with lock:
            if ref.image_id not in partial:
                partial[ref.image_id] = (np.full((len(bands), grid.height, grid.width), np.nan, "float32"),
                                         np.zeros((grid.height, grid.width), "uint8"), [0])
            full, full_qa, count = partial[ref.image_id]
            rows = slice(window.row_off, window.row_off + window.height)
            cols = slice(window.col_off, window.col_off + window.width)
            full[:, rows, cols] = values
            full_qa[rows, cols] = qa
            count[0] += 1
            finished = count[0] == len(tiles)
            if finished:
                del partial[ref.image_id]
        if finished:
            cache.write(ref.image_id, ref.time_ms, full, full_qa)
            with lock:
                stats.images_fetched += 1

    # Twice as many threads as request slots: while some threads decode and write finished images
    # to the cache, others hold every slot (the limiter, not the pool, bounds requests).
    cache.ensure()
    pool = ThreadPoolExecutor(max_workers=2 * limiter.max_concurrent, thread_name_prefix="gmsense-ee")
    futures: list[Future[None]] = [pool.submit(fetch_tile, ref, w) for ref in todo for w in tiles]
    try:
        wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in futures if f.done() and not f.cancelled() and f.exception() is not None), None)
        if failed is not None:
            for f in futures:
                f.cancel()
            # let images already fetched finish their cache write (bounded), so a rerun resumes there
            wait([f for f in futures if not f.done()], timeout=FAIL_GRACE_S)
            exc = failed.exception()
            if isinstance(exc, EarthEngineError):
                raise exc
            raise EarthEngineError(f"fetching pixels{what} failed: {server_message(exc)}") from exc
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    stats.requests, stats.retries = calls.requests, calls.retries
    stats.seconds = time.perf_counter() - t0
    stats.peak_in_flight = limiter.peak
    stats.utilisation = limiter.utilisation()
    return stats
