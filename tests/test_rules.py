"""Flag rules on hand-made licences and patches, including the work-programme comparison."""

from __future__ import annotations

from pathlib import Path

import pyproj
import pytest
import yaml
from shapely.geometry import LineString, Point, box

from gmsense.config import RulesSettings, configs_dir, load_settings
from gmsense.errors import ConfigError
from gmsense.flags import evaluate
from gmsense.geo.sites import ApprovedWork, Site, read_works
from gmsense.records import PatchRecord, RecoveryObservation

UTM = pyproj.CRS.from_epsg(32652)
LICENCE = box(600_000, 5_290_000, 601_000, 5_291_000)
RULES = RulesSettings()


def _site(**attrs: object) -> Site:
    return Site("L-1", LICENCE, UTM, {"licence_type": "exploration", "mineral_class": "metal", **attrs})


def _patch(geom, first: str = "2021-06-10", klass: str = "trench", status: str = "active",
           recovery: list[RecoveryObservation] | None = None) -> PatchRecord:
    outside = geom.difference(LICENCE).area
    return PatchRecord("L-1", "", geom.wkt, "EPSG:32652", klass, 0.8, first, first, "2022-09-01", geom.area,
                       outside == 0, outside, status, None, {}, recovery or [])


def _rules(flags) -> list[str]:
    return sorted(f.rule for f in flags)


TRENCH = LineString([(600_200, 5_290_500), (600_500, 5_290_500)]).buffer(5)


def test_inside_trench_with_no_other_finding_is_a_new_disturbance() -> None:
    flags = evaluate(_site(), [_patch(TRENCH)], [TRENCH], "2021-09-30", RULES)
    assert _rules(flags) == ["new_disturbance"]
    assert flags[0].severity == "info"
    assert "2021-06-10" in flags[0].message


def test_damage_across_the_boundary_is_critical() -> None:
    crossing = box(600_950, 5_290_400, 601_050, 5_290_450)
    [flag] = evaluate(_site(), [_patch(crossing)], [crossing], "2021-09-30", RULES)
    assert flag.rule == "outside_licence"
    assert flag.severity == "critical"
    assert flag.evidence["area_outside_m2"] == pytest.approx(50 * 50)
    assert "0.25 ha outside the boundary of licence L-1" in flag.message


def test_natural_change_is_never_flagged() -> None:
    burn = box(600_900, 5_290_400, 601_200, 5_290_700)
    assert evaluate(_site(), [_patch(burn, klass="natural")], [burn], "2021-09-30", RULES) == []


def test_after_licence_end_and_while_suspended() -> None:
    flags = evaluate(_site(licence_end="2021-05-31"), [_patch(TRENCH)], [TRENCH], "2021-09-30", RULES)
    assert _rules(flags) == ["after_licence_end"]
    flags = evaluate(_site(status="suspended", suspended_since="2021-01-01"), [_patch(TRENCH)], [TRENCH],
                     "2021-09-30", RULES)
    assert _rules(flags) == ["while_suspended"]
    flags = evaluate(_site(status="suspended", suspended_since="2021-07-01"), [_patch(TRENCH)], [TRENCH],
                     "2021-09-30", RULES)
    assert _rules(flags) == ["new_disturbance"], "damage from before the suspension is not a suspension breach"


def test_permitted_area_counts_only_inside_the_licence() -> None:
    pad = box(600_100, 5_290_100, 600_200, 5_290_200)  # 1 ha
    flags = evaluate(_site(permitted_disturbance_ha=0.5), [_patch(pad, klass="pad")], [pad], "2021-09-30", RULES)
    assert "permitted_area_exceeded" in _rules(flags)
    [flag] = [f for f in flags if f.rule == "permitted_area_exceeded"]
    assert flag.patch_index is None
    assert flag.evidence["disturbed_m2"] == pytest.approx(10_000)
    flags = evaluate(_site(permitted_disturbance_ha=2), [_patch(pad, klass="pad")], [pad], "2021-09-30", RULES)
    assert "permitted_area_exceeded" not in _rules(flags)


def test_ground_disturbed_twice_counts_once_against_the_permitted_area() -> None:
    pad = box(600_100, 5_290_100, 600_200, 5_290_200)  # 1 ha, cleared in 2016 and again in 2020
    patches = [_patch(pad, first="2016-06-20", klass="clearing", status="recovered"),
               _patch(pad, first="2020-07-06", klass="clearing")]
    flags = evaluate(_site(permitted_disturbance_ha=1.5), patches, [pad, pad], "2021-09-30", RULES)
    assert "permitted_area_exceeded" not in _rules(flags)
    assert {f.patch_index for f in flags} == {0, 1}, "each disturbance is judged"
    flags = evaluate(_site(permitted_disturbance_ha=0.5), patches, [pad, pad], "2021-09-30", RULES)
    [flag] = [f for f in flags if f.rule == "permitted_area_exceeded"]
    assert flag.evidence["disturbed_m2"] == pytest.approx(10_000)


