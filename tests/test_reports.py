"""Reports from the demo: the per-licence inspection PDF and the programme summary (PDF, HTML)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pypdf import PdfReader

from gmsense.outputs.summary_report import summary_tables
from gmsense.store import Store
from gmsense.testutils import run_cli

invoke = run_cli


@pytest.fixture(scope="module")
def demo_db(demo_folder: Path) -> Path:
    return demo_folder / "gmsense.db"


@pytest.mark.slow
def test_site_report_pdf(demo_db: Path, tmp_path: Path) -> None:
    target = tmp_path / "HLJ-EXP-002.pdf"
    code, output = invoke("report", "site", "HLJ-EXP-002", "--out", target, "--db", demo_db)
    assert code == 0, output
    reader = PdfReader(target)
    store = Store(str(demo_db))
    flagged = {f.patch_id for f in store.flag_rows() if f.site_id == "HLJ-EXP-002" and f.patch_id}
    assert len(reader.pages) == 2 + len(flagged) + 2, "summary, map, one page per flagged patch, recovery, coordinates"
    text = " ".join(" ".join(page.extract_text() for page in reader.pages).split())  # lines wrap anywhere
    assert "Inspection report: licence HLJ-EXP-002" in text
    assert "outside the boundary of licence HLJ-EXP-002" in text
    for patch_id in flagged:
        assert f"Patch {patch_id}" in text
    assert "centroid lat" in text
    assert "synthetic:seed0:" in text, "provenance: the images the findings rest on"
    assert "of the monitoring area have at least one clear growing-season observation" in text
    assert "settings" in text
    images = sum(len(page.images) for page in reader.pages)
    assert images >= 1 + 2 * len(flagged), "a map, and chips and a trajectory per flagged patch"
    assert not list(tmp_path.glob(".*partial"))


def test_unknown_licence_is_a_clear_error(demo_db: Path, tmp_path: Path) -> None:
    code, output = invoke("report", "site", "NOPE-1", "--out", tmp_path / "x.pdf", "--db", demo_db)
    assert code == 2
    assert "NOPE-1" in output
    assert "HLJ-EXP-001" in output
    assert not (tmp_path / "x.pdf").exists()


@pytest.mark.slow
def test_summary_report_pdf_and_html(demo_db: Path, tmp_path: Path) -> None:
    tables = summary_tables(Store(str(demo_db)), "county")
    by_county = {r["county"]: r for r in tables["groups"]}
    assert set(by_county) == {"Xinqing", "Wuying", "Jiayin"}
    assert by_county["Jiayin"]["disturbed_ha"] == 0, "the quiet control"
    assert by_county["Xinqing"]["disturbed_ha"] > 0
    assert tables["totals"]["licences"] == 3
    assert tables["worst"][0]["site_id"] == "HLJ-EXP-002", "critical flags outside the licence weigh most"

    code, output = invoke("report", "summary", "--out", tmp_path / "s.pdf", "--db", demo_db)
    assert code == 0, output
    reader = PdfReader(tmp_path / "s.pdf")
    assert len(reader.pages) == 3
    ranking = reader.pages[2].extract_text()
    assert "Green-survey ranking of licences" in ranking
    assert "HLJ-MIN-003" in ranking, "the scorecards' ranking"
    text = reader.pages[0].extract_text()
    assert "Green-mine programme summary" in text
    assert "Xinqing" in text
    assert len(reader.pages[0].images) == 1
    code, output = invoke("report", "summary", "--by", "mineral_class", "--out", tmp_path / "s.html", "--db", demo_db)
    assert code == 0, output
    page = (tmp_path / "s.html").read_text()
    assert "<h2>By mineral class</h2>" in page
    assert "<html lang='en'>" in page
    assert "<th>disturbed ha</th>" in page
    assert "data:image/png;base64," in page
    assert "non-metallic minerals" in page, "mineral classes by their names, not their codes"
    assert "<h2>Green-survey ranking of licences (gmsense report scorecards)</h2>" in page
    assert "score = 100 x (1 - (0.35 P(disturbed ha per km2 per year)" in page
    code, output = invoke("report", "summary", "--by", "planet", "--out", tmp_path / "p.pdf", "--db", demo_db)
    assert code == 2
    assert "planet" in output


@pytest.mark.slow
def test_chinese_summary_report_pdf_and_html(demo_db: Path, tmp_path: Path) -> None:
    code, output = invoke("report", "summary", "--lang", "zh", "--area-unit", "mu", "--out", tmp_path / "s.pdf",
                          "--db", demo_db)
    assert code == 0, output
    reader = PdfReader(tmp_path / "s.pdf")
    assert len(reader.pages) == 3
    ranking = reader.pages[2].extract_text()
    assert "绿色勘查排名" in ranking
    assert "HLJ-MIN-003" in ranking, "the scorecards' ranking"
    text = reader.pages[0].extract_text()
    for expected in ("绿色矿山工作汇总", "已扫描许可证3个", "亩", "县（区）", "扰动面积（亩）", "逾期未复垦",
                     "Xinqing"):
        assert expected in text, expected
    assert "探槽" in text, "patch classes by their Chinese names"
    assert "licences" not in text
    assert "问题突出的许可证" in reader.pages[1].extract_text()
    fonts = {str(font.get_object().get("/BaseFont")) for page in reader.pages
             for font in (page["/Resources"].get("/Font") or {}).values()}
    assert any("NotoSansCJK" in f for f in fonts), fonts

    code, output = invoke("report", "summary", "--by", "mineral_class", "--lang", "zh", "--area-unit", "mu",
                          "--out", tmp_path / "s.html", "--db", demo_db)
    assert code == 0, output
    page = (tmp_path / "s.html").read_text(encoding="utf-8")
    assert "<html lang='zh-CN'>" in page
    assert "<h1>绿色矿山工作汇总</h1>" in page
    assert "<h2>按矿种类别统计</h2>" in page
    for header in ("矿种类别", "许可证数", "扰动面积（亩）", "已复垦", "恢复中", "待处理", "逾期未复垦"):
        assert f"<th>{header}</th>" in page, header
    assert "<td>非金属矿产</td>" in page
    totals = summary_tables(Store(str(demo_db)), "mineral_class")["totals"]
    assert f"人为扰动面积{totals['disturbed_ha'] * 15:.2f}亩" in page
    assert "<h2>历次扫描趋势</h2>" in page
    assert "non_metal" not in page
    assert "licences" not in page

    code, output = invoke("report", "summary", "--lang", "fr", "--out", tmp_path / "f.html", "--db", demo_db)
    assert code == 2
    assert "unknown language 'fr'" in output


def test_licence_attributes_in_chinese_in_the_review_app(demo_db: Path, tmp_path: Path) -> None:
    import re
    import sqlite3

    from fastapi.testclient import TestClient

    from gmsense.review import auth
    from gmsense.review.app import create_app

    db = tmp_path / "review.db"
    with sqlite3.connect(demo_db) as source, sqlite3.connect(db) as target:
        source.backup(target)
    store = Store(str(db))
    auth.add_user(store, "vic", "viewer-password-1", "viewer")
    with TestClient(create_app(store, cache_dir=tmp_path / "pictures")) as client:
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
        client.post("/login", data={"username": "vic", "password": "viewer-password-1", "csrf_token": token,
                                    "next": "/flags"}, follow_redirects=False)
        page = client.get("/sites/HLJ-EXP-002?lang=zh").text
        assert "<dd>勘查</dd>" in page
        assert "<dd>非金属矿产</dd>" in page
        flag = next(f for f in store.flag_rows() if f.site_id == "HLJ-EXP-002")
        assert "<dd>勘查</dd>" in client.get(f"/flags/{flag.id}?lang=zh").text
        assert "<dd>exploration</dd>" in client.get("/sites/HLJ-EXP-002?lang=en").text
