"""The review app end to end in a real browser: Debian's chromium driven by Playwright against the
app served by uvicorn over the demo's store. Screenshots go to ``$GMSENSE_ARTIFACTS`` (default
``test-artifacts/``)."""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from gmsense.review import auth, escalation, service
from gmsense.review.app import create_app
from gmsense.store import Store

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("GMSENSE_ARTIFACTS", "test-artifacts"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture(scope="module")
def demo_db(demo_folder: Path) -> Path:
    return demo_folder / "gmsense.db"


@pytest.fixture
def served(demo_db: Path, tmp_path: Path) -> Iterator[tuple[str, Store]]:
    """The app on a free local port over a private copy of the demo store, with a reviewer."""
    db = tmp_path / "review.db"
    with sqlite3.connect(demo_db) as source, sqlite3.connect(db) as target:
        source.backup(target)
    store = Store(str(db))
    auth.add_user(store, "rita", "reviewer-password-1", "reviewer")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(store, cache_dir=tmp_path / "pictures"), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 300  # generous: start-up is slow on a loaded machine
    while not server.started:
        assert time.monotonic() < deadline, "the app did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", store
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), "Debian's chromium is missing: scripts/setup.sh installs it (apt-get install chromium)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


def _images_loaded(page: object, selector: str) -> bool:
    return page.eval_on_selector(selector, "img => img.complete && img.naturalWidth > 100")


def test_a_reviewer_decides_the_top_flag_in_a_browser(served: tuple[str, Store], browser: object) -> None:
    url, store = served
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, locale="en-GB")
    page.goto(f"{url}/flags")
    assert "/login" in page.url
    page.fill("input[name=username]", "rita")
    page.fill("input[name=password]", "reviewer-password-1")
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}/flags")
    before = service.queue(store)
    assert page.locator("a.flag-link").count() == min(before.total, service.PAGE_SIZE)
    top_id = before.items[0]["id"]
    page.locator("a.flag-link").first.click()
    page.wait_for_url(f"{url}/flags/{top_id}")
    page.wait_for_function("() => [...document.images].every(i => i.complete)", timeout=120_000)
    assert _images_loaded(page, "#chips")
    assert _images_loaded(page, "#trajectory")
    page.screenshot(path=str(ARTIFACTS / "review-flag.png"), full_page=True)
    page.check("input[name=decision][value=dismiss]")
    page.select_option("select[name=reason]", "natural_change")
    page.fill("#decision-form textarea[name=comment]", "Windthrow: fallen trees, no spoil or tracks")
    page.click("#decision-form button[type=submit]")
    page.wait_for_url(f"{url}/flags/{top_id}")
    assert "dismissed" in page.inner_text("#flag-status")
    assert "Windthrow: fallen trees" in page.inner_text("#history")
    page.goto(f"{url}/flags")
    assert page.locator(f'a.flag-link[href="/flags/{top_id}"]').count() == 0  # left the queue
    page.goto(f"{url}/audit")
    row = page.locator("#audit tbody tr").first.inner_text()
    assert "rita" in row
    assert "Windthrow" in row
    page.screenshot(path=str(ARTIFACTS / "review-audit.png"), full_page=True)
    log = service.history(store, top_id)
    assert [(r.decision, r.reason, r.username) for r in log] == [("dismissed", "natural_change", "rita")]


