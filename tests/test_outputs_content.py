"""What readers see in reports and the review app: table cells that fit, page numbers, no
internal attributes, no "-0.00", and in Chinese no raw codes (licence types, classes, statuses,
rule names, evidence keys...)."""

from __future__ import annotations

import html.parser
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from gmsense.outputs.i18n import catalog
from gmsense.store import Store
from gmsense.testutils import run_cli

invoke = run_cli
EVIDENCE_KEYS = ("area_m2", "area_outside_m2", "first_detected", "confirmed_on", "last_seen", "disturbance_class",
                 "confidence", "recovery_status", "recovery_ratio", "licence_end", "suspended_since",
                 "reclamation_due", "seasons_allowed", "best_season", "best_ratio", "latest_season", "latest_ratio",
                 "disturbed_m2", "permitted_ha", "work_id", "work_type", "message_params")
NATURAL_AGENTS = ("fire", "flood", "windthrow", "harvest")


def raw_codes() -> set[str]:
    """Every code a reader must never see untranslated in Chinese."""
    en = catalog("en")
    prefixes = ("class.", "status.", "value.licence_type.", "value.mineral_class.", "flag_status.", "rule_name.")
    codes = {key.rsplit(".", 1)[1] for key in en if key.startswith(prefixes)}
    return codes | set(EVIDENCE_KEYS) | set(NATURAL_AGENTS) | {"synthetic_scenario"}


def codes_in(text: str, allowed: set[str]) -> set[str]:
    """The raw codes in ``text`` as whole words, after removing data values (licence names...)."""
    for value in sorted(allowed, key=len, reverse=True):
        text = text.replace(value, " ")
    return {c for c in raw_codes() if re.search(rf"(?<![\w-]){re.escape(c)}(?![\w-])", text)}


class _Visible(html.parser.HTMLParser):
    """The text of a page a reader sees (no tags, attributes, scripts or styles)."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        self._skip += tag in ("script", "style")

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag in ("script", "style")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def visible(page: str) -> str:
    parser = _Visible()
    parser.feed(page)
    return " ".join(parser.parts)


@pytest.fixture(scope="module")
def demo_db(demo_folder: Path) -> Path:
    return demo_folder / "gmsense.db"


@pytest.fixture(scope="module")
def data_values(demo_db: Path) -> set[str]:
    """Licence names, holders and places: data, allowed in any language."""
    store = Store(str(demo_db))
    return {str(v) for s in store.site_rows() for k, v in (s.attrs or {}).items()
            if k in ("name", "holder", "province", "city", "county")}


def pdf_text(path: Path) -> list[str]:
    return [" ".join(page.extract_text().split()) for page in PdfReader(path).pages]


@pytest.fixture
def drawn_pages(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The figures saved into PDFs during a test (to measure their tables)."""
    from matplotlib.backends import backend_pdf

    pages: list[Any] = []
    original = backend_pdf.PdfPages.savefig

    def savefig(self: Any, figure: Any = None, **kwargs: Any) -> None:
        pages.append(figure)
        original(self, figure, **kwargs)

    monkeypatch.setattr(backend_pdf.PdfPages, "savefig", savefig)
    return pages


