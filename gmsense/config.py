"""Typed settings.

The defaults live here and are mirrored, with comments, in ``configs/default.yaml``. A user file
(``--config FILE``) overrides any subset; command-line flags override both. Nothing else in the
package reads files for settings.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gmsense.errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent


def models_dir() -> Path:
    """The shipped models: ``models/`` beside the package in a checkout, ``_models`` in a wheel."""
    for candidate in (PACKAGE_DIR.parent / "models", PACKAGE_DIR / "_models"):
        if candidate.is_dir():
            return candidate
    return PACKAGE_DIR.parent / "models"


def configs_dir() -> Path:
    """The folder holding ``default.yaml``, ``rules.yaml`` and the demo licences.

    In a source checkout (editable install) it is ``configs/`` beside the package; in a wheel it
    is shipped inside the package as ``_configs``.
    """
    for candidate in (PACKAGE_DIR.parent / "configs", PACKAGE_DIR / "_configs"):
        if (candidate / "default.yaml").is_file():
            return candidate
    raise ConfigError("gmsense is installed without its configs/ folder; reinstall the package")


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SeasonSettings(_Settings):
    """Growing-season window: only observations in these months are compared (no winter, no snow)."""

    start_month: int = Field(5, ge=1, le=12, description="first month of the window (5 = May)")
    end_month: int = Field(9, ge=1, le=12, description=(
        "last month of the window (9 = September); before start_month, the window runs across New Year "
        "(southern hemisphere: start_month 10, end_month 4), and a season is named by the year it ends in"))

    @property
    def crosses_new_year(self) -> bool:
        """The window runs from ``start_month`` of one year to ``end_month`` of the next."""
        return self.end_month < self.start_month


class MaskSettings(_Settings):
    """Refinements of the source's clear mask: scene classifications miss cloud edges and haze."""

    cloud_buffer_m: float = Field(
        60.0, ge=0, description="also mask observations this close to cloud or shadow, metres")
    haze_hot_threshold: float | None = Field(
        0.0, description="mask where blue - 0.5 red - 0.08 exceeds this (haze optimised transform); null disables")
    max_scene_dip: float | None = Field(
        0.1, ge=0, description="drop dates whose scene-median NDVI dips this far below their neighbours; null disables")


class SitesSettings(_Settings):
    buffer_m: float = Field(500.0, ge=0, description="monitoring buffer around each licence, metres")
    repair_invalid: bool = Field(True, description="repair invalid polygons with make_valid (warns)")
    min_coverage: float = Field(
        0.95, ge=0, le=1,
        description="warn when the imagery observes less than this share of a licence or of its monitoring area")


