"""The review app over a real scanned store: login, roles, CSRF, decisions and the audit log,
the queue, pages, pictures, exports, languages (FastAPI's TestClient, no browser)."""

from __future__ import annotations

import io
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from gmsense.review import auth, service
from gmsense.review.app import SESSION_COOKIE, create_app
from gmsense.store import Store
from gmsense.testutils import run_cli

PASSWORDS = {"ada": "admin-password-1", "rita": "reviewer-password-1", "vic": "viewer-password-1"}
ROLES = {"ada": "admin", "rita": "reviewer", "vic": "viewer"}


@pytest.fixture(scope="module")
def demo_db(demo_folder: Path) -> Path:
    """The demo's store (a real synthetic scan; this module's copy) with one user per role."""
    store = Store(str(demo_folder / "gmsense.db"))
    for name, role in ROLES.items():
        auth.add_user(store, name, PASSWORDS[name], role)
    store.engine.dispose()
    return demo_folder / "gmsense.db"


@pytest.fixture
def store(demo_db: Path, tmp_path: Path) -> Store:
    """A private copy of the demo store for one test."""
    db = tmp_path / "review.db"
    with sqlite3.connect(demo_db) as source, sqlite3.connect(db) as target:
        source.backup(target)  # a consistent copy, whatever sits in the write-ahead log
    return Store(str(db))


@pytest.fixture
def client(store: Store, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(store, cache_dir=tmp_path / "pictures")) as c:
        yield c


def login(client: TestClient, name: str, password: str | None = None) -> None:
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    response = client.post("/login", data={"username": name, "password": password or PASSWORDS[name],
                                           "csrf_token": token, "next": "/flags"}, follow_redirects=False)
    assert response.status_code == 303, response.text


def csrf_of(client: TestClient, path: str = "/flags") -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text).group(1)


def decide(client: TestClient, flag_id: int, **form: str) -> object:
    data = {"csrf_token": csrf_of(client, f"/flags/{flag_id}"), "decision": "confirm", "reason": "violation",
            "comment": "spoil heaps visible after", **form}
    return client.post(f"/flags/{flag_id}/decision", data=data, follow_redirects=False)


def test_anonymous_users_are_sent_to_login_and_the_api_answers_401(client: TestClient) -> None:
    for path in ("/flags", "/flags/1", "/dashboard", "/sites/HLJ-EXP-001", "/flags/1/chips.png", "/audit"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/login?next=")
    assert client.get("/api/flags").status_code == 401
    assert client.post("/api/flags/1/decision", json={}).status_code == 401


def test_login_needs_csrf_right_password_and_sets_a_safe_cookie(client: TestClient) -> None:
    no_token = client.post("/login", data={"username": "rita", "password": PASSWORDS["rita"]}, follow_redirects=False)
    assert no_token.status_code == 403
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    wrong = client.post("/login", data={"username": "rita", "password": "nope-nope-nope", "csrf_token": token})
    assert wrong.status_code == 401
    assert "Wrong user name or password" in wrong.text
    ok = client.post("/login", data={"username": "rita", "password": PASSWORDS["rita"], "csrf_token": token,
                                     "next": "https://evil.example/"}, follow_redirects=False)
    assert ok.status_code == 303
    assert ok.headers["location"] == "/flags"  # never redirected off-site
    cookie = next(c for c in ok.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE))
    assert "HttpOnly" in cookie
    assert "samesite=lax" in cookie.lower()
    assert client.get("/flags").status_code == 200


def test_failed_logins_are_rate_limited(client: TestClient, store: Store) -> None:
    for _ in range(auth.MAX_FAILED_LOGINS):
        page = client.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        assert client.post("/login", data={"username": "rita", "password": "wrong-wrong", "csrf_token": token}
                           ).status_code == 401
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    throttled = client.post("/login", data={"username": "rita", "password": PASSWORDS["rita"], "csrf_token": token})
    assert throttled.status_code == 429  # even the right password, until the window passes
    assert "Too many failed logins" in throttled.text
    with pytest.raises(auth.LoginRefusedError):
        auth.login(store, "vic", PASSWORDS["vic"], client="testclient")  # same client address


