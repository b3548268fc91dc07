"""Trusted labels: natural only with a named agent and its evidence, uncertain with its reason."""

from __future__ import annotations

import numpy as np
import pytest

from gmsense.classify.trust import (
    NATURAL_AGENTS,
    TrainingDomain,
    fit_training_domain,
    natural_agents,
    novelty,
    pixel_size_m,
    trained_size_limits,
    trusted_label,
)
from gmsense.config import TrustSettings
from gmsense.detect.agents import signatures

SETTINGS = TrustSettings()
FEATURES = ("area_px_m2", "length_m", "width_m", "nir_ratio", "red_ratio")

# A trench in quiet grassland: bright spoil (visible x1.6), NIR barely down, nothing around it changed.
TRENCH = {"area_px_m2": 1800.0, "length_m": 300.0, "width_m": 6.0, "solidity": 0.95, "nir_ratio": 0.9,
          "red_ratio": 2.1, "sig_dnbr": 0.2, "sig_visible_ratio": 1.6, "sig_ndvi_before": 0.7,
          "sig_water_max": -0.45, "sig_water_last": -0.5, "sig_cycle_repeat": 0.02, "sig_prior_amplitude": 0.1,
          "ring_drop_near": 0.03, "ring_drop_far": 0.01}
# A burn scar: NBR fell 0.6, dark in the visible, NIR halved.
FIRE = {**TRENCH, "area_px_m2": 40_000.0, "length_m": 260.0, "width_m": 160.0, "solidity": 0.7, "nir_ratio": 0.35,
        "sig_dnbr": 0.6, "sig_visible_ratio": 0.95}


def _domain() -> TrainingDomain:
    rng = np.random.default_rng(0)
    n = 300
    clearing = np.c_[rng.uniform(3_000, 20_000, n), rng.uniform(60, 200, n), rng.uniform(40, 120, n),
                     rng.uniform(0.4, 0.7, n), rng.uniform(1.5, 3.0, n)]
    trench = np.c_[rng.uniform(300, 3_000, n), rng.uniform(100, 500, n), rng.uniform(2, 10, n),
                   rng.uniform(0.8, 1.0, n), rng.uniform(1.5, 3.0, n)]
    x = np.vstack([clearing, trench])
    y = np.array(["clearing"] * n + ["trench"] * n)
    return fit_training_domain(x, y, FEATURES)


def test_a_human_made_patch_with_no_natural_signature_never_becomes_natural() -> None:
    found, missed = natural_agents(TRENCH, SETTINGS)
    assert found == []
    assert [m.split(":")[0] for m in missed] == list(NATURAL_AGENTS)
    for confidence in (0.55, 0.9, 0.999):
        label = trusted_label("natural", confidence, TRENCH, SETTINGS, probabilities={"natural": confidence})
        assert label.disturbance_class == "uncertain"
        assert label.natural_agent is None
        assert label.reason.startswith("called natural, but no natural agent explains it")
    # The rule baseline's natural (no probabilities) is held to the same evidence.
    assert trusted_label("natural", 0.7, TRENCH, SETTINGS).disturbance_class == "uncertain"


def test_missing_measurements_never_explain_a_patch() -> None:
    """NDVI-only imagery: no visible or SWIR evidence, so nothing natural can be shown."""
    bare = {"area_px_m2": 900_000.0, "nir_ratio": 0.3, "solidity": 0.6}
    assert natural_agents(bare, SETTINGS)[0] == []
    assert trusted_label("natural", 0.99, bare, SETTINGS).disturbance_class == "uncertain"


def test_a_burn_is_natural_with_agent_fire_and_its_evidence() -> None:
    label = trusted_label("natural", 0.8, FIRE, SETTINGS, probabilities={"natural": 0.8})
    assert (label.disturbance_class, label.natural_agent) == ("natural", "fire")
    assert label.evidence["NBR drop"] == pytest.approx(0.6)
    assert "fire: NBR drop 0.60 (>= 0.27)" in label.reason