class DetectSettings(_Settings):
    """Per-pixel change detection against the pixel's own same-season history."""

    baseline_seasons: int = Field(3, ge=1, description="earlier growing seasons used as the baseline")
    min_baseline_obs: int = Field(4, ge=2, description="clear baseline observations a pixel needs")
    z_threshold: float = Field(4.0, gt=0, description="robust z-score below which an observation is a drop")
    min_drop: float = Field(0.08, ge=0, description="minimum NDVI drop below the expected value")
    sigma_floor: float = Field(0.04, gt=0, description="lower bound on the residual spread (NDVI)")
    confirm_obs: int = Field(2, ge=1, description="consecutive clear drops that confirm a disturbance")
    min_persistence: float = Field(
        0.6, ge=0, le=1,
        description="share of the season's observations from the break on that must still be down (drops, or "
                    "persistence_min_drop below the model)")
    persistence_min_drop: float | None = Field(
        None, ge=0,
        description="for min_persistence, an observation this far (NDVI) below the model is still down even under "
                    "the z-score threshold (not back: a harvested field around a track); null (default): drops only. "
                    "Off: 0.08 found more works but moved real patches between tiles and added false alarms "
                    "(docs/detection-recall.md)")
    persistence_informative: bool = Field(
        True, description="for min_persistence, count only the weeks where ground come back would look different "
                           "from ground still disturbed (the expected value at least half the run's drop above the "
                           "disturbed level): a pad in a field looks like the field once it is harvested; a run seen "
                           "again only in weeks that cannot tell, some with the model itself down at the disturbed "
                           "level (an early harvest), is withdrawn (gmsense.detect.change.confirm_runs)")
    phenology_groups: bool = Field(
        True, description="compare each pixel with the per-date median of the pixels sharing its seasonal curve "
                           "(a crop calendar) where that lowers their spread, instead of the scene median alone "
                           "(gmsense.detect.phenology)")
    min_patch_m2: float = Field(250.0, ge=0, description="smaller patches are discarded, m2")
    harmonics: int = Field(1, ge=0, le=3, description="harmonic terms of the within-season model")
    # A pixel can break again (gmsense.detect.change.later_breaks): after a confirmed break its baseline
    # is re-established on the new state, from this many seasons after the break's season on, or
    # from the first later season in which it is back at its pre-disturbance model (recovered: fewer
    # than half of that season's clear observations are drops against it), whichever comes first.
    rebreak_after_seasons: int = Field(
        2, ge=1, description="seasons after a break's season from which the pixel's new state is its baseline "
                             "for a later break (sooner once recovered)")
    # The line pass (gmsense.detect.lines): narrower than a pixel, trenches and tracks drop the
    # index too little for the per-pixel test; a weaker test plus the evidence of a new line.
    line_pass: bool = Field(True, description="also look for new narrow lines (sub-pixel trenches, tracks)")
    line_min_drop: float = Field(0.06, ge=0, description="line pass: minimum NDVI drop of a weak drop")
    line_z: float = Field(1.5, gt=0, description="line pass: robust z-score of a weak drop")
    line_confirm_obs: int = Field(3, ge=1, description="line pass: consecutive clear weak drops a pixel needs")
    line_min_ridge: float = Field(
        0.02, gt=0, description="line pass: Sato ridge response of the weak-drop image (NDVI)")
    line_min_length_m: float = Field(80.0, gt=0, description="line pass: shortest line kept, metres")
    line_min_elongation: float = Field(4.0, gt=1, description="line pass: length / width of a line at least")
    line_clearance_m: float = Field(
        30.0, ge=0, description="line pass: lines this close to a patch are left to it, metres")
    line_max_ring_share: float = Field(
        0.1, ge=0, le=1,
        description="line pass: share of the pixels in the line's ring (line_ring_m) with weak drops of their own, "
                    "at most")
    line_max_ring_drop: float = Field(
        0.6, ge=0, description="line pass: drop of the surroundings (upper quartile) over the line's drop, at most")
    line_max_prior_ridge: float = Field(
        0.03, ge=0, description="line pass: a dark line in the season before (road, ditch) this strong rejects it")
    # Windows and rings, in metres: converted by the cube's pixel size (at least one pixel), so the
    # same ground is looked at whatever the resolution.
    line_ridge_sigmas_m: tuple[float, float] = Field(
        (10.0, 20.0), description="line pass: Sato ridge filter scales, metres (at least one pixel)")
    line_ring_m: tuple[float, float] = Field(
        (10.0, 40.0), description="line pass: surroundings of a line, from this far to this far out, metres")
    line_prior_reach_m: float = Field(
        20.0, gt=0, description="line pass: how far from a line a dark line in the season before is looked for, metres")
    context_near_ring_m: tuple[float, float] = Field(
        (10.0, 30.0), description="patch context: the near ring (surroundings sharing the change), metres out")
    context_far_ring_m: tuple[float, float] = Field(
        (30.0, 100.0), description="patch context: the far ring (land cover, scene-wide change), metres out")


class AnnualDetectSettings(_Settings):
    """How the detector reads annual composites (one observation per season, ``attrs["composite"]
    == "annual"``): the seasonal model is a level (no harmonics: one date cannot show a season's
    shape), the baseline a few more years, a disturbance two years in a row; no line pass and no
    haze dips (both need many dates a season). The other detector settings apply as they are."""

    harmonics: int = Field(0, ge=0, le=1, description="harmonic terms of the model (0: a level per pixel)")
    baseline_seasons: int = Field(5, ge=2, description="earlier years used as the baseline")
    min_baseline_obs: int = Field(3, ge=2, description="clear baseline years a pixel needs")
    confirm_obs: int = Field(2, ge=1, description="consecutive years of drops that confirm a disturbance")


class ClassifySettings(_Settings):
    """The patch classifier: a trained model (gmsense.classify.train), and the thresholds of the rule-based
    baseline (gmsense.classify.baseline), used with ``--detector rules`` or when no model is named."""

    model: str | None = Field("default", description="trained model: a folder made by `gmsense train`, or the "
                                                     "name of one under models/; null: the rule baseline")

    linear_min_elongation: float = Field(3.0, gt=1, description="length / width above which a patch is linear")
    linear_max_width_m: float = Field(25.0, gt=0, description="widest patch still called linear, metres")
    trench_max_curvature: float = Field(0.15, ge=0, description="max sideways spread / length for a straight line")
    pad_max_area_m2: float = Field(2500.0, gt=0, description="largest compact patch still called a pad")
    natural_min_area_m2: float = Field(50_000.0, gt=0, description="compact patches above this are natural")
    dark_after_nir_ratio: float = Field(
        0.7, gt=0, description="NIR after/before below this with no bright soil = burn/flood")