def test_a_reviewer_confirms_a_restoration_change_in_a_browser(served: tuple[str, Store], browser: object,
                                                               tmp_path: Path) -> None:
    from gmsense.review import restoration
    from tests.test_review_restoration import QUEUED, YEARS, plant_restoration

    url, store = served
    plant_restoration(tmp_path / "restoration", store.url)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, locale="en-GB")
    violations: list[str] = []
    page.on("console", lambda message: violations.append(message.text)
            if "Content Security Policy" in message.text else None)
    page.goto(f"{url}/restoration")
    page.fill("input[name=username]", "rita")
    page.fill("input[name=password]", "reviewer-password-1")
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}/restoration")
    assert "restoration rate" in page.inner_text("#restoration-total")
    assert page.locator("a.polygon-link").count() == len(QUEUED)
    chart = page.locator("#trend-chart")  # the inline SVG trend: drawn, one damaged and one restored bar a year
    assert chart.is_visible()
    assert chart.bounding_box()["width"] > 300
    assert page.locator("#trend-chart rect.bar").count() == 2 * len(YEARS)
    assert violations == [], "the chart breaks no Content-Security-Policy"
    page.screenshot(path=str(ARTIFACTS / "review-restoration.png"), full_page=True)
    page.click('a.polygon-link:text-is("R-RESTORED")')
    page.wait_for_url(f"{url}/restoration/R-RESTORED")
    assert "waiting for a decision" in page.inner_text("#change-status")
    page.check("input[name=decision][value=confirm]")
    page.select_option("select[name=reason]", "change_seen")
    page.fill("textarea[name=comment]", "Grass on the benches in the 2022 composite")
    page.click("#decision-form button[type=submit]")
    page.wait_for_url(f"{url}/restoration/R-RESTORED")
    assert "confirmed" in page.inner_text("#change-status")
    assert "Grass on the benches" in page.inner_text("#history")
    page.screenshot(path=str(ARTIFACTS / "review-restoration-polygon.png"), full_page=True)
    page.goto(f"{url}/restoration")
    assert page.locator('a.polygon-link:text-is("R-RESTORED")').count() == 0  # left the queue
    log = restoration.history(store, "R-RESTORED")
    assert [(r.decision, r.reason, r.username, r.year, r.change) for r in log] == [
        ("confirmed", "change_seen", "rita", 2022, "restored")]


def test_the_app_in_chinese(served: tuple[str, Store], browser: object) -> None:
    url, _ = served
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, locale="zh-CN",
                            extra_http_headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    page.goto(f"{url}/login")
    assert page.inner_text("h1") == "登录"
    page.fill("input[name=username]", "rita")
    page.fill("input[name=password]", "reviewer-password-1")
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}/flags")
    assert page.inner_text("h1") == "待审核清单"
    assert "亩" in page.inner_text("table.queue")  # areas in mu
    page.locator("a.flag-link").first.click()
    page.wait_for_function("() => [...document.images].every(i => i.complete)", timeout=120_000)
    assert "审核结论" in page.inner_text("body")
    assert _images_loaded(page, "#chips")
    page.screenshot(path=str(ARTIFACTS / "review-flag-zh.png"), full_page=True)
    page.goto(f"{url}/dashboard")
    page.wait_for_function("() => [...document.images].every(i => i.complete)", timeout=60_000)
    assert "统计看板" in page.inner_text("h1")
    assert _images_loaded(page, "#dashboard-chart")


def test_the_api_docs_render_under_the_strict_policy(served: tuple[str, Store], browser: object) -> None:
    """Swagger UI's start-up script runs by its nonce, and no page breaks the policy."""
    url, _ = served
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, locale="en-GB")
    violations: list[str] = []
    page.on("console", lambda message: violations.append(message.text)
            if "Content Security Policy" in message.text else None)
    page.goto(f"{url}/api/docs")
    assert "/login" in page.url  # the docs need a login
    page.fill("input[name=username]", "rita")
    page.fill("input[name=password]", "reviewer-password-1")
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}/api/docs")
    page.wait_for_selector(".swagger-ui .opblock", timeout=60_000)  # rendered from /api/openapi.json
    assert "gmsense review" in page.inner_text(".swagger-ui .info")
    for path in ("/flags", "/dashboard", "/audit"):
        page.goto(f"{url}{path}")
    assert violations == []