@pytest.mark.parametrize(("agent", "metrics"), [
    ("flood", {**TRENCH, "sig_water_max": 0.1, "sig_water_last": -0.4}),
    ("windthrow", {**TRENCH, "sig_ndvi_before": 0.8, "ring_drop_near": 0.5, "solidity": 0.6,
                   "sig_decline_before": 0.0}),
    ("dieback", {**TRENCH, "sig_ndvi_before": 0.8, "ring_drop_near": 0.5, "solidity": 0.6,
                 "sig_decline_before": 0.4}),
    ("harvest", {**TRENCH, "sig_cycle_repeat": 0.9, "sig_prior_amplitude": 0.5, "sig_regreen": 0.95}),
    ("drought", {**TRENCH, "ring_drop_near": 0.8, "ring_drop_far": 0.7, "ring_anomaly_near": 0.8,
                 "ring_anomaly_far": 0.7}),
])
def test_each_agent_is_named_by_its_own_signature(agent: str, metrics: dict) -> None:
    found, _ = natural_agents(metrics, SETTINGS)
    assert [a.agent for a in found] == [agent]
    assert trusted_label("natural", 0.9, metrics, SETTINGS).natural_agent == agent


def test_surroundings_that_fall_every_year_at_this_time_are_no_drought() -> None:
    """A work dug at harvest time in a field: the fields around fall as much (the rings' shares near 1),
    but they fell at the same days the season before too. That is their yearly cycle, not a dry year,
    so it explains nothing and the patch the model calls natural goes to review."""
    at_harvest = {**TRENCH, "ring_drop_near": 0.98, "ring_drop_far": 0.98, "ring_anomaly_near": 0.05,
                  "ring_anomaly_far": -0.1}
    found, missed = natural_agents(at_harvest, SETTINGS)
    assert "drought" not in [a.agent for a in found]
    assert any(m.startswith("drought:") and "same days 0.05 (>= 0.6)" in m for m in missed)
    assert trusted_label("natural", 0.99, at_harvest, SETTINGS).disturbance_class == "uncertain"
    unknown = {k: v for k, v in at_harvest.items() if not k.startswith("ring_anomaly")}
    assert trusted_label("natural", 0.99, unknown, SETTINGS).disturbance_class == "uncertain", \
        "without the season before, a dry year is not shown"


def test_a_flood_that_stays_is_not_a_flood() -> None:
    """Water seen and still there at the end of the season: a pit lake, not a receding flood."""
    lake = {**TRENCH, "sig_water_max": 0.3, "sig_water_last": 0.25}
    assert trusted_label("natural", 0.9, lake, SETTINGS).disturbance_class == "uncertain"


def test_an_out_of_range_patch_becomes_uncertain_with_its_reason() -> None:
    domain = _domain()
    largest = domain.size_max["clearing"]["area_px_m2"]
    assert 19_000 < largest <= 20_000
    huge = {**TRENCH, "area_px_m2": 960_000.0, "length_m": 1_500.0, "width_m": 800.0, "solidity": 0.9,
            "nir_ratio": 0.5}
    label = trusted_label("clearing", 0.97, huge, SETTINGS, probabilities={"clearing": 0.97}, domain=domain)
    assert label.disturbance_class == "uncertain"
    assert label.reason == f"outside training data: area 96.00 ha > largest trained clearing {largest * 1e-4:.2f} ha"
    # Inside the trained range the same class is kept.
    usual = {**huge, "area_px_m2": 9_000.0, "length_m": 120.0, "width_m": 75.0}
    assert trusted_label("clearing", 0.97, usual, SETTINGS, probabilities={"clearing": 0.97},
                         domain=domain).disturbance_class == "clearing"


def test_an_unusual_feature_combination_is_outside_the_training_data() -> None:
    domain = _domain()
    odd = {"area_px_m2": 9_000.0, "length_m": 120.0, "width_m": 75.0, "nir_ratio": 9.0, "red_ratio": -4.0}
    why = novelty(odd, "clearing", domain, SETTINGS.novelty_margin)
    assert why is not None
    assert why.startswith("outside training data: unusual feature combination")
    assert "nir_ratio" in why or "red_ratio" in why
    typical = {"area_px_m2": 9_000.0, "length_m": 120.0, "width_m": 75.0, "nir_ratio": 0.55, "red_ratio": 2.0}
    assert novelty(typical, "clearing", domain, SETTINGS.novelty_margin) is None