class TrustSettings(_Settings):
    """When a label is trusted (gmsense.classify.trust): ``natural`` only with a named natural agent
    and its evidence, otherwise a human-made class or ``uncertain``. Index thresholds are in index
    units; reflectance ratios are after / before."""

    min_confidence: float = Field(
        0.6, ge=0, le=1, description="a trained model's calibrated probability below this gives uncertain")
    novelty: bool = Field(True, description="patches outside the model's training data are uncertain, with the reason")
    novelty_margin: float = Field(
        1.5, ge=1, description="how far beyond the training data's range (x the trained maximum) is outside it")
    novelty_at_pixel_size: bool = Field(
        True, description="sizes are compared with the largest trained patch as the patch's pixels would show it: at "
                          "least one pixel wide, and in area at least the longest trained patch one pixel wide (a line "
                          "narrower than a pixel covers length x pixel)")
    fire_min_dnbr: float = Field(
        0.27, description="fire: NBR drop at least this (Key & Benson 2006: 0.27 = moderate severity)")
    fire_max_visible_ratio: float = Field(
        1.3, gt=0, description="fire: visible reflectance after/before at most this (char stays dark; soil brightens)")
    fire_max_nir_ratio: float = Field(0.6, gt=0, description="fire: NIR after/before at most this")
    fire_max_nir_rank: float = Field(
        0.25, ge=0, le=1, description="fire on imagery rescaled per image (no reflectance): the patch's NIR after "
                                      "darker than at most this share of its scene (char is the darkest land in NIR)")
    fire_max_visible_rank: float = Field(
        0.9, ge=0, le=1, description="fire on imagery rescaled per image: the patch's visible brightness after "
                                     "above at most this share of its scene (bare soil, spoil, gravel: the brightest)")
    flood_min_ndwi: float = Field(
        -0.1, description="flood: patch NDWI (green - nir)/(green + nir) at least this on some date (open water is "
                          "above 0, flooded vegetation -0.1..0, dry land and canopy below -0.2)")
    flood_max_ndwi_last: float = Field(
        -0.2, description="flood: NDWI on the season's last clear date at most this (the water receded)")
    canopy_min_ndvi_before: float = Field(0.6, description="windthrow/dieback: NDVI before at least this (canopy)")
    canopy_min_ring_share: float = Field(
        0.3, ge=0, description="windthrow/dieback: the near ring lost at least this share of the patch's drop")
    canopy_max_solidity: float = Field(
        0.85, gt=0, le=1, description="windthrow/dieback: irregular outline, solidity at most this")
    canopy_min_outline_pixels: int = Field(
        9, ge=0, description="windthrow/dieback: the solidity test is read on patches of at least this many pixels "
                             "(3 x 3); a smaller patch has the pixel grid's solidity, not the ground's (1-3 pixels: "
                             "always 1), so its canopy tests are the NDVI before and the near ring's share")
    work_min_elongation: float = Field(
        4.0, gt=1, description="a patch this elongated and at most work_max_width_m wide has a work's shape: a "
                               "windthrow, dieback, harvest or drought signature alone does not make it natural")
    work_max_width_m: float = Field(25.0, gt=0, description="widest patch with a work's (line's) shape, metres")
    dieback_min_decline: float = Field(
        0.15, description="dieback rather than windthrow: the canopy had already lost this share of the drop the "
                          "season before (windthrow: at most this)")
    harvest_min_cycle: float = Field(
        0.6, ge=0, description="harvest: the season before fell this share of the drop at the same time of year")
    harvest_min_amplitude: float = Field(0.3, ge=0, description="harvest: NDVI range of the season before at least")
    harvest_min_regreen: float = Field(
        0.6, ge=0, description="harvest: the field greened again this season, before the drop, by this share of it "
                               "above the season before's low")
    drought_min_ring_share: float = Field(
        0.6, ge=0, description="drought: near and far rings lost at least this share of the patch's drop, both "
                               "since the season before and against its same days (a dry year, not the yearly cycle)")


class RecoverySettings(_Settings):
    recovered_ratio: float = Field(0.8, gt=0, le=1, description="recovery ratio at which a patch is recovered")
    recovering_ratio: float = Field(0.25, ge=0, lt=1, description="recovery ratio above which a patch is recovering")
    herbaceous_ndvi: float | None = Field(
        0.6, gt=0, le=1, description="growing-season NDVI of established herbaceous cover (what reclaimed ground "
        "regrows into first): around a reference greener than this the ratios are scaled by the share of the loss "
        "such cover can regain (gmsense.recovery.regrowth_ceiling); null: the full loss")
    soil_ndvi: float = Field(0.1, ge=0, lt=1, description="NDVI of bare ground, for the regrowth ceiling and the "
                                                           "relative vegetation cover")
    ratio_measure: Literal["cover", "difference"] = Field(
        "cover", description="what the recovery ratio is a share of: 'cover', the patch's NDVI vegetation cover "
        "relative to its ring, (patch - soil_ndvi) / (ring - soil_ndvi) (bare ground stays bare when the ring dries "
        "or greens); 'difference', the NDVI gap patch - ring (gmsense.recovery.ratio_series)")

    @model_validator(mode="after")
    def _herbaceous_above_soil(self) -> RecoverySettings:
        if self.herbaceous_ndvi is not None and self.herbaceous_ndvi <= self.soil_ndvi:
            raise ValueError("herbaceous_ndvi must be above soil_ndvi (or null)")
        return self


