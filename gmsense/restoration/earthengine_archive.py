"""Earth Engine as a source of yearly composites (``gmsense restoration composites --source earthengine``).

Each year's composite is computed server-side by the graph of :mod:`gmsense.sources.earthengine.composites`
(the collection's images of the season, clear-masked, TM / ETM+ made OLI-like, median or medoid, count)
and fetched with the scan's retries, rate limits and halving of requests the server finds too large
(:func:`gmsense.sources.earthengine._fetch.fetch_block`), on the collection's native lattice in the UTM zone
of the area's centre, in tiles of at most :data:`TILE_PX` pixels a side (so each server-side median stays
small) that are written as they arrive: nothing of the whole area is held in memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import numpy as np
from shapely.geometry.base import BaseGeometry

from gmsense.config import EarthEngineSettings
from gmsense.geo.grid import Grid
from gmsense.geo.sites import WGS84, reproject_geometry, utm_crs_for
from gmsense.restoration.composites import COUNT_BAND, Block, Window
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
from gmsense.sources.earthengine.composites import composite_graph

#: The bands a composite request returns, besides ``qa``.
COMPOSITE_BANDS = (*graphs.COMMON_BANDS, COUNT_BAND)
#: Bytes a pixel of a composite request costs by the service's rule: 7 float32 bands and the uint8 qa,
#: cast to float32, each with a mask byte: 8 x (4 + 1) = 40.
BYTES_PER_PIXEL = request_bytes_per_pixel([graphs.REFLECTANCE_BYTES] * len(COMPOSITE_BANDS) + [graphs.QA_BYTES])
#: Longest side of one composite request, pixels: a judgement (not measured against the service) that a
#: season's median over 512 x 512 px stays well within a request's deadline; well under the byte limit.
TILE_PX = 512


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
                                     end_exclusive, method, self.cfg.cs_cdf_threshold, self.cfg.harmonise,
                                     COUNT_BAND)
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
