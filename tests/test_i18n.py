"""Chinese and English: catalogs, areas in ha and mu, Chinese reports with an embedded CJK font."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pypdf import PdfReader
from typer.testing import CliRunner

from gmsense.cli import app
from gmsense.errors import InputError
from gmsense.outputs.i18n import LOCALE_DIR, area, attr_value, rule_message, t
from gmsense.outputs.site_report import report_style

runner = CliRunner()


def test_catalogs_have_the_same_keys_and_placeholders() -> None:
    import string

    en = yaml.safe_load((LOCALE_DIR / "en.yaml").read_text(encoding="utf-8"))
    zh = yaml.safe_load((LOCALE_DIR / "zh.yaml").read_text(encoding="utf-8"))
    assert set(en) == set(zh)
    fields = string.Formatter()
    for key in en:
        names = {f for _, f, _, _ in fields.parse(en[key]) if f}
        assert names == {f for _, f, _, _ in fields.parse(zh[key]) if f}, key


def test_areas_in_hectares_and_mu() -> None:
    assert area(10_000, "en", "ha") == "1.00 ha"
    assert area(666.67 * 15, "zh", "mu") == "15.00亩"
    assert area(10_000, "zh", "ha") == "1.00公顷"
    with pytest.raises(InputError, match="acre"):
        area(1, "en", "acre")


def test_rule_sentences_in_both_languages() -> None:
    params = {"site_id": "L-1", "klass": "trench", "area_m2": 2800.0, "first_detected": "2021-06-10",
              "area_outside_m2": 1333.3}
    en = rule_message("outside_licence", params)
    assert en == "A trench of 0.28 ha first seen on 2021-06-10 lies 0.13 ha outside the boundary of licence L-1."
    zh = rule_message("outside_licence", params, "zh", "mu")
    assert zh == "2021-06-10首次发现的探槽（4.20亩）有2.00亩位于许可证L-1边界之外。"
    assert t("status.recovering", "zh") == "恢复中"


@pytest.mark.slow
def test_chinese_site_report_embeds_a_cjk_font(demo_folder: Path, tmp_path: Path) -> None:
    target = tmp_path / "zh.pdf"
    result = runner.invoke(app, ["report", "site", "HLJ-EXP-002", "--lang", "zh", "--area-unit", "mu",
                                 "--out", str(target), "--db", str(demo_folder / "gmsense.db")])
    assert result.exit_code == 0, result.output
    reader = PdfReader(target)
    text = reader.pages[0].extract_text()
    assert "核查报告：许可证 HLJ-EXP-002" in text
    assert "位于许可证HLJ-EXP-002边界之外" in text.replace("\n", "")
    assert "亩" in text
    fonts = {font.get("/BaseFont") for page in reader.pages
             for font in (page["/Resources"].get("/Font") or {}).values()
             for font in [font.get_object()]}
    assert any("NotoSansCJK" in str(f) for f in fonts), fonts


def test_unknown_language_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["report", "site", "X", "--lang", "fr", "--out", str(tmp_path / "x.pdf"),
                                 "--db", str(tmp_path / "x.db")])
    assert result.exit_code == 2
    assert "unknown language 'fr'" in result.output


def test_licence_attribute_values() -> None:
    from gmsense.geo.sites import LICENCE_TYPES, MINERAL_CLASSES

    assert attr_value("licence_type", "exploration", "zh") == "勘查"
    assert attr_value("licence_type", "Mining", "zh") == "采矿"
    assert attr_value("mineral_class", "non_metal", "zh") == "非金属矿产"
    assert attr_value("status", "suspended", "zh") == "暂停"
    assert attr_value("status", "suspended", "en") == "suspended"
    assert attr_value("county", "嘉荫县", "zh") == "嘉荫县", "names pass unchanged"
    assert attr_value("licence_type", "prospecting", "zh") == "prospecting", "unknown values pass unchanged"
    assert attr_value("permitted_disturbance_ha", 2.0, "zh") == 2.0
    en = yaml.safe_load((LOCALE_DIR / "en.yaml").read_text(encoding="utf-8"))
    assert all(f"value.licence_type.{v}" in en for v in LICENCE_TYPES)
    assert all(f"value.mineral_class.{v}" in en for v in MINERAL_CLASSES)


@pytest.mark.filterwarnings("error:Glyph:UserWarning")  # drawn with the CJK font, never boxes
def test_figures_in_chinese() -> None:
    with report_style("zh"):
        _figures_in_chinese()


def _figures_in_chinese() -> None:
    import matplotlib.pyplot as plt
    from shapely.geometry import box

    from gmsense.outputs.report import site_map_figure, trajectory_figure
    from gmsense.outputs.summary_report import summary_charts
    from gmsense.records import RecoveryObservation

    obs = [RecoveryObservation(season, "ndvi", 5, patch, 0.8, patch - 0.8)
           for season, patch in ((2018, 0.8), (2019, 0.78), (2020, 0.3), (2021, 0.5), (2022, 0.7))]
    fig = trajectory_figure(obs, title="x", disturbance_season=2020, status="恢复中", lang="zh")
    ax = fig.axes[0]
    assert [h.get_text() for h in ax.get_legend().get_texts()] == ["参照环带", "图斑", "扰动前水平", "恢复80%水平"]
    assert ax.get_xlabel() == "生长季"
    assert ax.get_ylabel() == "NDVI中位数"
    plt.close(fig)
    fig = site_map_figure(None, box(0, 0, 100, 100), 50.0, [(box(10, 10, 20, 20), "trench")], title="x", lang="zh")
    ax = fig.axes[0]
    assert [h.get_text() for h in ax.get_legend().get_texts()] == ["探槽"]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("东坐标（米）", "北坐标（米）")
    plt.close(fig)
    tables = {"by": "mineral_class", "groups": [
        {"mineral_class": "metal", "licences": 1, "disturbed_ha": 2.0, "reclaimed_share": 0.5,
         "recovering_share": 0.25, "patches": {"trench": 2}, "open_flags": 1, "confirmed_flags": 0,
         "dismissed_flags": 0, "overdue_reclamation": 0}]}
    fig = summary_charts(tables, "zh", "mu")
    left, right = fig.axes[:2]
    assert left.get_title() == "各矿种类别扰动面积与复垦情况"
    assert left.get_xlabel() == "面积（亩）"
    assert [tick.get_text() for tick in left.get_yticklabels()] == ["金属矿产"]
    assert left.patches[0].get_width() == pytest.approx(30.0), "2 ha = 30 mu"
    assert [h.get_text() for h in right.get_legend().get_texts()] == ["待处理", "已确认", "已排除"]
    plt.close(fig)
    fig = summary_charts(tables)  # the old call: English, hectares
    assert fig.axes[0].get_xlabel() == "hectares"
    assert fig.axes[0].patches[0].get_width() == pytest.approx(2.0)
    plt.close(fig)