def test_a_direct_natural_agent_outweighs_novelty() -> None:
    """A burn far larger than anything trained is still a burn: char is seen whatever the model knows."""
    domain = _domain()
    big_fire = {**FIRE, "area_px_m2": 550_000.0, "length_m": 1_200.0, "width_m": 600.0}
    label = trusted_label("clearing", 0.9, big_fire, SETTINGS, probabilities={"clearing": 0.9}, domain=domain)
    assert (label.disturbance_class, label.natural_agent) == ("natural", "fire")
    assert label.reason.startswith("outside training data")
    assert "explained by fire" in label.reason


def test_low_confidence_gives_uncertain_with_the_competing_classes() -> None:
    probs = {"trench": 0.45, "natural": 0.44, "pad": 0.07, "clearing": 0.02, "track": 0.02}
    label = trusted_label("trench", 0.45, TRENCH, SETTINGS, probabilities=probs)
    assert label.disturbance_class == "uncertain"
    assert label.reason == "low confidence: trench 0.45, natural 0.44, pad 0.07"
    sure = trusted_label("trench", 0.9, TRENCH, SETTINGS, probabilities={**probs, "trench": 0.9})
    assert sure.disturbance_class == "trench"


def test_surely_a_work_of_an_unsure_kind_keeps_the_likeliest_work() -> None:
    """Trench or track, but a work either way (0.85 human-made): the flag stands, the doubt is its reason."""
    probs = {"trench": 0.45, "track": 0.4, "pad": 0.1, "clearing": 0.03, "natural": 0.02}
    label = trusted_label("trench", 0.45, TRENCH, SETTINGS, probabilities=probs)
    assert (label.disturbance_class, label.natural_agent) == ("trench", None)
    assert label.reason == "human-made 0.98, the kind of work unsure: trench 0.45, track 0.40, pad 0.10"


def test_a_work_of_any_kind_outweighs_natural_as_the_likeliest_single_class() -> None:
    """Natural is the likeliest class (0.30), the works together 0.70: a work, not natural and not
    uncertain, even where an indirect agent would explain it; the flag stands with the doubt as its
    reason. Under min_confidence together, the natural label still needs its agent."""
    probs = {"natural": 0.30, "trench": 0.29, "track": 0.21, "clearing": 0.17, "pad": 0.03}
    drought = {**TRENCH, "ring_drop_near": 0.8, "ring_drop_far": 0.7, "ring_anomaly_near": 0.8,
               "ring_anomaly_far": 0.7}
    for metrics in (TRENCH, drought):
        label = trusted_label("natural", 0.30, metrics, SETTINGS, probabilities=probs)
        assert (label.disturbance_class, label.natural_agent) == ("trench", None)
        assert label.confidence == pytest.approx(0.29)
        assert label.reason == "human-made 0.70, the kind of work unsure: natural 0.30, trench 0.29, track 0.21"
    doubtful = {"natural": 0.45, "trench": 0.25, "track": 0.2, "clearing": 0.07, "pad": 0.03}
    assert trusted_label("natural", 0.45, TRENCH, SETTINGS, probabilities=doubtful).disturbance_class == "uncertain"
    label = trusted_label("natural", 0.45, drought, SETTINGS, probabilities=doubtful)
    assert (label.disturbance_class, label.natural_agent) == ("natural", "drought")


def test_training_domain_survives_the_model_card() -> None:
    domain = _domain()
    again = TrainingDomain.from_card({"training_domain": domain.to_card()})
    x = np.array([[5_000.0, 100.0, 50.0, 0.5, 2.0], [5_000.0, 100.0, np.nan, 7.0, 2.0]])
    np.testing.assert_allclose(again.distances(x), domain.distances(x), rtol=1e-4)
    assert TrainingDomain.from_card({}) is None


