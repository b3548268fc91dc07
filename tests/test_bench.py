"""The benchmark's scorer on hand-made cases, and a small end-to-end accuracy run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import LineString, box

from gmsense.bench.accuracy import TARGETS, run_accuracy, truth_status
from gmsense.bench.scoring import score

TRENCH = LineString([(0, 0), (300, 0)]).buffer(3, cap_style="flat")
PAD = box(1000, 1000, 1030, 1030)
FIRE = box(2000, 2000, 2200, 2200)


def _truth() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({
        "kind": ["trench", "pad", "fire"], "disturbance_class": ["trench", "pad", "natural"],
        "start": ["2021-06-01", "2021-06-01", "2021-07-01"], "first_observed": ["2021-06-05", "2021-06-03", ""],
        "recovery_status": ["active", "active", "active"], "inside_licence": [True, True, False],
    }, geometry=[TRENCH, PAD, FIRE], crs=32652)


def _patches(rows: list[tuple]) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(
        [{"disturbance_class": c, "first_detected": d, "recovery_status": "active", "inside_licence": i}
         for c, d, i, _ in rows], geometry=[g for *_, g in rows], crs=32652)


def test_perfect_detection() -> None:
    patches = _patches([("trench", "2021-06-05", True, box(0, -5, 300, 5)),
                        ("pad", "2021-06-13", True, box(995, 995, 1035, 1035)),
                        ("natural", "2021-07-10", False, FIRE)])
    m = score(_truth(), patches, area_km2=10, years=2)
    assert m["recall"] == 1.0
    assert m["recall_by_type"]["trench"] == 1.0
    assert m["class_accuracy"] == 1.0
    assert m["false_alarms"] == 0, "a natural patch on a fire is correct"
    assert m["median_lag_days"] == 5.0
    assert m["inside_licence_accuracy"] == 1.0
    assert m["recovery_status_accuracy"] == 1.0


def test_missed_misclassified_and_false_alarms() -> None:
    patches = _patches([("clearing", "2021-06-20", True, box(995, 995, 1035, 1035)),  # pad called clearing
                        ("clearing", "2021-07-10", False, FIRE),                      # fire called human-made
                        ("pad", "2021-07-10", True, box(5000, 5000, 5020, 5020))])     # background
    m = score(_truth(), patches, area_km2=10, years=2)
    assert m["recall"] == 0.5
    assert m["recall_by_type"] == {"trench": 0.0, "pad": 1.0, "track": None, "clearing": None}
    assert m["class_accuracy"] == 0.0
    assert m["false_alarms"] == 2
    assert m["false_alarms_on_natural"] == {"fire": 1}
    assert m["false_alarms_per_km2_year"] == pytest.approx(0.1)
    assert m["confusion"]["pad"] == {"clearing": 1}


def test_empty_inputs() -> None:
    m = score(_truth().iloc[[]], _patches([]), area_km2=1, years=1)
    assert m["recall"] is None
    assert m["false_alarms"] == 0
    assert m["median_lag_days"] is None


def test_truth_recovery_status() -> None:
    end = np.datetime64("2022-09-30")
    assert truth_status("2022-06-01", 2.0, end) == "active"
    assert truth_status("2020-06-01", 0.0, end) == "not_recovering"
    assert truth_status("2020-06-01", 10.0, end) == "not_recovering"
    assert truth_status("2020-06-01", 4.0, end) == "recovering"
    assert truth_status("2020-06-01", 2.0, end) == "recovered"


@pytest.mark.slow
def test_small_accuracy_run_writes_json_and_markdown(tmp_path: Path) -> None:
    out = tmp_path / "acc.json"
    results = run_accuracy([3], sites_per_seed=1, out=out)
    saved = json.loads(out.read_text())
    assert saved["overall"].keys() == results["overall"].keys()
    for key in ("recall", "class_accuracy", "recovery_status_accuracy", "inside_licence_accuracy"):
        value = saved["overall"][key]
        assert value is None or 0 <= value <= 1
    assert saved["overall"]["false_alarms_per_km2_year"] >= 0
    table = out.with_suffix(".md").read_text()
    assert f"| recall | >= {TARGETS['recall'][1]} |" in table
    assert "recall trench" in table


def _failing_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(site: Any, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"imagery for {site.site_id} is corrupt")

    monkeypatch.setattr("gmsense.batch.scan.analyse_site", broken)


@pytest.mark.slow
def test_a_failed_licence_counts_its_events_as_misses_and_is_reported(monkeypatch: pytest.MonkeyPatch,
                                                                       tmp_path: Path) -> None:
    _failing_scan(monkeypatch)
    out = tmp_path / "acc.json"
    results = run_accuracy([3], sites_per_seed=1, out=out)
    overall = results["overall"]
    assert overall["failed_sites"] == 1
    assert overall["events_human"] > 0
    assert overall["events_human_on_failed_sites"] == overall["events_human"]
    assert overall["recall"] == 0.0, "the failed licence's events are misses, not left out"
    assert overall["false_alarms_per_km2_year"] is None, "no area was scanned"
    [failed] = results["failed_sites"]
    assert failed["site_id"] == "S003-1"
    assert "corrupt" in failed["error"]
    assert json.loads(out.read_text())["failed_sites"][0]["site_id"] == "S003-1"
    table = out.with_suffix(".md").read_text()
    assert "| failed licences (their events scored as misses) | 0 | 1 (" in table
    assert "licence S003-1: " in table
    assert "corrupt" in table


def test_a_failed_licence_without_truth_is_still_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    _failing_scan(monkeypatch)

    def no_scene(*args: Any, **kwargs: Any) -> Any:
        raise OSError("disk full")

    monkeypatch.setattr("gmsense.bench.accuracy.synthesize", no_scene)
    results = run_accuracy([3], sites_per_seed=2)
    assert [f["site_id"] for f in results["failed_sites"]] == ["S003-1", "S003-2"]
    assert all(f["events_human"] is None and "disk full" in f["truth_error"] for f in results["failed_sites"])
    assert results["overall"]["failed_sites"] == 2
    assert results["overall"]["recall"] is None
