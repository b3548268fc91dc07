"""Scoped command-line exports and summary report (issue 20, item 3), over the demo's real store:
``--scope county:新青区`` (licence HLJ-EXP-001) or ``--as-user`` a reviewer of that county, and every
export (flags, patches, recovery, sites, disclosure, rasters) and the summary report hold that
county's licence only: an out-of-scope licence never appears. Bad scope options exit 2, writing nothing."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import geopandas as gpd
import pytest
from sqlalchemy import select

from gmsense.review import auth, service
from gmsense.store import FlagRow, PatchRow, Store
from gmsense.testutils import run_cli

PASSWORD = "scope-password-1"
MINE, THEIRS, QUIET = "HLJ-EXP-001", "HLJ-EXP-002", "HLJ-MIN-003"


@pytest.fixture(scope="module")
def scoped_demo(demo_folder: Path) -> Path:
    """The demo store with a Xinqing county reviewer, and a confirmed flag on each flagged licence."""
    store = Store(str(demo_folder / "gmsense.db"))
    auth.add_user(store, "xinqing-rev", PASSWORD, "reviewer", scope="county:新青区")
    auth.add_user(store, "gone-rev", PASSWORD, "reviewer", scope="county:新青区")
    auth.set_active(store, "gone-rev", False)
    boss = auth.add_user(store, "boss", PASSWORD, "admin")
    with store.session() as s:
        firsts = {site: s.scalar(select(FlagRow.id).where(FlagRow.site_id == site, FlagRow.rule != "uncertain_label")
                                 .order_by(FlagRow.id).limit(1)) for site in (MINE, THEIRS)}
    for flag_id in firsts.values():
        service.decide(store, flag_id, boss, "confirm", "violation", "seen on the images")
    store.engine.dispose()
    return demo_folder / "gmsense.db"


def _ids(db: Path, site: str) -> tuple[set[int], set[str]]:
    store = Store(str(db))
    with store.session() as s:
        flags = set(s.scalars(select(FlagRow.id).where(FlagRow.site_id == site)))
        patches = set(s.scalars(select(PatchRow.patch_id).where(PatchRow.site_id == site)))
    store.engine.dispose()
    return flags, patches


@pytest.mark.parametrize("who", [("--scope", "county:新青区"), ("--scope", "county:230707"),
                                 ("--as-user", "xinqing-rev")])
def test_every_cli_export_keeps_to_the_scope(scoped_demo: Path, tmp_path: Path, who: tuple[str, str]) -> None:
    flags, patches = _ids(scoped_demo, MINE)
    assert flags, "the demo flags the Xinqing licence"
    assert _ids(scoped_demo, THEIRS)[0], "... and the Wuying one"

    def export(what: str, fmt: str, out: Path) -> Path:
        code, output = run_cli("export", what, "--format", fmt, "--out", out, "--db", scoped_demo, *who)
        assert code == 0, output
        return out

    rows = list(csv.DictReader(export("flags", "csv", tmp_path / "flags.csv").open(encoding="utf-8")))
    assert {int(r["flag_id"]) for r in rows} == flags
    assert {r["site_id"] for r in rows} == {MINE}
    assert {r["stage_state"] for r in rows} <= {"pending", "complete", "closed", "none"}
    frame = gpd.read_file(export("patches", "geojson", tmp_path / "patches.geojson"))
    assert set(frame["patch_id"]) == patches
    assert set(gpd.read_file(export("sites", "gpkg", tmp_path / "sites.gpkg"))["site_id"]) == {MINE}
    recovery = list(csv.DictReader(export("recovery", "csv", tmp_path / "recovery.csv").open(encoding="utf-8")))
    assert recovery, "the demo's patches have recovery observations"
    assert {r["patch_id"] for r in recovery} <= patches
    folder = tmp_path / "disclosure"
    code, output = run_cli("export", "disclosure", "--out", folder, "--db", scoped_demo, *who)
    assert code == 0, output
    violations = (folder / "violations.csv").read_text(encoding="utf-8-sig")
    assert MINE in violations
    assert THEIRS not in violations
    assert THEIRS not in (folder / "index.html").read_text(encoding="utf-8")
    report = tmp_path / "summary.html"
    code, output = run_cli("report", "summary", "--out", report, "--db", scoped_demo, *who)
    assert code == 0, output
    page = report.read_text(encoding="utf-8")
    assert "Xinqing" in page
    assert MINE in page
    for other in (THEIRS, QUIET, "Wuying", "Jiayin"):
        assert other not in page, other


def test_without_a_scope_the_cli_sees_the_province(scoped_demo: Path, tmp_path: Path) -> None:
    code, output = run_cli("export", "flags", "--format", "csv", "--out", tmp_path / "all.csv", "--db", scoped_demo)
    assert code == 0, output
    sites = {r["site_id"] for r in csv.DictReader((tmp_path / "all.csv").open(encoding="utf-8"))}
    assert {MINE, THEIRS} <= sites
    code, output = run_cli("export", "flags", "--format", "csv", "--out", tmp_path / "p.csv", "--db", scoped_demo,
                           "--scope", "province")
    assert code == 0, output
    assert (tmp_path / "p.csv").read_text() == (tmp_path / "all.csv").read_text()


@pytest.mark.slow
def test_rasters_of_a_scope_are_its_licences_only(scoped_demo: Path, tmp_path: Path) -> None:
    out = tmp_path / "rasters"
    code, output = run_cli("export", "rasters", "--out", out, "--db", scoped_demo, "--as-user", "xinqing-rev")
    assert code == 0, output
    assert sorted(p.name for p in out.iterdir()) == [MINE, "catalog.json"]
    assert THEIRS not in json.dumps(json.loads((out / "catalog.json").read_text()))
    code, output = run_cli("export", "rasters", "--out", tmp_path / "r2", "--db", scoped_demo,
                           "--scope", "county:新青区", "--site", THEIRS)
    assert code == 2
    assert f"no licence '{THEIRS}' in the scope county:230707" in output
    assert not (tmp_path / "r2").exists()


@pytest.mark.parametrize(("args", "message"), [
    (("--scope", "county:230707", "--as-user", "xinqing-rev"), "give --scope or --as-user, not both"),
    (("--as-user", "nobody"), "no user 'nobody'"),
    (("--as-user", "gone-rev"), "is disabled"),
    (("--scope", "county:Nowhere"), "Nowhere"),
    (("--scope", "district:1"), "unknown scope"),
])
def test_bad_scope_options_are_one_line_errors_writing_nothing(scoped_demo: Path, tmp_path: Path,
                                                               args: tuple[str, ...], message: str) -> None:
    for command in (("export", "flags", "--format", "csv", "--out", tmp_path / "f.csv"),
                    ("report", "summary", "--out", tmp_path / "s.html")):
        code, output = run_cli(*command, "--db", scoped_demo, *args)
        assert code == 2, output
        assert message in output
        assert "Traceback" not in output
    assert not list(tmp_path.iterdir())