class RestorationSettings(_Settings):
    """Restoration status of register polygons per year (gmsense.restoration), from annual composites.

    ``ratio`` is the polygon's vegetation cover relative to its reference ring in the same composite:
    (mean NDVI - soil_ndvi) / (ring's median NDVI - soil_ndvi)."""

    damaged_ratio: float = Field(0.5, gt=0, lt=1, description="ratio below which a polygon is damaged (bare)")
    restored_ratio: float = Field(
        0.8, gt=0, le=1, description="ratio at which a polygon is at reference; restored after this many seasons "
                                     "in a row (restored_seasons); a pixel at this share of the reference is restored")
    restored_seasons: int = Field(2, ge=1, description="consecutive seasons at restored_ratio that make it restored")
    trend_years: int = Field(2, ge=1, description="consecutive yearly rises that make a sustained greening trend")
    min_rise: float = Field(0.05, gt=0, description="rise of the ratio in one year that counts towards a trend")
    trend_window: int = Field(
        4, ge=2, description="years over which a slower greening trend is measured (Theil-Sen slope of the ratio)")
    min_slope: float = Field(
        0.015, gt=0, description="ratio per year over trend_window that is a sustained greening trend (natural "
                                "succession); below it a restoration that stalls is damaged again")
    ring_inner_m: float = Field(30.0, ge=0, description="reference ring starts this far out of the polygon, metres")
    ring_outer_m: float = Field(100.0, gt=0, description="reference ring ends this far out of the polygon, metres")
    min_reference_ndvi: float = Field(
        0.3, description="a ring greener than this is a vegetated reference; below it, the year has no ratio")
    soil_ndvi: float = Field(
        0.1, ge=0, lt=0.3, description="NDVI of bare ground: the ratio compares vegetation cover, (NDVI - soil_ndvi) / "
                                      "(reference NDVI - soil_ndvi) (0: a plain NDVI ratio)")
    reference_pixels: int = Field(
        20, ge=1, description="each pixel's reference: the median NDVI of this many nearest ring pixels (of its land "
                              "cover, with a land-cover map) observed that year")
    min_class_pixels: int = Field(
        5, ge=1, description="a land cover with fewer ring pixels than this is no reference: the pixel takes the "
                             "nearest ring pixels of any land cover")
    land_cover: str | None = Field(
        None, description="land-cover map (GeoTIFF of class codes, any CRS): each pixel is compared with the ring "
                          "pixels of its own land cover; a pit without a vegetated ring with its land cover in the "
                          "region (restoration run --land-cover)")
    land_cover_vegetated: list[int] = Field(
        [1, 2, 3, 4], description="the map's vegetated classes (default CLCD: 1 cropland, 2 forest, 3 shrub, "
                                  "4 grassland); other codes (barren, built-up, water) are no reference")
    land_cover_radius_m: float = Field(
        1000.0, gt=0, description="a pit without a vegetated ring takes the median NDVI of its land cover within "
                                  "this many metres (outside every register polygon)")
    bare_ratio: float = Field(
        0.2, gt=0, lt=1, description="the polygon's barest year (lowest mean NDVI) is bare ground when its ratio "
                                     "with soil_ndvi is below this: its mean NDVI is then the polygon's own soil NDVI")
    pre_damage_years: int = Field(
        2, ge=0, description="years at reference before the polygon is first seen damaged that calibrate each "
                             "pixel against its own ground before damage (0: off)")
    segment_years: int = Field(4, ge=1, description="latest years whose per-pixel median splits a polygon into parts")
    segment_gap: float = Field(
        0.3, gt=0, description="two parts only when their median ratios differ by at least this (restored vs bare)")
    segment_min_share: float = Field(0.1, gt=0, lt=0.5, description="and the smaller part holds this share of pixels")
    target_rate: float = Field(0.4, ge=0, le=1, description="restoration rate to reach (a zone's target_rate wins)")
    borderline_margin: float = Field(
        0.05, ge=0, lt=0.5, description="a polygon whose ratio is within this of restored_ratio could read either "
                                        "way: the accounting's rate_low / rate_high count it both ways (0: no range)")

    @model_validator(mode="after")
    def _ordered(self) -> RestorationSettings:
        if self.damaged_ratio >= self.restored_ratio:
            raise ValueError("damaged_ratio must be below restored_ratio")
        if self.ring_inner_m >= self.ring_outer_m:
            raise ValueError("ring_inner_m must be below ring_outer_m")
        return self


