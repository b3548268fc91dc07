"""Jurisdictions and scopes (issue 20): the division table, scope parsing (CLI), and a county
reviewer, a province reviewer and an assessor over the demo's real store (SQLite) and PostgreSQL:
queue, API, pages, pictures, exports, dashboard and audit only within the scope, and an id outside
it answered exactly as a missing one."""

from __future__ import annotations

import io
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from gmsense.errors import InputError
from gmsense.geo import divisions
from gmsense.review import auth, exports, service
from gmsense.review.app import create_app
from gmsense.store import AssessmentRow, FlagRow, ReviewRow, ScanRow, SiteRow, Store
from gmsense.store.scope import PROVINCE, Scope, parse_scope

PASSWORD = "scoped-password-1"
#: The demo licences' counties (configs/demo_sites.geojson): Yichun's districts before 2019.
XINQING, WUYING, JIAYIN = "230707", "230710", "230722"
USERS = {"county_rev": ("reviewer", "county:新青区"), "prov_rev": ("reviewer", "province"),
         "assessor": ("assessor", "licence:HLJ-EXP-002"), "assessor_001": ("assessor", "licence:HLJ-EXP-001"),
         "boss": ("admin", "province")}


# --- the division table -------------------------------------------------------------------------

def test_the_table_holds_heilongjiang_its_13_prefectures_and_known_counties() -> None:
    table = divisions.table()
    assert table["230000"].name_zh == "黑龙江省"
    cities = [d for d in table.values() if d.level == "city"]
    assert len(cities) == 13
    assert all(d.parent == "230000" for d in cities)
    assert all(table[d.parent].level == "city" for d in table.values() if d.level == "county")
    assert table["230183"].name_zh == "尚志市"
    assert table["230183"].name_pinyin == "Shangzhi"
    assert table["230100"].name_zh == "哈尔滨市"
    assert all(len(code) == 6 and code.isdigit() for code in table)


@pytest.mark.parametrize("name", ["230183", "尚志市", "尚志", "Shangzhi", "shangzhi", "Shangzhi County"])
def test_a_county_is_named_by_code_chinese_or_pinyin(name: str) -> None:
    assert divisions.resolve("county", name).code == "230183"


def test_unknown_and_ambiguous_names_are_errors_naming_the_candidates() -> None:
    with pytest.raises(InputError, match="closest: 230183 尚志市"):
        divisions.resolve("county", "Shangzi")
    with pytest.raises(InputError, match=r"ambiguous: 230402 向阳区.*230803 向阳区"):
        divisions.resolve("county", "Xiangyang")
    assert divisions.resolve("county", "友好区").code == "230719", "the current district, not the retired code"


def test_register_attributes_map_to_codes_filling_the_levels_above() -> None:
    assert divisions.divisions_of({"province": "黑龙江省", "city": "伊春市", "county": "嘉荫县"}) == {
        "province_code": "230000", "city_code": "230700", "county_code": JIAYIN}
    assert divisions.divisions_of({"county": "Shangzhi"}) == {
        "province_code": "230000", "city_code": "230100", "county_code": "230183"}
    assert divisions.divisions_of({"city": "Hegang", "county": "Xiangyang"})["county_code"] == "230402"
    assert divisions.divisions_of({"county": "Atlantis"}) == dict.fromkeys(
        ("province_code", "city_code", "county_code"))


def test_scope_parsing() -> None:
    assert parse_scope("province") == PROVINCE
    assert parse_scope("county:230183") == Scope("county", ("230183",))
    assert parse_scope("county:尚志市,Wuchang") == Scope("county", ("230183", "230184"))
    assert parse_scope("city:Harbin") == Scope("city", ("230100",))
    assert parse_scope("licence:A-1,B-2") == Scope("licence", ("A-1", "B-2"))
    for bad in ("", "county:", "district:230183", "county:Nowhere"):
        with pytest.raises(InputError):
            parse_scope(bad)


