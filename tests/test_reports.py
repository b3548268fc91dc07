"""Reports from the demo: the per-licence inspection PDF and the programme summary (PDF, HTML)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pypdf import PdfReader

from gmsense.report_summary import summary_tables
from gmsense.store import Store
from gmsense.testutils import run_cli

invoke = run_cli


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo-report")
    code, output = invoke("demo", "--out", out)
    assert code == 0, output
    return out / "gmsense.db"


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
    assert len(reader.pages) == 2
    text = reader.pages[0].extract_text()
    assert "Green-mine programme summary" in text
    assert "Xinqing" in text
    assert len(reader.pages[0].images) == 1
    code, output = invoke("report", "summary", "--by", "mineral_class", "--out", tmp_path / "s.html", "--db", demo_db)
    assert code == 0, output
    page = (tmp_path / "s.html").read_text()
    assert "<h2>By mineral class</h2>" in page
    assert "data:image/png;base64," in page
    assert "non_metal" in page
    code, output = invoke("report", "summary", "--by", "planet", "--out", tmp_path / "p.pdf", "--db", demo_db)
    assert code == 2
    assert "planet" in output
