"""The command line end to end: demo, scan, export, scans; bad input gives one line and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
from shapely.geometry import box

from gmsense.config import Settings, configs_dir
from gmsense.geo.sites import Site, read_sites, write_sites
from gmsense.sources.synthetic import synthesize
from gmsense.store import Store
from gmsense.testutils import copy_store, run_cli

DEMO_SITES = configs_dir() / "demo_sites.geojson"


invoke = run_cli


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    code, output = invoke("demo", "--out", out, "--workers", "2")
    assert code == 0, output
    assert "HLJ-EXP-001" in output
    return out


@pytest.mark.slow
@pytest.mark.cluster
def test_demo_finds_planted_trenches_boundary_damage_and_nothing_in_control(demo: Path) -> None:
    patches = gpd.read_file(demo / "patches.geojson")
    assert patches.crs.to_epsg() == 4326
    for column in ("patch_id", "site_id", "disturbance_class", "confidence", "first_detected", "last_seen",
                   "area_m2", "inside_licence", "area_outside_m2", "recovery_status", "recovery_ratio"):
        assert column in patches.columns
    sites = {s.site_id: s for s in read_sites(DEMO_SITES)}
    settings = Settings()

    exploration = patches[patches.site_id == "HLJ-EXP-001"].to_crs(sites["HLJ-EXP-001"].crs)
    site = sites["HLJ-EXP-001"]
    _, truth = synthesize(site, site.buffered(settings.sites.buffer_m), settings.synthetic)
    trenches = truth[truth.kind == "trench"]
    assert len(trenches) == 3
    for _, trench in trenches.iterrows():
        hits = exploration[exploration.intersects(trench.geometry.buffer(15))]
        assert len(hits) >= 1, f"planted trench {trench.event_id} was not found"
        assert (hits.disturbance_class == "trench").any(), f"{trench.event_id} found as {list(hits.disturbance_class)}"
        assert hits.inside_licence.all()

    boundary = patches[patches.site_id == "HLJ-EXP-002"]
    assert len(boundary) >= 2
    assert (~boundary.inside_licence).sum() >= 2
    assert (boundary.loc[~boundary.inside_licence, "area_outside_m2"] > 0).all()

    assert (patches.site_id == "HLJ-MIN-003").sum() == 0, "the quiet control has no patches"

    # Provenance: the images each patch rests on and the settings that found it.
    assert patches.after_image.str.startswith("synthetic:seed0:").all()
    assert (patches.before_date < patches.first_detected).all()
    assert (patches.after_date == patches.first_detected).all()
    assert patches.config_hash.notna().all()
    assert (patches.source == "synthetic").all()


@pytest.mark.slow
@pytest.mark.cluster
def test_rescan_of_the_same_dates_changes_nothing(demo: Path, tmp_path: Path) -> None:
    db = copy_store(demo / "gmsense.db", tmp_path / "gmsense.db")  # the rescan writes: a private copy
    before = [(r.patch_id, r.geometry_wkt, r.first_detected) for r in Store(str(db)).patch_rows()]
    n_flags = len(Store(str(db)).flag_rows())
    code, output = invoke("scan", "--sites", DEMO_SITES, "--db", db, "--no-progress")
    assert code == 0, output
    after = [(r.patch_id, r.geometry_wkt, r.first_detected) for r in Store(str(db)).patch_rows()]
    assert after == before
    assert len(Store(str(db)).flag_rows()) == n_flags
    code, output = invoke("scans", "list", "--db", db)
    assert code == 0
    assert "completed" in output
    code, output = invoke("scans", "show", "2", "--db", db)
    assert code == 0
    assert "HLJ-MIN-003" in output


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["geojson", "gpkg", "csv"])
def test_exports_open_in_geopandas(demo: Path, tmp_path: Path, fmt: str) -> None:
    db = demo / "gmsense.db"
    for what in ("patches", "flags"):
        target = tmp_path / f"{what}.{fmt}"
        code, output = invoke("export", what, "--format", fmt, "--out", target, "--db", db)
        assert code == 0, output
        frame = pd.read_csv(target) if fmt == "csv" else gpd.read_file(target)
        assert len(frame) == len(Store(str(db)).patch_rows() if what == "patches" else Store(str(db)).flag_rows())
        assert len(frame) > 0
        if fmt != "csv":
            assert frame.crs.to_epsg() == 4326
    assert not list(tmp_path.glob(".*")), "no temporary files left behind"


def _far_site(site_id: str) -> Site:
    base = read_sites(DEMO_SITES)[0]
    return Site(site_id, box(300_000, 4_000_000, 301_000, 4_001_000), base.crs, {})


def test_one_failing_licence_gives_partial_and_keeps_the_others(tmp_path: Path) -> None:
    sites = read_sites(DEMO_SITES)
    broken = Site("BROKEN-1", sites[2].geometry, sites[2].crs, {"synthetic_scenario": "volcano"})
    path = write_sites([sites[2], broken], tmp_path / "sites.geojson")
    db = tmp_path / "g.db"
    code, output = invoke("scan", "--sites", path, "--db", db, "--no-progress")
    assert code == 3, output
    assert "BROKEN-1" in output
    assert "volcano" in output
    store = Store(str(db))
    [scan] = store.scans()
    assert scan.status == "partial"
    _, units = store.scan(scan.id)
    assert {u.site_id: u.status for u in units} == {"BROKEN-1": "failed", "HLJ-MIN-003": "done"}


@pytest.mark.slow
@pytest.mark.cluster
@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["threads", "processes"])
def test_a_failing_licence_prints_no_dask_traceback(tmp_path: Path, workers: list[str]) -> None:
    # A real process: worker processes write to the terminal's stderr, which an in-process runner does not see.
    sites = read_sites(DEMO_SITES)
    broken = Site("BROKEN-1", sites[2].geometry, sites[2].crs, {"synthetic_scenario": "volcano"})
    path = write_sites([sites[2], broken], tmp_path / "sites.geojson")
    done = subprocess.run([str(Path(sys.executable).with_name("gmsense")), "scan", "--sites", str(path), "--db",
                           str(tmp_path / "g.db"), "--no-progress", *workers],
                          capture_output=True, text=True, timeout=600, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 3, output
    assert "volcano" in output, "the licence's own error is reported"
    assert "Traceback" not in output
    assert "distributed.worker" not in output


def _one_line_error(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert len(lines) >= 1
    assert "Traceback" not in output
    return " ".join(lines)


@pytest.mark.parametrize(
    ("make_args", "expected"),
    [
        (lambda tmp: ["scan", "--sites", tmp / "missing.geojson"], "does not exist"),
        (lambda tmp: ["scan", "--sites", DEMO_SITES, "--source", "local"], "--imagery"),
        (lambda tmp: ["scan", "--sites", DEMO_SITES, "--source", "local", "--imagery", tmp / "nope"], "does not exist"),
        (lambda tmp: ["scan", "--sites", DEMO_SITES, "--source", "radar"], "unknown source"),
        (lambda tmp: ["export", "patches", "--format", "shp", "--out", tmp / "x.shp", "--db", tmp / "e.db"],
         "unknown export format"),
        (lambda tmp: ["export", "things", "--db", tmp / "e.db"], "cannot export"),
        (lambda tmp: ["scans", "show", "42", "--db", Store(str(tmp / "e.db")).engine.url.database], "no scan 42"),
        (lambda tmp: ["scans", "show", "42", "--db", tmp / "none.db"], "no store at"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(tmp_path: Path, make_args, expected: str) -> None:
    code, output = invoke(*make_args(tmp_path))
    assert code == 2, output
    assert expected in _one_line_error(output)


def test_bad_settings_file(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("season:\n  start_month: 13\n")
    code, output = invoke("scan", "--sites", DEMO_SITES, "--config", config, "--db", tmp_path / "x.db")
    assert code == 2
    assert "season.start_month" in _one_line_error(output)
    assert not (tmp_path / "x.db").exists(), "nothing is written when the input is bad"


def test_duplicate_site_ids_rejected_before_anything_is_written(tmp_path: Path) -> None:
    data = json.loads(DEMO_SITES.read_text())
    data["features"][1]["properties"]["site_id"] = data["features"][0]["properties"]["site_id"]
    path = tmp_path / "dup.geojson"
    path.write_text(json.dumps(data))
    code, output = invoke("scan", "--sites", path, "--db", tmp_path / "d.db")
    assert code == 2
    assert "HLJ-EXP-001" in _one_line_error(output)
    assert not (tmp_path / "d.db").exists()


@pytest.mark.slow
def test_scan_with_a_work_programme_and_custom_rules(tmp_path: Path) -> None:
    site = read_sites(DEMO_SITES)[0]
    settings = Settings()
    _, truth = synthesize(site, site.buffered(settings.sites.buffer_m), settings.synthetic)
    approved = truth[truth.kind == "trench"].iloc[[0]].copy()
    approved["site_id"], approved["work_type"] = site.site_id, "trench"
    approved["year"] = int(approved.start.iloc[0][:4])
    works = tmp_path / "works.geojson"
    approved[["site_id", "work_type", "year", "geometry"]].to_crs(4326).to_file(works)
    rules = tmp_path / "rules.yaml"
    rules.write_text("outside_work_programme: {severity: critical}\n")
    sites_file = write_sites([site], tmp_path / "one.geojson")
    db = tmp_path / "w.db"
    code, output = invoke("scan", "--sites", sites_file, "--works", works, "--rules", rules, "--db", db,
                          "--no-progress")
    assert code == 0, output
    flags = Store(str(db)).flag_rows()
    outside_programme = [f for f in flags if f.rule == "outside_work_programme"]
    assert outside_programme, "the other trenches, pads and track are not in the programme"
    assert {f.severity for f in outside_programme} == {"critical"}
    patches = {p.patch_id: p for p in Store(str(db)).patch_rows()}
    approved_utm = approved.to_crs(site.crs).geometry.iloc[0]
    for f in outside_programme:
        patch_geom = gpd.GeoSeries.from_wkt([patches[f.patch_id].geometry_wkt], crs=4326).to_crs(site.crs).iloc[0]
        assert patch_geom.distance(approved_utm) > 30, "the approved trench itself is covered"


def test_the_model_named_in_the_settings_labels_the_patches(tmp_path: Path) -> None:
    site = next(s for s in read_sites(DEMO_SITES) if s.site_id == "HLJ-EXP-002")
    sites_file = write_sites([site], tmp_path / "one.geojson")
    config = tmp_path / "settings.yaml"
    config.write_text("classify:\n  model: default\nsynthetic:\n  start: '2019-04-01'\n  end: '2021-10-31'\n")
    db = tmp_path / "m.db"
    code, output = invoke("scan", "--sites", sites_file, "--config", config, "--db", db, "--no-progress")
    assert code == 0, output
    scan = Store(str(db)).scans()[-1]
    assert scan.detector == "model"
    assert scan.model_version.startswith("default@")
    assert all("rule_class" in p.metrics for p in Store(str(db)).patch_rows())
    code, output = invoke("scan", "--sites", sites_file, "--config", config, "--db", db, "--detector", "rules",
                          "--no-progress", "--force")
    assert code == 0, output
    assert Store(str(db)).scans()[-1].detector == "rules"
    config.write_text("classify:\n  model: no-such-model\n")
    code, output = invoke("scan", "--sites", sites_file, "--config", config, "--db", db)
    assert code == 2
    assert "no model 'no-such-model'" in output
    assert "default" in output
    code, output = invoke("scan", "--sites", sites_file, "--db", db, "--detector", "rules", "--model", "models/default")
    assert code == 2
    assert "contradict" in output