# --- the CLI ---------------------------------------------------------------------------------------

def test_users_add_takes_a_scope_by_code_chinese_or_pinyin_and_lists_candidates(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from gmsense.cli import app

    db = str(tmp_path / "users.db")
    runner = CliRunner()

    def add(name: str, *args: str) -> object:
        return runner.invoke(app, ["users", "add", name, *args, "--password-stdin", "--db", db],
                             input=f"{PASSWORD}\n")

    for name, scope in (("a1", "county:230183"), ("a2", "county:尚志市"), ("a3", "county:Shangzhi")):
        result = add(name, "--role", "reviewer", "--scope", scope)
        assert result.exit_code == 0, result.output
        assert "230183" in result.output
    store = Store(db)
    assert {str(auth.user_scope(store, auth.get_user(store, n))) for n in ("a1", "a2", "a3")} == {"county:230183"}
    unknown = add("a4", "--role", "reviewer", "--scope", "county:Shangzi")
    assert unknown.exit_code == 2
    assert "尚志市" in unknown.output
    assert "230183" in unknown.output
    assert add("a5", "--role", "reviewer").exit_code == 2, "a reviewer without a scope is refused"
    assert add("a6", "--role", "assessor", "--scope", "county:230183").exit_code == 2
    assert add("a7", "--role", "reviewer", "--scope", "licence:X").exit_code == 2
    assert add("a8", "--role", "admin", "--scope", "county:230183").exit_code == 2
    assert add("a9", "--role", "assessor", "--scope", "licence:HLJ-EXP-001").exit_code == 0
    assert add("boss", "--role", "admin").exit_code == 0, "an admin's scope is the province by default"
    listed = runner.invoke(app, ["users", "list", "--db", db])
    assert "county:230183" in listed.output
    assert "licence:HLJ-EXP-001" in listed.output
    moved = runner.invoke(app, ["users", "scope", "a1", "city:哈尔滨市", "--db", db])
    assert moved.exit_code == 0, moved.output
    assert str(auth.user_scope(store, auth.get_user(store, "a1"))) == "city:230100"
    store.engine.dispose()


# --- the app over the demo's store ------------------------------------------------------------------

@pytest.fixture(scope="module")
def scoped_db(demo_folder: Path) -> Path:
    store = Store(str(demo_folder / "gmsense.db"))
    for name, (role, scope) in USERS.items():
        auth.add_user(store, name, PASSWORD, role, scope=scope)
    store.engine.dispose()
    return demo_folder / "gmsense.db"


@pytest.fixture
def store(scoped_db: Path, tmp_path: Path) -> Store:
    db = tmp_path / "review.db"
    with sqlite3.connect(scoped_db) as source, sqlite3.connect(db) as target:
        source.backup(target)
    return Store(str(db))


@pytest.fixture
def client(store: Store, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(store, cache_dir=tmp_path / "pictures")) as c:
        yield c


def login(client: TestClient, name: str) -> None:
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    response = client.post("/login", data={"username": name, "password": PASSWORD, "csrf_token": token,
                                           "next": "/flags"}, follow_redirects=False)
    assert response.status_code == 303, response.text


def csrf(client: TestClient) -> str:
    return client.get("/api/me").json()["csrf_token"]


def _flags_by_site(store: Store) -> dict[str, list[int]]:
    with store.session() as s:
        out: dict[str, list[int]] = {}
        for flag in s.scalars(select(FlagRow).order_by(FlagRow.id)):
            out.setdefault(flag.site_id, []).append(flag.id)
    return out


def test_the_store_gives_licences_and_their_flags_division_codes(store: Store) -> None:
    with store.session() as s:
        sites = {r.site_id: r for r in s.scalars(select(SiteRow))}
        flags = list(s.scalars(select(FlagRow)))
    assert (sites["HLJ-EXP-001"].county_code, sites["HLJ-EXP-001"].city_code) == (XINQING, "230700")
    assert sites["HLJ-EXP-002"].county_code == WUYING
    assert sites["HLJ-MIN-003"].county_code == JIAYIN
    assert flags
    assert all(f.county_code == sites[f.site_id].county_code for f in flags)


def _missing_like(response: object, other: object, ident: int, missing: int) -> None:
    """``response`` (an id outside the scope) is answered as ``other`` (a missing id)."""
    assert response.status_code == other.status_code == 404
    def masked(text: str, value: object) -> str:  # the id itself, not digits that happen to match
        return re.sub(rf"(?<![\w.=-]){re.escape(str(value))}(?![\w.-])", "ID", text)

    assert masked(response.text, ident) == masked(other.text, missing)
    assert "ID" in masked(response.text, ident)


def test_a_county_reviewer_sees_only_their_county(client: TestClient, store: Store) -> None:
    by_site = _flags_by_site(store)
    mine, theirs = by_site["HLJ-EXP-001"], by_site["HLJ-EXP-002"]
    assert mine, "the demo flags both licences"
    assert theirs, "the demo flags both licences"
    login(client, "county_rev")
    assert client.get("/api/me").json()["scope"] == {"kind": "county", "codes": [XINQING]}
    queue = client.get("/api/flags", params={"status": "all", "page_size": 500}).json()
    assert sorted(item["id"] for item in queue["items"]) == mine
    assert queue["total"] == len(mine)
    assert sum(queue["counts"].values()) == len(mine)
    page = client.get("/flags", params={"status": "all"}).text
    linked = {int(i) for i in re.findall(r'href="/flags/(\d+)" class="flag-link"', page)}
    assert linked
    assert linked <= set(mine)
    missing = max(max(ids) for ids in by_site.values()) + 1000
    other = theirs[0]
    for path in ("/api/flags/{}", "/flags/{}", "/flags/{}/chips.png", "/flags/{}/trajectory.png"):
        _missing_like(client.get(path.format(other)), client.get(path.format(missing)), other, missing)
    _missing_like(client.get("/api/sites/HLJ-EXP-002"), client.get("/api/sites/NOPE-002"), "HLJ-EXP-002",
                  "NOPE-002")
    for path in ("/sites/HLJ-EXP-002", "/sites/HLJ-EXP-002/map.png"):
        assert client.get(path).status_code == 404
    assert client.get("/api/sites/HLJ-EXP-001").status_code == 200
    assert client.get(f"/flags/{mine[0]}").status_code == 200
    assert client.get(f"/flags/{mine[0]}/trajectory.png").headers["content-type"] == "image/png"
    # cannot decide another county's flag: the same 404, and nothing is written
    body = {"decision": "confirm", "reason": "violation", "comment": "seen"}
    token = csrf(client)
    decided = client.post(f"/api/flags/{other}/decision", json=body, headers={"X-CSRF-Token": token})
    absent = client.post(f"/api/flags/{missing}/decision", json=body, headers={"X-CSRF-Token": token})
    _missing_like(decided, absent, other, missing)
    form = client.post(f"/flags/{other}/decision", data={**body, "csrf_token": token}, follow_redirects=False)
    assert form.status_code == 404
    user = auth.get_user(store, "county_rev")
    with pytest.raises(service.NotFoundError):
        service.decide(store, other, user, "confirm", "violation", "seen")
    with store.session() as s:
        assert s.scalar(select(ReviewRow).where(ReviewRow.flag_id == other)) is None
    # ... but decides their own
    ok = client.post(f"/api/flags/{mine[0]}/decision", json=body, headers={"X-CSRF-Token": token})
    assert ok.status_code == 200, ok.text


def test_exports_dashboard_and_audit_of_a_county_reviewer_stay_in_the_county(client: TestClient,
                                                                             store: Store) -> None:
    by_site = _flags_by_site(store)
    boss = auth.get_user(store, "boss")
    service.decide(store, by_site["HLJ-EXP-002"][0], boss, "field_visit", "needs_field_visit", "other county")
    service.decide(store, by_site["HLJ-EXP-001"][0], boss, "field_visit", "needs_field_visit", "this county")
    login(client, "county_rev")
    flags = gpd.read_file(io.BytesIO(client.get("/export/flags.geojson", params={"status": "all"}).content))
    assert sorted(flags["flag_id"]) == by_site["HLJ-EXP-001"]
    csv_text = client.get("/api/export/flags.csv", params={"status": "all"}).text
    assert csv_text.startswith("flag_id,")
    assert "HLJ-EXP-002" not in csv_text
    patches = gpd.read_file(io.BytesIO(client.get("/export/patches.gpkg").content))
    assert len(patches)
    assert set(patches["site_id"]) == {"HLJ-EXP-001"}
    assert "HLJ-EXP-002" not in client.get("/export/patches.csv").text
    assert client.get("/export/patches.csv", params={"site_id": "HLJ-EXP-002"}).text.strip().count("\n") == 0
    audit = client.get("/api/audit").json()
    assert [a["comment"] for a in audit] == ["this county"]
    assert "other county" not in client.get("/audit").text
    dashboard = client.get("/dashboard").text
    assert "Xinqing" in dashboard
    assert "Wuying" not in dashboard
    assert client.get("/dashboard/county.png").status_code == 200
    assert "HLJ-EXP-002" not in client.get("/flags", params={"status": "all"}).text


def test_a_province_reviewer_sees_everything(client: TestClient, store: Store) -> None:
    every = sorted(i for ids in _flags_by_site(store).values() for i in ids)
    login(client, "prov_rev")
    queue = client.get("/api/flags", params={"status": "all", "page_size": 500}).json()
    assert sorted(item["id"] for item in queue["items"]) == every
    assert client.get("/api/sites/HLJ-EXP-002").status_code == 200
    flags = gpd.read_file(io.BytesIO(client.get("/export/flags.gpkg", params={"status": "all"}).content))
    assert sorted(flags["flag_id"]) == every


def test_an_assessor_reads_only_their_licences(client: TestClient, store: Store) -> None:
    by_site = _flags_by_site(store)
    login(client, "assessor")
    queue = client.get("/api/flags", params={"status": "all", "page_size": 500}).json()
    assert sorted(item["id"] for item in queue["items"]) == by_site["HLJ-EXP-002"]
    assert client.get(f"/api/flags/{by_site['HLJ-EXP-001'][0]}").status_code == 404
    assert client.get("/api/sites/HLJ-EXP-001").status_code == 404
    own = by_site["HLJ-EXP-002"][0]
    assert client.get(f"/api/flags/{own}").status_code == 200
    refused = client.post(f"/api/flags/{own}/decision", json={"decision": "confirm", "reason": "violation",
                                                              "comment": "x"}, headers={"X-CSRF-Token": csrf(client)})
    assert refused.status_code == 403
    assert client.get("/restoration").status_code == 200  # no register polygon is an assessor's licence
    with store.session() as s:
        assert s.scalar(select(ReviewRow).where(ReviewRow.username == "assessor")) is None


def test_an_assessor_reads_and_assesses_only_their_licences(client: TestClient, store: Store,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Third-party assessments (issue 20, item 5): the assessor of HLJ-EXP-002 can neither read nor attach
    to HLJ-EXP-001 or its flags, nor read another assessor's assessment of them: each answers exactly as
    a missing id; a reviewer of HLJ-EXP-001's county sees that one and not theirs."""
    from gmsense.review import assessments, uploads
    from gmsense.review.signing import SIGNING_KEY_ENV

    monkeypatch.setenv(SIGNING_KEY_ENV, "scope-test-key-" + "7e" * 16)
    by_site = _flags_by_site(store)
    theirs, own = by_site["HLJ-EXP-001"][0], by_site["HLJ-EXP-002"][0]
    other_assessor = auth.get_user(store, "assessor_001")
    for k in range(2):
        assessments.add(store, other_assessor, "licence", "HLJ-EXP-001", "compliant", f"licence visit {k}")
    notes = [uploads.check_file(name, b"field notes") for name in ("a.txt", "b.txt")]
    other = assessments.add(store, other_assessor, "flag", theirs, "non_compliant", "OTHER-ASSESSOR", notes).row.id
    missing_flag, missing = max(max(ids) for ids in by_site.values()) + 1000, other + 1000
    login(client, "assessor")
    token = csrf(client)
    path = "/api/flags/{}/assessments"
    _missing_like(client.get(path.format(theirs)), client.get(path.format(missing_flag)), theirs, missing_flag)
    _missing_like(client.get("/api/sites/HLJ-EXP-001/assessments"), client.get("/api/sites/NOPE-001/assessments"),
                  "HLJ-EXP-001", "NOPE-001")
    for path in ("/api/assessments/{}", "/api/assessments/{}/attachments/2", "/assessments/{}/attachments/2"):
        _missing_like(client.get(path.format(other)), client.get(path.format(missing)), other, missing)
    body = {"verdict": "compliant", "text": "seen from the road"}
    api = {"headers": {"X-CSRF-Token": token}, "data": body}
    _missing_like(client.post(f"/api/flags/{theirs}/assessments", **api),
                  client.post(f"/api/flags/{missing_flag}/assessments", **api), theirs, missing_flag)
    _missing_like(client.post("/api/sites/HLJ-EXP-001/assessments", **api),
                  client.post("/api/sites/NOPE-001/assessments", **api), "HLJ-EXP-001", "NOPE-001")
    form = {"data": {**body, "csrf_token": token}, "files": [("files", ("n.txt", b"notes", "text/plain"))]}
    _missing_like(client.post(f"/flags/{theirs}/assessments", **form),
                  client.post(f"/flags/{missing_flag}/assessments", **form), theirs, missing_flag)
    _missing_like(client.post("/sites/HLJ-EXP-001/assessments", **form),
                  client.post("/sites/NOPE-001/assessments", **form), "HLJ-EXP-001", "NOPE-001")
    assert client.get("/api/audit/assessments").json() == []
    assert "OTHER-ASSESSOR" not in client.get("/audit").text
    assert "OTHER-ASSESSOR" not in client.get(f"/flags/{own}").text
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(AssessmentRow)) == 3, "nothing written outside the scope"
    # ... but reads and assesses their own licence and its flags
    mine = client.post(f"/api/flags/{own}/assessments", **api)
    assert mine.status_code == 201, mine.text
    assert client.post("/api/sites/HLJ-EXP-002/assessments", **api).status_code == 201
    assert len(client.get("/api/sites/HLJ-EXP-002/assessments").json()) == 2
    login(client, "county_rev")  # Xinqing: HLJ-EXP-001
    assert [a["text"] for a in client.get(f"/api/flags/{theirs}/assessments").json()] == ["OTHER-ASSESSOR"]
    assert client.get(f"/api/assessments/{mine.json()['id']}").status_code == 404
    assert len(client.get("/api/audit/assessments").json()) == 3
    assert client.post(f"/api/flags/{theirs}/assessments", data=body,
                       headers={"X-CSRF-Token": csrf(client)}).status_code == 403, "reviewers do not assess"


def test_the_queue_pages_in_sql_without_gaps_or_overlaps(store: Store) -> None:
    every = service.queue(store, service.QueueFilter(status="all"), page_size=1000)
    pages = [service.queue(store, service.QueueFilter(status="all"), page=p, page_size=2)
             for p in range(1, -(-every.total // 2) + 1)]
    assert [i["id"] for p in pages for i in p.items] == [i["id"] for i in every.items]
    ranks = [(service.SEVERITY_RANK[i["severity"]], i["created_at"]) for i in every.items]
    assert ranks == sorted(ranks)


# --- PostgreSQL ------------------------------------------------------------------------------------

def _plant(store: Store, n_per_county: int = 30) -> dict[str, list[int]]:
    """Licences in Shangzhi and Wuchang (by name, as a register holds them) and one without a
    division, each with flags; returns the flag ids per licence."""
    from gmsense.geo.divisions import divisions_of

    out: dict[str, list[int]] = {}
    with store.session() as s, s.begin():
        s.add(ScanRow(id=1, source="synthetic", config_hash="x", gmsense_version="t"))
        for site_id, attrs in (("SZ-1", {"city": "哈尔滨市", "county": "尚志市"}), ("WC-1", {"county": "Wuchang"}),
                               ("NONE-1", {"county": "Atlantis"})):
            codes = divisions_of(attrs)
            s.add(SiteRow(site_id=site_id, geometry_wkt="POLYGON((0 0,1 0,1 1,0 1,0 0))", attrs=attrs, **codes))
            s.flush()
            for k in range(n_per_county):
                flag = FlagRow(site_id=site_id, rule="outside_licence", flag_key=str(k),
                               severity=("critical", "warning", "info")[k % 3], message="m", evidence={},
                               created_scan_id=1, updated_scan_id=1, **codes)
                s.add(flag)
                s.flush()
                out.setdefault(site_id, []).append(flag.id)
    return out


@pytest.mark.postgres
def test_scopes_on_postgresql(postgres_url: str) -> None:
    store = Store(postgres_url)
    planted = _plant(store)
    rev = auth.add_user(store, "szrev", PASSWORD, "reviewer", scope="county:Shangzhi")
    scope = auth.user_scope(store, rev)
    pages = [service.queue(store, service.QueueFilter(status="all"), page=p, page_size=7, scope=scope)
             for p in range(1, 6)]
    assert pages[0].total == 30
    assert pages[0].pages == 5
    seen = [i["id"] for p in pages for i in p.items]
    assert sorted(seen) == planted["SZ-1"]
    assert len(set(seen)) == 30
    assert [i["severity"] for i in pages[0].items] == ["critical"] * 7
    with pytest.raises(service.NotFoundError, match="no flag"):
        service.get_flag(store, planted["WC-1"][0], scope)
    with pytest.raises(service.NotFoundError):
        service.decide(store, planted["WC-1"][0], rev, "confirm", "violation", "no")
    service.decide(store, planted["SZ-1"][0], rev, "confirm", "violation", "spoil")
    assert [r.flag_id for r in service.history(store, scope=scope)] == [planted["SZ-1"][0]]
    assert service.history(store, scope=Scope("county", ("230184",))) == []
    city = service.queue(store, service.QueueFilter(status="all"), page_size=500, scope=parse_scope("city:Harbin"))
    assert city.total == 60, "both counties are Harbin's; the licence without a division is not"
    everything = service.queue(store, service.QueueFilter(status="all"), page_size=500)
    assert everything.total == 90, "a province-wide user sees the licence without a division too"
    _columns, rows = exports.batches(store, "flags", service.QueueFilter(status="all"), scope)
    exported = [r["flag_id"] for batch in rows for r in batch]
    assert sorted(exported) == planted["SZ-1"]
    store.engine.dispose()


def test_the_upgrade_fills_codes_of_rows_already_stored(tmp_path: Path) -> None:
    from alembic import command

    from gmsense.store import _migration_config, migration_engine

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = migration_engine(url)
    config = _migration_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0007")
        connection.exec_driver_sql(
            "INSERT INTO sites (site_id, geometry_wkt, attrs, updated_at) VALUES "
            "('OLD-1', 'POINT (0 0)', '{\"county\": \"尚志市\"}', '2024-01-01 00:00:00')")
    engine.dispose()
    with pytest.warns(UserWarning, match="upgraded"):
        store = Store(url)
    with store.session() as s:
        row = s.get(SiteRow, "OLD-1")
    assert (row.province_code, row.city_code, row.county_code) == ("230000", "230100", "230183")
    store.engine.dispose()
