"""Escalation (issue 20, item 2): the chain per severity, who may act on which stage (role, scope
level, separation of duties), no double signing, returns with a reason, overdue stages with a
controlled clock, the review app's routes and pages, the append-only stage log; SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from gmsense.config import RulesSettings, StageSettings, load_settings
from gmsense.errors import InputError
from gmsense.geo.divisions import divisions_of
from gmsense.review import auth, escalation, service
from gmsense.review.app import create_app
from gmsense.review.escalation import ConflictError
from gmsense.store import EscalationEventRow, FlagRow, ScanRow, SiteRow, Store
from gmsense.store.scope import PROVINCE

PASSWORD = "escalate-password-1"
T0 = datetime(2026, 6, 1, 8, 0, 0)
#: Shangzhi and Wuchang are counties of Harbin; Jiayin is Yichun's.
SITES = {"SZ": {"city": "哈尔滨市", "county": "尚志市"}, "WC": {"county": "Wuchang"}, "JY": {"county": "嘉荫县"},
         "HB": {"city": "Harbin"}, "NONE": {"county": "Atlantis"}}
USERS = {"sz_county": ("reviewer", "county:230183"), "sz_county2": ("reviewer", "county:230183"),
         "wc_county": ("reviewer", "county:230184"), "harbin": ("reviewer", "city:230100"),
         "harbin2": ("reviewer", "city:230100"), "prov": ("reviewer", "province"),
         "prov2": ("reviewer", "province"), "harbin_viewer": ("viewer", "city:230100"), "boss": ("admin", "province")}


def plant(store: Store) -> dict[tuple[str, str], int]:
    """One flag per licence and severity, stored at T0; returns their ids by (licence, severity)."""
    out = {}
    with store.session() as s, s.begin():
        s.add(ScanRow(id=1, source="synthetic", config_hash="x", gmsense_version="t"))
        for site_id, attrs in SITES.items():
            codes = divisions_of(attrs)
            s.add(SiteRow(site_id=site_id, geometry_wkt="POLYGON((0 0,1 0,1 1,0 1,0 0))",
                          attrs={**attrs, "name": f"licence {site_id}"}, **codes))
            s.flush()
            for severity in ("critical", "warning", "info"):
                flag = FlagRow(site_id=site_id, rule="outside_licence", flag_key=severity, severity=severity,
                               message="m", evidence={}, created_scan_id=1, updated_scan_id=1, created_at=T0, **codes)
                s.add(flag)
                s.flush()
                out[(site_id, severity)] = flag.id
    return out


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(str(tmp_path / "esc.db"))
    yield store
    store.engine.dispose()


@pytest.fixture
def flags(store: Store) -> dict[tuple[str, str], int]:
    planted = plant(store)
    for name, (role, scope) in USERS.items():
        auth.add_user(store, name, PASSWORD, role, scope=scope)
    return planted


def user(store: Store, name: str) -> object:
    return auth.get_user(store, name)


RULES = load_settings().rules


def act(store: Store, flag_id: int, name: str, number: int, action: str = "sign", *, at: datetime,
        reason: str = "", comment: str = "ok", rules: RulesSettings = RULES) -> EscalationEventRow:
    return escalation.act(store, flag_id, user(store, name), number - 1, action, reason=reason, comment=comment,
                          rules=rules, now=at)


def states(store: Store, flag_id: int, at: datetime, rules: RulesSettings = RULES) -> list[str]:
    return [s.state for s in escalation.get_chain(store, flag_id, rules=rules, now=at).stages]


# --- configuration ---------------------------------------------------------------------------------

def test_the_shipped_chains_per_severity() -> None:
    chains = {sev: [(s.level, s.action, s.days) for s in chain] for sev, chain in RULES.escalation.items()}
    assert chains == {"critical": [("county", "confirm", 5), ("city", "review", 10), ("province", "sign_off", 15)],
                      "warning": [("county", "confirm", 5), ("city", "review", 10)],
                      "info": [("county", "confirm", 10)]}


def test_a_chain_naming_an_unknown_role_or_going_down_is_refused(tmp_path: Path) -> None:
    from gmsense.errors import ConfigError

    bad = tmp_path / "rules.yaml"
    bad.write_text("escalation:\n  critical:\n    - {level: county, role: inspector, days: 5}\n")
    with pytest.raises(ConfigError, match=r"unknown role 'inspector'.*reviewer, admin"):
        load_settings(rules_path=bad)
    bad.write_text("escalation:\n  critical:\n    - {level: city, days: 5}\n    - {level: county, days: 5}\n")
    with pytest.raises(ConfigError, match="go up the levels"):
        load_settings(rules_path=bad)
    bad.write_text("escalation:\n  critical:\n    - {level: district, days: 5}\n")
    with pytest.raises(ConfigError, match="level"):
        load_settings(rules_path=bad)


def test_the_chain_per_severity_and_division(store: Store, flags: dict) -> None:
    def chain(key: tuple[str, str]) -> list[tuple[str, int]]:
        return [(s.level, s.days) for s in escalation.get_chain(store, flags[key], rules=RULES, now=T0).stages]

    assert chain(("SZ", "critical")) == [("county", 5), ("city", 10), ("province", 15)]
    assert chain(("SZ", "warning")) == [("county", 5), ("city", 10)]
    assert chain(("SZ", "info")) == [("county", 10)]
    assert chain(("HB", "critical")) == [("city", 10), ("province", 15)], "no county: the city stage is first"
    assert chain(("NONE", "critical")) == [("province", 15)]
    assert chain(("NONE", "warning")) == [("province", 5)], "nothing left: the province takes the first stage"
    first = escalation.get_chain(store, flags[("SZ", "critical")], rules=RULES, now=T0).stages[0]
    assert (first.state, first.opened_at, first.due_at) == ("pending", T0, T0 + timedelta(days=5))


# --- travelling up the chain ------------------------------------------------------------------------

def test_a_critical_flag_travels_county_city_province(store: Store, flags: dict) -> None:
    fid = flags[("SZ", "critical")]
    t1, t2, t3 = T0 + timedelta(days=1), T0 + timedelta(days=3), T0 + timedelta(days=8)
    # The county reviewer's confirm decision is the county stage's signature.
    service.decide(store, fid, user(store, "sz_county"), "confirm", "violation", "spoil heap outside",
                   rules=RULES, now=t1)
    chain = escalation.get_chain(store, fid, rules=RULES, now=t1)
    assert [s.state for s in chain.stages] == ["signed", "pending", "waiting"]
    assert chain.stages[0].signed_by == "sz_county"
    assert chain.stages[1].due_at == t1 + timedelta(days=10)
    act(store, fid, "harbin", 2, at=t2, comment="checked the images")
    act(store, fid, "prov", 3, at=t3, comment="signed off")
    chain = escalation.get_chain(store, fid, rules=RULES, now=t3)
    assert chain.complete
    assert [s.state for s in chain.stages] == ["signed"] * 3
    assert [(e.stage, e.action, e.username) for e in escalation.history(store, flag_id=fid)] == [
        (0, "sign", "sz_county"), (1, "sign", "harbin"), (2, "sign", "prov")]
    with store.session() as s:
        assert s.get(FlagRow, fid).status == "confirmed"


def test_signing_the_first_stage_confirms_an_open_flag(store: Store, flags: dict) -> None:
    fid = flags[("SZ", "warning")]
    with pytest.raises(InputError, match="comment"):
        act(store, fid, "sz_county", 1, at=T0, comment="")
    act(store, fid, "sz_county", 1, at=T0, comment="a track")
    [review] = service.history(store, fid)
    assert (review.decision, review.reason, review.username, review.previous_status) == (
        "confirmed", "violation", "sz_county", "open")


def test_a_confirmation_by_another_level_leaves_the_first_stage_to_its_level(store: Store, flags: dict) -> None:
    fid = flags[("SZ", "critical")]
    service.decide(store, fid, user(store, "prov"), "confirm", "violation", "seen from the province",
                   rules=RULES, now=T0)
    assert states(store, fid, T0) == ["pending", "waiting", "waiting"]
    act(store, fid, "sz_county", 1, at=T0)
    act(store, fid, "harbin", 2, at=T0)
    with pytest.raises(PermissionError, match="separation of duties"):
        act(store, fid, "prov", 3, at=T0)  # their own confirmation
    act(store, fid, "prov2", 3, at=T0)
    assert states(store, fid, T0) == ["signed"] * 3


def test_dismissing_closes_the_chain_and_other_decisions_keep_working(store: Store, flags: dict) -> None:
    fid = flags[("SZ", "critical")]
    service.decide(store, fid, user(store, "sz_county"), "field_visit", "needs_field_visit", "go and look",
                   rules=RULES, now=T0)
    assert states(store, fid, T0) == ["pending", "waiting", "waiting"]
    service.decide(store, fid, user(store, "sz_county"), "dismiss", "natural_change", "a fire", rules=RULES, now=T0)
    assert states(store, fid, T0) == ["closed"] * 3
    with pytest.raises(ConflictError, match="dismissed"):
        act(store, fid, "sz_county", 1, at=T0)


# --- who may act --------------------------------------------------------------------------------------

def test_role_and_scope_level_are_enforced(store: Store, flags: dict) -> None:
    fid = flags[("SZ", "critical")]
    with pytest.raises(service.NotFoundError, match=f"no flag {fid}"):
        act(store, fid, "wc_county", 1, at=T0)  # another county: as a missing flag
    with pytest.raises(service.NotFoundError):
        act(store, flags[("JY", "critical")], "harbin", 1, at=T0)  # another city
    for name in ("harbin", "prov", "boss"):
        with pytest.raises(PermissionError, match="is for a reviewer of the county"):
            act(store, fid, name, 1, at=T0)
    with pytest.raises(PermissionError, match="may not act"):
        act(store, fid, "harbin_viewer", 1, at=T0)
    act(store, fid, "sz_county", 1, at=T0)
    with pytest.raises(PermissionError, match="of the city"):
        act(store, fid, "sz_county2", 2, at=T0)
    with pytest.raises(PermissionError, match="of the city"):
        act(store, fid, "prov", 2, at=T0)
    assert [e.username for e in escalation.history(store, flag_id=fid)] == ["sz_county"], "nothing else written"


def test_an_admin_only_stage_refuses_reviewers(store: Store, flags: dict) -> None:
    rules = RULES.model_copy(update={"escalation": {"critical": [StageSettings(level="province", role="admin",
                                                                               action="sign_off", days=3)]}})
    fid = flags[("SZ", "critical")]
    with pytest.raises(PermissionError, match="for a admin of the province"):
        act(store, fid, "prov", 1, at=T0, rules=rules)
    act(store, fid, "boss", 1, at=T0, rules=rules)


def test_nobody_signs_a_stage_twice(store: Store, flags: dict) -> None:
    fid = flags[("SZ", "critical")]
    act(store, fid, "sz_county", 1, at=T0)
    for name in ("sz_county", "sz_county2"):
        with pytest.raises(ConflictError, match=r"stage 1 .* is signed, not pending"):
            act(store, fid, name, 1, at=T0)
    with pytest.raises(ConflictError, match="not pending"):
        act(store, fid, "prov", 3, at=T0)  # not reached yet
    act(store, fid, "harbin", 2, at=T0)
    act(store, fid, "prov", 3, at=T0)
    with pytest.raises(ConflictError, match="every stage"):
        act(store, fid, "prov2", 3, at=T0)
    assert len(escalation.history(store, flag_id=fid)) == 3


def test_separation_of_duties_on_a_chain_of_two_province_stages(store: Store, flags: dict) -> None:
    rules = RULES.model_copy(update={"escalation": {"critical": [
        StageSettings(level="province", action="confirm", days=5),
        StageSettings(level="province", action="sign_off", days=5)]}})
    fid = flags[("SZ", "critical")]
    service.decide(store, fid, user(store, "prov"), "confirm", "violation", "outside", rules=rules, now=T0)
    assert states(store, fid, T0, rules) == ["signed", "pending"]
    with pytest.raises(PermissionError, match="separation of duties: 'prov' acted on stage 1"):
        act(store, fid, "prov", 2, at=T0, rules=rules)
    with pytest.raises(PermissionError, match="separation of duties"):
        act(store, fid, "prov", 2, "return", reason="r", at=T0, rules=rules)
    act(store, fid, "prov2", 2, at=T0, rules=rules)
    assert states(store, fid, T0, rules) == ["signed", "signed"]


def test_a_returned_stage_goes_back_with_its_reason(store: Store, flags: dict) -> None:
    fid = flags[("SZ", "critical")]
    act(store, fid, "sz_county", 1, at=T0, comment="a trench")
    with pytest.raises(InputError, match="needs a reason"):
        act(store, fid, "harbin", 2, "return", reason="  ", at=T0)
    t1 = T0 + timedelta(days=2)
    act(store, fid, "harbin", 2, "return", reason="the trench is inside the licence: measure again", at=t1)
    chain = escalation.get_chain(store, fid, rules=RULES, now=t1)
    assert [s.state for s in chain.stages] == ["pending", "returned", "waiting"]
    assert chain.stages[1].reason == "the trench is inside the licence: measure again"
    assert chain.stages[1].returned_by == "harbin"
    assert chain.stages[0].due_at == t1 + timedelta(days=5), "the county has its days again"
    with pytest.raises(InputError, match="first stage"):
        act(store, fid, "sz_county", 1, "return", reason="no", at=t1)
    with pytest.raises(PermissionError):
        act(store, fid, "harbin", 1, at=t1)  # the wrong level (and they acted on stage 2)
    act(store, fid, "sz_county", 1, at=t1, comment="measured: 120 m2 outside")  # the same stage again: allowed
    assert states(store, fid, t1) == ["signed", "pending", "waiting"]
    act(store, fid, "harbin", 2, at=t1)  # the one who returned it may sign it now
    act(store, fid, "prov", 3, at=t1)
    assert [(e.action, e.stage) for e in escalation.history(store, flag_id=fid)] == [
        ("sign", 0), ("return", 1), ("sign", 0), ("sign", 1), ("sign", 2)]


def test_the_stage_log_is_append_only(store: Store, flags: dict) -> None:
    fid = flags[("SZ", "critical")]
    act(store, fid, "sz_county", 1, at=T0)
    for statement in ("UPDATE escalation_events SET username = 'x'", "DELETE FROM escalation_events"):
        with pytest.raises(Exception, match="audit log"), store.engine.begin() as connection:
            connection.execute(text(statement))
    with store.session() as s, pytest.raises(Exception, match="UNIQUE"), s.begin():  # a second seq 1
        s.add(EscalationEventRow(flag_id=fid, seq=1, stage=0, level="county", action="sign", user_id=1,
                                 username="x", at=T0, reason="", comment="", chain=[]))


# --- overdue and awaiting, with a controlled clock -------------------------------------------------------

def test_overdue_stages_with_a_controlled_clock(store: Store, flags: dict) -> None:
    def overdue(at: datetime, scope: object = PROVINCE) -> set[tuple[int, int]]:
        found = escalation.pending_stages(store, scope, rules=RULES, now=at, overdue_only=True, limit=500)
        assert found.total == len(found.items)
        return {(i["flag_id"], i["stage"]) for i in found.items}

    assert overdue(T0 + timedelta(days=4)) == set()
    day6 = T0 + timedelta(days=5, seconds=1)
    # critical and warning flags' first stages (5 days) are overdue; info (10 days) not yet; the city's
    # and the province's first stages (10 and 15 days) not either.
    assert overdue(day6) == {(flags[(site, sev)], 0) for site in ("SZ", "WC", "JY") for sev in ("critical", "warning")
                             } | {(flags[("NONE", "warning")], 0)}
    act(store, flags[("SZ", "critical")], "sz_county", 1, at=day6)
    service.decide(store, flags[("WC", "critical")], user(store, "wc_county"), "dismiss", "natural_change", "fire",
                   rules=RULES, now=day6)
    after = overdue(day6)
    assert (flags[("SZ", "critical")], 0) not in after
    assert (flags[("WC", "critical")], 0) not in after, "a dismissed flag has nothing overdue"
    day17 = day6 + timedelta(days=10, seconds=1)
    assert (flags[("SZ", "critical")], 1) in overdue(day17), "the city had 10 days from the county's signature"
    county = auth.user_scope(store, user(store, "sz_county"))
    assert {f for f, _ in overdue(day17, county)} == {flags[("SZ", sev)] for sev in ("warning", "info")} | {
        flags[("SZ", "critical")]}
    items = escalation.pending_stages(store, PROVINCE, rules=RULES, now=day17, overdue_only=True).items
    dues = [i["due_at"] for i in items]
    assert dues == sorted(dues), "longest overdue first"
    top = next(i for i in items if i["flag_id"] == flags[("SZ", "critical")])
    assert (top["level"], top["action"], top["days_overdue"]) == ("city", "review", 0)


def test_awaiting_per_level(store: Store, flags: dict) -> None:
    def awaiting(name: str) -> set[int]:
        u = user(store, name)
        found = escalation.pending_stages(store, auth.user_scope(store, u), rules=RULES, now=T0,
                                          level=u.scope_kind, role=u.role, limit=500)
        return {i["flag_id"] for i in found.items}

    sz = {flags[("SZ", s)] for s in ("critical", "warning", "info")}
    assert awaiting("sz_county") == sz
    assert awaiting("harbin") == {flags[("HB", "critical")], flags[("HB", "warning")]}
    # info's chain is the county alone: a licence without a county has it signed by the province
    assert awaiting("prov") == {flags[("NONE", s)] for s in ("critical", "warning", "info")} | {flags[("HB", "info")]}
    act(store, flags[("SZ", "critical")], "sz_county", 1, at=T0)
    assert flags[("SZ", "critical")] in awaiting("harbin")
    assert flags[("SZ", "critical")] not in awaiting("sz_county")


# --- the review app --------------------------------------------------------------------------------------

@pytest.fixture
def clock() -> list[datetime]:
    return [T0 + timedelta(days=1)]


@pytest.fixture
def client(store: Store, flags: dict, clock: list[datetime], tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(store, cache_dir=tmp_path / "pictures", clock=lambda: clock[0])) as c:
        yield c


def login(client: TestClient, name: str) -> str:
    client.cookies.clear()
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    response = client.post("/login", data={"username": name, "password": PASSWORD, "csrf_token": token,
                                           "next": "/flags"}, follow_redirects=False)
    assert response.status_code == 303, response.text
    return client.get("/api/me").json()["csrf_token"]


def test_the_api_enforces_scope_level_csrf_and_single_signatures(client: TestClient, flags: dict,
                                                                  store: Store) -> None:
    fid, missing = flags[("SZ", "critical")], 999_999
    token = login(client, "wc_county")
    outside = client.post(f"/api/flags/{fid}/stages/1/sign", json={"comment": "x"}, headers={"X-CSRF-Token": token})
    absent = client.post(f"/api/flags/{missing}/stages/1/sign", json={"comment": "x"},
                         headers={"X-CSRF-Token": token})
    assert outside.status_code == absent.status_code == 404
    assert outside.json()["detail"].replace(str(fid), "ID") == absent.json()["detail"].replace(str(missing), "ID")
    assert client.get(f"/api/flags/{fid}/chain").status_code == 404
    token = login(client, "harbin")
    assert client.post(f"/api/flags/{fid}/stages/1/sign", json={"comment": "x"},
                       headers={"X-CSRF-Token": token}).status_code == 403, "inside the scope, the wrong level"
    token = login(client, "sz_county")
    assert client.post(f"/api/flags/{fid}/stages/1/sign", json={"comment": "x"}).status_code == 403, "no CSRF"
    assert client.get(f"/api/flags/{fid}/chain").json()["may_act"] == {"stage": 1, "blocked_by": None}
    signed = client.post(f"/api/flags/{fid}/stages/1/sign", json={"comment": "trench"},
                         headers={"X-CSRF-Token": token})
    assert signed.status_code == 200, signed.text
    assert (signed.json()["next_stage"], signed.json()["next_level"]) == (1, "city")
    again = client.post(f"/api/flags/{fid}/stages/1/sign", json={"comment": "again"}, headers={"X-CSRF-Token": token})
    assert again.status_code == 409
    chain = client.get(f"/api/flags/{fid}/chain").json()
    assert [s["state"] for s in chain["stages"]] == ["signed", "pending", "waiting"]
    assert chain["may_act"] == {"stage": None, "blocked_by": None}
    assert client.get(f"/api/flags/{fid}").json()["status"] == "confirmed"
    token = login(client, "harbin")
    no_reason = client.post(f"/api/flags/{fid}/stages/2/return", json={}, headers={"X-CSRF-Token": token})
    assert no_reason.status_code == 400
    back = client.post(f"/api/flags/{fid}/stages/2/return", json={"reason": "measure it"},
                       headers={"X-CSRF-Token": token})
    assert back.status_code == 200
    assert client.get("/api/escalation/awaiting").json()["total"] == 2, "the Harbin-wide licence's two city stages"
    audit = client.get("/api/audit/escalation", params={"flag_id": fid}).json()
    assert [(e["action"], e["username"], e["reason"]) for e in audit] == [
        ("sign", "sz_county", ""), ("return", "harbin", "measure it")]
    login(client, "wc_county")
    assert client.get("/api/audit/escalation").json() == [], "another county's stage log is out of scope"


def test_the_flag_page_shows_the_chain_and_the_buttons_of_the_users_stage(client: TestClient, flags: dict,
                                                                          clock: list[datetime]) -> None:
    fid = flags[("SZ", "critical")]
    login(client, "harbin")
    page = client.get(f"/flags/{fid}").text
    assert 'id="chain"' in page
    assert 'id="sign-form"' not in page, "the county stage is not the city's"
    login(client, "sz_county")
    page = client.get(f"/flags/{fid}").text
    assert f'action="/flags/{fid}/stages/1/sign"' in page
    assert 'id="return-form"' not in page, "the first stage cannot be returned"
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    bad = client.post(f"/flags/{fid}/stages/1/sign", data={"comment": "x", "csrf_token": "nope"},
                      follow_redirects=False)
    assert bad.status_code == 403
    done = client.post(f"/flags/{fid}/stages/1/sign", data={"comment": "trench", "csrf_token": csrf},
                       follow_redirects=False)
    assert done.status_code == 303
    login(client, "harbin")
    page = client.get(f"/flags/{fid}").text
    assert f'action="/flags/{fid}/stages/2/sign"' in page
    assert f'action="/flags/{fid}/stages/2/return"' in page
    clock[0] = T0 + timedelta(days=30)
    page = client.get(f"/flags/{fid}").text
    assert 'data-stage="2" data-state="pending"' in page
    assert "overdue" in page
    dashboard = client.get("/dashboard").text
    assert f'href="/flags/{fid}"' in dashboard.split('id="overdue"')[1]
    assert client.get("/api/escalation/overdue").json()["total"] == 9, "all nine of Harbin's flags are overdue"
    audit = client.get("/audit").text
    assert "stage-audit" in audit
    assert "<title>" in audit
    assert "<table" not in audit.split("<title>")[1].split("</title>")[0], "the title holds no table"


# --- PostgreSQL -------------------------------------------------------------------------------------------

@pytest.mark.postgres
def test_escalation_on_postgresql(postgres_url: str) -> None:
    store = Store(postgres_url)
    planted = plant(store)
    for name in ("sz_county", "harbin", "prov", "prov2"):
        auth.add_user(store, name, PASSWORD, USERS[name][0], scope=USERS[name][1])
    fid = planted[("SZ", "critical")]
    service.decide(store, fid, user(store, "sz_county"), "confirm", "violation", "trench", rules=RULES, now=T0)
    act(store, fid, "harbin", 2, "return", reason="measure", at=T0)
    act(store, fid, "sz_county", 1, at=T0)
    with pytest.raises(ConflictError):
        act(store, fid, "sz_county", 1, at=T0)
    act(store, fid, "harbin", 2, at=T0)
    with pytest.raises(PermissionError):
        act(store, fid, "harbin", 3, at=T0)
    act(store, fid, "prov", 3, at=T0)
    assert states(store, fid, T0) == ["signed"] * 3
    later = T0 + timedelta(days=6)
    found = escalation.pending_stages(store, PROVINCE, rules=RULES, now=later, overdue_only=True, limit=500)
    assert (fid, 0) not in {(i["flag_id"], i["stage"]) for i in found.items}
    assert found.total == 6, "critical and warning first stages of SZ/WC/JY (less the one signed), and NONE's warning"
    with pytest.raises(Exception, match="audit log"), store.engine.begin() as connection:
        connection.execute(text("DELETE FROM escalation_events"))
    with store.session() as s:
        assert len(list(s.scalars(select(EscalationEventRow)))) == 5
    store.engine.dispose()
