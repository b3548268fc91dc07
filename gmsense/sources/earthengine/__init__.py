"""Google Earth Engine -> the cube contract (DESIGN.md, "Earth Engine"); ``--source earthengine``.

A thin fetcher around ``ee.data.computePixels`` (no xee), per licence:

1. the grid: the licence's own CRS (the local UTM zone after :func:`gmsense.geo.sites.read_sites`) on
   the collection's native lattice, 10 m (Sentinel-2: edges on multiples of 10 m) or 30 m (Landsat:
   centres on multiples of 30 m, edges at 15 m offsets), covering the monitoring area's bounding box
   plus one pixel (as the local source crops);
2. ``computeValue`` lists the images touching that rectangle in the date range, with their time
   and clear share (:func:`gmsense.sources.earthengine._graph.listing_graph`), one page of a few
   calendar months at a time (:func:`listing_pages`), each page retried on its own; images whose
   clear share is not above ``earthengine.min_clear_fraction`` are not fetched;
3. each remaining image not yet in the Zarr cache is fetched by multi-band ``computePixels``
   requests (NUMPY_NDARRAY), tiled only when over the request limits, under a process-wide
   limit of requests in flight and per second, with retries on 429/5xx/timeouts
   (:mod:`gmsense.sources.earthengine._fetch`);
4. the cube is read lazily (dask, one task per date) from the cache: float32 reflectance under
   the common names, ``clear``, datetime64 ``time`` (UTC day; images of the same day, e.g.
   overlapping Sentinel-2 tiles, are merged preferring clear, then observed pixels) and the
   ``image_id`` coordinate on ``time`` (the Earth Engine image id(s) of each day, joined by ``+``);
   Landsat cubes also carry a ``sensor`` coordinate on ``time`` (``TM``, ``ETM+``, ``OLI``, from the
   ids), and ``landsat-archive`` cubes have their TM / ETM+ days made OLI-like by
   ``earthengine.harmonise`` (:mod:`gmsense.cube.harmonise`, Roy et al. 2016; the cache stays raw).

Authentication: a service-account key file or application default credentials and a Cloud
project, from settings (``earthengine.credentials``, ``earthengine.project``) or the environment
(``GMSENSE_EE_CREDENTIALS``, ``GMSENSE_EE_PROJECT``, ``GOOGLE_CLOUD_PROJECT``). See docs/earthengine.md.
"""

from __future__ import annotations

import io
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import dask
import dask.array as da
import numpy as np
import pandas as pd
import pyproj
import xarray as xr
from affine import Affine
from shapely.geometry.base import BaseGeometry

from gmsense.config import EarthEngineSettings
from gmsense.cube.contract import validate_cube
from gmsense.cube.harmonise import harmonise, with_sensor
from gmsense.errors import ImageryError
from gmsense.geo.grid import Grid, crop_grid
from gmsense.sources.earthengine import _graph as graphs
from gmsense.sources.earthengine._fetch import (
    PROJECT_MAX_CONCURRENT,
    REQUEST_BYTE_LIMIT,
    EarthEngineError,
    FetchStats,
    ImageRef,
    PixelCache,
    RequestLimiter,
    RetryPolicy,
    call_with_retries,
    crs_code,
    describe_failure,
    fetch_to_cache,
    grid_key,
    shared_limiter,
)
from gmsense.sources.local import normalise_crs
from gmsense.sources.shape import LANDSAT_REVISIT_DAYS, SENTINEL2_REVISIT_DAYS

__all__ = ["EarthEngineError", "check", "connect", "load_cube", "measure_throughput"]

