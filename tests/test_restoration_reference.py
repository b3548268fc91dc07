"""What a register polygon is compared with (gmsense.restoration.reference) and years without a clear
composite: the reference near each pixel and of its land cover, the land-cover fallback for a pit
without a vegetated ring, the polygon's own soil NDVI, its own ground before damage, and statuses
carried through unobserved years, with the evidence stored per polygon and year (SQLite and
PostgreSQL) and the unobserved area in the accounting. Planted annual composites
(gmsense.testutils.write_annual_composites) through the commands."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from rasterio.features import rasterize
from shapely.geometry import box

from gmsense.config import RestorationSettings
from gmsense.restoration import reference as ref
from gmsense.restoration.status import (
    Trajectory,
    fill_gaps,
    hold_after_last_observation,
    part_cores,
    repeated_years,
    restored_shares,
    segments,
)
from gmsense.store import Store
from gmsense.testutils import PlantedMineLand, run_cli, write_annual_composites

S = RestorationSettings()
YEARS = tuple(range(2010, 2023))
SIZE, RES, ORIGIN = 200, 10.0, (600_000.0, 5_290_000.0)
GRASS_FROM_X = 601_500.0  # forest (NDVI 0.8) to the west, grassland (0.5) to the east
EDGE = PlantedMineLand("EDGE", box(601400, 5289550, 601600, 5289700), 2011, (2013, 2016))  # across both
CLOUD = PlantedMineLand("CLOUD", box(600200, 5289550, 600350, 5289700), 2011, (2013, 2016))
APRON = PlantedMineLand("APRON", box(600930, 5288930, 601080, 5289080), 2011, (2013, 2016))
# tailings darker than the configured soil_ndvi, grown back to 82 % cover: 0.799 with soil_ndvi 0.1
DARK = PlantedMineLand("DARK", box(600200, 5288300, 600350, 5288450), 2011, (2013, 2016), level=0.82, bare_ndvi=0.02)
# a pit dug where the ground was thinner than the ring (NDVI 0.7 against 0.8), grown back to 90 % of it:
# 77 % of the ring's cover, 90 % of its own ground's
THIN = PlantedMineLand("THIN", box(600650, 5288300, 600800, 5288450), 2013, (2014, 2017), level=0.9, ground_ndvi=0.7)
PLANTS = (EDGE, CLOUD, APRON, DARK, THIN)
SPOIL = APRON.geometry.buffer(130, join_style="mitre")  # unregistered bare ground all around APRON
CLOUDS = {2017: CLOUD.geometry.buffer(250), 2022: CLOUD.geometry.buffer(250)}


# --- the pieces, on arrays -----------------------------------------------------------------------------


def test_unobserved_years_are_filled_from_the_observed_years_around_them() -> None:
    values = np.array([[np.nan, 1.0], [0.2, np.nan], [np.nan, np.nan], [0.6, 0.4], [np.nan, np.nan]])
    filled = fill_gaps(values)
    assert np.isnan(filled[0, 0]), "no value before the first observation"
    assert filled[:, 0][1:].tolist() == pytest.approx([0.2, 0.4, 0.6, 0.6]), "linear between, carried after"
    assert filled[:, 1].tolist() == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.4])


def test_a_composite_repeating_the_year_before_is_no_observation() -> None:
    rng = np.random.default_rng(3)
    yearly = rng.uniform(0.2, 0.8, size=(5, 4, 4))
    yearly[1, 0, 0] = np.nan
    yearly[2] = yearly[1]  # the tool filled 2 with 1
    yearly[4] = yearly[3] + 1e-9  # close is not the same image
    empty = np.full((2, 4, 4), np.nan)  # two years without imagery repeat nothing
    assert repeated_years(yearly).tolist() == [False, False, True, False, False]
    assert not repeated_years(empty).any()


def test_years_after_the_last_observation_hold_its_status_without_events() -> None:
    trajectory = Trajectory(["damaged", "under_restoration", "under_restoration", "restored"],
                            ["", "started", "", "finished"])
    shares = np.array([0.0, 0.0, 0.2, 1.0])
    held, held_shares = hold_after_last_observation(trajectory, shares, np.array([1.0, 0.6, 0.3, 0.0]))
    assert held.statuses == ["damaged", "under_restoration", "under_restoration", "under_restoration"]
    assert held.events == ["", "started", "", ""], "an extrapolated ratio finishes nothing"
    assert held_shares.tolist() == [0.0, 0.0, 0.2, 0.2]
    same, same_shares = hold_after_last_observation(trajectory, shares, np.array([1.0, 0.0, 0.3, 0.1]))
    assert same == trajectory, "an unobserved year between two observed ones counts"
    assert same_shares is shares


def test_nearest_medians_take_the_nearest_observed_sources() -> None:
    here = np.array([[0.0, 0.0], [10.0, 0.0]])
    there = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [11.0, 0.0]])
    candidates = ref.nearest_sources(here, there, 3)
    assert candidates.tolist() == [[0, 1, 2], [3, 2, 1]]
    assert ref.nearest_sources(here, there[:2], 3)[:, 2].tolist() == [-1, -1], "fewer sources than asked"
    values = np.array([[1.0, 2.0, 3.0, 10.0], [np.nan, 2.0, 3.0, 10.0], [np.nan] * 4])
    out = ref.nearest_medians(values, candidates, 2)
    assert out[0].tolist() == [1.5, 6.5]
    assert out[1].tolist() == [2.5, 6.5], "an unobserved source is skipped for the next nearest"
    assert np.isnan(out[2]).all()


def test_a_pit_takes_the_land_cover_of_the_nearest_vegetated_land() -> None:
    land_cover = np.array([[2, 2, 7, 7, 4, 4]] * 3)
    polygon = np.zeros_like(land_cover, dtype=bool)
    polygon[1, 1:5] = True  # one forest pixel, two barren, one grassland
    allowed = ~polygon
    assert ref.pixel_classes(land_cover, polygon, allowed, S.land_cover_vegetated).tolist() == [2, 2, 4, 4]
    assert ref.pixel_classes(np.full((3, 6), 7), polygon, allowed, S.land_cover_vegetated).tolist() == [0] * 4


def test_soil_line_and_pre_damage_level() -> None:
    reference = np.full((4, 10), 0.8)
    dark = np.vstack([np.full(10, 0.03), np.full(10, 0.02), np.full(10, 0.5), np.full(10, 0.7)])
    assert ref.soil_line(dark, reference, S) == pytest.approx(0.02), "its barest year"
    green = np.vstack([np.full(10, 0.6), np.full(10, 0.7), np.full(10, 0.65), np.full(10, 0.7)])
    assert ref.soil_line(green, reference, S) == S.soil_ndvi, "never bare in the archive: the configured soil"
    cover = np.vstack([np.full(3, 0.9), np.array([0.85, 0.95, np.nan]), np.zeros(3), np.full(3, 0.5)])
    assert ref.pre_damage_level(cover, S).tolist() == pytest.approx([0.875, 0.925, 0.9])
    assert ref.pre_damage_level(cover[1:], S) is None, "one year at reference before damage is not enough"
    assert ref.pre_damage_level(cover[:2], S) is None, "never damaged: nothing to calibrate"


def test_a_part_is_judged_away_from_the_line_it_shares_with_the_other() -> None:
    # 6 x 6 pixels: a planted strip (column 0, cover 0.92), pixels across the cut (columns 1 and 2, mixed),
    # bare ground (columns 3-5); the planted part's median over all its pixels is 0.77, below 0.8
    polygon = np.ones((6, 6), dtype=bool)
    cover = np.tile(np.array([0.92, 0.62, 0.3, 0.0, 0.0, 0.0]), 6)
    pixel_ratio = np.vstack([np.zeros(36), np.zeros(36), cover, cover, cover])
    statuses = ["damaged"] * 5
    assert segments(pixel_ratio[2:], S).sum() == 12, "the strip and the line's planted side"
    assert [c.sum() for c in part_cores(segments(pixel_ratio[2:], S), polygon)] == [18, 6]
    assert restored_shares(pixel_ratio, statuses, S).tolist() == [0] * 5, "the mixed line drags the median"
    assert restored_shares(pixel_ratio, statuses, S, polygon).tolist() == pytest.approx([0, 0, 0, 1 / 3, 1 / 3])


# --- planted composites through the commands ---------------------------------------------------------------


def _land_cover_map(path: Path) -> Path:
    """A CLCD-coded map in geographic coordinates (the imagery is UTM): forest and grassland, the pits
    and the spoil around APRON barren (as a map made after they were dug shows them)."""
    from rasterio.warp import calculate_default_transform, reproject

    transform = Affine(30, 0, ORIGIN[0], 0, -30, ORIGIN[1])
    n = int(SIZE * RES / 30)
    cols = ORIGIN[0] + (np.arange(n) + 0.5) * 30
    classes = np.where(np.broadcast_to(cols >= GRASS_FROM_X, (n, n)), 4, 2).astype(np.uint8)
    barren = rasterize([(SPOIL, 1), *[(p.geometry, 1) for p in PLANTS]], out_shape=(n, n), transform=transform)
    classes[barren == 1] = 7
    bounds = rasterio.transform.array_bounds(n, n, transform)  # west, south, east, north
    dst_transform, width, height = calculate_default_transform("EPSG:32652", "EPSG:4326", n, n, *bounds)
    out = np.zeros((height, width), dtype=np.uint8)
    reproject(classes, out, src_transform=transform, src_crs="EPSG:32652", dst_transform=dst_transform,
              dst_crs="EPSG:4326", src_nodata=0, dst_nodata=0)
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=1, dtype="uint8",
                       crs="EPSG:4326", transform=dst_transform, nodata=0) as dst:
        dst.write(out, 1)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("reference")
    cols = ORIGIN[0] + (np.arange(SIZE) + 0.5) * RES
    background = np.where(np.broadcast_to(cols >= GRASS_FROM_X, (SIZE, SIZE)), 0.5, 0.8)
    write_annual_composites(folder / "composites", YEARS, PLANTS, vegetated_ndvi=background, bare_ground=(SPOIL,),
                            clouds=CLOUDS)
    rows = [{"register_id": p.register_id, "kind": "tailings" if p is DARK else "open_pit", "mineral_class": "metal",
             "responsible_party": "none: historical", "province": "HLJ", "city": "Hegang", "county": "A",
             "geometry": p.geometry} for p in PLANTS]
    gpd.GeoDataFrame(rows, crs="EPSG:32652").to_file(folder / "register.gpkg")
    _land_cover_map(folder / "landcover.tif")
    return folder


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(tmp_path / "store.db") if request.param == "sqlite" else request.getfixturevalue("postgres_url")


def _run(world: Path, db: str, out: Path, *options: object, config: dict | None = None) -> pd.DataFrame:
    """Import, run (with ``options``) and report; the status table indexed by (register_id, year)."""
    code, output = run_cli("register", "import", world / "register.gpkg", "--db", db)
    assert code == 0, output
    extra: list[object] = []
    if config:
        path = out.parent / f"{out.name}.yaml"
        path.write_text("restoration:\n" + "".join(f"  {k}: {v}\n" for k, v in config.items()))
        extra = ["--config", path]
    code, output = run_cli("restoration", "run", "--imagery", world / "composites", "--db", db, *options, *extra)
    assert code == 0, output
    code, output = run_cli("restoration", "report", "--out", out, "--db", db, "--format", "tables")
    assert code == 0, output
    return pd.read_csv(out / "status_by_polygon_year.csv").set_index(["register_id", "year"])


def test_references_and_unobserved_years_as_planted(world: Path, db: str, tmp_path: Path) -> None:
    table = _run(world, db, tmp_path / "report", "--land-cover", world / "landcover.tif")
    latest = table.xs(2022, level="year")
    assert (latest["status"] == "restored").all(), latest[["status", "ratio", "reference_source"]]
    # EDGE lies across forest and grassland: each side is compared with its own side of the ring, so the
    # grassland half is not read as 0.73 of a forest-and-grassland median and split off as unrestored
    assert latest.loc["EDGE", "restored_share"] == pytest.approx(1.0)
    assert latest.loc["EDGE", "reference_source"] == "ring_land_cover"
    # CLOUD: no clear composite over it in 2017 (its second season at reference) nor in 2022
    cloud = table.loc["CLOUD"]
    assert cloud.loc[2017, "observed_share"] == 0
    assert cloud.loc[2022, "observed_share"] == 0
    assert cloud.loc[2017, "status"] == "restored", "2016 and 2018 at reference: 2017 reads as them"
    assert "finished" in str(cloud.loc[2017, "events"])
    assert pd.isna(cloud.loc[2017, "polygon_ndvi"])
    assert cloud.loc[2017, "n_pixels"] == 0
    assert cloud.loc[2022, "status"] == "restored", "carried from 2021, never dropped from the accounting"
    assert cloud.loc[2022, "unobserved_m2"] == pytest.approx(cloud.loc[2022, "area_m2"])
    assert (table.drop(index="CLOUD", level="register_id")["observed_share"] == 1).all()
    # APRON: bare spoil all around, no vegetated ring: its land cover (forest, the nearest vegetated
    # land on the map) in the region is its reference
    apron = table.loc["APRON"]
    assert (apron["reference_source"] == "land_cover_region").all()
    assert apron.loc[2012, "status"] == "damaged"
    assert apron["reference_ndvi"].dropna().between(0.75, 0.85).all()
    # DARK: its own bare ground (NDVI 0.02) is its soil, so 82 % cover reads as 82 %, restored
    assert table.loc[("DARK", 2012), "soil_ndvi"] == pytest.approx(0.02, abs=0.01)
    assert latest.loc["DARK", "ratio"] == pytest.approx(0.82, abs=0.015)
    # THIN: calibrated against its own ground before damage (2010-2012), 90 % of it
    assert latest.loc["THIN", "reference_source"] == "ring_land_cover+pre_damage"
    assert latest.loc["THIN", "ratio"] == pytest.approx(0.9, abs=0.02)
    county = pd.read_csv(tmp_path / "report" / "by_county.csv").set_index(["group", "year"])
    assert county.loc[("A", 2022), "unobserved_m2"] == pytest.approx(cloud.loc[2022, "area_m2"])
    assert county.loc[("A", 2021), "unobserved_m2"] == 0
    assert county.loc[("A", 2022), "restored_m2"] == pytest.approx(latest["area_m2"].sum()), "every pit counted"
    summary = (tmp_path / "report" / "summary.md").read_text(encoding="utf-8")
    assert "of it was not observed (cloud or stripes)" in summary
    polygons = gpd.read_file(tmp_path / "report" / "polygons_latest.gpkg").set_index("register_id")
    assert polygons.loc["APRON", "reference_source"] == "land_cover_region"
    rows = {(r.register_id, r.year): r for r in Store(db).restoration_rows()}
    assert rows[("CLOUD", 2017)].observed_share == 0
    assert rows[("THIN", 2022)].reference_source.endswith("pre_damage")


def test_what_each_reference_changes(world: Path, tmp_path: Path) -> None:
    """The same world without the land-cover map, with one median of the whole ring per pixel, and
    without the calibration against the ground before damage: the planted differences show."""
    plain = _run(world, str(tmp_path / "plain.db"), tmp_path / "plain")
    assert plain.loc[("EDGE", 2022), "reference_source"] == "ring"
    assert plain.loc[("EDGE", 2022), "restored_share"] == pytest.approx(1.0), "the nearest ring pixels alone"
    assert plain.loc[("APRON", 2022), "reference_source"] == "vegetated_region", "no map: the region's green land"
    assert plain.loc[("APRON", 2022), "status"] == "restored"
    whole = _run(world, str(tmp_path / "whole.db"), tmp_path / "whole", config={"reference_pixels": 100000})
    assert whole.loc[("EDGE", 2022), "restored_share"] < 0.75, "one median of the whole ring splits EDGE"
    raw = _run(world, str(tmp_path / "raw.db"), tmp_path / "raw", config={"pre_damage_years": 0})
    assert raw.loc[("THIN", 2022), "reference_source"] == "ring"
    assert raw.loc[("THIN", 2022), "ratio"] == pytest.approx(0.77, abs=0.02)
    assert raw.loc[("THIN", 2022), "status"] != "restored", "77 % of the ring's cover"


def test_a_land_cover_map_that_cannot_be_read_is_a_user_error(world: Path, tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    code, output = run_cli("register", "import", world / "register.gpkg", "--db", db)
    assert code == 0, output
    code, output = run_cli("restoration", "run", "--imagery", world / "composites", "--db", db,
                           "--land-cover", tmp_path / "missing.tif")
    assert code == 2
    assert "land-cover map" in output
    assert "does not exist" in " ".join(output.split())
    two_bands = tmp_path / "two.tif"
    with rasterio.open(two_bands, "w", driver="GTiff", width=4, height=4, count=2, dtype="uint8", crs="EPSG:32652",
                       transform=Affine(30, 0, ORIGIN[0], 0, -30, ORIGIN[1])) as dst:
        dst.write(np.ones((2, 4, 4), dtype=np.uint8))
    code, output = run_cli("restoration", "run", "--imagery", world / "composites", "--db", db,
                           "--land-cover", two_bands)
    assert code == 2
    assert "must have one band of class codes" in " ".join(output.split())