def test_viewers_see_but_cannot_decide(client: TestClient, store: Store) -> None:
    login(client, "vic")
    page = client.get("/flags/1")
    assert page.status_code == 200
    assert 'id="decision-form"' not in page.text
    token = csrf_of(client, "/flags/1")
    response = client.post("/flags/1/decision", data={"csrf_token": token, "decision": "dismiss",
                                                      "reason": "natural_change", "comment": "looks natural"})
    assert response.status_code == 403
    assert service.history(store) == []
    assert service.get_flag(store, 1)[0].status == "open"
    assert client.get("/admin/users").status_code == 403


def test_decisions_need_the_csrf_token(client: TestClient, store: Store) -> None:
    login(client, "rita")
    for token in ("", "forged-token"):
        response = client.post("/flags/1/decision", data={"csrf_token": token, "decision": "confirm",
                                                          "reason": "violation", "comment": "x"})
        assert response.status_code == 403
    me = client.get("/api/me").json()
    body = {"decision": "confirm", "reason": "violation", "comment": "spoil visible"}
    assert client.post("/api/flags/1/decision", json=body).status_code == 403
    assert client.post("/api/flags/1/decision", json=body, headers={"X-CSRF-Token": "forged"}).status_code == 403
    assert service.history(store) == []
    ok = client.post("/api/flags/1/decision", json=body, headers={"X-CSRF-Token": me["csrf_token"]})
    assert ok.status_code == 200
    assert ok.json()["previous_status"] == "open"


def test_a_decision_needs_a_reason_and_a_comment(client: TestClient, store: Store) -> None:
    login(client, "rita")
    for form in ({"reason": ""}, {"comment": "   "}, {"decision": "dismiss", "reason": "violation"}):
        response = decide(client, 1, **form)
        assert response.status_code == 303
        assert "error=" in response.headers["location"]
    assert service.history(store) == []
    shown = client.get(decide(client, 1, comment="").headers["location"])
    assert "needs a comment" in shown.text


def test_decisions_land_in_the_append_only_audit_log(client: TestClient, store: Store) -> None:
    login(client, "rita")
    assert decide(client, 1).status_code == 303
    dismissed = decide(client, 1, decision="dismiss", reason="cloud_shadow", comment="it was a cloud edge")
    assert dismissed.status_code == 303
    log = service.history(store, 1)
    assert [(r.decision, r.previous_status, r.username) for r in log] == [
        ("confirmed", "open", "rita"), ("dismissed", "confirmed", "rita")]
    assert service.get_flag(store, 1)[0].status == "dismissed"
    page = client.get("/flags/1").text
    assert "it was a cloud edge" in page
    assert "spoil heaps visible after" in page
    audit = client.get("/audit").text
    assert audit.index("it was a cloud edge") < audit.index("spoil heaps visible after")  # newest first
    with store.engine.connect() as connection:
        for statement in ("UPDATE reviews SET comment = 'edited'", "DELETE FROM reviews"):
            with pytest.raises(DBAPIError, match="audit log"):
                connection.execute(text(statement))
    assert len(service.history(store)) == 2


def test_queue_is_sorted_by_severity_then_age_filtered_and_paged(client: TestClient, store: Store) -> None:
    login(client, "vic")
    data = client.get("/api/flags", params={"page_size": 100}).json()
    ranks = [service.SEVERITY_RANK[f["severity"]] for f in data["items"]]
    assert ranks == sorted(ranks)
    assert data["total"] == len(data["items"]) > 2
    assert data["counts"]["open"] == data["total"]
    rule = data["items"][-1]["rule"]
    only = client.get("/api/flags", params={"rule": rule}).json()
    assert only["total"] == sum(f["rule"] == rule for f in data["items"]) > 0
    county = data["items"][0]["county"]
    in_county = client.get("/api/flags", params={"county": county, "page_size": 100}).json()
    assert {f["county"] for f in in_county["items"]} == {county}
    page2 = client.get("/api/flags", params={"page_size": 2, "page": 2}).json()
    assert [f["id"] for f in page2["items"]] == [f["id"] for f in data["items"][2:4]]
    html = client.get("/flags", params={"rule": rule}).text
    assert html.count('class="flag-link"') == only["total"]
    assert client.get("/api/flags", params={"status": "bogus"}).status_code == 400
    assert client.get("/api/flags", params={"date_from": "yesterday"}).status_code == 400