#: Seconds ``connect`` waits for credentials and the first answer of the service before it gives
#: up with a message (the client library itself has no deadline on its first call).
CONNECT_DEADLINE_S = 30.0
#: How long a licence's image listing is reused in this process (latest_date then load), seconds.
LISTING_TTL_S = 600.0
#: Images one listing page should hold at most. A page is one computeValue mapping reduceRegion over
#: its images under the request deadline (earthengine.timeout_s, 120 s); a whole multi-year window in
#: one request never finishes over a large licence and a timeout restarted it from scratch
#: (issue 22, docs/earthengine.md "Listing").
LISTING_PAGE_IMAGES = 60
#: Images per acquisition over one licence, for sizing pages: Sentinel-2 tiles overlap and, at 45-50 N,
#: so do neighbouring orbits (and Landsat paths).
LISTING_IMAGES_PER_ACQUISITION = 2
#: Page lengths, months: divisors of a year, so pages start on calendar boundaries (a year, half, ...).
LISTING_PAGE_MONTHS = (12, 6, 4, 3, 2, 1)
#: Revisit of each collection, days, where its spec does not say (``revisit_days``); others: Sentinel-2's.
REVISIT_DAYS = {"sentinel-2": SENTINEL2_REVISIT_DAYS, "landsat": LANDSAT_REVISIT_DAYS}
#: Listing pages requested at once for one licence (the limiter still bounds the process's requests).
LISTING_PAGES_IN_FLIGHT = 4
ENV_PROJECT = ("GMSENSE_EE_PROJECT", "GOOGLE_CLOUD_PROJECT")
ENV_CREDENTIALS = "GMSENSE_EE_CREDENTIALS"
ENV_CACHE = "GMSENSE_EE_CACHE"
T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# connecting


def _with_deadline(fn: Callable[[], T], seconds: float, what: str) -> T:
    """``fn()`` in a daemon thread; :class:`EarthEngineError` if it has not returned within ``seconds``."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, name="gmsense-ee-connect", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise EarthEngineError(f"no answer from Earth Engine within {seconds:.0f} s while {what}; check the "
                               "network, proxy (HTTPS_PROXY) and firewall")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _credentials_from_file(path: Path, scopes: list[str]) -> tuple[Any, str | None]:
    """A service-account key (or an ``authorized_user`` file written by gcloud) and its project."""
    import json

    from google.oauth2 import credentials as user_credentials
    from google.oauth2 import service_account

    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        kind = info.get("type")
        if kind == "service_account":
            return service_account.Credentials.from_service_account_info(info, scopes=scopes), info.get("project_id")
        if kind == "authorized_user":
            return user_credentials.Credentials.from_authorized_user_info(info, scopes=scopes), info.get(
                "quota_project_id")
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        raise EarthEngineError(f"Earth Engine credentials file {path} cannot be read ({exc}); use a "
                               "service-account JSON key file") from None
    raise EarthEngineError(f"Earth Engine credentials file {path} is of type {kind!r}; use a service-account "
                           "JSON key file (type service_account) or gcloud's authorized_user file")


def resolve_credentials(cfg: EarthEngineSettings) -> tuple[Any, str]:
    """``(credentials, project)`` from settings, else the environment; raises with what to set."""
    import google.auth
    import google.auth.exceptions
    from ee.oauth import SCOPES

    key_file = cfg.credentials or os.environ.get(ENV_CREDENTIALS)
    try:
        if key_file:
            path = Path(key_file).expanduser()
            if not path.is_file():
                raise EarthEngineError(f"Earth Engine credentials file {path} does not exist; set "
                                       "earthengine.credentials to a service-account JSON key file")
            credentials, default_project = _credentials_from_file(path, SCOPES)
        else:
            credentials, default_project = google.auth.default(scopes=SCOPES)
    except google.auth.exceptions.DefaultCredentialsError as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        where = f"in {key_file} " if key_file else ""
        raise EarthEngineError(
            f"no usable Earth Engine credentials {where}({first}); set earthengine.credentials (or "
            f"${ENV_CREDENTIALS}) to a service-account JSON key file, or run "
            "'gcloud auth application-default login --scopes=https://www.googleapis.com/auth/earthengine,"
            "https://www.googleapis.com/auth/cloud-platform'") from None
    project = cfg.project or next((os.environ[k] for k in ENV_PROJECT if os.environ.get(k)), None) \
        or getattr(credentials, "quota_project_id", None) or default_project
    if not project:
        raise EarthEngineError("no Cloud project for Earth Engine; set earthengine.project (or "
                               f"${ENV_PROJECT[0]}) to a project registered for Earth Engine")
    return credentials, str(project)


_CONNECT_LOCK = threading.Lock()


def workload_tag(cfg: EarthEngineSettings) -> str:
    """The workload tag naming the scan's requests in the Cloud console (``gmsense-scan-<collection>``)."""
    return re.sub(r"[^a-z0-9_-]", "-", f"gmsense-scan-{cfg.collection}".lower())[:63]


def _configure(cfg: EarthEngineSettings) -> None:
    import ee

    # Our retries, not the client's (which would retry inside a limiter slot and hide 429s).
    ee.data.setMaxRetries(0)
    ee.data.setWorkloadTag(workload_tag(cfg))


