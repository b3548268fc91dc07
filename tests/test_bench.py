"""The benchmark's scorer on hand-made cases, and a small end-to-end accuracy run."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
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
    # with growing seasons: first seen in the latest season (a winter work) is active
    assert truth_status("2021-11-10", 0.0, end, first_season=2022, latest_season=2022) == "active"
    assert truth_status("2021-11-10", 0.0, end, first_season=None, latest_season=2022) == "active"
    assert truth_status("2021-06-10", 0.0, end, first_season=2021, latest_season=2022) == "not_recovering"


@pytest.mark.slow
def test_leave_one_domain_out_holds_out_the_whole_biome_of_a_world(tmp_path: Path) -> None:
    """A model trained on a biome seen through several sensors (domain randomisation): the world held
    out is scanned by a model that saw none of its biome's rows, under any sensor or sky."""
    from gmsense.bench.accuracy import run_domains
    from gmsense.classify.train import FEATURES, TrainingParams, train

    rng = np.random.default_rng(0)
    rows = []
    for k, domain in enumerate(["cropland_plain+20m", "cropland_plain+landsat+south", "wetland+cloudy", "classic"]):
        for label in ("natural", "pad", "trench"):
            for _ in range(6):
                features = dict.fromkeys(FEATURES, np.nan)
                features.update(elongation=rng.uniform(1, 20), area_px_m2=rng.uniform(300, 20_000))
                rows.append({"scene": f"{domain}/{k}/s", "label": label, "domain": domain, **features})
    import pandas as pd

    train([], tmp_path / "m", table=pd.DataFrame(rows), command="test",
          params=TrainingParams(max_iter=10, importance_repeats=1))
    scanned: list[str] = []
    results = run_domains([6], ["cropland_plain+30m", "randomised:cropland_plain"], sites_per_seed=1,
                          model=tmp_path / "m", progress=lambda what, done, total: scanned.append(what))
    assert results["trained_on"] == {"cropland_plain+30m": ["classic", "wetland+cloudy"],
                                     "randomised:cropland_plain": ["classic", "wetland+cloudy"]}
    assert results["per_domain"]["cropland_plain+30m"]["events_human"] > 0
    # a randomised world is the seed's draw (seed 6: cropland seen by Landsat), scanned as that world
    from gmsense.sources.synthetic import randomised_domain

    drawn = randomised_domain("cropland_plain", 6).name
    assert scanned == ["cropland_plain+30m seed 6", f"{drawn} seed 6"]
    assert drawn != "cropland_plain+30m"


@pytest.mark.slow
def test_leave_one_domain_out_scores_each_world_and_names_the_worst(tmp_path: Path) -> None:
    """Two worlds scanned with the rule baseline: each is scored on its own, the pooled figures
    count the events of both, and the worst world is the one with the lower value."""
    from gmsense.bench.accuracy import run_domains, write_results

    worlds = ["cropland_plain+30m", "wetland+30m"]
    results = run_domains([3], worlds, sites_per_seed=1)
    assert list(results["per_domain"]) == worlds
    assert results["overall"]["events_human"] == sum(d["events_human"] for d in results["per_domain"].values())
    recalls = {w: results["per_domain"][w]["recall"] for w in worlds if results["per_domain"][w]["recall"] is not None}
    worst = results["worst_domain"]["recall"]
    assert worst["value"] == min(recalls.values())
    assert recalls[worst["domain"]] == worst["value"]
    out = write_results([results], tmp_path / "lodo.json")
    table = out.with_suffix(".md").read_text()
    assert "| metric | target | cropland_plain+30m | wetland+30m | pooled | worst |" in table
    widths = results["overall"]["recall_by_width"]
    assert sum(g["events"] for g in widths.values()) == results["overall"]["events_human"], "every event has a width"
    assert "| recall, events narrower than 1/3 pixel | - |" in table
    pooled = results["overall"]
    assert sum(pooled["review_load_by_rule"].values()) == pooled["review_load"], "every review patch has its rule"
    assert "| uncertain by trust rule: works / natural change / review load | - |" in table


