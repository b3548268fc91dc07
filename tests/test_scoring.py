"""The accuracy benchmark's scorer on hand-made cases: shapely polygons in metres, no imagery."""

from __future__ import annotations

import geopandas as gpd
import pytest
from shapely.geometry import LineString, box

from gmsense.bench.scoring import match_scene, score

TRENCH = LineString([(0, 0), (300, 0)]).buffer(3, cap_style="flat")  # 300 m x 6 m, y in [-3, 3]
PAD_A = box(1000, 1000, 1030, 1030)
PAD_B = box(1040, 1000, 1070, 1030)
FIRE = box(2000, 2000, 2200, 2200)


def _truth(*rows: tuple) -> gpd.GeoDataFrame:
    """rows: (kind, class, geometry[, inside_licence[, first_observed[, start]]])."""
    data = []
    for k, (kind, klass, geom, *rest) in enumerate(rows):
        inside = rest[0] if rest else True
        observed = rest[1] if len(rest) > 1 else "2021-06-05"
        start = rest[2] if len(rest) > 2 else "2021-06-01"
        data.append({"event_id": f"E{k + 1}", "kind": kind, "disturbance_class": klass, "start": start,
                     "first_observed": observed, "recovery_status": "active", "inside_licence": inside,
                     "geometry": geom})
    return gpd.GeoDataFrame(data, geometry="geometry", crs=32652)


def _patches(*rows: tuple) -> gpd.GeoDataFrame:
    """rows: (class, geometry[, inside_licence[, first_detected[, confirmed_on]]])."""
    data = []
    for klass, geom, *rest in rows:
        data.append({"disturbance_class": klass, "inside_licence": rest[0] if rest else True,
                     "first_detected": rest[1] if len(rest) > 1 else "2021-06-05",
                     "confirmed_on": rest[2] if len(rest) > 2 else "2021-06-15",
                     "recovery_status": "active", "geometry": geom})
    return gpd.GeoDataFrame(data, geometry="geometry", crs=32652)


def _score(truth: gpd.GeoDataFrame, patches: gpd.GeoDataFrame) -> dict:
    return score(truth, patches, area_km2=1, years=1)


def test_an_event_split_into_pieces_is_one_hit_and_no_false_alarm() -> None:
    truth = _truth(("trench", "trench", TRENCH))
    pieces = _patches(("trench", box(0, -4, 90, 4)), ("trench", box(100, -4, 190, 4)),
                      ("pad", box(200, -4, 230, 4)))  # the smallest piece mislabelled
    events, false_alarms = match_scene(truth, pieces)
    assert len(events) == 1
    assert events.detected.all()
    assert events.n_patches.iloc[0] == 3
    assert false_alarms == []
    m = _score(truth, pieces)
    assert m["recall"] == 1.0
    assert m["events_human"] == 1
    assert m["patches"] == 3
    assert m["false_alarms"] == 0
    assert m["class_accuracy"] == 1.0, "the class is that of the piece with the largest overlap"
    assert m["confusion"]["trench"] == {"trench": 1}


def test_one_patch_over_several_events_hits_each() -> None:
    truth = _truth(("pad", "pad", PAD_A), ("pad", "pad", PAD_B), ("trench", "trench", TRENCH))
    patch = _patches(("pad", box(995, 995, 1075, 1035)))
    m = _score(truth, patch)
    assert m["recall_by_type"] == {"trench": 0.0, "pad": 1.0, "track": None, "clearing": None}
    assert m["recall"] == pytest.approx(2 / 3, abs=1e-4)
    assert m["class_accuracy"] == 1.0
    assert m["false_alarms"] == 0


@pytest.mark.parametrize(("gap", "found"), [(0, True), (10, True), (14, True), (16, False), (30, False), (40, False)])
def test_misregistration_tolerance_is_15_m(gap: float, found: bool) -> None:
    """A patch ``gap`` metres north of the trench's edge (y = 3)."""
    patch = _patches(("trench", box(0, 3 + gap, 300, 13 + gap)))
    m = _score(_truth(("trench", "trench", TRENCH)), patch)
    assert m["recall"] == (1.0 if found else 0.0)
    assert m["false_alarms"] == (0 if found else 1), "a patch beyond the tolerance is a false alarm"


@pytest.mark.parametrize(("gap", "on_fire"), [(14, True), (16, False)])
def test_tolerance_applies_to_natural_change_too(gap: float, on_fire: bool) -> None:
    patch = _patches(("clearing", box(2200 + gap, 2000, 2250 + gap, 2050)))
    m = _score(_truth(("fire", "natural", FIRE)), patch)
    assert m["false_alarms"] == 1
    assert m["false_alarms_on_natural"] == ({"fire": 1} if on_fire else {})