def connect(cfg: EarthEngineSettings, deadline_s: float = CONNECT_DEADLINE_S) -> str:
    """Initialise the Earth Engine client in this process (once) and return the project in use.

    When the caller has already initialised ``ee`` (a notebook, the tests), that session is used.
    Fails within ``deadline_s`` with :class:`EarthEngineError` (never a hang or a traceback)
    when credentials, project or network are missing.
    """
    import ee

    with _CONNECT_LOCK:
        if ee.data.is_initialized():
            _configure(cfg)
            return cfg.project or "of the running session"
        credentials, project = _with_deadline(lambda: resolve_credentials(cfg), deadline_s,
                                              "looking for credentials")
        url = ee.data.HIGH_VOLUME_API_BASE_URL if cfg.high_volume else None
        ee.data.setMaxRetries(0)

        def init() -> None:
            ee.Initialize(credentials, url=url, project=project)

        try:
            _with_deadline(init, deadline_s, "connecting")
        except EarthEngineError:
            raise
        except Exception as exc:
            ee.Reset()
            raise EarthEngineError(describe_failure(exc, f"the connection (project {project})")) from None
        ee.data.setDeadline(int(cfg.timeout_s * 1000))
        _configure(cfg)
        return project


def check(cfg: EarthEngineSettings, deadline_s: float = CONNECT_DEADLINE_S) -> str:
    """Connect and compute a trivial value: a one-line report when credentials, project and network
    work; raises :class:`EarthEngineError` saying which of them does not."""
    import ee

    project = connect(cfg, deadline_s)
    endpoint = "high-volume" if cfg.high_volume else "standard"
    limiter = RequestLimiter(1)
    value = _with_deadline(lambda: call_with_retries(
        lambda: ee.data.computeValue(ee.Number(1).add(1)), limiter=limiter,
        policy=RetryPolicy(retries=1, base_delay_s=0.5), what="a test computation"), deadline_s, "computing")
    if value != 2:
        raise EarthEngineError(f"Earth Engine answered {value!r} to 1 + 1; the service is misbehaving")
    return f"Earth Engine reachable: project {project}, {endpoint} endpoint, credentials ok"


#: One NPY decode at a time in this process: ``np.load`` parses the NPY header with
#: ``ast.literal_eval``, and CPython 3.11's AST constructor keeps its recursion depth in state shared
#: between threads, so two fetch threads decoding at once can fail with "SystemError: AST constructor
#: recursion depth mismatch" (https://github.com/python/cpython/issues/106905). Seen on a loaded
#: 2-core machine; decoding is cheap next to the request.
_NPY_DECODE_LOCK = threading.Lock()


def decode_npy(data: bytes) -> np.ndarray:
    """The array of an NPY answer (computePixels ``fileFormat: NPY``), decoded one at a time."""
    with _NPY_DECODE_LOCK:
        return np.load(io.BytesIO(data), allow_pickle=False)


class EEClient:
    """The real client: ``ee.data.computePixels`` / ``computeValue`` (no retries of its own)."""

    def compute_pixels(self, expression: Any, grid: dict[str, Any]) -> np.ndarray:
        import ee

        # Raw NPY bytes (ee's NUMPY_NDARRAY converter would np.load them in this thread, unguarded).
        data = ee.data.computePixels({"expression": expression, "fileFormat": "NPY", "grid": grid})
        return decode_npy(data)

    def compute_value(self, obj: Any) -> Any:
        import ee

        return ee.data.computeValue(obj)


# --------------------------------------------------------------------------------------------
# plan: grid, dates, listing


def cache_root(cfg: EarthEngineSettings) -> Path:
    """Where fetched pixels are kept: ``earthengine.cache_dir``, ``$GMSENSE_EE_CACHE`` or
    ~/.cache/gmsense/earthengine."""
    return Path(cfg.cache_dir or os.environ.get(ENV_CACHE) or Path.home() / ".cache" / "gmsense" / "earthengine")


