"""Green-survey scorecards on the demo store (a real synthetic scan of the three demo licences): figures
equal to the store's patches and flags, the quiet control ranked greenest, the score reproducible from
its formula's columns, a confirmed violation counted and lowering the score, the CSV files written."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from gmsense.outputs.scorecards import FORMULA, MAX_VIOLATIONS, WEIGHTS, licence_km2, scorecard_tables
from gmsense.records import HUMAN_MADE_CLASSES
from gmsense.store import Store
from gmsense.testutils import run_cli


def _expected_score(row: pd.Series) -> float:
    reclaimed = 1.0 if pd.isna(row["reclaimed_by_deadline_share"]) else row["reclaimed_by_deadline_share"]
    penalty = (WEIGHTS["disturbed"] * row["p_disturbed"] + WEIGHTS["linear"] * row["p_trench_track"]
               + WEIGHTS["reclamation"] * (1 - reclaimed)
               + WEIGHTS["violations"] * min(row["confirmed_violations"], MAX_VIOLATIONS) / MAX_VIOLATIONS)
    return round(100 * (1 - penalty), 1)


def test_scorecards_follow_the_store(demo_folder_for_test: Path, tmp_path: Path) -> None:
    db = demo_folder_for_test / "gmsense.db"
    store = Store(str(db))
    tables = scorecard_tables(store)
    licences = tables["licences"].set_index("site_id")
    assert set(licences.index) == {"HLJ-EXP-001", "HLJ-EXP-002", "HLJ-MIN-003"}
    assert tables["observed_years"] == [2019, 2020, 2021, 2022], "the demo scans 2019-2022"
    sites = {s.site_id: s for s in store.site_rows()}
    human = [p for p in store.patch_rows() if p.disturbance_class in HUMAN_MADE_CLASSES]
    for site_id, row in licences.iterrows():
        mine = [p for p in human if p.site_id == site_id]
        km2 = licence_km2(sites[site_id].geometry_wkt)
        assert row["licence_km2"] == pytest.approx(km2, abs=1e-4)
        assert row["disturbed_ha"] == pytest.approx(sum(p.area_m2 for p in mine) / 1e4, abs=1e-3)
        assert row["disturbed_ha_per_km2_per_year"] == pytest.approx(sum(p.area_m2 for p in mine) / 1e4 / km2 / 4,
                                                                     abs=1e-3)
        length = sum(p.metrics.get("length_m", 0) for p in mine if p.disturbance_class in ("trench", "track"))
        assert row["trench_track_m"] == pytest.approx(length, abs=0.1)
        assert set(filter(None, str(row["patch_ids"] if pd.notna(row["patch_ids"]) else "").split(";"))) \
            == {p.patch_id for p in mine}
        assert row["score"] == pytest.approx(_expected_score(row), abs=0.05), "the score is its formula"
    assert licences.loc["HLJ-MIN-003", "disturbed_ha"] == 0
    assert licences.loc["HLJ-MIN-003", "rank"] == 1, "the quiet control is the greenest"
    assert licences.loc["HLJ-EXP-001", "trench_track_m"] > 0, "trenches and a track planted"
    years = tables["years"]
    assert years.groupby("site_id")["disturbed_ha"].sum().round(3).to_dict() \
        == licences["disturbed_ha"].round(3).to_dict(), "the yearly rows add up to the licence"
    holders = tables["holders"].set_index("holder")
    assert holders["licences"].sum() == 3

    # a confirmed violation counts, and costs score
    from gmsense.review.auth import add_user
    from gmsense.review.service import decide

    before = licences.loc["HLJ-EXP-002"]
    flag = next(f for f in store.flag_rows() if f.site_id == "HLJ-EXP-002" and f.rule == "outside_licence")
    decide(store, flag.id, add_user(store, "ana", "a-long-password-1", "reviewer"), "confirm", "violation",
           "seen on the images")
    after = scorecard_tables(store)["licences"].set_index("site_id").loc["HLJ-EXP-002"]
    assert after["confirmed_violations"] == before["confirmed_violations"] + 1
    assert after["score"] < before["score"]

    out = tmp_path / "cards" / "scorecards.csv"
    code, output = run_cli("report", "scorecards", "--out", out, "--db", db)
    assert code == 0, output
    assert "score = 100 x" in output
    written = pd.read_csv(out)
    assert list(written["rank"]) == sorted(written["rank"])
    for name in ("scorecards_holders.csv", "scorecards_years.csv", "scorecards.md"):
        assert (out.parent / name).exists(), name
    assert FORMULA in (out.parent / "scorecards.md").read_text(encoding="utf-8")
    code, output = run_cli("report", "scorecards", "--out", tmp_path / "x.xlsx", "--db", db)
    assert code == 2
    assert "CSV" in output


def test_the_formula_shown_in_english_is_the_one_the_scores_follow() -> None:
    from gmsense.outputs.i18n import t
    from gmsense.outputs.scorecards import FORMULA

    assert t("summary.scorecards_formula", "en") == FORMULA
    assert "P(" in t("summary.scorecards_formula", "zh")
