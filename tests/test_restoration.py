"""Restoration of register polygons: statuses and events per year, from synthetic annual composites with
planted damage, greening ramps, partial restoration and a reversion; accounting equal to hand-computed figures;
the commands end to end on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from affine import Affine
from shapely.geometry import Point, box

from gmsense.config import RestorationSettings, Settings
from gmsense.restoration.status import classify, exclusion, masks, restored_shares, segments
from gmsense.store import Store
from gmsense.testutils import PlantedMineLand, run_cli, write_annual_composites

YEARS = tuple(range(2010, 2023))
S = RestorationSettings()
#: register_id -> (kind, county, demonstration_zone attribute); P5 lies inside zone Z1 without naming it.
ATTRS = {"P1": ("open_pit", "A", None), "P2": ("waste_dump", "A", None), "P3": ("tailings", "B", None),
         "P4": ("subsidence", "B", "Z1"), "P5": ("exploration_legacy", "A", None), "P6": ("other", "B", None)}
PLANTS = (
    PlantedMineLand("P1", box(600200, 5289650, 600350, 5289800), damaged_from=2012),  # never restored
    PlantedMineLand("P2", box(600600, 5289650, 600750, 5289800), 2011, restoration=(2014, 2018)),  # slow ramp
    PlantedMineLand("P3", box(601000, 5289650, 601150, 5289800), 2011, (2013, 2016), reverted_in=2020),
    PlantedMineLand("P4", box(600200, 5289100, 600350, 5289250), 2010, (2011, 2013)),  # damaged when the archive starts
    PlantedMineLand("P5", box(600600, 5289100, 600750, 5289250)),  # restored before the archive
    PlantedMineLand("P6", box(601000, 5289100, 601200, 5289250), 2011, (2014, 2015), restored_part=0.4),
)
ZONE = box(600100, 5289000, 600850, 5289350)
A = 150 * 150  # m2 of P1-P5
A6 = 200 * 150  # m2 of P6

#: The statuses the planted trajectories must give (vegetation share = NDVI (0.1 + 0.7 share) over a ring at
#: 0.8 and bare ground at soil_ndvi 0.1: the ratio is the share itself).
EXPECTED = {
    "P1": {**dict.fromkeys(range(2010, 2012)), **dict.fromkeys(range(2012, 2023), "damaged")},
    # The ramps' greening reads as a trend from their first green year (a Theil-Sen slope of at least
    # min_slope over trend_window years), not only after two yearly rises of min_rise.
    "P2": {2010: None, **dict.fromkeys(range(2011, 2015), "damaged"),
           **dict.fromkeys(range(2015, 2019), "under_restoration"), **dict.fromkeys(range(2019, 2023), "restored")},
    "P3": {2010: None, **dict.fromkeys(range(2011, 2014), "damaged"),
           **dict.fromkeys(range(2014, 2017), "under_restoration"),
           **dict.fromkeys(range(2017, 2020), "restored"),
           **dict.fromkeys(range(2020, 2023), "reverted")},
    "P4": {2010: "damaged", 2011: "damaged", 2012: "damaged", 2013: "under_restoration",
           **dict.fromkeys(range(2014, 2023), "restored")},
    "P5": dict.fromkeys(YEARS, "restored"),
    # 40 % planted: the polygon's cover rises to 0.4 (a greening trend while the slope window holds it), then
    # stalls: damaged again (the polygon is not restored as a whole; its restored part is restored area).
    "P6": {2010: None, **dict.fromkeys(range(2011, 2015), "damaged"),
           **dict.fromkeys(range(2015, 2018), "under_restoration"), **dict.fromkeys(range(2018, 2023), "damaged")},
}
#: register_id -> (restoration started, finished, reverted): the latest events.
MILESTONES = {"P1": (None, None, None), "P2": (2015, 2019, None), "P3": (2014, 2017, 2020), "P4": (2012, 2014, None),
              "P5": (None, None, None), "P6": (2015, None, None)}


def _ratios(shares: list[float]) -> np.ndarray:
    return np.array([(0.1 + 0.7 * v) / 0.8 for v in shares])


# --- the rules, on ratios alone -------------------------------------------------------------------------


def test_rules_on_a_ramp_a_reversion_and_gaps() -> None:
    ramp = classify(_ratios([1, 0, 0, 0.25, 0.5, 0.75, 1, 1]), S)
    assert ramp.statuses == [None, "damaged", "damaged", "damaged", "under_restoration", "under_restoration",
                             "under_restoration", "restored"]
    assert ramp.events == ["", "", "", "started", "", "", "", "finished"]
    back = classify(_ratios([0, 1, 1, 1, 0.5, 0, 0, 1, 1]), S)  # at reference in one jump; dips; reverts; again
    assert back.statuses == ["damaged", "under_restoration", "restored", "restored", "restored", "reverted",
                             "reverted", "under_restoration", "restored"]
    assert back.events == ["", "started", "finished", "", "", "reverted", "", "started", "finished"]
    gap = classify(np.array([0.1, np.nan, 0.1, 0.4, 0.7, np.nan, 0.9, 0.95]), S)  # no ratio: no status, skipped
    assert gap.statuses == ["damaged", None, "damaged", "damaged", "under_restoration", None, "under_restoration",
                            "restored"]
    assert classify(np.array([0.6, 0.62, 0.61]), S).statuses == ["damaged"] * 3, "half green, no trend: damaged"
    assert classify(np.full(3, np.nan), S).statuses == [None] * 3


def test_restored_area_by_parts_not_pixels() -> None:
    rng = np.random.default_rng(0)
    years = 10
    statuses = ["damaged"] * years
    partial = rng.normal(0.0, 0.05, (years, 100))
    partial[4:, :40] += 0.9  # 40 % planted in the fifth year, at reference from then on
    assert segments(partial, S).sum() == 40
    assert restored_shares(partial, statuses, S).tolist() == [0] * 5 + [0.4] * 5, "after two seasons at reference"
    noisy = rng.normal(0.83, 0.06, (years, 100))  # one part just above 80 %: about a third of its pixels below
    noisy[:3] = 0.05
    assert segments(noisy, S).sum() == 0, "one part: pixel noise makes no second part"
    assert restored_shares(noisy, statuses, S).tolist() == [0] * 4 + [1] * 6, "all restored, none by pixel"
    below = noisy - 0.08  # just below: none restored, although a quarter of its pixels pass 80 % each year
    assert np.nansum(restored_shares(below, statuses, S)) == 0
    assert np.isnan(restored_shares(partial, [None] * years, S)).all(), "no status, no restored area"


def test_the_reference_ring_leaves_out_every_register_polygon() -> None:
    transform = Affine(10, 0, 0, 0, -10, 1000)
    pit, neighbour = box(300, 500, 400, 600), box(450, 500, 550, 600)  # 50 m apart
    inside, ring = masks(pit, exclusion([pit, neighbour], S), (100, 100), transform, S)
    assert inside.sum() == 100
    rows, cols = np.nonzero(ring)
    xs, ys = cols * 10 + 5, 1000 - (rows * 10 + 5)
    assert not (inside & ring).any()
    centres = [Point(x, y) for x, y in zip(xs, ys, strict=True)]
    assert min(neighbour.distance(c) for c in centres) >= 30, "nothing within 30 m of another register polygon"
    near = np.array([pit.distance(c) for c in centres])
    assert near.min() >= 30
    assert near.max() <= 100 + 10


# --- synthetic composites through the commands -------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("restoration")
    write_annual_composites(folder / "composites", YEARS, PLANTS)
    rows = [{"register_id": p.register_id, "kind": ATTRS[p.register_id][0], "mineral_class": "metal",
             "responsible_party": "none: historical", "province": "HLJ", "city": "Hegang",
             "county": ATTRS[p.register_id][1], "demonstration_zone": ATTRS[p.register_id][2],
             "geometry": p.geometry} for p in PLANTS]
    gpd.GeoDataFrame(rows, crs="EPSG:32652").to_file(folder / "register.gpkg")
    gpd.GeoDataFrame([{"zone_id": "Z1", "name": "demonstration zone", "target_rate": 0.6, "geometry": ZONE}],
                     crs="EPSG:32652").to_file(folder / "zones.geojson")
    return folder


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(tmp_path / "store.db") if request.param == "sqlite" else request.getfixturevalue("postgres_url")


@pytest.fixture
def reported(world: Path, db: str, tmp_path: Path) -> tuple[Path, str]:
    for args in (("register", "import", world / "register.gpkg"), ("zones", "import", world / "zones.geojson")):
        code, output = run_cli(*args, "--db", db)
        assert code == 0, output
    code, output = run_cli("restoration", "run", "--imagery", world / "composites", "--db", db)
    assert code == 0, output
    assert "restoration run 1: 6 of 6 register polygons analysed, years 2010-2022" in output
    code, output = run_cli("restoration", "report", "--out", tmp_path / "report", "--db", db)
    assert code == 0, output
    return tmp_path / "report", db


def test_statuses_and_milestones_as_planted(reported: tuple[Path, str]) -> None:
    folder, db = reported
    table = pd.read_csv(folder / "status_by_polygon_year.csv")
    got = {rid: {int(y): None if pd.isna(s) else s for y, s in zip(rows["year"], rows["status"], strict=True)}
           for rid, rows in table.groupby("register_id")}
    assert got == EXPECTED
    latest = gpd.read_file(folder / "polygons_latest.gpkg").set_index("register_id")
    for rid, (started, finished, reverted) in MILESTONES.items():
        row = latest.loc[rid]
        assert [None if pd.isna(v) else int(v) for v in row[["restoration_started", "restoration_finished",
                                                            "reverted"]]] == [started, finished, reverted], rid
        assert row["status"] == EXPECTED[rid][2022]
    assert latest.loc["P6", "restored_share"] == pytest.approx(0.4), "the western 40 % grew back"
    assert latest.loc["P4", "zone"] == "Z1", "by its demonstration_zone attribute"
    assert latest.loc["P5", "zone"] == "Z1", "by location: inside the zone's polygon"
    p6 = table[table["register_id"] == "P6"].set_index("year")
    assert p6.loc[2014, "restored_share"] == 0
    assert p6.loc[2015, "restored_share"] == 0, "its pixels at reference for one season only"
    assert p6.loc[2016, "restored_share"] == pytest.approx(0.4), "restored after two seasons at reference"
    assert p6.loc[2022, "image_id"] == "2022.tif", "each figure names its composite"
    assert (table["n_reference"] > 500).all(), "a 30-100 m ring of 10 m pixels"
    assert len(Store(db).restoration_rows()) == 6 * len(YEARS)


def test_accounting_equals_hand_computed_figures(reported: tuple[Path, str]) -> None:
    folder, _ = reported
    county = pd.read_csv(folder / "by_county.csv").set_index(["group", "year"])
    a, b = county.loc[("A", 2022)], county.loc[("B", 2022)]
    # Area, not polygons: county A: P1 damaged; P2, P5 restored. County B: P3 reverted, P6 damaged with its
    # western 40 % restored (restored area), P4 restored.
    assert (a["damaged_m2"], a["restored_m2"]) == (A, 2 * A)
    assert a["restoration_rate"] == pytest.approx(2 / 3)
    assert bool(a["meets_target"])
    assert b["damaged_m2"] == pytest.approx(A + 0.6 * A6)
    assert b["restored_m2"] == pytest.approx(A + 0.4 * A6), "P4 whole and 40 % of P6"
    assert b["reverted_m2"] == A
    assert b["restored_polygons_m2"] == A, "P4 alone is restored as a whole"
    assert b["restoration_rate"] == pytest.approx((A + 0.4 * A6) / (2 * A + A6))
    assert bool(b["meets_target"]), "46 %: met by area, although one polygon of three is restored"
    assert set(b["register_ids"].split(";")) == {"P3", "P4", "P6"}
    new = county[["newly_damaged_m2", "newly_restored_m2"]]
    assert new.loc[("A", 2011)].tolist() == [A, 0]
    assert new.loc[("A", 2012)].tolist() == [A, 0]
    assert new.loc[("A", 2019)].tolist() == [0, A], "P2 as one part: its pixels' noise adds or removes nothing"
    assert new.loc[("B", 2010)].tolist() == [0, 0], "damaged when the archive starts: the stock, not new"
    assert new.loc[("B", 2011)].tolist() == [A + A6, 0]
    assert new.loc[("B", 2014)].tolist() == [0, A]
    assert new.loc[("B", 2016)].tolist() == pytest.approx([0, 0.4 * A6]), "P6's restored part"
    assert new.loc[("B", 2017)].tolist() == [0, A]
    assert new.loc[("B", 2020)].tolist() == [A, 0], "the reversion: restored area lost is new damage"
    assert county["newly_damaged_m2"].sum() == 3 * A + A6 + A
    # the yearly balance: damaged and restored area change by exactly the new areas
    for group, rows in county.groupby(level="group"):
        rows = rows.droplevel("group").sort_index()
        change = rows["damaged_m2"].diff().iloc[1:]
        balance = (rows["newly_damaged_m2"] - rows["newly_restored_m2"]).iloc[1:]
        assert change.tolist() == pytest.approx(balance.tolist(), abs=1e-6), group
    rated = county.dropna(subset=["restoration_rate"])
    assert (rated["rate_low"] <= rated["restoration_rate"] + 1e-12).all()
    assert (rated["restoration_rate"] <= rated["rate_high"] + 1e-12).all()
    total = pd.read_csv(folder / "total.csv").set_index("year").loc[2022]
    assert total["restoration_rate"] == pytest.approx((3 * A + 0.4 * A6) / (5 * A + A6))
    assert total["target_rate"] == 0.4
    zone = pd.read_csv(folder / "by_zone.csv").set_index(["group", "year"]).loc[("Z1", 2022)]
    assert (zone["polygons"], zone["restored_m2"], zone["target_rate"]) == (2, 2 * A, 0.6), "the zone's own target"
    kind = pd.read_csv(folder / "by_kind.csv").set_index(["group", "year"])
    assert kind.loc[("tailings", 2022), "reverted_m2"] == A
    assert set(pd.read_csv(folder / "by_province.csv")["group"]) == {"HLJ"}
    summary = (folder / "summary.md").read_text(encoding="utf-8")
    assert "restoration rate 55.8% against a target of 40.0% (target met)" in summary
    assert "| B | 4.05 ha | 3.45 ha | 46.0% | 40.0% | target met |" in summary


def test_chinese_summary_in_mu(reported: tuple[Path, str], tmp_path: Path) -> None:
    _, db = reported
    code, output = run_cli("restoration", "report", "--out", tmp_path / "zh", "--db", db, "--lang", "zh",
                           "--area-unit", "mu")
    assert code == 0, output
    text = (tmp_path / "zh" / "summary.md").read_text(encoding="utf-8")
    assert "修复率55.8%，目标40.0%（达标）" in text
    assert "| B | 60.75亩 | 51.75亩 | 46.0% | 40.0% | 达标 |" in text
    assert "<html lang='zh-CN'>" in (tmp_path / "zh" / "summary.html").read_text(encoding="utf-8")


def test_commands_say_what_is_missing(tmp_path: Path) -> None:
    db = tmp_path / "empty.db"
    Store(str(db))
    code, output = run_cli("restoration", "report", "--out", tmp_path / "r", "--db", db)
    assert code == 2
    assert "holds no restoration status: run gmsense restoration run" in " ".join(output.split())
    code, output = run_cli("restoration", "run", "--imagery", tmp_path, "--db", db)
    assert code == 2
    assert "holds no register polygons: run gmsense register import FILE" in " ".join(output.split())


def test_thresholds_are_settings() -> None:
    assert Settings().restoration == S
    assert (S.damaged_ratio, S.restored_ratio, S.restored_seasons, S.target_rate) == (0.5, 0.8, 2, 0.4)
    assert Settings().with_overrides({"restoration.target_rate": 0.5}).config_hash() == Settings().config_hash(), \
        "restoration settings never force a rescan"
    from gmsense.errors import ConfigError

    with pytest.raises(ConfigError, match="damaged_ratio must be below restored_ratio"):
        Settings().with_overrides({"restoration.damaged_ratio": 0.9})


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_pdf_report_with_province_rate_and_sources(reported: tuple[Path, str], tmp_path: Path, lang: str) -> None:
    from pypdf import PdfReader

    _, db = reported
    folder = tmp_path / lang
    code, output = run_cli("restoration", "report", "--out", folder, "--db", db, "--format", "pdf", "--lang", lang)
    assert code == 0, output
    text = "".join(page.extract_text() for page in PdfReader(folder / "restoration_report.pdf").pages)
    text = text.replace("\n", "")
    rate = pd.read_csv(folder / "by_province.csv").set_index(["group", "year"]).loc[("HLJ", 2022), "restoration_rate"]
    if lang == "zh":
        assert "矿山生态修复核算报告（2022年）" in text
        assert "HLJ省：" in text
        assert f"修复率{rate:.1%}，目标40.0%" in text
        assert "示范区Z1：修复率" in text
        assert "目标60.0%" in text, "the zone against its own target"
        assert "逐年损毁与修复面积" in text
    else:
        assert "Restoration of mine land: accounting report, 2022" in text
        assert "Province HLJ:" in text
        assert f"restoration rate {rate:.1%} against 40.0%" in text
    assert "by_county.csv" in text, "each figure names its source"
    assert "P6" in text, "and its polygons"
    for name in ("total.csv", "by_county.csv", "by_zone.csv", "status_by_polygon_year.csv"):
        assert (folder / name).exists(), name
    assert not (folder / "summary.md").exists(), "--format pdf writes the PDF and the tables it cites"
    county = pd.read_csv(folder / "by_county.csv")
    assert set(county.loc[county["group"] == "A", "register_ids"].iloc[-1].split(";")) == {"P1", "P2", "P5"}


def test_the_rate_range_counts_polygons_at_the_threshold_both_ways() -> None:
    from gmsense.outputs.restoration_report import accounting

    table = pd.DataFrame({
        "register_id": ["R1", "R2", "R3", "R4"], "year": [2024] * 4, "county": ["C"] * 4,
        "status": ["restored", "damaged", "damaged", "restored"],
        "ratio": [0.83, 0.77, 0.40, 0.95],  # R1 and R2 within 0.05 of 0.8: either way
        "area_m2": [100.0, 200.0, 300.0, 400.0], "restored_m2": [100.0, 0.0, 0.0, 400.0]})
    row = accounting(table, "county", 0.4, borderline=(0.8, 0.05)).iloc[0]
    assert row["restoration_rate"] == pytest.approx(500 / 1000)
    assert row["borderline_m2"] == 300.0
    assert (row["rate_low"], row["rate_high"]) == pytest.approx((400 / 1000, 700 / 1000))
    plain = accounting(table, "county", 0.4).iloc[0]
    assert plain["rate_low"] == plain["rate_high"] == plain["restoration_rate"], "no margin, no range"
    assert plain["borderline_m2"] == 0.0


def test_one_command_runs_and_reports_in_chinese(world: Path, tmp_path: Path) -> None:
    db = str(tmp_path / "store.db")
    for args in (("register", "import", world / "register.gpkg"), ("zones", "import", world / "zones.geojson")):
        code, output = run_cli(*args, "--db", db)
        assert code == 0, output
    code, output = run_cli("restoration", "run", "--imagery", world / "composites", "--db", db,
                           "--report", tmp_path / "report", "--lang", "zh", "--area-unit", "mu")
    assert code == 0, output
    folder = tmp_path / "report"
    written = {p.name for p in folder.iterdir()}
    assert {"by_county.csv", "by_zone.csv", "restoration_report.pdf", "summary.md"} <= written
    assert "修复率" in (folder / "summary.md").read_text(encoding="utf-8")
    total = pd.read_csv(folder / "total.csv").set_index("year").loc[2022]
    zone = pd.read_csv(folder / "by_zone.csv").set_index(["group", "year"]).loc[("Z1", 2022)]
    printed = {(cells[0], cells[1]): cells[2:] for cells in
               ([c.strip() for c in line.split("\u2502")[1:-1]] for line in output.splitlines()
                if line.startswith("\u2502"))}
    assert printed[("all", "all")][:2] == ["2022", f"{total['restoration_rate']:.1%}"], output
    assert printed[("zone", "Z1")][:2] == ["2022", f"{zone['restoration_rate']:.1%}"]
    assert printed[("zone", "Z1")][3] == "60%", "the zone against its own target"


def test_a_polygon_of_one_part_restored_as_a_whole_has_its_whole_area_restored() -> None:
    """Status and area agree for a homogeneous polygon: a skewed cover (most pixels just under 80 %,
    a few well above) whose mean, the polygon's ratio, passes 80 % while its median pixel does not
    is restored with its whole area (was: restored, 0 m2 restored)."""
    years, pixels = 6, 100
    cover = np.full((years, pixels), 0.05)
    cover[2:] = 0.79
    cover[2:, :8] = 0.95  # mean 0.8028, median 0.79
    assert segments(cover, S).sum() == 0, "one part"
    statuses = classify(np.nanmean(cover, axis=1), S).statuses
    assert statuses[-1] == "restored"
    shares = restored_shares(cover, statuses, S)
    assert [s == "restored" for s in statuses] == [v == 1 for v in shares]
    assert shares[-1] == 1