def licence_grid(region: BaseGeometry, crs: Any, resolution_m: float, origin_m: float = 0.0) -> Grid:
    """The grid over ``region`` (in ``crs``, projected metres): a ``resolution_m`` lattice with pixel
    edges at ``origin_m`` (modulo ``resolution_m``) from the CRS origin in x and y, the region's
    bounding box plus one pixel. Its CRS is the EPSG-coded one of ``crs`` (ImageryError when it has
    no EPSG code or is not projected)."""
    pcrs = normalise_crs(crs)
    code = pcrs.to_epsg()
    if code is None or not pcrs.is_projected:
        raise ImageryError(f"licence CRS {pcrs.name} has no EPSG code or is not projected; Earth Engine needs "
                           "an EPSG-coded projected CRS (read_sites puts licences in their UTM zone)")
    return crop_grid(pcrs, Affine(resolution_m, 0.0, origin_m, 0.0, -resolution_m, origin_m), region.bounds)


def collection_grid(region: BaseGeometry, crs: Any, spec: graphs.CollectionSpec) -> Grid:
    """:func:`licence_grid` on the collection's native lattice (Landsat: centres on multiples of 30 m,
    Sentinel-2: edges on multiples of 10 m), so each requested pixel is one pixel of the imagery."""
    return licence_grid(region, crs, spec.resolution_m, spec.grid_origin_m)


def date_window(spec: graphs.CollectionSpec, start: str | None, end: str | None) -> tuple[str, str]:
    """``(start, end_exclusive)`` ISO dates (UTC) for ``filterDate`` from inclusive ``start..end``;
    missing ends are the collection's first day and tomorrow."""
    def day(value: str | None, what: str, default: pd.Timestamp) -> pd.Timestamp:
        if not value:
            return default
        try:
            return pd.Timestamp(value).normalize()
        except (ValueError, TypeError):
            raise ImageryError(f"{what} date {value!r} is not an ISO date (YYYY-MM-DD)") from None

    t0 = day(start, "start", pd.Timestamp(spec.first_date))
    t1 = day(end, "end", pd.Timestamp.now(tz="UTC").tz_localize(None).normalize())
    if t1 < t0:
        raise ImageryError(f"end date {end} is before start date {start}")
    return t0.strftime("%Y-%m-%d"), (t1 + pd.Timedelta(days=1)).strftime("%Y-%m-%d")


def _parse_listing(rows: Any, min_clear: float) -> list[ImageRef]:
    refs = []
    for row in rows or []:
        image_id, time_ms, share = [*list(row), None, None, None][:3]
        if image_id is None or time_ms is None:
            continue
        share = None if share is None else float(share)
        if share is None or share <= min_clear:
            continue
        refs.append(ImageRef(str(image_id), int(time_ms), share))
    refs.sort(key=lambda r: (r.time_ms, r.image_id))
    return refs


_LISTINGS: dict[tuple[Any, ...], tuple[float, list[ImageRef]]] = {}
_LISTINGS_LOCK = threading.Lock()


def page_months(spec: graphs.CollectionSpec) -> int:
    """Months of one listing page of ``spec``: the longest of :data:`LISTING_PAGE_MONTHS` whose images
    (by the collection's revisit, ``spec.revisit_days`` or :data:`REVISIT_DAYS`, times
    :data:`LISTING_IMAGES_PER_ACQUISITION`) stay within :data:`LISTING_PAGE_IMAGES`; at least one month."""
    revisit = float(getattr(spec, "revisit_days", None) or REVISIT_DAYS.get(spec.key, SENTINEL2_REVISIT_DAYS))
    per_month = 365.25 / 12 / revisit * LISTING_IMAGES_PER_ACQUISITION
    return next((m for m in LISTING_PAGE_MONTHS if m * per_month <= LISTING_PAGE_IMAGES), 1)