def test_a_county_reviewer_sees_and_decides_only_their_county(served: tuple[str, Store], browser: object) -> None:
    """Issue 20: a reviewer of Xinqing district (the demo's HLJ-EXP-001) in the real browser."""
    url, store = served
    auth.add_user(store, "xinqing", "county-password-1", "reviewer", scope="county:新青区")
    everything = service.queue(store, service.QueueFilter(status="all"), page_size=1000).items
    mine = {f["id"] for f in everything if f["site_id"] == "HLJ-EXP-001"}
    other = next(f["id"] for f in everything if f["site_id"] != "HLJ-EXP-001")
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, locale="en-GB")
    page.goto(f"{url}/flags?status=all")
    page.fill("input[name=username]", "xinqing")
    page.fill("input[name=password]", "county-password-1")
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}/flags?status=all")
    links = page.locator("a.flag-link")
    shown = {int(links.nth(k).inner_text()) for k in range(links.count())}
    assert shown, "the county's flags are listed"
    assert shown <= mine
    assert "HLJ-EXP-002" not in page.inner_text("table.queue")
    response = page.goto(f"{url}/flags/{other}")
    assert response.status == 404
    assert page.inner_text("h1") == "404"
    page.goto(f"{url}/flags/{min(shown)}")
    page.check("input[name=decision][value=field_visit]")
    page.select_option("select[name=reason]", "needs_field_visit")
    page.fill("#decision-form textarea[name=comment]", "Xinqing team to visit")
    page.click("#decision-form button[type=submit]")
    page.wait_for_url(f"{url}/flags/{min(shown)}")
    assert "Xinqing team to visit" in page.inner_text("#history")
    page.goto(f"{url}/audit")
    assert "Xinqing team to visit" in page.inner_text("#audit")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "review-county-audit.png"), full_page=True)


def test_a_flag_escalates_county_city_province_in_a_browser(served: tuple[str, Store], browser: object) -> None:
    """Issue 20, item 2: Xinqing's reviewer confirms the county stage, Yichun's reviewer signs the city
    stage (and, for a critical flag, a provincial signer signs off), each in their own browser session."""
    url, store = served
    people = {"xinqing": ("county:新青区", "county-password-1"), "yichun": ("city:伊春市", "city-password-1"),
              "harbin_hq": ("province", "province-password-1")}
    for name, (scope, password) in people.items():
        auth.add_user(store, name, password, "reviewer", scope=scope)
    everything = service.queue(store, service.QueueFilter(status="all"), page_size=1000).items
    flag = next(f for f in everything if f["site_id"] == "HLJ-EXP-001" and f["severity"] in ("critical", "warning"))
    n_stages = 3 if flag["severity"] == "critical" else 2
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def session_of(name: str) -> object:
        context = browser.new_context(viewport={"width": 1400, "height": 1100}, locale="en-GB")
        page = context.new_page()
        page.goto(f"{url}/flags/{flag['id']}")
        page.fill("input[name=username]", name)
        page.fill("input[name=password]", people[name][1])
        page.click("button[type=submit]")
        page.wait_for_url(f"{url}/flags/{flag['id']}")
        return page

    def state(page: object, number: int) -> str:
        return page.get_attribute(f'#chain tr[data-stage="{number}"]', "data-state")

    county = session_of("xinqing")
    assert state(county, 1) == "pending"
    assert county.locator("#return-form").count() == 0, "the first stage has nothing to return to"
    county.fill("#sign-form textarea[name=comment]", "Spoil heap beyond the boundary, fresh since June")
    county.click("#sign-stage")
    county.wait_for_url(f"{url}/flags/{flag['id']}#escalation")
    assert state(county, 1) == "signed"
    assert state(county, 2) == "pending"
    assert county.locator("#sign-form").count() == 0, "the city stage is not the county's"
    assert "confirmed" in county.inner_text("#flag-status").lower()
    county.context.close()

    city = session_of("yichun")
    assert city.locator("#return-form").count() == 1
    city.fill("#sign-form textarea[name=comment]", "Checked against the licence map")
    city.click("#sign-stage")
    city.wait_for_url(f"{url}/flags/{flag['id']}#escalation")
    assert state(city, 2) == "signed"
    city.screenshot(path=str(ARTIFACTS / "review-escalation-city.png"), full_page=True)
    city.context.close()

    if n_stages == 3:
        province = session_of("harbin_hq")
        province.click("#sign-stage")
        province.wait_for_url(f"{url}/flags/{flag['id']}#escalation")
        assert state(province, 3) == "signed"
        assert "Every stage is signed" in province.inner_text("#chain-state")
        province.goto(f"{url}/audit")
        assert province.locator("#stage-audit tbody tr").count() == 3
        province.context.close()
    assert [e.username for e in escalation.history(store, flag_id=flag["id"])] == [
        "xinqing", "yichun", "harbin_hq"][:n_stages]


