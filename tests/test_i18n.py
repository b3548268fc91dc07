"""Chinese and English: catalogs, areas in ha and mu, Chinese reports with an embedded CJK font."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pypdf import PdfReader
from typer.testing import CliRunner

from gmsense.cli import app
from gmsense.errors import InputError
from gmsense.i18n import LOCALE_DIR, area, rule_message, t

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
def test_chinese_site_report_embeds_a_cjk_font(tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    target = tmp_path / "zh.pdf"
    result = runner.invoke(app, ["report", "site", "HLJ-EXP-002", "--lang", "zh", "--area-unit", "mu",
                                 "--out", str(target), "--db", str(tmp_path / "gmsense.db")])
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