def listing_pages(start: str, end_exclusive: str, months: int) -> list[tuple[str, str]]:
    """``[start, end_exclusive)`` (ISO dates) cut into consecutive ``(start, end_exclusive)`` pages on
    calendar boundaries every ``months`` months (a divisor of 12) from January; the first and last
    pages are cut to the window."""
    first, stop = pd.Timestamp(start), pd.Timestamp(end_exclusive)
    pages = []
    lo = first
    while lo < stop:
        boundary = pd.Timestamp(year=lo.year, month=(lo.month - 1) // months * months + 1, day=1)
        hi = min(boundary + pd.DateOffset(months=months), stop)
        pages.append((lo.strftime("%Y-%m-%d"), hi.strftime("%Y-%m-%d")))
        lo = hi
    return pages


def _list_page(client: Any, expr: Any, *, limiter: RequestLimiter, policy: RetryPolicy, what: str) -> list[Any]:
    """The raw rows of one listing page, with its own retries."""
    rows = call_with_retries(lambda: client.compute_value(expr), limiter=limiter, policy=policy, what=what)
    return list(rows or [])


def list_images(cfg: EarthEngineSettings, grid: Grid, start: str, end_exclusive: str, *,
                client: Any, limiter: RequestLimiter, policy: RetryPolicy, site_id: str) -> list[ImageRef]:
    """The images worth fetching over ``grid``, listed page by page (:func:`listing_pages`, each
    retried on its own) and merged in time order; reused for :data:`LISTING_TTL_S`."""
    spec = graphs.SPECS[cfg.collection]
    key = (cfg.collection, grid_key(grid), start, end_exclusive, cfg.cs_cdf_threshold, cfg.min_clear_fraction)
    now = time.monotonic()
    with _LISTINGS_LOCK:
        hit = _LISTINGS.get(key)
        if hit is not None and now - hit[0] < LISTING_TTL_S:
            return list(hit[1])
    region = graphs.rectangle(grid.bounds, crs_code(grid.crs))
    pages = listing_pages(start, end_exclusive, page_months(spec))
    # graphs are built here, in the caller's thread; only the requests run in the pool
    exprs = [graphs.listing_graph(spec, region, lo, hi, cfg.cs_cdf_threshold) for lo, hi in pages]
    whats = [f"the image listing of licence {site_id} for {lo}..{hi}" for lo, hi in pages]
    with ThreadPoolExecutor(max_workers=min(len(pages), LISTING_PAGES_IN_FLIGHT) or 1,
                            thread_name_prefix="gmsense-ee-list") as pool:
        answers = list(pool.map(lambda expr, what: _list_page(client, expr, limiter=limiter, policy=policy,
                                                              what=what), exprs, whats))
    refs = _parse_listing([row for rows in answers for row in rows], cfg.min_clear_fraction)
    with _LISTINGS_LOCK:
        _LISTINGS[key] = (now, refs)
    return list(refs)


def clear_listing_memo() -> None:
    """Forget the listings reused within :data:`LISTING_TTL_S` (tests, long-lived processes)."""
    with _LISTINGS_LOCK:
        _LISTINGS.clear()


# --------------------------------------------------------------------------------------------
# the cube


def _merge_day(path: str, image_ids: tuple[str, ...], n_bands: int) -> np.ndarray:
    """Images of one day merged: per pixel the best (clear > cloudy > none) first image wins.
    Returns ``(band + 1, y, x)`` float32, the last plane being qa."""
    cache = PixelCache(Path(path))
    out_bands: np.ndarray | None = None
    out_qa: np.ndarray | None = None
    for image_id in image_ids:
        values, qa = cache.read(image_id)
        if out_bands is None or out_qa is None:
            out_bands, out_qa = values.copy(), qa.copy()
            continue
        better = qa > out_qa
        out_bands[:, better] = values[:, better]
        out_qa[better] = qa[better]
    if out_bands is None or out_qa is None:
        raise ValueError("no image to merge")
    return np.concatenate([out_bands, out_qa[None].astype("float32")]).astype("float32", copy=False)


#: Joins the ids of the images merged into one day in the cube's ``image_id`` coordinate (as the
#: local source joins file names).
IMAGE_ID_SEPARATOR = "+"


def images_by_day(images: list[ImageRef]) -> dict[pd.Timestamp, list[str]]:
    """The image ids of each UTC day, days and ids in the order of ``images``."""
    days = pd.to_datetime([r.time_ms for r in images], unit="ms").normalize()
    groups: dict[pd.Timestamp, list[str]] = {}
    for d, ref in zip(days, images, strict=True):
        groups.setdefault(d, []).append(ref.image_id)
    return groups


def cube_from_cache(cache: PixelCache, images: list[ImageRef], grid: Grid, spec: graphs.CollectionSpec,
                    attrs: dict[str, Any]) -> xr.Dataset:
    """The cube contract over ``grid``, lazily read from ``cache`` (one dask task per UTC day). The
    ``image_id`` coordinate (on ``time``) names the Earth Engine image(s) of each day, joined by
    :data:`IMAGE_ID_SEPARATOR` when same-day images were merged: the provenance each patch's
    evidence carries (gmsense.pipeline)."""
    groups = images_by_day(images)
    n = len(spec.common_names)
    shape = (n + 1, grid.height, grid.width)
    blocks = [da.from_delayed(dask.delayed(_merge_day, pure=True)(str(cache.path), tuple(ids), n), shape=shape,
                              dtype="float32") for ids in groups.values()]
    stack = da.stack(blocks)  # (time, band + qa, y, x)
    coords = {"time": np.asarray(list(groups), dtype="datetime64[ns]"), "y": grid.ys(), "x": grid.xs(),
              "image_id": ("time", [IMAGE_ID_SEPARATOR.join(ids) for ids in groups.values()])}
    data = {name: (("time", "y", "x"), stack[:, i]) for i, name in enumerate(spec.common_names)}
    data["clear"] = (("time", "y", "x"), stack[:, n] == graphs.QA_CLEAR)
    ds = xr.Dataset(data, coords=coords)
    ds.x.attrs.update(units="metre", long_name="x (pixel centre)")
    ds.y.attrs.update(units="metre", long_name="y (pixel centre)")
    ds = ds.rio.write_crs(crs_code(grid.crs)).rio.write_transform(grid.transform)
    ds.attrs.update(source="earthengine", platform=spec.platform, resolution_m=spec.resolution_m, **attrs)
    if spec.platform == "landsat":  # the sensor of each day (TM, ETM+, OLI) from its image ids
        ds = with_sensor(ds)
    return ds


@dataclass
class LoadResult:
    """A loaded cube and what its fetch did."""

    cube: xr.Dataset
    images: list[ImageRef]
    stats: FetchStats


def load_cube(cfg: EarthEngineSettings, region: BaseGeometry, crs: Any, start: str | None, end: str | None, *,
              site_id: str, client: Any | None = None, limiter: RequestLimiter | None = None,
              policy: RetryPolicy | None = None, cache_dir: Path | None = None,
              byte_limit: int = REQUEST_BYTE_LIMIT, sleep: Callable[[float], None] = time.sleep) -> LoadResult:
    """The cube over ``region`` (in ``crs``) for inclusive ISO ``start..end`` (see the module docstring).

    ``client``/``limiter``/``policy``/``cache_dir`` default to the real service, the process-wide
    limiter of ``cfg`` and ``cfg``'s retries and cache; tests pass fakes (and a small ``byte_limit``
    to force tiling).
    """
    spec = graphs.SPECS[cfg.collection]
    if client is None:
        connect(cfg)
        client = EEClient()
    limiter = limiter or shared_limiter(cfg.max_concurrent, cfg.max_rps)
    policy = policy or RetryPolicy(retries=cfg.retries)
    grid = collection_grid(region, crs, spec)
    t0, t1 = date_window(spec, start, end)
    images = list_images(cfg, grid, t0, t1, client=client, limiter=limiter, policy=policy, site_id=site_id)
    if not images:
        raise ImageryError(
            f"Earth Engine has no {spec.key} image with a clear share above {cfg.min_clear_fraction:g} over "
            f"licence {site_id} within {t0}..{end or 'today'}; widen the date range (start/end)")
    extra = {"collections": list(spec.collections), "threshold": cfg.cs_cdf_threshold if spec.key == "sentinel-2"
             else None, "scale": spec.scale, "offset": spec.offset, "qa": "v1"}
    cache = PixelCache.for_key(cache_dir or cache_root(cfg), spec.key, site_id, grid, spec.common_names, extra)
    stats = fetch_to_cache(
        images, grid=grid, bands=spec.common_names, qa_band=graphs.QA_BAND, bytes_per_pixel=spec.bytes_per_pixel,
        expression_for=lambda image_id: graphs.image_graph(spec, image_id, cfg.cs_cdf_threshold),
        client=client, cache=cache, limiter=limiter, policy=policy, byte_limit=byte_limit, sleep=sleep,
        what=f" (licence {site_id})")
    attrs: dict[str, Any] = {"collection": ",".join(spec.collections), "cache": str(cache.path),
                             "images": len(images)}
    if spec.key == "sentinel-2":
        attrs["cs_cdf_threshold"] = cfg.cs_cdf_threshold
    cube = cube_from_cache(cache, images, grid, spec, attrs)
    if spec.key == "landsat-archive":  # TM / ETM+ days made OLI-like (gmsense.cube.harmonise); the cache stays raw
        cube = harmonise(cube, cfg.harmonise)
    return LoadResult(validate_cube(cube, where=f"Earth Engine cube of licence {site_id}"), images, stats)


def latest_date(cfg: EarthEngineSettings, region: BaseGeometry, crs: Any, start: str | None, end: str | None, *,
                site_id: str, client: Any | None = None) -> str | None:
    """The newest image date (ISO, UTC) worth fetching over ``region``, from the listing; None if none."""
    spec = graphs.SPECS[cfg.collection]
    if client is None:
        connect(cfg)
        client = EEClient()
    grid = collection_grid(region, crs, spec)
    t0, t1 = date_window(spec, start, end)
    images = list_images(cfg, grid, t0, t1, client=client, limiter=shared_limiter(cfg.max_concurrent, cfg.max_rps),
                         policy=RetryPolicy(retries=cfg.retries), site_id=site_id)
    if not images:
        return None
    return pd.Timestamp(images[-1].time_ms, unit="ms").strftime("%Y-%m-%d")


# --------------------------------------------------------------------------------------------
# throughput


class _LatencyClient:
    """A stand-in for computePixels: waits ``latency_s`` and returns zeros (clear pixels)."""

    def __init__(self, latency_s: float, bands: list[str]) -> None:
        self.latency_s = latency_s
        self.dtype = np.dtype([(b, "<f4") for b in bands] + [(graphs.QA_BAND, "u1")])
        self.lock = threading.Lock()
        self.in_flight = 0
        self.peak = 0

    def compute_pixels(self, expression: Any, grid: dict[str, Any]) -> np.ndarray:
        with self.lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            time.sleep(self.latency_s)
            dims = grid["dimensions"]
            out = np.zeros((dims["height"], dims["width"]), self.dtype)
            out[graphs.QA_BAND] = graphs.QA_CLEAR
            return out
        finally:
            with self.lock:
                self.in_flight -= 1


def measure_throughput(n_images: int = 60, *, latency_s: float = 0.2, max_concurrent: int = 10,
                       max_rps: float | None = None, size_px: int = 64, cache_dir: Path | None = None,
                       collection: str = "sentinel-2") -> dict[str, float]:
    """Fetch ``n_images`` images of ``size_px`` x ``size_px`` pixels through the real fetcher
    (limiter, retries, tiling, Zarr cache) from a fake server answering after ``latency_s``.

    Returns requests, seconds, requests per second, the ideal rate (``max_concurrent / latency_s``,
    or ``max_rps`` if lower), utilisation (mean requests in flight / ``max_concurrent``) and the
    peak in flight. A benchmark (``gmsense bench``) can call it; the tests check utilisation.
    Below ~0.1 s of latency the Zarr cache writes (~15-18 ms an image, about 55 images/s per
    process) rather than the request slots limit the rate; real answers take 0.5-5 s.
    """
    import tempfile

    if max_concurrent > PROJECT_MAX_CONCURRENT:
        raise ValueError(f"max_concurrent {max_concurrent} is above the project quota of {PROJECT_MAX_CONCURRENT}")
    spec = graphs.SPECS[collection]
    client = _LatencyClient(latency_s, spec.common_names)
    limiter = RequestLimiter(max_concurrent, max_rps)
    grid = Grid(pyproj.CRS.from_epsg(32650), Affine(spec.resolution_m, 0, 500_000, 0, -spec.resolution_m, 5_000_000),
                size_px, size_px)
    images = [ImageRef(f"FAKE/{i:05d}", 1_600_000_000_000 + i * 86_400_000, 1.0) for i in range(n_images)]
    with tempfile.TemporaryDirectory() as tmp:
        cache = PixelCache(Path(cache_dir or tmp) / "throughput.zarr")
        stats = fetch_to_cache(images, grid=grid, bands=spec.common_names, qa_band=graphs.QA_BAND,
                               bytes_per_pixel=spec.bytes_per_pixel, expression_for=lambda image_id: image_id,
                               client=client, cache=cache, limiter=limiter, policy=RetryPolicy(retries=0))
    ideal = max_concurrent / latency_s if latency_s > 0 else float("inf")
    if max_rps:
        ideal = min(ideal, max_rps)
    rps = stats.requests / stats.seconds if stats.seconds > 0 else float("inf")
    return {"requests": float(stats.requests), "seconds": stats.seconds, "requests_per_s": rps,
            "ideal_requests_per_s": ideal, "efficiency": rps / ideal if ideal else 0.0,
            "utilisation": stats.utilisation, "peak_in_flight": float(max(stats.peak_in_flight, client.peak)),
            "max_concurrent": float(max_concurrent), "latency_s": latency_s}