def test_signatures_measure_a_burn_and_a_harvest_from_series() -> None:
    """Patch-mean series over two seasons: a burn in the second, and a field cut every August."""
    times = np.array([f"{y}-{m:02d}-15" for y in (2020, 2021) for m in (5, 6, 7, 8, 9)], dtype="datetime64[ns]")
    forest = {"blue": 0.03, "green": 0.06, "red": 0.03, "nir": 0.40, "swir1": 0.18, "swir2": 0.08}
    char = {"blue": 0.03, "green": 0.035, "red": 0.035, "nir": 0.07, "swir1": 0.10, "swir2": 0.09}
    burn = {b: np.array([forest[b]] * 7 + [char[b]] * 3) for b in forest}
    sig = signatures(burn, times, np.datetime64("2021-07-15"))
    assert sig["sig_dnbr"] == pytest.approx((0.32 / 0.48) - (-0.02 / 0.16), abs=1e-6)
    assert sig["sig_visible_ratio"] < 1.0
    assert sig["sig_water_max"] < -0.2
    crop = {b: np.array([forest[b]] * 3 + [char[b]] * 2 + [forest[b]] * 3 + [char[b]] * 2) for b in forest}
    sig = signatures(crop, times, np.datetime64("2021-08-15"))
    assert sig["sig_cycle_repeat"] == pytest.approx(1.0, abs=0.05)
    assert sig["sig_prior_amplitude"] > 0.3
    assert sig["sig_regreen"] == pytest.approx(1.0, abs=0.05), "the field was green again before this cut"
    # A pit dug last August and widened this August: the same time of year, but never green again.
    pit = {b: np.array([forest[b]] * 3 + [char[b]] * 7) for b in forest}
    sig = signatures(pit, times, np.datetime64("2021-08-15"))
    assert sig.get("sig_regreen", 0.0) < 0.6


def test_a_drop_at_harvest_time_that_never_regreened_is_not_a_harvest() -> None:
    pit = {**TRENCH, "sig_cycle_repeat": 0.9, "sig_prior_amplitude": 0.5, "sig_regreen": 0.1}
    assert "harvest" not in [a.agent for a in natural_agents(pit, SETTINGS)[0]]


def test_a_line_explained_only_by_its_surroundings_stays_uncertain() -> None:
    """A 300 m x 6 m line in a harvested or dry landscape: the surroundings' signature alone does not
    make a work's shape natural; char along it (a fire) does."""
    line = {**TRENCH, "elongation": 50.0, "width_m": 6.0, "ring_drop_near": 0.8, "ring_drop_far": 0.7,
            "ring_anomaly_near": 0.8, "ring_anomaly_far": 0.7}
    label = trusted_label("natural", 0.9, line, SETTINGS)
    assert label.disturbance_class == "uncertain"
    assert label.reason.startswith("a work's shape (elongation 50.0, width 6 m) with only a drought signature")
    burnt_line = {**line, "sig_dnbr": 0.6, "sig_visible_ratio": 0.9, "nir_ratio": 0.4}
    assert trusted_label("natural", 0.9, burnt_line, SETTINGS).natural_agent == "fire"
    blob = {**line, "elongation": 1.5, "width_m": 120.0}
    assert trusted_label("natural", 0.9, blob, SETTINGS).natural_agent == "drought"


def test_signatures_of_a_southern_harvest_across_new_year() -> None:
    """The same field half a year later (a season from November to March): the same measurements. The
    'same drop a year before' compares days of the season; by calendar day, a cut from December to
    January spanned the whole prior season."""
    from gmsense.config import SeasonSettings

    times = np.array([f"{y}-{m:02d}-15" for y in (2020, 2021) for m in (5, 6, 7, 8, 9)], dtype="datetime64[ns]")
    forest = {"blue": 0.03, "green": 0.06, "red": 0.03, "nir": 0.40, "swir1": 0.18, "swir2": 0.08}
    char = {"blue": 0.03, "green": 0.035, "red": 0.035, "nir": 0.07, "swir1": 0.10, "swir2": 0.09}
    cut = [forest, char, char, forest, forest]  # cut in June and July (December and January in the south)
    crop = {b: np.array([c[b] for c in cut] * 2) for b in forest}
    north = signatures(crop, times, np.datetime64("2021-06-15"))
    half = np.timedelta64(184, "D")
    south = signatures(crop, times + half, np.datetime64("2021-06-15") + half, SeasonSettings(start_month=11,
                                                                                                end_month=3))
    assert north["sig_cycle_repeat"] > 0.5
    assert south["sig_cycle_repeat"] == pytest.approx(north["sig_cycle_repeat"])