def test_unknown_ids_are_404_not_500(client: TestClient) -> None:
    login(client, "rita")
    for path in ("/flags/99999", "/flags/abc", "/sites/NO-SUCH", "/flags/99999/chips.png", "/sites/NO-SUCH/map.png",
                 "/api/flags/99999", "/nowhere"):
        assert client.get(path).status_code == 404, path
    token = csrf_of(client)
    assert client.post("/flags/99999/decision", data={"csrf_token": token, "decision": "confirm",
                                                      "reason": "violation", "comment": "x"}).status_code == 404


def test_flag_page_shows_evidence_and_its_pictures_render(client: TestClient) -> None:
    login(client, "rita")
    flag = client.get("/api/flags").json()["items"][0]
    page = client.get(f"/flags/{flag['id']}").text
    assert flag["site_id"] in page
    assert f'/flags/{flag["id"]}/chips.png' in page
    for path in (f"/flags/{flag['id']}/chips.png", f"/flags/{flag['id']}/trajectory.png",
                 f"/sites/{flag['site_id']}/map.png", "/dashboard/county.png"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"] == "image/png"
        assert response.content[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(response.content) > 10_000  # a picture, not a placeholder
    assert "HLJ" in client.get(f"/sites/{flag['site_id']}").text
    dashboard = client.get("/dashboard")
    assert dashboard.status_code == 200
    assert "Green-survey ranking of licences" in dashboard.text, "the scorecards' ranking with its formula"
    assert '<a href="/sites/HLJ-MIN-003">HLJ-MIN-003</a>' in dashboard.text


def test_site_page_shows_the_imagery_coverage_and_warns_when_it_is_low(client: TestClient, store: Store) -> None:
    from gmsense.geo.coverage import coverage_stats
    from gmsense.store import ScanUnitRow

    login(client, "vic")
    page = client.get("/sites/HLJ-EXP-001").text
    assert "Imagery coverage (scan " in page
    assert "of the monitoring area have at least one clear growing-season observation" in page
    assert 'id="coverage-warning"' not in page
    low = coverage_stats({"licence_px": 100, "licence_observed_px": 97, "area_px": 200, "area_observed_px": 150},
                         0.95)
    with store.session() as s, s.begin():
        unit = s.get(ScanUnitRow, store.last_unit("HLJ-EXP-001").id)
        unit.stats = {**unit.stats, **low}
    page = client.get("/sites/HLJ-EXP-001").text
    assert "97.0% of the licence and 75.0% of the monitoring area" in page
    assert "Warning: coverage is below 95%" in page
    page = client.get("/sites/HLJ-EXP-001?lang=zh").text
    assert "监测范围的75.0%" in page
    assert "覆盖率低于95%" in page


def test_pages_use_nothing_from_outside_and_send_security_headers(client: TestClient) -> None:
    login(client, "ada")
    for path in ("/flags", "/flags/1", "/dashboard", "/audit", "/admin/users", "/api/docs", "/sites/HLJ-EXP-001"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert not re.search(r'(src|href)="(https?:)?//', response.text), path
        assert "default-src 'self'" in response.headers["content-security-policy"]
        assert response.headers["x-frame-options"] == "DENY"
    assert client.get("/static/swagger/swagger-ui-bundle.js").status_code == 200
    assert client.get("/api/openapi.json").json()["paths"]["/api/flags/{flag_id}/decision"]


def test_admins_manage_users_and_a_disabled_user_is_logged_out(client: TestClient, store: Store) -> None:
    login(client, "ada")
    token = csrf_of(client, "/admin/users")
    client.post("/admin/users", data={"csrf_token": token, "username": "newbie", "password": "short", "role": "viewer"})
    assert "newbie" not in [u.username for u in auth.list_users(store)]
    client.post("/admin/users", data={"csrf_token": token, "username": "newbie", "password": "long-enough-pw",
                                      "role": "reviewer", "scope": "province"})
    assert auth.get_user(store, "newbie").role == "reviewer"
    other = TestClient(client.app)
    login(other, "rita")
    assert other.get("/flags").status_code == 200
    client.post("/admin/users/rita/active", data={"csrf_token": token, "active": "0"})
    assert other.get("/flags", follow_redirects=False).status_code == 303  # session ended


def test_exports_follow_the_queue_filters_and_open_in_geopandas(client: TestClient) -> None:
    login(client, "vic")
    data = client.get("/api/flags", params={"page_size": 100}).json()
    rule = data["items"][0]["rule"]
    response = client.get("/export/flags.geojson", params={"rule": rule})
    assert response.status_code == 200
    flags = gpd.read_file(io.BytesIO(response.content))
    assert len(flags) == sum(f["rule"] == rule for f in data["items"])
    assert set(flags["rule"]) == {rule}
    assert flags.crs.to_epsg() == 4326
    gpkg = client.get("/export/patches.gpkg", params={"site_id": "HLJ-EXP-001"})
    patches = gpd.read_file(io.BytesIO(gpkg.content), layer="patches")
    assert set(patches["site_id"]) == {"HLJ-EXP-001"}
    assert client.get("/export/patches.csv").text.startswith("patch_id,")
    assert client.get("/export/secrets.csv").status_code == 404


def test_chinese_by_accept_language_by_choice_and_by_user_setting(client: TestClient, store: Store) -> None:
    login(client, "rita")
    assert "待审核清单" in client.get("/flags", headers={"Accept-Language": "zh-CN,zh;q=0.9"}).text
    assert "Flag queue" in client.get("/flags", headers={"Accept-Language": "en-GB"}).text
    assert "待审核清单" in client.get("/flags?lang=zh").text
    assert "待审核清单" in client.get("/flags").text  # remembered in a cookie
    page = client.get("/flags/1?lang=zh").text
    assert "审核结论" in page
    assert "公顷" not in page or "亩" in page  # Chinese pages show areas in mu by default
    client.post("/language", data={"csrf_token": csrf_of(client), "lang": "en", "next": "/flags"})
    assert auth.get_user(store, "rita").lang == "en"
    assert "Flag queue" in client.get("/flags", headers={"Accept-Language": "zh-CN"}).text


def test_labels_export_reads_the_decisions(client: TestClient, store: Store, tmp_path: Path) -> None:
    login(client, "rita")
    flags = [f for f in client.get("/api/flags", params={"page_size": 100}).json()["items"] if f["patch_id"]]
    first, second, third = flags[:3]
    decide(client, first["id"])
    decide(client, second["id"], decision="dismiss", reason="natural_change", comment="wind-thrown trees")
    decide(client, third["id"], decision="dismiss", reason="misregistration", comment="edge shift",
           corrected_class="")
    out = tmp_path / "labels.gpkg"
    code, output = run_cli("labels", "export", "--out", out, "--db", store.url)
    assert code == 0, output
    labels = gpd.read_file(out).set_index("patch_id")
    assert labels.loc[first["patch_id"], "disturbance_class"] == first["disturbance_class"]
    assert labels.loc[second["patch_id"], "disturbance_class"] == "natural"
    assert labels.loc[third["patch_id"], "disturbance_class"] == "natural"  # not damage: an artefact
    assert set(labels["reviewer"]) == {"rita"}
    assert len(labels) == 3
    decide(client, first["id"], decision="field_visit", reason="needs_field_visit", comment="go and look")
    code, output = run_cli("labels", "export", "--out", out, "--db", store.url)
    assert len(gpd.read_file(out)) == 2  # the latest decision counts: a field visit gives no label


def test_users_cli_reads_the_password_from_stdin_never_an_argument(store: Store) -> None:
    from typer.testing import CliRunner

    from gmsense.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["users", "add", "zoe", "--role", "reviewer", "--scope", "province", "--password-stdin",
                                     "--db", store.url],
                       input="a-long-password\n")
    assert ok.exit_code == 0, ok.output
    assert auth.login(store, "zoe", "a-long-password", "cli-test")[0]
    short = runner.invoke(app, ["users", "add", "zed", "--scope", "county:230183", "--password-stdin",
                                "--db", store.url],
                          input="short\n")
    assert short.exit_code == 2
    assert "at least" in short.output
    assert runner.invoke(app, ["users", "add", "zed", "--password", "x", "--db", store.url]).exit_code == 2
    listed = runner.invoke(app, ["users", "list", "--db", store.url])
    assert "zoe" in listed.output
    assert runner.invoke(app, ["users", "disable", "zoe", "--db", store.url]).exit_code == 0
    with pytest.raises(auth.LoginRefusedError):
        auth.login(store, "zoe", "a-long-password", "cli-test")


@pytest.mark.postgres
def test_decisions_and_the_append_only_log_on_postgresql(postgres_url: str) -> None:
    from gmsense.store import FlagRow, ScanRow, SiteRow

    store = Store(postgres_url)
    with store.session() as s, s.begin():
        s.add(SiteRow(site_id="PG-1", geometry_wkt="POLYGON((0 0,1 0,1 1,0 1,0 0))", attrs={"county": "A"}))
        s.add(ScanRow(id=1, source="synthetic", config_hash="x", gmsense_version="t"))
        s.flush()
        s.add(FlagRow(site_id="PG-1", rule="outside_licence", severity="critical", message="m", evidence={},
                      created_scan_id=1, updated_scan_id=1))
    user = auth.add_user(store, "pgrev", "pg-password-1", "reviewer")
    flag_id = service.queue(store).items[0]["id"]
    service.decide(store, flag_id, user, "field_visit", "needs_field_visit", "cannot tell from 10 m pixels")
    assert service.get_flag(store, flag_id)[0].status == "field_visit"
    with store.engine.connect() as connection, pytest.raises(DBAPIError, match="audit log"):
        connection.execute(text("DELETE FROM reviews"))
    assert len(service.history(store, flag_id)) == 1
    store.engine.dispose()


def test_review_serve_starts_on_localhost_and_serves_the_login_page(store: Store) -> None:
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cli = Path(sys.executable).with_name("gmsense")
    process = subprocess.Popen([str(cli), "review", "serve", "--db", store.url, "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, body = time.monotonic() + 300, ""  # generous: start-up is slow on a loaded machine
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=2) as response:
                    body = response.read().decode()
                    break
            except OSError:
                assert process.poll() is None, process.stdout.read()
                time.sleep(0.3)
        assert 'name="password"' in body
    finally:
        process.terminate()
        output = process.communicate(timeout=120)[0]
    assert f"http://127.0.0.1:{port}/" in output


def test_flag_page_says_why_the_model_chose_the_class(client: TestClient, store: Store) -> None:
    login(client, "rita")
    explained = {p.patch_id: p.metrics["explanation"] for p in store.patch_rows() if p.metrics.get("explanation")}
    assert explained, "the demo's patches are labelled by the shipped model, with explanations"
    flags = [f for f in client.get("/api/flags").json()["items"] if f.get("patch_id") in explained]
    assert flags
    page = client.get(f"/flags/{flags[0]['id']}").text
    assert "Why this class" in page
    for item in explained[flags[0]["patch_id"]]:
        assert f"<code>{item['feature']}</code>" in page
    assert "分类依据" in client.get(f"/flags/{flags[0]['id']}?lang=zh").text