def test_work_programme_comparison() -> None:
    planned_trench = ApprovedWork("W1", "L-1", "trench", 2021,
                                  LineString([(600_210, 5_290_520), (600_490, 5_290_520)]), UTM)
    planned_pad = ApprovedWork("W2", "L-1", "pad", 2021, Point(600_800, 5_290_800), UTM)
    future_pad = ApprovedWork("W3", "L-1", "pad", 2023, Point(600_800, 5_290_200), UTM)
    stray = box(600_100, 5_290_800, 600_140, 5_290_840)
    patches = [_patch(TRENCH), _patch(stray, klass="pad")]
    flags = evaluate(_site(), patches, [TRENCH, stray], "2021-09-30", RULES, [planned_trench, planned_pad, future_pad])
    by_rule = {(f.rule, f.patch_index, f.key) for f in flags}
    assert ("outside_work_programme", 1, "") in by_rule, "the stray pad is not in the programme"
    assert ("approved_work_not_observed", None, "W2") in by_rule
    assert not any(f.rule == "outside_work_programme" and f.patch_index == 0 for f in flags), "20 m off is covered"
    assert not any(f.key == "W3" for f in flags), "works planned for later years are not expected yet"
    assert not any(f.key == "W1" for f in flags)
    # A trench of the wrong year is not covered by the plan.
    late = ApprovedWork("W1", "L-1", "trench", 2024, planned_trench.geometry, UTM)
    flags = evaluate(_site(), [_patch(TRENCH)], [TRENCH], "2021-09-30", RULES, [late])
    assert _rules(flags) == ["outside_work_programme"]


def _trajectory(values: dict[int, float]) -> list[RecoveryObservation]:
    return [RecoveryObservation(s, "ndvi", 5, 0.8 + v, 0.8, v) for s, v in values.items()]


def test_reclamation_overdue_by_seasons_and_by_due_date() -> None:
    stuck = _patch(TRENCH, first="2019-06-10", status="not_recovering",
                   recovery=_trajectory({2018: 0.0, 2019: -0.5, 2020: -0.5, 2021: -0.45}))
    flags = evaluate(_site(), [stuck], [TRENCH], "2021-09-30", RULES)
    assert _rules(flags) == ["reclamation_overdue"], "exploration: 2 seasons allowed, 2 have passed"
    assert "2 growing seasons" in flags[0].message
    young = _patch(TRENCH, first="2020-06-10", status="not_recovering",
                   recovery=_trajectory({2019: 0.0, 2020: -0.5, 2021: -0.5}))
    assert _rules(evaluate(_site(), [young], [TRENCH], "2021-09-30", RULES)) == ["new_disturbance"]
    assert _rules(evaluate(_site(reclamation_due="2021-08-01"), [young], [TRENCH], "2021-09-30", RULES)) == [
        "reclamation_overdue"]
    recovering = _patch(TRENCH, first="2019-06-10", status="recovering",
                        recovery=_trajectory({2018: 0.0, 2019: -0.5, 2020: -0.3, 2021: -0.2}))
    assert _rules(evaluate(_site(), [recovering], [TRENCH], "2021-09-30", RULES)) == ["new_disturbance"]


def test_mineral_class_and_licence_type_deadlines() -> None:
    rules = RulesSettings(reclamation_seasons={"default": 3, "exploration": 2, "mining/energy": 5})
    assert rules.seasons_to_reclaim("mining", "energy") == 5
    assert rules.seasons_to_reclaim("mining", "metal") == 3
    assert rules.seasons_to_reclaim("exploration", "metal") == 2


def test_recovery_reversed() -> None:
    reversed_patch = _patch(TRENCH, first="2018-06-10", status="not_recovering",
                            recovery=_trajectory({2017: 0.0, 2018: -0.5, 2019: -0.2, 2020: -0.1, 2021: -0.4}))
    flags = evaluate(_site(reclamation_due="2030-01-01"), [reversed_patch], [TRENCH], "2021-09-30",
                     RULES.model_copy(update={"reclamation_seasons": {"default": 9}}))
    assert _rules(flags) == ["recovery_reversed"]
    assert flags[0].evidence["best_season"] == 2020
    assert "80%" in flags[0].message


def test_severity_override_and_disabled_rule() -> None:
    rules = RulesSettings.model_validate({"severity_by_mineral_class": {"metal": {"new_disturbance": "warning"}},
                                          "outside_licence": {"enabled": False}})
    crossing = box(600_950, 5_290_400, 601_050, 5_290_450)
    flags = evaluate(_site(), [_patch(TRENCH), _patch(crossing)], [TRENCH, crossing], "2021-09-30", rules)
    assert [(f.rule, f.severity) for f in flags] == [("new_disturbance", "warning"), ("new_disturbance", "warning")]


def test_shipped_rules_yaml_equals_the_built_in_defaults() -> None:
    assert load_settings().rules == RulesSettings()
    assert set(yaml.safe_load((configs_dir() / "rules.yaml").read_text())) <= set(RulesSettings.model_fields)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("outside_licence: {severity: urgent}\n", "outside_licence.severity"),
        ("reclamation_seasons: {default: 2, copper: 3}\n", "unknown keys"),
        ("severity_by_mineral_class: {gold: {outside_licence: info}}\n", "unknown mineral class"),
        ("no_such_rule: {enabled: true}\n", "no_such_rule"),
    ],
)
def test_bad_rules_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(rules_path=path)


def test_read_works(tmp_path: Path) -> None:
    import geopandas as gpd

    frame = gpd.GeoDataFrame(
        {"site_id": ["L-1", "L-1", "L-2"], "work_type": ["Trench", "pad", "track"], "year": [2021, None, 2022]},
        geometry=[LineString([(128.0, 47.0), (128.003, 47.0)]), Point(128.001, 47.001),
                  LineString([(128.1, 47.1), (128.2, 47.2)])], crs=4326)
    frame.to_file(tmp_path / "works.geojson")
    works = read_works(tmp_path / "works.geojson")
    assert sorted(works) == ["L-1", "L-2"]
    trench = works["L-1"][0]
    assert (trench.work_type, trench.year, trench.crs.to_epsg()) == ("trench", 2021, 32652)
    assert trench.geometry.length == pytest.approx(228, rel=0.02)
    assert works["L-1"][1].year is None
    frame.loc[1, "work_type"] = "tunnel"
    frame.to_file(tmp_path / "bad.geojson")
    with pytest.raises(Exception, match="tunnel"):
        read_works(tmp_path / "bad.geojson")