def test_a_line_one_coarse_pixel_wide_is_measured_against_training_at_its_pixel_size() -> None:
    """A trench narrower than a pixel is a chain of whole pixels: at 30 m its area is length x 30 m,
    three times what the same trench covers in the 10 m pixels it was trained on."""
    domain = _domain()
    trained = domain.size_max["trench"]
    coarse = {**TRENCH, "n_pixels": 10, "area_px_m2": 10 * 900.0, "length_m": 300.0, "width_m": 30.0}
    assert pixel_size_m(coarse) == pytest.approx(30.0)
    assert coarse["area_px_m2"] > SETTINGS.novelty_margin * trained["area_px_m2"]  # larger than any trained, in area
    limits = trained_size_limits(trained, 30.0)
    assert limits["area_px_m2"] == pytest.approx(trained["length_m"] * 30.0)
    assert limits["width_m"] == 30.0
    assert limits["length_m"] == trained["length_m"]
    assert novelty(coarse, "trench", domain, SETTINGS.novelty_margin) is None
    assert novelty(coarse, "trench", domain, SETTINGS.novelty_margin, at_pixel_size=False).startswith(
        "outside training data: area 0.90 ha > largest trained trench")
    # The same area in 10 m pixels is a wide patch, not a line: outside the trained trenches.
    fine = {**coarse, "n_pixels": 90, "area_px_m2": 90 * 100.0}
    assert novelty(fine, "trench", domain, SETTINGS.novelty_margin).startswith("outside training data: area 0.90 ha")
    # Length is not a pixel's artefact: a 30 m trench far longer than any trained one stays outside.
    long = {**coarse, "n_pixels": 60, "area_px_m2": 60 * 900.0, "length_m": 1_800.0}
    assert novelty(long, "trench", domain, SETTINGS.novelty_margin) == (
        f"outside training data: area 5.40 ha > largest trained trench {limits['area_px_m2'] * 1e-4:.2f} ha "
        "at 30 m pixels")
    assert novelty({**long, "area_px_m2": 0.0}, "trench", domain, SETTINGS.novelty_margin).startswith(
        "outside training data: length 1800 m > largest trained trench 498 m")
    # Without a pixel count the sizes are compared as trained.
    assert trained_size_limits(trained, pixel_size_m({"area_px_m2": 900.0})) == trained


def test_a_windthrow_gap_of_a_few_pixels_is_not_held_to_an_outline() -> None:
    """A patch of a few pixels has the pixel grid's solidity (1-3 pixels: always 1): at 20-30 m a
    windthrow gap is such a patch, and only the canopy and the surroundings' shared drop can speak for it."""
    gap = {**TRENCH, "sig_ndvi_before": 0.8, "ring_drop_near": 0.5, "solidity": 1.0, "sig_decline_before": 0.0,
           "n_pixels": 4}
    assert SETTINGS.canopy_min_outline_pixels == 9
    found, _ = natural_agents(gap, SETTINGS)
    assert [a.agent for a in found] == ["windthrow"]
    assert "solidity" not in found[0].evidence
    # A compact patch of enough pixels to have an outline is still held to it ...
    assert natural_agents({**gap, "n_pixels": 40}, SETTINGS)[0] == []
    # ... as is a patch whose pixel count is unknown.
    assert natural_agents({k: v for k, v in gap.items() if k != "n_pixels"}, SETTINGS)[0] == []
    # A small patch in quiet surroundings (a work) gets no agent from its size.
    small_work = {**TRENCH, "sig_ndvi_before": 0.8, "solidity": 1.0, "n_pixels": 3}
    assert natural_agents(small_work, SETTINGS)[0] == []
    assert trusted_label("natural", 0.9, small_work, SETTINGS).disturbance_class == "uncertain"