@pytest.mark.slow
def test_small_accuracy_run_writes_json_and_markdown(tmp_path: Path) -> None:
    out = tmp_path / "acc.json"
    seen: list[tuple[str, int, int]] = []
    results = run_accuracy([3], sites_per_seed=1, out=out, progress=lambda *step: seen.append(step),
                           details=tmp_path / "details")
    assert seen == [("classic seed 3", 1, 1)]
    # every scored event and every patch, with its metrics and the truth under it, for reading errors
    events = pd.read_csv(tmp_path / "details" / "events.csv")
    assert len(events)
    assert set(events.seed) == {3}
    assert set(events.domain) == {"classic"}
    assert int(events.human.sum()) == results["overall"]["events_human"]
    with gzip.open(tmp_path / "details" / "patches.jsonl.gz", "rt") as f:
        patches = [json.loads(line) for line in f]
    assert len(patches) == results["overall"]["patches"]
    assert all(p["metrics"].get("n_pixels", 0) >= 1 for p in patches)
    matched = {p["patch_id"] for p in patches if p["truth_class"] is not None}
    assert set(events[events.human].patch_id.dropna()) <= matched, "a work's patch lies on that work"
    saved = json.loads(out.read_text())
    assert saved["overall"].keys() == results["overall"].keys()
    for key in ("recall", "class_accuracy", "recovery_status_accuracy", "inside_licence_accuracy"):
        value = saved["overall"][key]
        assert value is None or 0 <= value <= 1
    assert saved["overall"]["false_alarms_per_km2_year"] >= 0
    rows = saved["recovery_events"]  # one per detected human-made event: what its status was scored on
    assert rows, "seed 3's licence has detected works"
    assert {r["truth_status"] for r in rows} <= {"active", "not_recovering", "recovering", "recovered"}
    right = sum(r["truth_status"] == r["status"] for r in rows)
    assert saved["overall"]["recovery_status_accuracy"] == pytest.approx(right / len(rows), abs=1e-4)
    assert all(r["trajectory"] for r in rows if r["status"] != "active")
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


# ---------------------------------------------------------------------------------------------
# gmsense bench real: the pipeline on three real scenes (../shared/data/real)


