"""The restoration measuring stick: the synthetic world's truth follows the issue's definitions, the
world is written as the register importer and the local source read it, and a small bench run (the
command) produces its figures. Seeds here are below 100; the bench's held-out seeds are 1001+."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.features import geometry_mask
from shapely.geometry import box

from gmsense.bench.real import default_real_data
from gmsense.bench.restoration import TARGETS, bc_section
from gmsense.config import Settings
from gmsense.geo.register import read_register
from gmsense.sources.synthetic.restoration import (
    RESTORED_COVER,
    MineLand,
    Part,
    Ramp,
    WorldSpec,
    at_resolution,
    draw_world,
    ground_ndvi,
    true_ndvi,
    true_statuses,
    write_restoration_world,
)
from gmsense.testutils import run_cli

#: A mix and seeds of the tests only (the bench holds out its own).
TEST_MIX = (("forest", 0.6), ("grassland", 0.4))
YEARS = list(range(2010, 2021))


def _land(ramp: Ramp | None, damaged: int = 2009, redamaged: int | None = None, share: float = 1.0) -> MineLand:
    geometry = box(0, 0, 200, 100)
    parts = [Part(box(0, 0, 200 * share, 100), share, ramp)]
    if share < 1:
        parts.append(Part(box(200 * share, 0, 200, 100), 1 - share, None))
    return MineLand("X", "open_pit", "planting", geometry, "forest", 0.1, damaged, parts, redamaged)


def test_truth_of_hand_made_trajectories() -> None:
    statuses, areas = true_statuses(_land(Ramp(2011, 4, 0.9, 1.0)), YEARS)
    # cover 0.225, 0.45, 0.675, 0.9 in 2012-2015: at 80 % from 2015, restored after the second season
    assert statuses == ["damaged", "damaged", *["under_restoration"] * 4, *["restored"] * 5]
    assert areas[:6] == [0.0] * 6
    assert areas[6:] == [20_000.0] * 5
    statuses, _ = true_statuses(_land(Ramp(2011, 3, 0.95, 1.0), redamaged=2017), YEARS)
    assert statuses[5:7] == ["restored", "restored"]
    assert statuses[7:] == ["reverted"] * 4
    statuses, _ = true_statuses(_land(None), YEARS)
    assert statuses == ["damaged"] * len(YEARS), "untreated / failed works: never restored"
    statuses, areas = true_statuses(_land(Ramp(2011, 3, 1.0, 1.0), share=0.5), YEARS)
    assert "restored" not in statuses, "half the polygon green: not restored as a whole"
    assert statuses[-1] == "damaged", "a stalled partial restoration has no greening trend"
    assert areas[-1] == pytest.approx(10_000.0), "its planted half is restored area"
    statuses, _ = true_statuses(_land(Ramp(1990, 5, 0.9, 1.0), damaged=1985), YEARS)
    assert statuses == ["restored"] * len(YEARS), "restored before the archive"
    statuses, _ = true_statuses(_land(Ramp(2013, 3, 0.9, 1.0), damaged=2012), YEARS)
    assert statuses[:2] == [None, None], "intact before the damage year"


@pytest.fixture(scope="module")
def drawn() -> object:
    return draw_world(WorldSpec(polygons=40, first_year=2005, last_year=2022, seed=3, cover_mix=TEST_MIX))


def test_drawn_truth_is_consistent(drawn: object) -> None:
    years = drawn.spec.years
    scenarios = set()
    for land in drawn.lands:
        scenarios.add(land.scenario)
        statuses, areas = true_statuses(land, years)
        covers = {y: land.cover_share(y) for y in range(years[0] - 1, years[-1] + 1)}
        for k, (year, status) in enumerate(zip(years, statuses, strict=True)):
            assert (status is None) == (year < land.damaged), (land.register_id, year)
            if status == "restored" and (k == 0 or statuses[k - 1] != "restored"):
                assert min(covers[year], covers[year - 1]) >= RESTORED_COVER, \
                    f"{land.register_id} restored in {year} without two seasons at 80 %"
            if status == "reverted":
                assert "restored" in statuses[:k] or k == 0, land.register_id
            assert 0 <= areas[k] <= land.geometry.area + 1e-6
            if status == "restored" and len(land.parts) == 1:
                assert areas[k] == pytest.approx(land.geometry.area)
        if land.scenario in ("failure", "untreated"):
            assert "restored" not in statuses, f"{land.register_id}: a failure restored"
            assert max(areas) == 0
        assert 1e4 * 0.99 <= land.geometry.area <= 3e5 * 1.01
    assert {"planting", "failure", "partial"} <= scenarios
    geoms = [land.geometry for land in drawn.lands]
    assert min(a.distance(b) for i, a in enumerate(geoms) for b in geoms[i + 1:]) >= 79


def test_the_ground_under_the_pits_is_what_their_cover_is_relative_to(drawn: object) -> None:
    """``true_ndvi(..., pits=False)`` (the diagnostics' perfect reference) is the land every part's cover is
    relative to: each part's NDVI is bare + f (ground - bare), and outside the pits nothing changes."""
    pits = geometry_mask([land.geometry for land in drawn.lands], out_shape=drawn.cell_of.shape,
                         transform=drawn.transform, invert=True)
    for year in (2005, 2014, 2022):
        rendered, ground = true_ndvi(drawn, year), true_ndvi(drawn, year, pits=False)
        np.testing.assert_array_equal(rendered[~pits], ground[~pits])
        assert not np.array_equal(rendered[pits], ground[pits]), "damaged pits are below their ground"
        parts = 0
        for land in drawn.lands:
            for part in land.parts:
                mask = geometry_mask([part.geometry], out_shape=ground.shape, transform=drawn.transform, invert=True)
                f = land.part_cover(part, year)
                bare = land.bare_ndvi + drawn.bare_texture[mask]
                np.testing.assert_allclose(rendered[mask], bare + f * (ground[mask] - bare), atol=1e-5)
                parts += 1
        assert parts > len(drawn.lands)
        coarse = ground_ndvi(drawn, year)
        assert coarse.shape == (ground.shape[0] // 3, ground.shape[1] // 3)
        assert coarse[5, 7] == pytest.approx(float(ground[15:18, 21:24].mean()), abs=1e-6)
        np.testing.assert_array_equal(at_resolution(drawn, rendered)[~at_resolution(drawn, pits).astype(bool)],
                                      coarse[~at_resolution(drawn, pits).astype(bool)])


def test_written_world_reads_as_a_register_and_composites(tmp_path: Path) -> None:
    spec = WorldSpec(polygons=8, first_year=2015, last_year=2022, seed=5, cover_mix=TEST_MIX, polygons_per_county=4)
    paths = write_restoration_world(tmp_path, spec)
    register = read_register(paths["register"])
    assert len(register) == 8
    assert {p.kind for p in register} <= {"open_pit", "waste_dump", "tailings"}
    assert {p.attrs["county"] for p in register} == {"C01", "C02"}
    files = sorted(p.name for p in paths["composites"].glob("*.tif"))
    assert files == [f"{y}.tif" for y in spec.years]
    with rasterio.open(paths["composites"] / "2020.tif") as src:
        assert src.res == (30.0, 30.0)
        assert src.descriptions == ("red", "nir")
        red, nir = src.read(1), src.read(2)
    ndvi = (nir - red) / (nir + red)
    assert 0.4 < float(np.nanmedian(ndvi)) < 0.9, "a vegetated landscape"
    with rasterio.open(paths["land_cover"]) as src:
        assert (src.res, src.crs.to_epsg(), src.shape) == ((30.0, 30.0), 32652, tuple(paths["size_px"]))
        classes = src.read(1)
    assert set(np.unique(classes)) <= {2, 4, 7, 8}, "forest and grassland of the test mix, pits, villages (CLCD)"
    pits = geometry_mask([p.geometry for p in register], out_shape=classes.shape, transform=src.transform,
                         invert=True)
    assert (classes[pits] == 7).mean() > 0.9, "the map shows the pits as barren, not the land under them"
    assert {2, 4} <= set(np.unique(classes[~pits]))
    truth = pd.read_csv(paths["truth"])
    assert len(truth) == 8 * len(spec.years)
    assert set(truth["status"].dropna()) <= {"damaged", "under_restoration", "restored", "reverted"}


def test_a_small_bench_run(tmp_path: Path) -> None:
    out = tmp_path / "restoration.json"
    code, output = run_cli("bench", "restoration", "--out", out, "--seeds", "21", "--polygons", "8", "--years", "8",
                           "--no-real")
    assert code == 0, output
    results = json.loads(out.read_text())
    assert out.with_suffix(".md").exists()
    overall, seed = results["overall"], results["per_seed"][0]
    assert set(TARGETS) <= set(results["verdict"])
    assert set(results["verdict"].values()) <= {"met", "NOT met", "-"}
    for key in ("status_accuracy", "status_accuracy_latest_year"):
        assert 0 <= overall[key] <= 1
    assert seed["polygon_years"] <= 8 * 8
    assert seed["failed"] == {}
    assert seed["restored_area_error_median"] is None or seed["restored_area_error_median"] >= 0
    assert all(c["error_pp"] is None or 0 <= c["error_pp"] <= 100 for c in seed["counties"])
    confusion = seed["confusion_truth_by_estimate"]
    assert sum(n for row in confusion.values() for n in row.values()) == seed["polygon_years"]
    assert seed["runtime_s"] > 0
    assert overall["runtime_1000_polygons_30_years_measured"] is False
    assert "EXTRAPOLATED" in out.with_suffix(".md").read_text()


@pytest.mark.skipif(not (default_real_data() / "specrec_bc06_wildfire").exists(), reason="real data not present")
def test_the_bc_wildfire_polygon_as_a_restoration_trajectory() -> None:
    bc = bc_section(default_real_data(), Settings())
    assert "per_year" in bc, bc.get("error")
    years = {y["year"]: y for y in bc["per_year"]}
    assert sorted(years) == list(range(2002, 2025))
    assert all(years[y]["status"] is None for y in range(2002, 2006)), "intact before the 2005 fire"
    assert years[2006]["status"] == "damaged"
    assert years[2006]["ratio"] < 0.5
    assert bc["status"] in ("PLAUSIBLE", "NOT plausible")
    # 2024.tif is byte for byte 2023.tif (the data's README): no second season, so no restoration finished in 2024
    assert years[2024]["status"] == years[2023]["status"]
    assert "finished" not in years[2024]["events"]
