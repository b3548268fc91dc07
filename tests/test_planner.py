"""The scan planner: tiles under the memory budget that cover the licence once, groups of small
licences, and memory sizes read the way dask reads them."""

from __future__ import annotations

from dataclasses import replace

import pyproj
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import box
from shapely.ops import unary_union

from gmsense.batch.estimate import default_shape
from gmsense.batch.planner import (
    MAX_GROUP,
    PARALLEL_MIN_CORE_M,
    PARALLEL_MIN_SECONDS,
    TILE_MARGIN_M,
    estimate_bytes,
    parse_memory,
    plan,
    tile_area,
)
from gmsense.config import Settings
from gmsense.geo.sites import Site
from gmsense.sources.shape import ImageryShape

UTM = pyproj.CRS.from_epsg(32652)
SETTINGS = Settings()


def _site(site_id: str, width_m: float, height_m: float, x0: float = 500_000.0) -> Site:
    return Site(site_id, box(x0, 5_200_000, x0 + width_m, 5_200_000 + height_m), UTM, {})


def test_estimate_grows_with_area_and_dates_and_shrinks_with_coarser_pixels() -> None:
    three = ImageryShape(10.0, 225, 150)
    small = estimate_bytes(box(0, 0, 1000, 1000), three)
    assert estimate_bytes(box(0, 0, 2000, 1000), three) == 2 * small
    six = ImageryShape(10.0, 450, 300)
    assert 1.9 * small < estimate_bytes(box(0, 0, 1000, 1000), six) < 2 * small  # per-pixel layers do not double
    assert estimate_bytes(box(0, 0, 1000, 1000), replace(three, resolution_m=30.0)) < small / 8


@settings(max_examples=40, deadline=None)
@given(width=st.floats(500, 30_000), height=st.floats(500, 30_000), n=st.integers(1, 60))
def test_tiles_cover_the_area_once_with_margins(width: float, height: float, n: int) -> None:
    area = box(0, 0, width, height)
    tiles = tile_area(area, n)
    cores = unary_union([t.core for t in tiles])
    assert area.difference(cores).area < 1e-6 * area.area
    for a in tiles:
        assert a.read.covers(a.core.intersection(area))
        assert a.read.area <= a.core.buffer(TILE_MARGIN_M, join_style="mitre").area + 1e-6
        for b in tiles:
            if a.index < b.index:
                assert a.core.intersection(b.core).area < 1e-6  # cores never overlap
    assert {t.count for t in tiles} == {len(tiles)}


def test_a_large_licence_is_tiled_under_the_budget() -> None:
    big = _site("BIG", 20_000, 20_000)
    limit = parse_memory("2GB")
    units = plan([big], SETTINGS, limit, start="2019-04-01", end="2021-10-31")
    assert len(units) > 1
    assert all(u.tile is not None and u.sites == (big,) for u in units)
    assert all(u.estimated_bytes <= limit for u in units)
    whole = estimate_bytes(big.buffered(SETTINGS.sites.buffer_m), default_shape(SETTINGS, "2019-04-01", "2021-10-31"))
    assert whole > limit
    region = big.buffered(SETTINGS.sites.buffer_m)
    assert region.difference(unary_union([u.tile.core for u in units])).area < 1e-6 * region.area


def test_small_licences_are_grouped_and_middling_ones_run_alone() -> None:
    small = [_site(f"S{k:03d}", 300, 300, 500_000 + 5_000 * k) for k in range(40)]
    middle = _site("M", 3_000, 3_000, 800_000)
    units = plan([*small, middle], SETTINGS, parse_memory("16GB"))
    grouped = [u for u in units if len(u.sites) > 1]
    assert grouped
    assert all(len(u.sites) <= MAX_GROUP for u in units)
    assert [s.site_id for u in units for s in u.sites] == [*(s.site_id for s in small), "M"]  # each once, in order
    assert any(u.sites == (middle,) for u in units)


@pytest.mark.parametrize(("text", "value"), [("4GB", 4_000_000_000), ("512MiB", 512 * 2**20), ("2e9", 2_000_000_000)])
def test_memory_sizes(text: str, value: int) -> None:
    assert parse_memory(text) == value


@pytest.mark.parametrize("text", ["lots", "-1GB", "0"])
def test_bad_memory_sizes_say_how_to_write_them(text: str) -> None:
    with pytest.raises(ValueError, match="memory size"):
        parse_memory(text)


def test_a_long_licence_is_cut_for_idle_workers_and_held_between_passes() -> None:
    """Fewer units than worker processes: the longest licence is cut into tiles for the idle ones,
    each read once and held (the licence fits the budget whole); not with one slot, not when the
    licences already fill the slots, not when the cores would be mostly margin."""
    large = _site("L", 4_000, 4_000)
    limit = parse_memory("16GB")
    assert [u.tile for u in plan([large], SETTINGS, limit)] == [None]
    units = plan([large], SETTINGS, limit, slots=2)
    assert len(units) == 2
    assert all(u.tile is not None and u.hold for u in units)
    for unit in units:
        minx, miny, maxx, maxy = unit.tile.core.bounds
        assert min(maxx - minx, maxy - miny) >= PARALLEL_MIN_CORE_M
    region = large.buffered(SETTINGS.sites.buffer_m)
    assert region.difference(unary_union([u.tile.core for u in units])).area < 1e-6 * region.area
    assert len(plan([large], SETTINGS, limit, slots=4)) == 4
    other = _site("O", 4_000, 4_000, 700_000)
    assert [u.tile for u in plan([large, other], SETTINGS, limit, slots=2)] == [None, None]
    small = _site("S", 1_400, 1_200)  # 2.4 x 2.2 km with its buffers: halves would be mostly margin
    period = {"start": "2014-04-01", "end": "2021-10-31"}
    assert plan([small], SETTINGS, limit, **period)[0].estimated_seconds >= PARALLEL_MIN_SECONDS
    assert [u.tile for u in plan([small], SETTINGS, limit, slots=2, **period)] == [None]
    budget_tiles = plan([_site("BIG", 20_000, 20_000)], SETTINGS, parse_memory("2GB"), slots=2)
    assert len(budget_tiles) > 2
    assert not any(u.hold for u in budget_tiles)  # over the budget: each tile read twice, none held