Severity = Literal["info", "warning", "critical"]
#: Default severity of a protected_land flag per layer kind (configs/rules.yaml: protected_land_severity).
PROTECTED_LAND_SEVERITY: dict[str, str] = {
    "ecological_red_line": "critical", "nature_reserve": "critical", "water_source_protection": "critical",
    "basic_farmland": "critical", "public_welfare_forest": "warning",
}
LICENCE_TYPES = ("exploration", "mining")
MINERAL_CLASSES = ("energy", "metal", "non_metal", "water_gas")


class RuleSettings(_Settings):
    enabled: bool = True
    severity: Severity = "warning"


#: Administrative levels of an escalation chain, lowest first (gmsense.store.scope's division kinds).
STAGE_LEVELS = ("county", "city", "province")
#: Roles that may act on an escalation stage (viewers and assessors only read).
STAGE_ROLES = ("reviewer", "admin")


class StageSettings(_Settings):
    """One stage of an escalation chain: who acts (a user of this ``role`` or higher whose scope is
    of this ``level``), what the stage is called (``action``: confirm, review, sign_off, ...) and
    how many days they have from the moment the stage opens."""

    level: Literal["county", "city", "province"]
    role: str = "reviewer"
    action: str = Field("review", pattern=r"^[a-z_]{1,30}$")
    days: int = Field(..., ge=1, le=366, description="deadline, days after the stage opens")

    @model_validator(mode="after")
    def _known_role(self) -> StageSettings:
        if self.role not in STAGE_ROLES:
            raise ValueError(f"unknown role {self.role!r} for a stage; a stage is acted on by one of: "
                             f"{', '.join(STAGE_ROLES)} (viewers and assessors only read)")
        return self


def _default_chains() -> dict[str, list[StageSettings]]:
    county, city, province = (StageSettings(level="county", action="confirm", days=5),
                              StageSettings(level="city", action="review", days=10),
                              StageSettings(level="province", action="sign_off", days=15))
    return {"critical": [county, city, province], "warning": [county, city],
            "info": [StageSettings(level="county", action="confirm", days=10)]}


class RulesSettings(_Settings):
    """Flag rules (configs/rules.yaml). Severities per rule, optionally per mineral class."""

    outside_licence: RuleSettings = RuleSettings(severity="critical")
    after_licence_end: RuleSettings = RuleSettings(severity="critical")
    while_suspended: RuleSettings = RuleSettings(severity="critical")
    permitted_area_exceeded: RuleSettings = RuleSettings(severity="critical")
    outside_work_programme: RuleSettings = RuleSettings(severity="warning")
    approved_work_not_observed: RuleSettings = RuleSettings(severity="info")
    reclamation_overdue: RuleSettings = RuleSettings(severity="warning")
    recovery_reversed: RuleSettings = RuleSettings(severity="warning")
    new_disturbance: RuleSettings = RuleSettings(severity="info")
    uncertain_label: RuleSettings = RuleSettings(severity="warning")
    protected_land: RuleSettings = RuleSettings(severity="warning")
    protected_land_severity: dict[str, Severity] = Field(
        default_factory=lambda: dict(PROTECTED_LAND_SEVERITY),
        description="severity of protected_land per layer kind (gmsense.geo.layers); a kind not listed takes "
                    "protected_land.severity")
    protected_min_overlap_m2: float = Field(
        1.0, ge=0, description="overlap of a patch or register polygon with a protected layer that counts, m2")
    outside_min_area_m2: float = Field(100.0, ge=0, description="disturbed area outside the licence that counts, m2")
    work_tolerance_m: float = Field(
        30.0, ge=0, description="a patch this close to an approved work is covered by it, m")
    reversal_drop: float = Field(
        0.2, gt=0, description="fall of the recovery ratio from its best season that is a reversal")
    reclamation_seasons: dict[str, int] = Field(
        default_factory=lambda: {"default": 3, "exploration": 2, "mining": 3},
        description="growing seasons after disturbance by which reclamation must be under way; keys: "
                    "'default', a licence type, a mineral class, or 'licence_type/mineral_class'")
    severity_by_mineral_class: dict[str, dict[str, Severity]] = Field(
        default_factory=dict, description="per mineral class, rule -> severity overrides")
    escalation: dict[Severity, list[StageSettings]] = Field(
        default_factory=_default_chains,
        description="per severity, the chain of stages a flag travels (gmsense.review.escalation); "
                    "a severity without a chain has none")

    @model_validator(mode="after")
    def _known_keys(self) -> RulesSettings:
        rule_names = {n for n, f in type(self).model_fields.items() if f.annotation in (RuleSettings, "RuleSettings")}
        allowed = {"default", *LICENCE_TYPES, *MINERAL_CLASSES,
                   *(f"{t}/{m}" for t in LICENCE_TYPES for m in MINERAL_CLASSES)}
        unknown = set(self.reclamation_seasons) - allowed
        if unknown:
            raise ValueError(f"reclamation_seasons: unknown keys {sorted(unknown)}; use {sorted(allowed)}")
        if "default" not in self.reclamation_seasons:
            raise ValueError("reclamation_seasons needs a 'default'")
        for mineral, overrides in self.severity_by_mineral_class.items():
            if mineral not in MINERAL_CLASSES:
                raise ValueError(f"severity_by_mineral_class: unknown mineral class {mineral!r}; use {MINERAL_CLASSES}")
            bad = set(overrides) - rule_names
            if bad:
                raise ValueError(f"severity_by_mineral_class.{mineral}: unknown rules {sorted(bad)}")
        for severity, chain in self.escalation.items():
            ranks = [STAGE_LEVELS.index(stage.level) for stage in chain]
            if ranks != sorted(ranks):
                raise ValueError(f"escalation.{severity}: stages go up the levels (county, city, province), "
                                 f"not {[stage.level for stage in chain]}")
        return self

    def severity(self, rule: str, mineral_class: str | None) -> str:
        """The severity of ``rule`` for a licence of ``mineral_class`` (its override, else the rule's)."""
        override = self.severity_by_mineral_class.get(mineral_class or "", {}).get(rule)
        return override or getattr(self, rule).severity

    def protected_severity(self, kind: str, mineral_class: str | None = None) -> str:
        """The severity of a ``protected_land`` flag over a layer of ``kind``: the kind's
        (``protected_land_severity``), else a mineral-class override of ``protected_land``, else its own."""
        return self.protected_land_severity.get(kind) or self.severity("protected_land", mineral_class)

    def seasons_to_reclaim(self, licence_type: str | None, mineral_class: str | None) -> int:
        table = self.reclamation_seasons
        for key in (f"{licence_type}/{mineral_class}", mineral_class, licence_type):
            if key and key in table:
                return table[key]
        return table["default"]