@pytest.fixture(scope="module")
def real_bench(real_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    from gmsense.bench.real import run_real

    out = tmp_path_factory.mktemp("bench-real") / "real.json"
    return run_real(real_data, model="default", out=out), out


@pytest.mark.realdata
def test_real_bench_structure_and_outputs(real_bench: tuple[dict[str, Any], Path]) -> None:
    results, out = real_bench
    assert json.loads(out.read_text())["runs"][0]["detector"] == "model"
    [run] = results["runs"]  # no --baseline: the model only
    assert run["model"] == "default"
    assert run["model_version"]
    assert list(run["sections"]) == ["fordead_dieback", "romania_2017", "bc_wildfire"]
    for name, section in run["sections"].items():
        assert section["status"] in ("PASS", "FAIL"), name
        assert section["command"].startswith("gmsense bench real")
        assert "gmsense.analyse(gmsense.open_imagery(" in section["call"]
        assert section["inputs"]["imagery"].startswith(results["data"])
        assert section["target"]
        assert section["status"] == "PASS" or section["reason"], f"{name}: a FAIL says why"
    text = out.with_suffix(".md").read_text()
    for name in run["sections"]:
        assert f"## {name}" in text


@pytest.mark.realdata
def test_real_bench_fordead_figures_are_computed_from_the_theia_scene(
        real_bench: tuple[dict[str, Any], Path]) -> None:
    section = real_bench[0]["runs"][0]["sections"]["fordead_dieback"]
    assert section["inputs"]["n_dates"] == 187
    assert section["inputs"]["crs"] == "EPSG:32631"
    f = section["figures"]
    assert f["detected_area_m2"] > 0
    assert f["n_patches"] > 0
    assert sum(f["area_by_class_m2"].values()) == pytest.approx(f["detected_area_m2"], abs=1.0)
    assert f["share_human_made"] + f["share_natural"] + f["share_uncertain"] == pytest.approx(1.0, abs=1e-3)
    assert set(f["first_detected_years"]) <= {"2016", "2017", "2018", "2019", "2020"}
    assert (section["status"] == "PASS") == (f["share_human_made"] <= 0.05)


@pytest.mark.realdata
def test_real_bench_romania_reference_lies_where_ndvi_dropped(real_data: Path,
                                                            real_bench: tuple[dict[str, Any], Path]) -> None:
    import xarray as xr

    from gmsense.bench.real import ROMANIA, romania_reference

    section = real_bench[0]["runs"][0]["sections"]["romania_2017"]
    reference = romania_reference(real_data / ROMANIA)
    mask = reference["mask"]
    assert 50 < mask.sum() < 0.1 * mask.size, "a disturbance, not the whole forest"
    assert section["figures"]["reference_pixels"] == int(mask.sum())
    # an independent look: mean summer NDVI of the raw file (all SCL vegetation pixels), per year
    with xr.open_dataset(real_data / ROMANIA) as ds:
        ndvi = ((ds.B8 - ds.B4) / (ds.B8 + ds.B4)).where(ds.SCL == 4)
        summer = ndvi.where(ndvi.time.dt.month.isin([6, 7, 8]), drop=True).groupby("time.year").mean().values
    years = {y: k for k, y in enumerate(range(2015, 2021))}
    inside = np.nanmean(summer[:, mask], axis=1)
    outside = np.nanmean(summer[:, ~mask], axis=1)
    assert inside[years[2016]] - inside[years[2017]] > 0.25
    assert abs(outside[years[2016]] - outside[years[2017]]) < 0.05
    assert inside[years[2019]] < inside[years[2016]] - 0.05, "still below its 2016 state two years on"
    f = section["figures"]
    assert f["reference_median_ndvi"]["2017"]["inside"] < f["reference_median_ndvi"]["2016"]["inside"] - 0.2
    for patch in f["overlapping_patches"]:
        assert 0 < patch["overlap_m2"] <= patch["area_m2"] + 1e-6
    flagged_2017 = [p for p in f["overlapping_patches"] if p["flagged"] and p["first_detected"].startswith("2017")]
    assert f["flagged"] == bool(flagged_2017)
    assert (section["status"] == "PASS") == f["flagged"]


@pytest.mark.realdata
def test_real_bench_bc_wildfire_reads_both_composite_series(real_bench: tuple[dict[str, Any], Path]) -> None:
    section = real_bench[0]["runs"][0]["sections"]["bc_wildfire"]
    assert section["inputs"]["n_dates"] == 23
    assert section["inputs"]["composite"] == "annual"
    assert section["inputs"]["resolution_m"] == 30.0
    assert section["inputs"]["burn_attributes"]["dist_start"] == 2005
    f = section["figures"]
    assert f["burn_area_m2"] == pytest.approx(553_290, rel=1e-3)
    assert f["composites_10m"]["inputs"]["n_dates"] == 10
    assert f["overlap_m2"] <= f["burn_area_m2"]
    if f["class_shares"]:
        assert sum(f["class_shares"].values()) == pytest.approx(1.0, abs=1e-3)
    else:
        assert f["class"] is None
    assert f["fire_years"] == [2005, 2006]
    fire = f["of_the_fire"]
    assert fire["overlapping_patches"] <= f["overlapping_patches"]
    assert fire["overlap_m2"] <= f["overlap_m2"] + 1e-6
    assert "<NA>" not in fire["natural_agent_shares"]
    assert (section["status"] == "PASS") == (fire["class"] == "natural" and fire["natural_agent"] == "fire")
    if not fire["overlapping_patches"]:
        assert section["status"] == "FAIL"
        assert "overlaps the burn polygon" in section["reason"]


def test_real_bench_without_its_data_fails_each_section_with_a_reason(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from gmsense.cli import app

    out = tmp_path / "real.json"
    result = CliRunner().invoke(app, ["bench", "real", "--data", str(tmp_path / "nowhere"), "--model", "rules",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    [run] = json.loads(out.read_text())["runs"]
    assert run["detector"] == "rules"
    for section in run["sections"].values():
        assert section["status"] == "FAIL"
        assert "nowhere" in section["reason"], section["reason"]
    assert "FAIL" in out.with_suffix(".md").read_text()


def test_speed_bench_reports_medians_spreads_and_targets(tmp_path: Path) -> None:
    """A small workload, two rounds: every figure is the median of the rounds' own ratios with
    their range, and each target is judged on that median."""
    from gmsense.bench.speed import TARGETS as SPEED_TARGETS
    from gmsense.bench.speed import run_speed

    out = tmp_path / "speed.json"
    r = run_speed(out, None, end_to_end=False, runs=2, side_m=1_500.0, large_km=6.0)
    assert r["runs"] == 2
    assert r["cores"] >= 1
    for name in ("detect_s", "detect_one_core_s", "memory_pass_s", "memory_pass_ratio", "core_speedup",
                 "masking_one_core_s", "rest_one_core_s"):
        figure = r[name]
        assert len(figure["runs"]) == 2
        assert figure["min"] <= figure["median"] <= figure["max"]
    assert set(r["targets_met"]) == set(SPEED_TARGETS)
    speedup = r["large_licence_speedup"]
    assert r["targets_met"]["large_licence_speedup"] == (speedup["median"] >= SPEED_TARGETS["large_licence_speedup"][1])
    large = r["large_licence"]
    assert large["shape"][1:] == [602, 602]
    assert large["tiles"] == (2 if r["cores"] >= 2 else 1), "on every worker, the licence is cut for them"
    for figure in (large["one_worker_s"], large["all_workers_s"], speedup):
        assert len(figure["runs"]) == 2
        assert figure["min"] <= figure["median"] <= figure["max"]
    table = out.with_suffix(".md").read_text()
    assert "median of 2 interleaved rounds" in table
    assert "speed-up 1 ->" in table
    assert "large licence: speed-up 1 ->" in table
    assert "masking (cloud buffer, haze, NDVI)" in table
    assert r["rest_one_core_s"]["median"] < r["detect_one_core_s"]["median"]


def test_complete_truth_gives_the_status_by_growing_season() -> None:
    """External truth without statuses: a work dug after the last-but-one season is first seen in the
    latest one (active, as a scan calls it); a southern season's months run across New Year."""
    import xarray as xr

    from gmsense.bench.accuracy import complete_truth
    from gmsense.config import Settings

    def cube(times: list[str]) -> xr.Dataset:
        stamps = np.array(times, dtype="datetime64[ns]")
        clear = np.ones((len(stamps), 4, 4), dtype=bool)
        return xr.Dataset({"clear": (("time", "y", "x"), clear)},
                          coords={"time": stamps, "y": 100.0 - 10 * np.arange(4), "x": 10 * np.arange(4.0)})

    footprint = box(5, 75, 25, 95)
    truth = gpd.GeoDataFrame({"start": ["2021-11-10", "2021-06-10", "2022-06-01"], "regrowth_years": [0.0, 0.0, 1.0]},
                             geometry=[footprint] * 3)
    north = cube([f"{y}-{m:02d}-15" for y in (2020, 2021, 2022) for m in range(5, 10)])
    done = complete_truth(truth, north, Settings())
    assert list(done.recovery_status) == ["active", "not_recovering", "active"]
    assert list(done.first_observed) == ["2022-05-15", "2021-06-15", "2022-06-15"]
    south = Settings().model_copy(update={"season": Settings().season.model_copy(update={"start_month": 11,
                                                                                          "end_month": 3})})
    dates = ["2020-11-15", "2020-12-15", "2021-01-15", "2021-03-15", "2021-11-15", "2021-12-15", "2022-02-15"]
    done = complete_truth(truth.iloc[:2], cube(dates), south)
    assert list(done.first_observed) == ["2021-11-15", "2021-11-15"], "the season's months across New Year"
    # both are first seen in the season running November 2021 to March 2022, the latest: active
    assert list(done.recovery_status) == ["active", "active"]