def assert_cells_fit(pages: list[Any]) -> int:
    """Every table cell's text lies inside its cell; returns the number of cells checked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    checked = 0
    for fig in pages:
        canvas = FigureCanvasAgg(fig)  # the reports close their figures once saved
        canvas.draw()
        renderer = canvas.get_renderer()
        for ax in fig.axes:
            for table in ax.tables:
                for key, cell in table.get_celld().items():
                    text, box = cell.get_text().get_window_extent(renderer), cell.get_window_extent(renderer)
                    assert box.x0 - 0.5 <= text.x0, (key, cell.get_text().get_text())
                    assert text.x1 <= box.x1 + 0.5, (key, cell.get_text().get_text())
                    assert box.y0 - 0.5 <= text.y0, (key, cell.get_text().get_text())
                    assert text.y1 <= box.y1 + 0.5, (key, cell.get_text().get_text())
                    checked += 1
    return checked


@pytest.mark.slow
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_summary_tables_fit_and_pages_are_numbered(demo_db: Path, tmp_path: Path, lang: str,
                                                   drawn_pages: list[Any]) -> None:
    code, output = invoke("report", "summary", "--lang", lang, "--out", tmp_path / "s.pdf", "--db", demo_db)
    assert code == 0, output
    assert assert_cells_fit(drawn_pages) > 20
    pages = pdf_text(tmp_path / "s.pdf")
    for n in range(1, len(pages) + 1):
        expected = f"page {n} of {len(pages)}" if lang == "en" else f"第 {n} 页，共 {len(pages)} 页"
        assert expected in pages[n - 1]
    assert "Wuying graphite exploration" in pages[1]
    assert ("trench 3" if lang == "en" else "探槽 3") in pages[0], "the trench count of Xinqing"


@pytest.mark.slow
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_site_report_content(demo_db: Path, tmp_path: Path, lang: str, drawn_pages: list[Any],
                             data_values: set[str]) -> None:
    code, output = invoke("report", "site", "HLJ-EXP-001", "--lang", lang, "--out", tmp_path / "r.pdf",
                          "--db", demo_db)
    assert code == 0, output
    assert assert_cells_fit(drawn_pages) > 10
    pages = pdf_text(tmp_path / "r.pdf")
    text = " ".join(pages)
    for n in range(1, len(pages) + 1):
        expected = f"page {n} of {len(pages)}" if lang == "en" else f"第 {n} 页，共 {len(pages)} 页"
        assert expected in pages[n - 1]
    assert "Xinqing gold exploration" in text
    assert "synthetic_" not in text, "internal attributes are not the licence's"
    assert "-0.00" not in text
    if lang == "zh":
        assert codes_in(text, data_values) == set()


def test_numbers_never_show_negative_zero() -> None:
    from gmsense.outputs.report import number

    assert number(-0.001) == "-0.001"
    assert number(-0.0) == "0.00"
    assert number(-0.004, 2) == "-0.004"
    assert number(0.004) == "0.004"
    assert number(1.2345) == "1.23"
    assert number(-1e-12, 2) == "-1e-12"
    assert number(None) == "-"


@pytest.mark.slow
def test_chinese_review_pages_show_no_raw_codes(demo_db: Path, tmp_path: Path, data_values: set[str]) -> None:
    from fastapi.testclient import TestClient

    from gmsense.review import auth
    from gmsense.review.app import create_app

    db = tmp_path / "review.db"
    with sqlite3.connect(demo_db) as source, sqlite3.connect(db) as target:
        source.backup(target)
    store = Store(str(db))
    auth.add_user(store, "rita", "reviewer-password-1", "reviewer")
    flag = next(f for f in store.flag_rows() if f.patch_id)
    with TestClient(create_app(store, cache_dir=tmp_path / "pictures")) as client:
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
        client.post("/login", data={"username": "rita", "password": "reviewer-password-1", "csrf_token": token,
                                    "next": "/flags"}, follow_redirects=False)
        found = {}
        for path in ("/flags?lang=zh&status=all", f"/flags/{flag.id}?lang=zh", "/sites/HLJ-EXP-001?lang=zh",
                     "/sites/HLJ-EXP-002?lang=zh", "/dashboard?lang=zh", "/dashboard?lang=zh&by=mineral_class",
                     "/audit?lang=zh"):
            response = client.get(path)
            assert response.status_code == 200, path
            found[path] = codes_in(visible(response.text), data_values)
    assert found == {path: set() for path in found}
    for path in ("/flags?lang=zh&status=all", f"/flags/{flag.id}?lang=zh"):
        assert path in found