class SyntheticSettings(_Settings):
    start: str = Field("2019-04-01", description="first acquisition date of synthetic scenes")
    end: str = Field("2022-10-31", description="last acquisition date of synthetic scenes")
    resolution_m: float = Field(10.0, gt=0)
    seed: int = 0
    domain: str = Field("classic", description="synthetic world: classic, boreal_forest, steppe_grassland, "
                        "cropland_plain, wetland or mountain_forest, optionally with +modifiers (sensor s2, "
                        "s2_no_swir, landsat; 10m, 20m, 30m; clear, normal, cloudy; shift+N / shift-N days; south); "
                        "a licence's synthetic_domain property takes precedence")


class LocalSettings(_Settings):
    dn_scale: float | Literal["auto"] = Field(
        "auto",
        description="multiply band values by this; 'auto' treats integer-like values above 2 as DN x 1e-4",
    )
    band_names: list[str] | None = Field(
        None,
        description="names of the bands, in band order, of GeoTIFFs without band descriptions "
                    "(e.g. [blue, green, red, nir, swir16, swir22]); descriptions win where a file has them",
    )
    harmonise: Literal["roy2016_ols", "roy2016_rma", "none"] = Field(
        "roy2016_ols",
        description="make Landsat 5 TM / 7 ETM+ dates (files named after their product, LT05_/LE07_) OLI-like: "
                    "roy2016_ols (Roy et al. 2016, Table 2 OLS), roy2016_rma, or none; see docs/earthengine.md",
    )
    layout: Literal["auto", "folder", "theia", "safe", "landsat", "stac", "cube"] = Field(
        "auto",
        description="layout of the imagery path: auto (detected) or folder (dated GeoTIFFs / YYYY.tif), theia, "
                    "safe (Sentinel-2 L2A .SAFE or .zip), landsat (Collection 2 L2 folders or .tar), "
                    "stac (catalogue or ItemCollection .json), cube (.nc/.zarr)",
    )


class ScanSettings(_Settings):
    retries: int = Field(1, ge=0, description="retries of a licence after a transient error (I/O, network, "
                                             "service) before it is recorded as failed; input errors fail at once")
    retry_base_delay_s: float = Field(2.0, ge=0, description="back-off before the first retry, seconds; doubles "
                                                            "with each retry, with full jitter")
    retry_max_delay_s: float = Field(60.0, ge=0, description="longest back-off between retries, seconds")
    keep_worker_memory: bool = Field(True, description="the worker processes of --workers keep the memory they "
                                                       "free for their next unit (gmsense.batch.workers): on a "
                                                       "virtual machine that hands freed memory back to its host, "
                                                       "touching fresh memory is the slowest part of a scan")


