"""When a label is trusted: ``natural`` only with evidence, ``uncertain`` when in doubt.

For a regulator the two errors are not equal: human-made damage labelled ``natural`` is a
violation nobody sees (a natural label silences the flag), while an ``uncertain`` patch goes to a
reviewer. So a classifier's label (rule baseline or trained model) passes through
:func:`trusted_label`:

1. **Outside the training data** (a trained model's card holds :class:`TrainingDomain`): a patch
   larger, longer or wider than ``novelty_margin`` x the largest patch of its predicted class the
   model was trained on (as the patch's pixels would show it: a line narrower than a pixel covers
   length x pixel, :func:`trained_size_limits`), or whose features together lie further from the training patches than
   almost all of them (a Mahalanobis distance over the features it has), is ``uncertain`` with the
   reason; unless a *direct* natural agent (fire: char seen; flood: water seen, then gone) explains
   it, which the physics says whatever the model knows.
   On imagery rescaled per image the fire's char is tested on the patch's ranks in its scene, not
   on reflectance ratios (:func:`_char_tests`).
2. **``natural`` needs an agent**: a named natural agent (``gmsense.records.NATURAL_AGENTS``) whose signature
   is measured in the patch (:mod:`gmsense.detect.agents`, the patch context and shape; the
   outline only on a patch of ``canopy_min_outline_pixels`` or more, since a patch of a few pixels
   has the pixel grid's solidity, not the ground's: 1-3 pixels are always convex). Without
   one the patch is ``uncertain`` ("no natural agent explains it"); so is a patch with a work's
   shape (a long narrow line) that only an indirect agent (windthrow, dieback, harvest, drought)
   would explain.
3. **Imagery rescaled per image** (:func:`rescaled_imagery`): a human-made class from the classifier
   reads reflectance the imagery does not hold, so it is ``uncertain`` (still flagged for review),
   or ``natural`` when a direct agent, tested on the patch's ranks in its scene, explains it.
4. **Low confidence**: a trained model's calibrated probability below ``min_confidence`` gives
   ``uncertain`` with the competing classes, unless the human-made classes together reach
   ``min_confidence``: then the patch is surely a work, only its kind is unsure, and it keeps the
   likeliest work's class (so its flag stands) with the competing kinds as its reason. That holds
   when ``natural`` is the likeliest single class too (natural 0.30 against trench 0.30, track 0.21,
   clearing 0.17: a work at 0.70, whichever kind): natural against human-made is decided first, on
   the classes together, before any agent is asked.

Thresholds are :class:`gmsense.config.TrustSettings`; they are physical (burn severity, water
index, canopy, the field's yearly cycle), not fitted to the synthetic world.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gmsense.config import TrustSettings
from gmsense.records import HUMAN_MADE_CLASSES, NATURAL_AGENTS

#: Agents seen directly in the patch (char, water), trusted even outside the model's training data.
DIRECT_AGENTS = ("fire", "flood")
#: Size features checked against the largest trained patch of the predicted class.
SIZE_FEATURES = {"area_px_m2": ("area", "ha", 1e-4), "length_m": ("length", "m", 1.0), "width_m": ("width", "m", 1.0)}
#: Features compared in log space by the multivariate novelty score (sizes span orders of magnitude).
LOG_FEATURES = ("area_px_m2", "length_m", "width_m")
NOVELTY_QUANTILE = 0.995  # the training patches' own distances: this quantile is "inside"
#: The words each rule's ``uncertain`` reason holds, by rule (gmsense.bench.scoring tallies them).
UNCERTAIN_REASONS = {
    "outside_training_data": "outside training data",
    "rescaled_imagery": "which imagery rescaled per image does not hold",
    "work_shape_indirect_agent": "a work's shape",
    "no_natural_agent": "called natural, but no natural agent",
    "low_confidence": "low confidence",
}


@dataclass(frozen=True)
class AgentFinding:
    """A natural agent that explains a patch, with the measurements that say so."""

    agent: str
    evidence: dict[str, float]
    text: str


@dataclass(frozen=True)
class TrustedLabel:
    """The label a patch keeps: class, confidence, the natural agent (``natural`` only) and why."""

    disturbance_class: str
    confidence: float
    natural_agent: str | None = None
    reason: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)


def _get(metrics: dict[str, Any], name: str) -> float:
    value = metrics.get(name)
    return float(value) if value is not None and np.isfinite(value) else math.nan


def _all(tests: list[tuple[str, float, str, float]]) -> tuple[bool, dict[str, float], str]:
    """(every test holds, the measured values, a sentence); a test whose value is missing fails."""
    ok = True
    parts = []
    for name, value, op, threshold in tests:
        holds = (value >= threshold) if op == ">=" else (value <= threshold)
        ok &= bool(holds)  # NaN compares false: a missing measurement never explains a patch
        parts.append(f"{name} {value:.2f} ({op} {threshold:g})" if np.isfinite(value) else f"{name} unknown")
    return ok, {n: round(v, 4) for n, v, _, _ in tests if np.isfinite(v)}, ", ".join(parts)


def _char_tests(metrics: dict[str, Any], settings: TrustSettings) -> list[tuple[str, float, str, float]]:
    """The fire's char: the visible stays dark and the NIR falls. In reflectance, as ratios after /
    before; on imagery rescaled per image (the patch's scene ranks are measured, no reflectance is),
    as the patch's place in its scene after: NIR among the scene's darkest, the visible not among
    its brightest (:mod:`gmsense.detect.agents`)."""
    m = lambda name: _get(metrics, name)  # noqa: E731
    if "sig_nir_rank_after" in metrics:
        return [("NIR rank in the scene after", m("sig_nir_rank_after"), "<=", settings.fire_max_nir_rank),
                ("visible rank in the scene after", m("sig_visible_rank_after"), "<=", settings.fire_max_visible_rank)]
    nir = m("sig_nir_ratio") if "sig_nir_ratio" in metrics else m("nir_ratio")  # annual: the fire's own window
    return [("visible after/before", m("sig_visible_ratio"), "<=", settings.fire_max_visible_ratio),
            ("NIR after/before", nir, "<=", settings.fire_max_nir_ratio)]


def natural_agents(metrics: dict[str, Any], settings: TrustSettings) -> tuple[list[AgentFinding], list[str]]:
    """The agents whose signatures the patch's ``metrics`` show (strongest evidence first), and a
    sentence per agent that does not (why not), for the record."""
    m = lambda name: _get(metrics, name)  # noqa: E731
    canopy = [("NDVI before", m("sig_ndvi_before"), ">=", settings.canopy_min_ndvi_before),
              ("near ring's share of the drop", m("ring_drop_near"), ">=", settings.canopy_min_ring_share)]
    too_few_for_outline = m("n_pixels") < settings.canopy_min_outline_pixels  # pixel count unknown: False
    if not too_few_for_outline:  # a smaller patch's solidity is the pixel grid's
        canopy.append(("solidity", m("solidity"), "<=", settings.canopy_max_solidity))
    candidates = {
        "fire": [("NBR drop", m("sig_dnbr"), ">=", settings.fire_min_dnbr), *_char_tests(metrics, settings)],
        "flood": [("highest NDWI", m("sig_water_max"), ">=", settings.flood_min_ndwi),
                  ("last NDWI of the season", m("sig_water_last"), "<=", settings.flood_max_ndwi_last)],
        "windthrow": [*canopy, ("decline the season before", m("sig_decline_before"), "<=",
                                settings.dieback_min_decline)],
        "dieback": [*canopy, ("decline the season before", m("sig_decline_before"), ">=",
                              settings.dieback_min_decline)],
        "harvest": [("same drop a year before", m("sig_cycle_repeat"), ">=", settings.harvest_min_cycle),
                    ("NDVI range the season before", m("sig_prior_amplitude"), ">=",
                     settings.harvest_min_amplitude),
                    ("green again before the drop", m("sig_regreen"), ">=", settings.harvest_min_regreen)],
        "drought": [("near ring's share of the drop", m("ring_drop_near"), ">=", settings.drought_min_ring_share),
                    ("far ring's share of the drop", m("ring_drop_far"), ">=", settings.drought_min_ring_share),
                    # A dry year, not the land's yearly cycle (fields harvested around a work dug at harvest time)
                    ("near ring below its last season's same days", m("ring_anomaly_near"), ">=",
                     settings.drought_min_ring_share),
                    ("far ring below its last season's same days", m("ring_anomaly_far"), ">=",
                     settings.drought_min_ring_share)],
    }
    found, missed = [], []
    for agent in NATURAL_AGENTS:
        ok, values, text = _all(candidates[agent])
        if ok:
            found.append(AgentFinding(agent, values, f"{agent}: {text}"))
        else:
            missed.append(f"{agent}: {text}")
    return found, missed


@dataclass(frozen=True)
class TrainingDomain:
    """What a model was trained on, kept in its card (``training_domain``): per class the largest
    trained size features, and the location, scale and covariance of the training features (log
    sizes, robust-standardised) with the distance most training patches stay within."""

    features: tuple[str, ...]
    size_max: dict[str, dict[str, float]]
    location: np.ndarray
    scale: np.ndarray
    covariance: np.ndarray
    threshold: float

    def to_card(self) -> dict[str, Any]:
        return {"features": list(self.features), "size_max": self.size_max,
                "location": [round(float(v), 6) for v in self.location],
                "scale": [round(float(v), 6) for v in self.scale],
                "covariance": [[round(float(v), 6) for v in row] for row in self.covariance],
                "threshold": round(float(self.threshold), 4), "quantile": NOVELTY_QUANTILE}

    @classmethod
    def from_card(cls, card: dict[str, Any]) -> TrainingDomain | None:
        d = card.get("training_domain")
        if not d:
            return None
        return cls(tuple(d["features"]), d["size_max"], np.array(d["location"]), np.array(d["scale"]),
                   np.array(d["covariance"]), float(d["threshold"]))

    def _standardise(self, x: np.ndarray) -> np.ndarray:
        return (_logged(x, self.features) - self.location) / self.scale

    def distances(self, x: np.ndarray) -> np.ndarray:
        """Per row of ``x`` (n, features; NaN where missing), the squared Mahalanobis distance over
        the features it has, divided by their number (comparable across missing patterns)."""
        z = self._standardise(np.atleast_2d(x))
        out = np.full(len(z), np.nan)
        present = np.isfinite(z)
        for pattern in np.unique(present, axis=0):
            rows = (present == pattern).all(axis=1)
            k = int(pattern.sum())
            if k == 0:
                continue
            sub = self.covariance[np.ix_(pattern, pattern)]
            zs = z[rows][:, pattern]
            out[rows] = np.einsum("ij,jk,ik->i", zs, np.linalg.pinv(sub), zs) / k
        return out


def _logged(x: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """A float copy of ``x`` (.., features) with the size features (:data:`LOG_FEATURES`) as log1p."""
    x = np.array(x, dtype=float)
    for j, name in enumerate(names):
        if name in LOG_FEATURES:
            x[..., j] = np.log1p(np.clip(x[..., j], 0, None))
    return x


def fit_training_domain(features: np.ndarray, labels: np.ndarray, names: tuple[str, ...]) -> TrainingDomain:
    """The :class:`TrainingDomain` of a training table (``features`` n x len(names), NaN where the
    imagery lacked a band; ``labels`` the class of each row)."""
    from sklearn.covariance import LedoitWolf

    size_max = {}
    for klass in np.unique(labels):
        rows = features[labels == klass]
        size_max[str(klass)] = {f: round(float(np.nanmax(rows[:, names.index(f)])), 3)
                                for f in SIZE_FEATURES if f in names and np.isfinite(rows[:, names.index(f)]).any()}
    x = _logged(features, names)
    # Per feature, from its finite values only (a feature missing in every row sits at 0, scale 1).
    quartiles = np.array([np.quantile(col[np.isfinite(col)], [0.25, 0.5, 0.75]) if np.isfinite(col).any()
                          else [0.0, 0.0, 0.0] for col in x.T])
    location, spread = quartiles[:, 1], (quartiles[:, 2] - quartiles[:, 0]) / 1.349
    scale = np.where(spread > 0, spread, 1.0)
    z = (x - location) / scale
    filled = np.where(np.isfinite(z), z, 0.0)  # a missing feature sits at the training median
    covariance = LedoitWolf().fit(filled).covariance_
    domain = TrainingDomain(tuple(names), size_max, location, scale, covariance, math.inf)
    own = domain.distances(features)
    threshold = float(np.nanquantile(own, NOVELTY_QUANTILE)) if np.isfinite(own).any() else math.inf
    return TrainingDomain(tuple(names), size_max, location, scale, covariance, threshold)


def _size_text(name: str, value: float) -> str:
    label, unit, factor = SIZE_FEATURES[name]
    return f"{label} {value * factor:.2f} {unit}" if unit == "ha" else f"{label} {value * factor:.0f} {unit}"


def pixel_size_m(metrics: dict[str, Any]) -> float:
    """The side of the patch's pixels, metres, from its area and pixel count (NaN when unknown)."""
    area, count = _get(metrics, "area_px_m2"), _get(metrics, "n_pixels")
    return math.sqrt(area / count) if count > 0 and area > 0 else math.nan


def trained_size_limits(trained: dict[str, float], pixel_m: float) -> dict[str, float]:
    """The largest trained sizes of a class as the patch's pixels would show them.

    A patch is at least one pixel wide, and a line narrower than a pixel is seen as a chain of whole
    pixels, so its area is its length x the pixel whatever its true width: a trench trained on 10 m
    pixels (about 10 m wide, length x 10 m in area) is three times larger in area at 30 m. So the
    widest trained patch counts as at least one ``pixel_m`` wide, and the largest trained area as at
    least the longest trained patch one pixel wide; lengths are unchanged (NaN ``pixel_m``: as trained)."""
    limits = dict(trained)
    if not np.isfinite(pixel_m):
        return limits
    if "width_m" in limits:
        limits["width_m"] = max(limits["width_m"], pixel_m)
    if "area_px_m2" in limits and "length_m" in limits:
        limits["area_px_m2"] = max(limits["area_px_m2"], limits["length_m"] * pixel_m)
    return limits


def novelty(metrics: dict[str, Any], klass: str, domain: TrainingDomain, margin: float, *,
            at_pixel_size: bool = True) -> str | None:
    """Why the patch lies outside the training data, or None when it lies inside. Sizes are
    compared with the largest trained patch of ``klass``, as the patch's pixels would show it when
    ``at_pixel_size`` (:func:`trained_size_limits`), else as trained."""
    as_trained = domain.size_max.get(klass, {})
    pixel_m = pixel_size_m(metrics)
    trained = trained_size_limits(as_trained, pixel_m) if at_pixel_size else as_trained
    for name in SIZE_FEATURES:
        value, largest = _get(metrics, name), trained.get(name)
        if largest and value > margin * largest:
            seen_as = f" at {pixel_m:.0f} m pixels" if largest != as_trained.get(name) else ""
            return (f"{UNCERTAIN_REASONS['outside_training_data']}: {_size_text(name, value)} > largest trained "
                    f"{klass} {_size_text(name, largest).split(' ', 1)[1]}{seen_as}")
    x = np.array([[_get(metrics, f) for f in domain.features]])
    d = domain.distances(x)[0]
    if np.isfinite(d) and d > margin * domain.threshold:
        z = domain._standardise(x)[0]
        worst = [j for j in np.argsort(-np.nan_to_num(np.abs(z), nan=-1.0))[:2] if np.isfinite(z[j])]
        typical = domain.location.copy()
        for j, name in enumerate(domain.features):
            if name in LOG_FEATURES:
                typical[j] = np.expm1(typical[j])
        parts = [f"{domain.features[j]} {x[0, j]:.3g} (typical {typical[j]:.3g})" for j in worst]
        return (f"{UNCERTAIN_REASONS['outside_training_data']}: unusual feature combination (distance {d:.1f} > "
                f"{margin * domain.threshold:.1f}): " + ", ".join(parts))
    return None


def rescaled_imagery(metrics: dict[str, Any]) -> bool:
    """Whether the patch was measured on imagery rescaled per image (its scene ranks were measured
    instead of reflectance: :mod:`gmsense.detect.agents`)."""
    return "sig_nir_rank_after" in metrics


def trusted_label(klass: str, confidence: float, metrics: dict[str, Any], settings: TrustSettings, *,
                  probabilities: dict[str, float] | None = None,
                  domain: TrainingDomain | None = None) -> TrustedLabel:
    """The label a patch keeps (module docstring). ``probabilities``: a trained model's calibrated
    class probabilities (None for the rule baseline, whose confidence is a heuristic margin);
    ``domain``: the model's training data (None: no novelty check)."""
    agents, missed = natural_agents(metrics, settings)
    direct = [a for a in agents if a.agent in DIRECT_AGENTS]
    works = {c: p for c, p in (probabilities or {}).items() if c in HUMAN_MADE_CLASSES}
    human = sum(works.values())
    if klass == "natural" and works and human >= settings.min_confidence:
        # Natural the likeliest single class, but a work more likely than not: judged as a work.
        klass = max(works, key=works.__getitem__)
        confidence = works[klass]
    why_novel = (novelty(metrics, klass, domain, settings.novelty_margin, at_pixel_size=settings.novelty_at_pixel_size)
                 if domain and settings.novelty else None)
    if why_novel:
        if direct:
            a = direct[0]
            return TrustedLabel("natural", confidence, a.agent, f"{why_novel}; explained by {a.text}",
                                {"agent": a.agent, **a.evidence})
        return TrustedLabel("uncertain", confidence, None, why_novel)
    if klass in HUMAN_MADE_CLASSES and rescaled_imagery(metrics):
        # The model reads reflectance (ratios after / before, bare soil's brightness) that imagery
        # rescaled per image does not hold; only the agents' index and rank tests mean anything there.
        why = f"the model's {klass} reads reflectance, {UNCERTAIN_REASONS['rescaled_imagery']}"
        if direct:
            a = direct[0]
            return TrustedLabel("natural", confidence, a.agent, f"{why}; explained by {a.text}",
                                {"agent": a.agent, **a.evidence})
        return TrustedLabel("uncertain", confidence, None, why)
    if klass == "natural":
        linear = (_get(metrics, "elongation") >= settings.work_min_elongation
                  and _get(metrics, "width_m") <= settings.work_max_width_m)
        if linear and agents and not direct:
            return TrustedLabel("uncertain", confidence, None,
                                f"{UNCERTAIN_REASONS['work_shape_indirect_agent']} (elongation "
                                f"{_get(metrics, 'elongation'):.1f}, width {_get(metrics, 'width_m'):.0f} m) "
                                f"with only a {agents[0].agent} signature "
                                f"({agents[0].text})")
        if agents:
            a = agents[0]
            return TrustedLabel("natural", confidence, a.agent, a.text, {"agent": a.agent, **a.evidence})
        return TrustedLabel("uncertain", confidence, None,
                            f"{UNCERTAIN_REASONS['no_natural_agent']} explains it (" + "; ".join(missed) + ")")
    if probabilities and klass in HUMAN_MADE_CLASSES and confidence < settings.min_confidence:
        ranked = sorted(probabilities.items(), key=lambda kv: -kv[1])[:3]
        competing = ", ".join(f"{c} {p:.2f}" for c, p in ranked)
        if human >= settings.min_confidence:
            # Surely a work, unsure which: the flag must stand; the reviewer sees the competing works.
            return TrustedLabel(klass, confidence, None,
                                f"human-made {human:.2f}, the kind of work unsure: {competing}")
        return TrustedLabel("uncertain", confidence, None, f"{UNCERTAIN_REASONS['low_confidence']}: {competing}")
    return TrustedLabel(klass, confidence)
