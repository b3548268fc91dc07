"""How long finding divisions from geometry takes (gmsense.geo.county_boundaries): a province-sized
set of county boundaries (11 x 11 counties of 60 km, each boundary segmentised to ~5,000 vertices, as
detailed county maps are) and 1,000 licences of 1 km2 placed at random (some across county lines),
imported into a SQLite store with and without the boundaries.

    PYTHONPATH=. .venv/bin/python scripts/bench_county_lookup.py [N_LICENCES]
"""

from __future__ import annotations

import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pyproj
import shapely
from shapely.geometry import box

from gmsense.geo import divisions
from gmsense.geo.county_boundaries import CountyBoundary, DivisionWarning
from gmsense.geo.sites import WGS84, Site, reproject_geometry
from gmsense.store import Store

UTM = pyproj.CRS.from_epsg(32652)
X0, Y0, SIDE = 300_000.0, 5_000_000.0, 60_000.0


def counties() -> list[CountyBoundary]:
    codes = sorted(c for c, d in divisions.table().items() if d.level == "county" and d.current)[:121]
    out = []
    for k, code in enumerate(codes):
        i, j = divmod(k, 11)
        square = shapely.segmentize(box(X0 + i * SIDE, Y0 + j * SIDE, X0 + (i + 1) * SIDE, Y0 + (j + 1) * SIDE), 48.0)
        out.append(CountyBoundary(code, reproject_geometry(square, UTM, WGS84)))
    return out


def licences(n: int) -> list[Site]:
    rng = np.random.default_rng(7)
    xs = rng.uniform(X0, X0 + 11 * SIDE - 1000, n)
    ys = rng.uniform(Y0, Y0 + 11 * SIDE - 1000, n)
    return [Site(f"L{k:05d}", box(x, y, x + 1000, y + 1000), UTM, {"name": f"licence {k}"})
            for k, (x, y) in enumerate(zip(xs, ys, strict=True))]


def main(n: int) -> None:
    boundaries, sites = counties(), licences(n)
    vertices = sum(shapely.get_num_coordinates(b.geometry) for b in boundaries)
    with tempfile.TemporaryDirectory() as folder:
        plain = Store(str(Path(folder) / "plain.db"))
        t = time.perf_counter()
        plain.import_licences(sites)
        without = time.perf_counter() - t
        store = Store(str(Path(folder) / "located.db"))
        t = time.perf_counter()
        store.import_boundaries(boundaries)
        loading = time.perf_counter() - t
        t = time.perf_counter()
        locator = store.county_locator()
        index = time.perf_counter() - t
        t = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DivisionWarning)
            outcome = store.import_licences(sites)
        with_boundaries = time.perf_counter() - t
        shapes = [site.geometry_wgs84 for site in sites]  # the import reprojects them anyway (to store them)
        t = time.perf_counter()
        for site, shape in zip(sites, shapes, strict=True):
            locator.locate(site.site_id, {}, shape)
        lookup = time.perf_counter() - t
    print(f"{len(boundaries)} county boundaries, {vertices:,} vertices; {n} licences of 1 km2")
    print(f"divisions import (store the boundaries): {loading:.2f} s; load + index them: {index:.2f} s")
    print(f"licences import without boundaries: {without:.2f} s; with: {with_boundaries:.2f} s "
          f"({len(outcome['located'])} located, {len(outcome['unlocated'])} unlocated, {len(caught)} split warnings)")
    print(f"lookups alone: {lookup:.2f} s, {1000 * lookup / n:.2f} ms per licence")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