class NotifySettings(_Settings):
    """``gmsense notify digest``: the SMTP server the digests go through and an optional webhook.

    Credentials are never settings: the SMTP user name and password are read from the environment
    variables named here (none set: no login; only over TLS), the webhook's HMAC secret likewise."""

    smtp_host: str = "localhost"
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_security: Literal["none", "starttls", "tls"] = Field(
        "starttls", description="none (a local relay only), starttls (upgrade on the port, usually 587) or tls "
                                "(TLS from the first byte, usually 465); the server's certificate is verified")
    smtp_ca_file: str | None = Field(
        None, description="PEM certificate of the CA that signed the SMTP server's certificate (a private CA); "
                          "null: the system's trust store. Certificates are always verified")
    smtp_timeout_s: float = Field(30.0, gt=0)
    from_address: str = "gmsense@localhost"
    username_env: str = "GMSENSE_SMTP_USER"
    password_env: str = "GMSENSE_SMTP_PASSWORD"
    app_url: str = Field("http://127.0.0.1:8000", description="the review app's address, for links in digests")
    webhook_url: str | None = Field(None, description="POST each run's digests here as JSON (optional)")
    webhook_secret_env: str = "GMSENSE_WEBHOOK_SECRET"
    webhook_timeout_s: float = Field(30.0, gt=0)
    webhook_retries: int = Field(3, ge=0, le=10, description="attempts after the first when the webhook fails with "
                                                            "a connection error, a timeout, HTTP 408/425/429 or 5xx")
    webhook_retry_base_delay_s: float = Field(2.0, ge=0, description="back-off before the first retry, seconds; "
                                                                    "doubles with each retry")
    webhook_retry_max_delay_s: float = Field(60.0, ge=0, description="longest back-off between retries, seconds")
    first_digest_days: int = Field(7, ge=0, description="a user's first digest lists the flags of this many days")
    max_items: int = Field(50, ge=1, description="at most this many flags per list of a digest (the counts are whole)")


class EarthEngineSettings(_Settings):
    """Google Earth Engine source (``--source earthengine``); see docs/earthengine.md.

    Quotas (developers.google.com/earth-engine/guides/usage): 40 concurrent requests and
    100 requests/s per Cloud project; the limits here are per process and should stay well under.
    """

    collection: Literal["sentinel-2", "landsat", "landsat-archive"] = Field(
        "sentinel-2", description="sentinel-2 (S2 SR harmonized + Cloud Score+, 10 m), landsat (8/9 C2 L2, 30 m) "
        "or landsat-archive (5 TM + 7 ETM+ + 8/9 C2 L2, 30 m, from 1984)")
    cs_cdf_threshold: float = Field(
        0.60, ge=0, le=1, description="Sentinel-2: a pixel is clear when Cloud Score+ cs_cdf >= this")
    min_clear_fraction: float = Field(
        0.0, ge=0, lt=1,
        description="skip images whose clear share of the area is not above this (0: skip only all-cloud images)")
    max_concurrent: int = Field(
        10, ge=1, le=40, description="requests in flight at once per process (project quota: 40)")
    max_rps: float = Field(
        10.0, gt=0, le=100, description="requests started per second per process (project quota: 100)")
    retries: int = Field(
        5, ge=0, le=20, description="retries of a request after HTTP 429, 5xx or a timeout (exponential back-off)")
    timeout_s: float = Field(120.0, gt=0, description="per-request timeout, seconds")
    high_volume: bool = Field(False, description="use the high-volume endpoint earthengine-highvolume.googleapis.com")
    project: str | None = Field(
        None,
        description="Cloud project; null: $GMSENSE_EE_PROJECT, $GOOGLE_CLOUD_PROJECT, then the credentials' project")
    credentials: str | None = Field(
        None,
        description="service-account JSON key file; null: $GMSENSE_EE_CREDENTIALS, else application default "
                    "credentials")
    cache_dir: str | None = Field(
        None, description="Zarr pixel cache folder; null: $GMSENSE_EE_CACHE, else ~/.cache/gmsense/earthengine")
    harmonise: Literal["roy2016_ols", "roy2016_rma", "none"] = Field(
        "roy2016_ols",
        description="landsat-archive: make the TM / ETM+ dates OLI-like: roy2016_ols (Roy et al. 2016, Table 2 "
                    "OLS), roy2016_rma, or none; see docs/earthengine.md")


#: Settings of how a scan runs, not of what it finds: not part of :meth:`Settings.config_hash`
#: (an empty tuple: the whole section).
OPERATIONAL_SETTINGS: dict[str, tuple[str, ...]] = {
    "scan": (),
    # Only the threshold of a warning: changing it must not force every licence to be scanned again.
    "sites": ("min_coverage",),
    # Which reader opens the imagery (detected by default): the imagery path is part of a scan's identity.
    "local": ("layout",),
    "earthengine": ("max_concurrent", "max_rps", "retries", "timeout_s", "high_volume", "project", "credentials",
                    "cache_dir"),
}