def test_human_made_patch_on_natural_change_is_a_false_alarm_on_natural() -> None:
    truth = _truth(("fire", "natural", FIRE), ("windthrow", "natural", box(3000, 3000, 3100, 3100)),
                   ("trench", "trench", TRENCH))
    patches = _patches(("clearing", box(2050, 2050, 2150, 2150)),   # on the fire, called human-made
                       ("clearing", box(3010, 3010, 3050, 3050)),   # on the windthrow
                       ("natural", box(2000, 2000, 2100, 2100)),    # on the fire, called natural: right
                       ("natural", box(5000, 5000, 5050, 5050)),    # natural change on background: not damage
                       ("track", box(6000, 6000, 6010, 6100)))      # human-made on background
    m = _score(truth, patches)
    assert m["false_alarms"] == 3
    assert m["false_alarms_on_natural"] == {"fire": 1, "windthrow": 1}
    assert m["events_natural"] == 2
    assert m["events_human"] == 1
    assert m["recall"] == 0.0, "natural events never count toward recall"


def test_uncertain_patches_are_counted_by_the_trust_rule_that_said_so() -> None:
    from gmsense.bench.scoring import uncertain_rule

    truth = _truth(("fire", "natural", FIRE), ("trench", "trench", TRENCH), ("pad", "pad", PAD_A))
    patches = _patches(("uncertain", TRENCH), ("uncertain", PAD_A), ("uncertain", box(2050, 2050, 2150, 2150)),
                       ("uncertain", box(5000, 5000, 5050, 5050)), ("uncertain", box(6000, 6000, 6050, 6050)))
    patches["label_reason"] = [
        "outside training data: area 96 ha > largest trained clearing 2 ha",
        "low confidence: pad 0.41, clearing 0.33, natural 0.2",
        "called natural, but no natural agent explains it (fire: NBR drop 0.02 < 0.1)",
        "a work's shape (elongation 9.0, width 12 m) with only a harvest signature (harvest: ...)",
        None]
    m = _score(truth, patches)
    assert m["uncertain_rules_human"] == {"outside_training_data": 1, "low_confidence": 1}
    assert m["uncertain_rules_natural"] == {"no_natural_agent": 1}
    assert m["review_load"] == 3  # the fire's patch and both on background
    assert m["review_load_by_rule"] == {"no_natural_agent": 1, "work_shape_indirect_agent": 1, "none": 1}
    assert uncertain_rule("the model's pad reads reflectance, which imagery rescaled per image does not "
                          "hold") == "rescaled_imagery"
    assert uncertain_rule("rule baseline: between classes") == "other"


def test_patch_touching_a_human_event_and_natural_change_is_no_false_alarm() -> None:
    truth = _truth(("fire", "natural", FIRE), ("pad", "pad", box(2210, 2000, 2240, 2030)))
    m = _score(truth, _patches(("pad", box(2150, 1990, 2245, 2035))))
    assert m["recall"] == 1.0
    assert m["false_alarms"] == 0


def test_inside_licence_accuracy() -> None:
    truth = _truth(("pad", "pad", PAD_A, True), ("trench", "trench", TRENCH, False),
                   ("pad", "pad", box(4000, 4000, 4030, 4030), False),
                   ("pad", "pad", box(6000, 6000, 6030, 6030), True))
    patches = _patches(("pad", PAD_A, True),                       # right
                       ("trench", box(0, -4, 300, 4), "false"),     # right, read back from CSV as a string
                       ("pad", box(4000, 4000, 4030, 4030), True),  # wrong: the event reaches outside
                       ("pad", box(6000, 6000, 6030, 6030), "true"))  # right
    m = _score(truth, patches)
    assert m["inside_licence_accuracy"] == 0.75


def test_lag_runs_from_first_clear_observation_to_confirmation() -> None:
    truth = _truth(("pad", "pad", PAD_A, True, "2021-06-10", "2021-06-01"))
    m = _score(truth, _patches(("pad", PAD_A, True, "2021-06-10", "2021-06-30")))
    assert m["median_lag_days"] == 20.0, "confirmed_on - first_observed"
    assert m["median_first_detected_lag_days"] == 0.0
    assert m["lag_from_start_date"] == 0


def test_split_event_is_detected_when_its_first_piece_is_confirmed() -> None:
    truth = _truth(("trench", "trench", TRENCH, True, "2021-06-05"))
    pieces = _patches(("trench", box(0, -4, 200, 4), True, "2021-06-20", "2021-07-01"),
                      ("trench", box(210, -4, 300, 4), True, "2021-06-05", "2021-06-12"))
    m = _score(truth, pieces)
    assert m["median_lag_days"] == 7.0
    assert m["median_first_detected_lag_days"] == 0.0


@pytest.mark.parametrize("missing", ["", float("nan")], ids=["empty", "nan"])
def test_lag_falls_back_to_the_start_date_without_a_clear_observation(missing: str | float) -> None:
    """No first clear observation: an empty cell, or NaN as a CSV reads back."""
    truth = _truth(("pad", "pad", PAD_A, True, missing, "2021-06-01"))
    events, _ = match_scene(truth, _patches(("pad", PAD_A, True, "2021-06-05", "2021-06-15")))
    assert events.lag_basis.tolist() == ["start"]
    assert events.lag_days.tolist() == [14]
    m = _score(truth, _patches(("pad", PAD_A)))
    assert m["lag_from_start_date"] == 1
    assert m["median_lag_days"] == 14.0


