"""The map page of the restoration PDF: the register polygons coloured by their status in the latest year, the
demonstration zone outlined, scale bar, north arrow and legend in English and Chinese (the synthetic world of
tests/test_restoration.py, through the commands)."""

from __future__ import annotations

from pathlib import Path

import pytest
from matplotlib.colors import to_hex
from matplotlib.patches import PathPatch
from pypdf import PdfReader
from shapely import wkt

from gmsense.outputs.restoration_map import STATUS_COLOURS, map_figure, nice_length
from gmsense.outputs.restoration_report import map_polygons, status_table
from gmsense.store import Store
from gmsense.testutils import run_cli
from tests.test_restoration import EXPECTED, world  # noqa: F401  (world: the module's synthetic composites)


@pytest.fixture(scope="module")
def store(world: Path, tmp_path_factory: pytest.TempPathFactory) -> str:  # noqa: F811
    db = str(tmp_path_factory.mktemp("map") / "store.db")
    for args in (("register", "import", world / "register.gpkg"), ("zones", "import", world / "zones.geojson"),
                 ("restoration", "run", "--imagery", world / "composites")):
        code, output = run_cli(*args, "--db", db)
        assert code == 0, output
    return db


def test_the_map_draws_every_polygon_in_its_status_colour(store: str) -> None:
    db = Store(store)
    table = status_table(db)
    polygons = map_polygons(db, table)
    assert sorted(polygons["register_id"]) == sorted(EXPECTED)
    zones = [(z.zone_id, wkt.loads(z.geometry_wkt)) for z in db.zone_rows()]
    fig = map_figure(polygons, 2022, "en", zones)
    drawn = {p.get_gid(): p for p in fig.axes[0].patches if isinstance(p, PathPatch)}
    assert set(drawn) == {*EXPECTED, "zone:Z1"}
    for register_id, years in EXPECTED.items():
        assert to_hex(drawn[register_id].get_facecolor()) == STATUS_COLOURS[years[2022]], register_id
    assert drawn["zone:Z1"].get_fill() is False or drawn["zone:Z1"].get_facecolor()[3] == 0
    # each patch covers its polygon: 150 m x 150 m (P6 200 m x 150 m) in the map's metres
    extent = drawn["P6"].get_path().get_extents()
    assert (extent.width, extent.height) == pytest.approx((200, 150), abs=1)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "N" in texts
    assert {"A", "B", "Z1"} <= set(texts), "counties at their polygons' centre, the zone named"
    assert any(t.endswith(" m") or t.endswith(" km") for t in texts), "a scale bar"
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["damaged", "under restoration", "restored", "reverted", "no status yet", "demonstration zone"]


@pytest.mark.parametrize(("lang", "title", "legend", "north"), [
    ("en", "Register polygons by status, 2022", "under restoration", "N"),
    ("zh", "2022年矿山图斑修复状态分布图", "修复后退化", "北")])
def test_the_pdf_has_a_map_page(store: str, tmp_path: Path, lang: str, title: str, legend: str, north: str) -> None:
    code, output = run_cli("restoration", "report", "--out", tmp_path, "--db", store, "--format", "pdf",
                           "--lang", lang)
    assert code == 0, output
    pages = [page.extract_text().replace("\n", "") for page in PdfReader(tmp_path / "restoration_report.pdf").pages]
    maps = [k for k, text in enumerate(pages) if title in text]
    assert len(maps) == 1, "one map page"
    text = pages[maps[0]]
    assert maps[0] == 1, "after the overview, before the chart"
    for word in (legend, north, "Z1", "200 m"):
        assert word in text, word
    images = PdfReader(tmp_path / "restoration_report.pdf").pages[maps[0]].images
    assert not images, "vector polygons, not a picture"


def test_scale_bar_lengths_are_round() -> None:
    assert nice_length(1_000) == 200
    assert nice_length(3_100) == 500
    assert nice_length(80_000) == 10_000
    assert nice_length(7) == 1