class Settings(_Settings):
    season: SeasonSettings = SeasonSettings()
    mask: MaskSettings = MaskSettings()
    sites: SitesSettings = SitesSettings()
    detect: DetectSettings = DetectSettings()
    detect_annual: AnnualDetectSettings = AnnualDetectSettings()
    classify: ClassifySettings = ClassifySettings()
    trust: TrustSettings = TrustSettings()
    recovery: RecoverySettings = RecoverySettings()
    restoration: RestorationSettings = RestorationSettings()
    synthetic: SyntheticSettings = SyntheticSettings()
    local: LocalSettings = LocalSettings()
    scan: ScanSettings = ScanSettings()
    earthengine: EarthEngineSettings = EarthEngineSettings()
    rules: RulesSettings = RulesSettings()
    notify: NotifySettings = NotifySettings()

    def config_hash(self) -> str:
        """A short stable hash of every setting that can change a result: two scans with the same
        hash used the same science. How a scan runs (retries, request quotas, credentials, cache
        folders) is left out, so changing it never forces a rescan."""
        data = self.model_dump(mode="json")
        # the model is keyed by its own version (see gmsense.batch.request.ScanRequest.unit_key)
        data["classify"].pop("model", None)
        data.pop("restoration", None)  # restoration accounting reads composites, never a scan's result
        data["rules"].pop("escalation", None)  # who reviews a flag, and when, is not the science
        data.pop("notify", None)  # nor who is told about it
        for section in ("detect", "detect_annual"):
            if not data[section].get("phenology_groups", True):
                data[section].pop("phenology_groups")  # off: the hash scans had before the setting
        for key in ("fire_max_nir_rank", "fire_max_visible_rank"):  # read only on rescaled imagery: at their
            if data["trust"].get(key) == TrustSettings.model_fields[key].default:  # defaults, the hash before them
                data["trust"].pop(key)
        if data["detect_annual"] == AnnualDetectSettings().model_dump(mode="json"):
            data.pop("detect_annual")  # scans of dated imagery keep the hash they had before annual composites
        # Protected land is checked against the layers of the store, which enter the unit key
        # (gmsense.batch.request): at their defaults these rules keep the hash scans had before them.
        for key, default in (("protected_land", {"enabled": True, "severity": "warning"}),
                             ("protected_land_severity", PROTECTED_LAND_SEVERITY),
                             ("protected_min_overlap_m2", 1.0)):
            if data["rules"].get(key) == default:
                data["rules"].pop(key)
        if data["synthetic"].get("domain") == "classic":  # the world before domains existed: the same hash
            data["synthetic"].pop("domain")
        # Harmonisation changes only TM / ETM+ dates: the hash of a Sentinel-2 or Landsat 8/9 collection, and
        # of local imagery at the default, stays what it was before the setting existed.
        if data["earthengine"].get("collection") != "landsat-archive":
            data["earthengine"].pop("harmonise", None)
        if data["local"].get("harmonise") == "roy2016_ols":
            data["local"].pop("harmonise")
        for section, keys in OPERATIONAL_SETTINGS.items():
            for key in keys or list(data.get(section, {})):
                data.get(section, {}).pop(key, None)
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def for_cube(self, attrs: dict[str, Any]) -> Settings:
        """The settings the detector reads imagery with these ``attrs`` by: annual composites
        (``attrs["composite"] == "annual"``) take ``detect_annual`` over ``detect``, without the
        line pass and the haze dips; other imagery these settings."""
        if attrs.get("composite") != "annual":
            return self
        detect = self.detect.model_copy(update={**self.detect_annual.model_dump(), "line_pass": False,
                                                "min_persistence": 0.0})
        return self.model_copy(update={"detect": detect,
                                       "mask": self.mask.model_copy(update={"max_scene_dip": None})})

    def with_overrides(self, overrides: dict[str, Any]) -> Settings:
        """Apply dotted overrides such as ``{"sites.buffer_m": 250}``."""
        data = self.model_dump()
        for dotted, value in overrides.items():
            if value is None:
                continue
            node = data
            *parents, leaf = dotted.split(".")
            for key in parents:
                node = node[key]
            node[leaf] = value
        return _validate(data, "command-line overrides")


def _validate(data: dict[str, Any], origin: str) -> Settings:
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid settings in {origin}: {problems}") from None


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} file {path} does not exist")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} file {path} is not valid YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{what} file {path} must hold a mapping of sections")
    return loaded


def load_settings(path: Path | None = None, overrides: dict[str, Any] | None = None,
                  rules_path: Path | None = None) -> Settings:
    """Settings from the defaults, then ``path`` (YAML) if given, then ``overrides``.

    The flag rules come from ``rules_path``, else ``configs/rules.yaml``, unless ``path``
    has a ``rules`` section of its own.
    """
    data: dict[str, Any] = _read_yaml(path, "settings") if path is not None else {}
    if "rules" not in data or rules_path is not None:
        rules_file = Path(rules_path) if rules_path is not None else configs_dir() / "rules.yaml"
        data = {**data, "rules": _read_yaml(rules_file, "rules")}
        origin = f"{path or 'defaults'} and {rules_file}"
    else:
        origin = str(path)
    settings = _validate(data, origin)
    return settings.with_overrides(overrides or {})