def test_an_assessor_attaches_a_pdf_to_a_flag_and_a_reviewer_sees_it(served: tuple[str, Store], browser: object,
                                                                       tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 20, item 5: a third-party assessor of HLJ-EXP-002 attaches a signed assessment with a PDF
    to one of its flags in the browser; a reviewer opens the flag, sees it and downloads the same bytes."""
    from pypdf import PdfWriter

    from gmsense.review import assessments
    from gmsense.review.signing import SIGNING_KEY_ENV

    url, store = served
    monkeypatch.setenv(SIGNING_KEY_ENV, "browser-test-key-" + "3c" * 16)  # the server reads it when signing
    auth.add_user(store, "sun", "assessor-password-1", "assessor", scope="licence:HLJ-EXP-002")
    everything = service.queue(store, service.QueueFilter(status="all"), page_size=1000).items
    flag = next(f for f in everything if f["site_id"] == "HLJ-EXP-002")
    report = tmp_path / "现场核查报告.pdf"
    writer = PdfWriter()
    writer.add_blank_page(width=595, height=842)
    with report.open("wb") as f:
        writer.write(f)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    assessor = browser.new_context(viewport={"width": 1400, "height": 1100}, locale="en-GB").new_page()
    assessor.goto(f"{url}/flags/{flag['id']}")
    assessor.fill("input[name=username]", "sun")
    assessor.fill("input[name=password]", "assessor-password-1")
    assessor.click("button[type=submit]")
    assessor.wait_for_url(f"{url}/flags/{flag['id']}")
    assert assessor.locator("#decision-form").count() == 0, "an assessor does not decide"
    assessor.check("#assessment-form input[name=verdict][value=non_compliant]")
    assessor.fill("#assessment-form textarea[name=text]", "Spoil heap 40 m beyond the north boundary, fresh tracks")
    assessor.set_input_files("#assessment-form input[name=files]", str(report))
    assessor.click("#submit-assessment")
    assessor.wait_for_url(f"{url}/flags/{flag['id']}#assessments")
    listed = assessor.inner_text("#assessment-list")
    assert "现场核查报告.pdf" in listed
    assert "non-compliant" in listed
    assessor.screenshot(path=str(ARTIFACTS / "review-assessment-assessor.png"), full_page=True)
    assessor.context.close()

    reviewer = browser.new_context(viewport={"width": 1400, "height": 1100}, locale="en-GB",
                                   accept_downloads=True).new_page()
    reviewer.goto(f"{url}/flags/{flag['id']}")
    reviewer.fill("input[name=username]", "rita")
    reviewer.fill("input[name=password]", "reviewer-password-1")
    reviewer.click("button[type=submit]")
    reviewer.wait_for_url(f"{url}/flags/{flag['id']}")
    row = reviewer.inner_text("#assessment-list tbody tr")
    assert "sun" in row
    assert "Spoil heap 40 m beyond the north boundary" in row
    assert reviewer.locator("#assessment-form").count() == 0, "reviewers do not add assessments"
    with reviewer.expect_download() as download:
        reviewer.click("#assessment-list a[download]")
    assert Path(download.value.path()).read_bytes() == report.read_bytes()
    assert download.value.suggested_filename == "现场核查报告.pdf"
    reviewer.screenshot(path=str(ARTIFACTS / "review-assessment-reviewer.png"), full_page=True)
    reviewer.context.close()
    [made] = assessments.assessments(store, flag_id=flag["id"])
    assert (made.row.username, made.row.verdict, made.attachments[0].media_type) == ("sun", "non_compliant",
                                                                                      "application/pdf")
    assert assessments.verify(store).ok