def test_lag_without_confirmed_on_uses_first_detected() -> None:
    truth = _truth(("pad", "pad", PAD_A, True, "2021-06-05"))
    patches = _patches(("pad", PAD_A, True, "2021-06-15")).drop(columns="confirmed_on")
    assert _score(truth, patches)["median_lag_days"] == 10.0


def test_a_patch_confirmed_before_the_event_began_is_not_its_detection() -> None:
    """A field harvested (natural) in 2021 where a pad was built in 2022 and never detected: the earlier
    patch is another disturbance, so the pad is missed, not a work labelled natural; a patch of the pad
    itself, confirmed after it began, detects it with its own class."""
    truth = _truth(("pad", "pad", PAD_A, True, "2022-06-05", "2022-06-01"))
    harvest = ("natural", box(990, 990, 1040, 1040), True, "2021-06-05", "2021-06-15")
    m = _score(truth, _patches(harvest))
    assert (m["recall"], m["human_labelled_natural"], m["missed_patch_predates_event"]) == (0.0, None, 1)
    m = _score(truth, _patches(harvest, ("pad", PAD_A, True, "2022-06-05", "2022-06-20")))
    assert (m["recall"], m["class_accuracy"], m["missed_patch_predates_event"]) == (1.0, 1.0, 0)
    assert m["median_lag_days"] == 15.0


def test_recovery_status_is_judged_on_the_best_matching_patch() -> None:
    truth = _truth(("pad", "pad", PAD_A))
    patches = _patches(("pad", PAD_A), ("pad", box(1025, 1025, 1032, 1032)))
    patches.loc[1, "recovery_status"] = "recovered"
    assert _score(truth, patches)["recovery_status_accuracy"] == 1.0
    patches.loc[0, "recovery_status"] = "recovering"
    assert _score(truth, patches)["recovery_status_accuracy"] == 0.0


def test_footprint_width_is_twice_area_over_perimeter() -> None:
    from gmsense.bench.scoring import footprint_width

    assert footprint_width(TRENCH) == pytest.approx(2 * 300 * 6 / 612)  # ~ the trench's 6 m
    assert footprint_width(PAD_A) == pytest.approx(15.0)  # a 30 m square: half its side
    assert footprint_width(box(0, 0, 0, 0)) == 0.0


@pytest.mark.parametrize(("width_px", "group"), [(0.1, "under_third_px"), (1 / 3, "third_to_one_px"),
                                                  (0.99, "third_to_one_px"), (1.0, "at_least_one_px"),
                                                  (7.0, "at_least_one_px"), (None, None), (float("nan"), None)])
def test_width_groups_bound_at_a_third_and_one_pixel(width_px: float | None, group: str | None) -> None:
    from gmsense.bench.scoring import width_group

    assert width_group(width_px) == group


def test_recall_by_width_groups_events_by_their_width_in_pixels() -> None:
    thin = LineString([(0, 500), (300, 500)]).buffer(1.5, cap_style="flat")  # 3 m: a tenth of a 30 m pixel
    far_pad = box(1500, 1000, 1530, 1030)
    truth = _truth(("trench", "trench", TRENCH), ("trench", "trench", thin), ("pad", "pad", PAD_A),
                   ("pad", "pad", far_pad), ("fire", "natural", FIRE))
    found = _patches(("trench", box(0, -4, 300, 4)), ("pad", PAD_A))
    at_30m = score(truth, found, area_km2=1, years=1, pixel_m=30.0)["recall_by_width"]
    assert at_30m == {"under_third_px": {"recall": 0.5, "events": 2},  # the 6 m and the 3 m trench
                      "third_to_one_px": {"recall": 0.5, "events": 2},  # the pads (15 m wide)
                      "at_least_one_px": {"recall": None, "events": 0}}
    at_10m = score(truth, found, area_km2=1, years=1, pixel_m=10.0)["recall_by_width"]
    assert at_10m["under_third_px"] == {"recall": 0.0, "events": 1}  # the 3 m trench, missed
    assert at_10m["third_to_one_px"] == {"recall": 1.0, "events": 1}
    assert at_10m["at_least_one_px"] == {"recall": 0.5, "events": 2}
    assert score(truth, found, area_km2=1, years=1)["recall"] == 0.5, "the recall itself counts every event"
    events, _ = match_scene(truth, found, pixel_m=30.0)
    assert events.width_m.iloc[0] == pytest.approx(5.88, abs=0.01)
    assert score(truth, found, area_km2=1, years=1)["recall_by_width"]["at_least_one_px"]["events"] == 0, \
        "no pixel size: no group"
