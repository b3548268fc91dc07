"""Yearly composites built by Earth Engine (``gmsense restoration composites --source earthengine``).

The composite is computed server-side, one ``computePixels`` request per tile and year, from the same
collections, band renaming and clear mask as the scan's cubes (:mod:`gmsense.sources.earthengine._graph`):
every image of the collection (``landsat-archive``: Landsat 5 TM, 7 ETM+, 8 and 9 OLI) touching the grid
within the season is reduced to its clear reflectance (``qa`` clear; masked elsewhere, so ETM+ scan-line
gaps and pixels outside the scene are no observation), TM and ETM+ images made OLI-like on the server
with the coefficients of :mod:`gmsense.cube.harmonise` (``earthengine.harmonise``), then
``ImageCollection.median()`` (or, for ``medoid``, ``qualityMosaic`` on minus the squared distance of each
observation to that median), and ``count()`` of the clear observations. A fully masked image is merged
into every collection, so a season without any image gives an empty composite (count 0) instead of an
image without bands.

The answer is the six reflectance bands, ``clear_count`` and the ``qa`` band (clear where the count is
above 0), fetched with the scan's retries, rate limits and halving of requests the server finds too large
(:func:`gmsense.sources.earthengine._fetch.fetch_block`) on the collection's native lattice in the UTM
zone of the area's centre, in tiles of at most :data:`TILE_PX` pixels a side (so each server-side median
stays small) that are written as they arrive: nothing of the whole area is held in memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import ee
import numpy as np
from shapely.geometry.base import BaseGeometry

from gmsense.config import EarthEngineSettings
from gmsense.cube.harmonise import HARMONISED_SENSORS, TRANSFORMS, Transform, sensor_of
from gmsense.geo.grid import Grid
from gmsense.geo.sites import WGS84, reproject_geometry, utm_crs_for
from gmsense.restoration.composites import COUNT_BAND, METHODS, Block, Window
from gmsense.sources.earthengine import _graph as graphs
from gmsense.sources.earthengine._fetch import (
    RequestLimiter,
    RetryPolicy,
    crs_code,
    fetch_block,
    plan_tiles,
    request_bytes_per_pixel,
    shared_limiter,
)
from gmsense.sources.earthengine._fetch import Window as RequestWindow

#: The bands a composite request returns, besides ``qa``.
COMPOSITE_BANDS = (*graphs.COMMON_BANDS, COUNT_BAND)
#: Bytes a pixel of a composite request costs by the service's rule: 7 float32 bands and the uint8 qa,
#: cast to float32, each with a mask byte: 8 x (4 + 1) = 40.
BYTES_PER_PIXEL = request_bytes_per_pixel([graphs.REFLECTANCE_BYTES] * len(COMPOSITE_BANDS) + [graphs.QA_BYTES])
#: Longest side of one composite request, pixels: a judgement (not measured against the service) that a
#: season's median over 512 x 512 px stays well within a request's deadline; well under the byte limit.
TILE_PX = 512
#: The band ``qualityMosaic`` maximises for a medoid: minus the squared distance to the median.
CLOSENESS = "closeness"


def _empty_image() -> ee.Image:
    """The six reflectance bands, masked everywhere: merged into every season so an empty one still has bands."""
    return (ee.Image.constant([0.0] * len(graphs.COMMON_BANDS)).rename(list(graphs.COMMON_BANDS)).toFloat()
            .updateMask(ee.Image.constant(0)))


def _clear_reflectance(spec: graphs.CollectionSpec, threshold: float, transform: Transform | None,
                       image: ee.Image) -> ee.Image:
    """One image's reflectance (common names, float32) where its qa says clear, masked elsewhere; made
    OLI-like by ``transform`` (TM / ETM+ images) when given."""
    prepared = graphs._prepare(spec, image, threshold)
    reflectance = prepared.select(list(graphs.COMMON_BANDS)).updateMask(
        prepared.select(graphs.QA_BAND).eq(graphs.QA_CLEAR))
    if transform is not None:
        reflectance = (reflectance.multiply(ee.Image.constant([transform.slopes[b] for b in graphs.COMMON_BANDS]))
                       .add(ee.Image.constant([transform.intercepts[b] for b in graphs.COMMON_BANDS])))
    return reflectance.toFloat()


def season_collection(spec: graphs.CollectionSpec, region: ee.Geometry, start: str, end_exclusive: str,
                      threshold: float, harmonise: str) -> ee.ImageCollection:
    """Every image of ``spec``'s collections touching ``region`` with ``start <= time < end_exclusive`` as its
    clear reflectance (TM / ETM+ made OLI-like by ``harmonise``, a key of :data:`TRANSFORMS` or ``none``), with
    the fully masked placeholder."""
    transform = TRANSFORMS.get(harmonise)
    merged = ee.ImageCollection.fromImages([_empty_image()])
    for cid, names in spec.sources:
        coll = graphs._standardise(spec, ee.ImageCollection(cid).filterBounds(region)
                                   .filterDate(start, end_exclusive), names)
        if spec.key == "sentinel-2":
            coll = graphs._link_cloud_score(coll)
        moved = transform if sensor_of(cid) in HARMONISED_SENSORS else None

        def clear(image: ee.Image, moved: Transform | None = moved) -> ee.Image:
            return _clear_reflectance(spec, threshold, moved, image)

        merged = merged.merge(coll.map(clear))
    return merged


def composite_graph(spec: graphs.CollectionSpec, region: ee.Geometry, start: str, end_exclusive: str, method: str,
                    threshold: float, harmonise: str) -> ee.Image:
    """The season's composite over ``region``: the reflectance bands (median or medoid), ``clear_count``
    (float32, 0 where no clear observation) and ``qa`` (uint8: clear where the count is above 0, else no
    data), over the whole grid asked for."""
    if method not in METHODS:
        raise ValueError(f"unknown composite method {method!r}")
    coll = season_collection(spec, region, start, end_exclusive, threshold, harmonise)
    median = coll.median()
    if method == "medoid":
        def closeness(image: ee.Image) -> ee.Image:
            return image.addBands(image.subtract(median).pow(2).reduce(ee.Reducer.sum()).multiply(-1)
                                  .rename(CLOSENESS))

        composite = coll.map(closeness).qualityMosaic(CLOSENESS).select(list(graphs.COMMON_BANDS))
    else:
        composite = median
    count = coll.select("red").count().unmask(0, graphs.SAME_FOOTPRINT).rename(COUNT_BAND)
    qa = count.gt(0).multiply(graphs.QA_CLEAR).toUint8().rename(graphs.QA_BAND)
    return composite.toFloat().addBands(count.toFloat()).addBands(qa)


@dataclass
class EarthEngineArchive:
    """Earth Engine as a :class:`~gmsense.restoration.composites.CompositeSource` (the collection of
    ``cfg.collection``). ``client``, ``limiter``, ``policy`` and ``sleep`` default to the real service, the
    process-wide limiter and ``cfg``'s retries; tests pass fakes."""

    cfg: EarthEngineSettings
    client: Any = None
    limiter: RequestLimiter | None = None
    policy: RetryPolicy | None = None
    sleep: Callable[[float], None] = time.sleep
    bands: tuple[str, ...] = graphs.COMMON_BANDS

    @property
    def spec(self) -> graphs.CollectionSpec:
        return graphs.SPECS[self.cfg.collection]

    def describe(self) -> str:
        spec = self.spec
        mask = f"cs_cdf >= {self.cfg.cs_cdf_threshold:g}" if spec.key == "sentinel-2" else "QA_PIXEL, QA_RADSAT"
        return (f"earthengine {spec.key} ({', '.join(spec.collections)}; clear: {mask}; "
                f"harmonise {self.cfg.harmonise})")

    def grid(self, area: BaseGeometry) -> Grid:
        """The collection's native lattice over ``area`` in the UTM zone of its centre."""
        from gmsense.sources.earthengine import collection_grid

        centre = area.centroid
        crs = utm_crs_for(centre.x, centre.y)
        return collection_grid(reproject_geometry(area, WGS84, crs), crs, self.spec)

    def windows(self, grid: Grid) -> list[Window]:
        return [Window(t.col_off, t.row_off, t.width, t.height)
                for t in plan_tiles(grid.width, grid.height, BYTES_PER_PIXEL, max_side=TILE_PX)]

    def _connected(self) -> Any:
        if self.client is None:
            from gmsense.sources.earthengine import EEClient, connect

            connect(self.cfg)
            self.client = EEClient()
        return self.client

    def blocks(self, year: int, start: str, end: str, windows: Sequence[Window], grid: Grid,
               method: str) -> Iterator[Block] | None:
        if end < self.spec.first_date:
            return None  # the collection starts later
        end_exclusive = str(np.datetime64(end, "D") + np.timedelta64(1, "D"))
        expression = composite_graph(self.spec, graphs.rectangle(grid.bounds, crs_code(grid.crs)), start,
                                     end_exclusive, method, self.cfg.cs_cdf_threshold, self.cfg.harmonise)
        return self._fetch(expression, grid, windows, f"the {year} composite ({start}..{end})")

    def _fetch(self, expression: Any, grid: Grid, windows: Sequence[Window], what: str) -> Iterator[Block]:
        """The blocks of ``windows``, fetched a few at a time (as many as the limiter lets run, twice over)."""
        client = self._connected()
        limiter = self.limiter or shared_limiter(self.cfg.max_concurrent, self.cfg.max_rps)
        policy = self.policy or RetryPolicy(retries=self.cfg.retries)

        def fetch(window: Window) -> Block:
            request = RequestWindow(window.col_off, window.row_off, window.width, window.height)
            label = f"{what}, pixels {window.col_off}..{window.col_off + window.width} x " \
                    f"{window.row_off}..{window.row_off + window.height}"
            values, _qa = fetch_block(client, expression, grid, request, bands=COMPOSITE_BANDS,
                                      qa_band=graphs.QA_BAND, limiter=limiter, policy=policy, label=label,
                                      sleep=self.sleep)
            count = np.nan_to_num(values[-1], nan=0.0).astype("int32")
            composite = values[:-1]
            composite[:, count == 0] = np.nan
            return Block(window, composite, count)

        todo = list(windows)
        pool = ThreadPoolExecutor(max_workers=limiter.max_concurrent, thread_name_prefix="gmsense-ee-composite")
        pending: set[Future[Block]] = set()
        try:
            while todo or pending:
                while todo and len(pending) < 2 * limiter.max_concurrent:
                    pending.add(pool.submit(fetch, todo.pop(0)))
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
