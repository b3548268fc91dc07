"""The researchers' loop: training data from labelled patches, spatially blocked validation,
model cards, and safe model files (skops, never pickle).

A model labels the patches the change detector proposes (its classes: trench, pad, track,
clearing, natural). Training data come from synthetic scenes with known truth
(:func:`synthetic_training_set`): each proposed patch takes the class of the truth event it
overlaps most (within 15 m, for misregistration), or ``natural`` when it overlaps none (a false
alarm is not human-made damage). Validation groups patches by scene, so a scene never lends
patches to both sides of a split.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gmsense import __version__
from gmsense.classify.model import (
    CARD_FILE,
    FEATURES,
    MISSING,
    MODEL_FILE,
    MODEL_RED_NIR_FILE,
    MODEL_WITHOUT_SWIR_FILE,
    SWIR_FEATURES,
    VISIBLE_FEATURES,
    PatchClassifier,
    features_of,
    threads_for,
)
from gmsense.classify.trust import fit_training_domain
from gmsense.config import Settings
from gmsense.errors import InputError
from gmsense.records import HUMAN_MADE_CLASSES, PATCH_CLASSES

MATCH_TOLERANCE_M = 15.0
#: The training table saved beside a model (features, labels, scenes, worlds): what it was fitted on.
TABLE_FILE = "training_table.csv.gz"


@dataclass(frozen=True)
class TrainingParams:
    """Hyper-parameters of training, recorded in the model card (``training_params``).

    ``max_iter`` and ``learning_rate``: the boosting rounds and shrinkage of the
    HistGradientBoostingClassifier; ``importance_repeats``: how many times each feature is shuffled
    for its permutation importance in cross-validation. The defaults are what ``gmsense train``
    uses and what the shipped model was trained with; lighter settings only make sense for tests
    of the mechanics on tiny tables.
    """

    max_iter: int = 200
    learning_rate: float = 0.08
    importance_repeats: int = 5


DEFAULT_PARAMS = TrainingParams()

def without_swir(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with its SWIR features missing: what a model for imagery without SWIR bands is
    trained on (a model that saw SWIR everywhere would read "missing" as a class signal)."""
    blind = table.copy()
    blind.loc[:, list(SWIR_FEATURES)] = np.nan
    return blind


def red_nir_only(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` as imagery of red and NIR only would give it: no SWIR and no blue or green feature
    (what the model for such imagery is trained on)."""
    blind = without_swir(table)
    blind.loc[:, list(VISIBLE_FEATURES)] = np.nan
    return blind


def random_licences(seed: int, n: int, domain: str | None = None) -> list[Any]:
    """``n`` licences of 0.5-2 km2 in Heilongjiang, deterministic from ``seed`` (scenario ``mixed``).

    With ``domain`` (a synthetic domain name, see :mod:`gmsense.sources.synthetic._domains`), the
    licences are drawn for that world instead: sizes from its biome's ``licence_km2`` (up to 6 km2
    where it has large clearings and pits), places from its ``lon``/``lat``, and the property
    ``synthetic_domain`` set, so scans and training of these licences use that world. No domain
    (the default) gives the licences it always gave."""
    if domain is not None:
        return _domain_licences(seed, n, domain)
    import pyproj
    from shapely import affinity
    from shapely.geometry import box

    from gmsense.geo.sites import Site, utm_crs_for

    rng = np.random.default_rng([seed, 7_919])
    sites = []
    for k in range(n):
        lon, lat = rng.uniform(126, 131), rng.uniform(45, 49)
        crs = utm_crs_for(lon, lat)
        x, y = pyproj.Transformer.from_crs(4326, crs, always_xy=True).transform(lon, lat)
        w, h = rng.uniform(700, 1500), rng.uniform(700, 1300)
        geom = affinity.rotate(box(x - w / 2, y - h / 2, x + w / 2, y + h / 2), rng.uniform(0, 30))
        sites.append(Site(f"S{seed:03d}-{k + 1}", geom, crs, {"synthetic_scenario": "mixed",
                                                                "licence_type": "exploration"}))
    return sites


def _domain_licences(seed: int, n: int, domain: str) -> list[Any]:
    """Licences for the synthetic ``domain`` (see :func:`random_licences`)."""
    import zlib
    from dataclasses import replace

    import pyproj
    from shapely import affinity
    from shapely.geometry import box

    from gmsense.geo.sites import Site, utm_crs_for
    from gmsense.sources.synthetic import domain_named

    resolved = domain_named(domain)
    biome = resolved.biome
    # a southern world has its northern twin's licences (the same world, half a year later)
    twin = replace(resolved, hemisphere="north").name
    rng = np.random.default_rng([seed, 7_919, zlib.crc32(twin.encode())])
    sites = []
    for k in range(n):
        lon, lat = rng.uniform(*biome.lon), rng.uniform(*biome.lat)
        crs = utm_crs_for(lon, lat)
        x, y = pyproj.Transformer.from_crs(4326, crs, always_xy=True).transform(lon, lat)
        area = np.exp(rng.uniform(*np.log(biome.licence_km2))) * 1e6
        aspect = rng.uniform(1.0, 1.6)
        w, h = np.sqrt(area * aspect), np.sqrt(area / aspect)
        geom = affinity.rotate(box(x - w / 2, y - h / 2, x + w / 2, y + h / 2), rng.uniform(0, 30))
        sites.append(Site(f"S{seed:03d}-{biome.name[:4].upper()}-{k + 1}", geom, crs,
                          {"synthetic_scenario": "mixed", "synthetic_domain": resolved.name,
                           "licence_type": "mining" if "open_pit" in biome.human_kinds and k % 2 else "exploration"}))
    return sites


def label_patches(patch_geometries: list[Any], truth: Any) -> list[str]:
    """The class of the truth event each patch overlaps most (within the tolerance), else natural."""
    labels = []
    buffered = [(g.buffer(MATCH_TOLERANCE_M), c) for g, c in zip(truth.geometry, truth.disturbance_class, strict=True)]
    for geom in patch_geometries:
        overlaps = [(geom.intersection(b).area, c) for b, c in buffered if geom.intersects(b)]
        labels.append(max(overlaps)[1] if overlaps else "natural")
    return labels


def synthetic_training_set(seeds: list[int], sites_per_seed: int = 2, settings: Settings | None = None,
                           domains: list[str] | None = None,
                           progress: Callable[[str, int, int], None] | None = None) -> pd.DataFrame:
    """Features and labels of every patch the detector proposes in synthetic scenes.

    With ``domains`` (synthetic domain names), each seed gives ``sites_per_seed`` licences of every
    domain (:func:`random_licences`) and a scene is named ``domain/seed/site``, so validation can
    hold out whole domains; without, the classic licences and ``seed/site``. A domain named
    :data:`RANDOMISED` followed by biomes (``randomised:boreal_forest``; see :func:`randomised_worlds`)
    is that biome seen, per seed, through a sensor, pixel size, sky, season shift and hemisphere drawn
    at random (domain randomisation). ``progress(scene, done, total)`` is called after each scene."""
    from shapely import wkt

    from gmsense.pipeline import analyse_cube
    from gmsense.sources.synthetic import scan_settings, synthesize

    settings = settings or Settings()
    rows = []
    total = len(seeds) * len(domains or [None]) * sites_per_seed
    done = 0
    for seed in seeds:
        for named in domains or [None]:
            domain = world_for(named, seed)
            for site in random_licences(seed, sites_per_seed, domain=domain):
                cube, truth = synthesize(site, site.buffered(settings.sites.buffer_m), settings.synthetic, seed=seed)
                result = analyse_cube(site, cube, scan_settings(settings, domain))
                geoms = [wkt.loads(p.local_wkt) for p in result.patches]
                scene = f"{seed}/{site.site_id}" if domain is None else f"{cube.attrs['domain']}/{seed}/{site.site_id}"
                for record, label in zip(result.patches, label_patches(geoms, truth), strict=True):
                    rows.append({"scene": scene, "label": label, "domain": cube.attrs.get("domain", "classic"),
                                 **dict(zip(FEATURES, features_of(record.metrics), strict=True))})
                done += 1
                if progress is not None:
                    progress(scene, done, total)
    return pd.DataFrame(rows, columns=["scene", "label", "domain", *FEATURES])


#: ``gmsense train --domains randomised``: every biome, each seed's world of it drawn at random.
RANDOMISED = "randomised"


def randomised_worlds(biomes: list[str] | None = None) -> list[str]:
    """The training worlds of domain randomisation: ``randomised:BIOME`` for each biome (all by default)."""
    from gmsense.sources.synthetic import DOMAINS

    return [f"{RANDOMISED}:{b}" for b in (biomes or list(DOMAINS))]


def world_for(named: str | None, seed: int) -> str | None:
    """The synthetic world ``named`` stands for at ``seed``: ``randomised:BIOME`` is that seed's random
    world of the biome (gmsense.sources.synthetic.randomised_domain); any other name is itself."""
    if named is None or not named.startswith(f"{RANDOMISED}:"):
        return named
    from gmsense.sources.synthetic import randomised_domain

    return randomised_domain(named.removeprefix(f"{RANDOMISED}:"), seed).name


def worlds_of(table: pd.DataFrame) -> np.ndarray:
    """The world leave-one-world-out validation holds out for each row: the biome of its ``domain``
    (every sensor, pixel size and sky of a biome together), ``labelled`` for rows without one."""
    from gmsense.sources.synthetic import biome_of

    return np.array([d if d == "labelled" else biome_of(d) for d in domains_of(table)], dtype=object)


def domains_of(table: pd.DataFrame) -> np.ndarray:
    """The world each training row came from: its ``domain`` column (synthetic scenes), ``labelled``
    for rows without one (reviewers' and researchers' labels)."""
    if "domain" not in table:
        return np.full(len(table), "labelled", dtype=object)
    return table["domain"].fillna("labelled").astype(str).to_numpy()


def _table_hash(table: pd.DataFrame) -> str:
    return hashlib.sha256(pd.util.hash_pandas_object(table, index=False).values.tobytes()).hexdigest()[:16]


def _grouped_splits(x: np.ndarray, y: np.ndarray, groups: np.ndarray,
                    folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import GroupKFold

    n = min(folds, len(np.unique(groups)))
    return list(GroupKFold(n_splits=n).split(x, y, groups)) if n >= 2 else []


def expected_calibration_error(proba: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """ECE of the top-class probability: the mean |accuracy - confidence| over equal-width
    confidence bins, weighted by their share of the predictions."""
    top = proba.max(axis=1)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(top, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            error += inside.mean() * abs(correct[inside].mean() - top[inside].mean())
    return float(error)


def cross_validate(table: pd.DataFrame, seed: int = 0, folds: int = 5,
                   params: TrainingParams = DEFAULT_PARAMS, group_by: str = "scene",
                   importance: bool = True) -> dict[str, Any]:
    """Per-class precision, recall and F1, a confusion matrix, the calibration of the confidence
    (ECE, before and after calibration) and each feature's permutation importance (the mean fall
    in held-out accuracy when its values are shuffled, ``params.importance_repeats`` repeats)
    from folds grouped by scene, or with ``group_by="domain"`` leave-one-domain-out: each world
    (:func:`domains_of`) is held out in turn and scored by a model that never saw it
    (``per_domain`` and ``worst_domain`` in the result). Without ``importance`` the permutation
    importance is not measured (``feature_importance`` empty): the estimators without SWIR, whose
    cards report their accuracy only, are cross-validated without it."""
    from sklearn.inspection import permutation_importance
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    x, y = table[list(FEATURES)].to_numpy(), table["label"].to_numpy()
    domains = worlds_of(table)
    groups = domains if group_by == "domain" else table["scene"].to_numpy()
    if group_by == "domain":
        folds = len(np.unique(domains))
    splits = _grouped_splits(x, y, groups, folds)
    if not splits:
        raise InputError("cross-validation needs patches from at least two scenes; add seeds")
    predicted_raw, predicted_cal = np.empty_like(y), np.empty_like(y)
    top_raw, top_cal = np.zeros(len(y)), np.zeros(len(y))
    importances = np.zeros(len(FEATURES))
    for train, test in splits:
        with threads_for(len(y)):
            raw = _estimator(seed, params).fit(x[train], y[train])
            if importance:
                importances += len(test) * permutation_importance(raw, x[test], y[test],
                                                                  n_repeats=params.importance_repeats,
                                                                  random_state=seed).importances_mean
            calibrated = fit_calibrated(x[train], y[train], groups[train], seed, params)
            p_raw, p_cal = raw.predict_proba(x[test]), calibrated.predict_proba(x[test])
        predicted_raw[test], predicted_cal[test] = raw.classes_[p_raw.argmax(axis=1)], calibrated.classes_[
            p_cal.argmax(axis=1)]
        top_raw[test], top_cal[test] = p_raw.max(axis=1), p_cal.max(axis=1)
    ece_raw = expected_calibration_error(top_raw[:, None], predicted_raw == y)
    ece_cal = expected_calibration_error(top_cal[:, None], predicted_cal == y)
    use_calibration = ece_cal < ece_raw
    predicted = predicted_cal if use_calibration else predicted_raw
    labels = [c for c in PATCH_CLASSES if c in set(y) | set(predicted)]
    p, r, f, support = precision_recall_fscore_support(y, predicted, labels=labels, zero_division=0)
    out_domains = {}
    if group_by == "domain":
        out_domains = {"per_domain": {str(d): _domain_scores(y[domains == d], predicted[domains == d])
                                      for d in np.unique(domains)}}
        worst = min(out_domains["per_domain"].items(), key=lambda kv: kv[1]["accuracy"])
        out_domains["worst_domain"] = {"domain": worst[0], **worst[1]}
    return {"folds": len(splits), "grouped_by": group_by, "accuracy": float((predicted == y).mean()), **out_domains,
            "per_class": {c: {"precision": round(float(p[i]), 3), "recall": round(float(r[i]), 3),
                              "f1": round(float(f[i]), 3), "support": int(support[i])} for i, c in enumerate(labels)},
            "confusion": {"labels": labels, "matrix": confusion_matrix(y, predicted, labels=labels).tolist()},
            "feature_importance": {f: round(float(v), 4) for v, f in sorted(
                zip(importances / len(y), FEATURES, strict=True), reverse=True)} if importance else {},
            "calibration": {"ece_uncalibrated": round(ece_raw, 4), "ece_sigmoid": round(ece_cal, 4),
                            "used": bool(use_calibration),
                            "method": "Platt (sigmoid) on scene-grouped inner folds, kept only if it lowers the "
                                      "cross-validated ECE of the confidence"}}


def _domain_scores(truth: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    """Patch-level scores of one held-out world: accuracy, the share of human-made patches called
    natural (the violation nobody sees) and each human-made class's recall."""
    human = np.isin(truth, HUMAN_MADE_CLASSES)
    return {"patches": len(truth), "accuracy": round(float((truth == predicted).mean()), 3),
            "human_called_natural": round(float((predicted[human] == "natural").mean()), 3) if human.any() else None,
            "recall": {c: round(float((predicted[truth == c] == c).mean()), 3) for c in HUMAN_MADE_CLASSES
                       if (truth == c).any()}}


def fit_calibrated(x: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int,
                   params: TrainingParams = DEFAULT_PARAMS) -> Any:
    """The estimator with its probabilities calibrated (Platt scaling, one-vs-rest) on
    scene-grouped inner folds; the uncalibrated estimator when there are too few scenes."""
    from sklearn.calibration import CalibratedClassifierCV

    splits = _grouped_splits(x, y, groups, 3)
    # Each inner training part must hold every class, or calibration cannot be fitted.
    if not splits or any(len(np.unique(y[train])) < len(np.unique(y)) for train, _ in splits):
        with threads_for(len(y)):
            return _estimator(seed, params).fit(x, y)
    with threads_for(len(y)):
        calibrated = CalibratedClassifierCV(_estimator(seed, params), method="sigmoid", cv=splits).fit(x, y)
    calibrated.cv = len(splits)  # the fitted model need not carry the row indices of its folds
    return calibrated


def fit_classifier(table: pd.DataFrame, seed: int = 0, params: TrainingParams = DEFAULT_PARAMS, *,
                   calibrate: bool = True, name: str = "in-memory") -> PatchClassifier:
    """A :class:`PatchClassifier` fitted on ``table`` (calibrated on scene-grouped inner folds when
    ``calibrate``), with its estimator for imagery without SWIR and the parts of a model card
    inference needs (feature medians, training domain). :func:`train` saves one; the benchmark
    fits one per held-out world."""
    x, y = table[list(FEATURES)].to_numpy(dtype=float), table["label"].to_numpy()
    with threads_for(len(y)):
        estimator = (fit_calibrated(x, y, table["scene"].to_numpy(), seed, params) if calibrate
                     else _estimator(seed, params).fit(x, y))
        blind = without_swir(table)
        estimator_without_swir = _estimator(seed, params).fit(blind[list(FEATURES)].to_numpy(dtype=float), y)
        estimator_red_nir = _estimator(seed, params).fit(red_nir_only(table)[list(FEATURES)].to_numpy(dtype=float), y)
    card = {"name": name, "version": "unsaved", "features": list(FEATURES),
            "classes": [str(c) for c in estimator.classes_],
            "feature_medians": {f: _finite_median(x[:, j]) for j, f in enumerate(FEATURES)},
            "training_domain": fit_training_domain(x, y, FEATURES).to_card()}
    return PatchClassifier(estimator, card, estimator_without_swir, estimator_red_nir)


def _estimator(seed: int, params: TrainingParams = DEFAULT_PARAMS) -> Any:
    """Gradient-boosted trees; missing features become a sentinel the trees can split on (a
    feature missing in every training patch would otherwise break the binning)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline

    return make_pipeline(
        SimpleImputer(strategy="constant", fill_value=MISSING, keep_empty_features=True),
        HistGradientBoostingClassifier(max_iter=params.max_iter, learning_rate=params.learning_rate,
                                       class_weight="balanced", random_state=seed))


def _versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "gmsense": __version__}
    for package in ("scikit-learn", "numpy", "skops"):
        out[package] = importlib.metadata.version(package)
    return out


def save_model(estimator: Any, folder: Path, card: dict[str, Any], without_swir: Any = None,
               red_nir: Any = None) -> Path:
    """Write ``model.skops`` (and ``model_without_swir.skops``, ``model_red_nir.skops`` if given) and
    ``model_card.json``."""
    import skops.io as sio

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sio.dump(estimator, folder / MODEL_FILE)
    if without_swir is not None:
        sio.dump(without_swir, folder / MODEL_WITHOUT_SWIR_FILE)
    if red_nir is not None:
        sio.dump(red_nir, folder / MODEL_RED_NIR_FILE)
    (folder / CARD_FILE).write_text(json.dumps(card, indent=2, ensure_ascii=False), encoding="utf-8")
    return folder


def train(seeds: list[int], folder: Path, *, sites_per_seed: int = 2, seed: int = 0, command: str = "",
          settings: Settings | None = None, table: pd.DataFrame | None = None,
          labelled: list[tuple[str, pd.DataFrame]] | None = None,
          params: TrainingParams = DEFAULT_PARAMS, domains: list[str] | None = None,
          progress: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Train on synthetic scenes of ``seeds`` (of every world in ``domains`` when given, see
    :func:`synthetic_training_set`; the cross-validation then holds out one world at a time) or on
    ``table``, plus ``labelled`` tables (a
    description of where they came from, and rows of scene, label, features: reviewers' labels or
    researchers' polygons, see gmsense.classify.labels); cross-validate grouped by scene; save model and card.
    ``params``: the hyper-parameters (:class:`TrainingParams`), recorded in the card. ``progress``:
    see :func:`synthetic_training_set` (the scenes; then once per stage: ``cross-validating``,
    ``fitting``)."""
    settings = settings or Settings()
    if table is None:
        table = synthetic_training_set(seeds, sites_per_seed, settings, domains, progress) if seeds else pd.DataFrame(
            columns=["scene", "label", "domain", *FEATURES])
    sources: list[dict[str, Any]] = []
    if seeds:
        sources.append({"source": "synthetic scenes (gmsense.sources.synthetic), patches labelled by truth overlap",
                        "seeds": seeds, "sites_per_seed": sites_per_seed, **_counts(table)})
    parts = [table]
    for description, rows in labelled or []:
        sources.append({"source": description, **_counts(rows), "content_hash": _table_hash(rows)})
        parts.append(rows)
    table = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) else table
    if table.empty or table["label"].nunique() < 2:
        raise InputError("the training data hold fewer than two classes; add seeds or labels")
    table = table.astype(dict.fromkeys(FEATURES, float))
    worlds = np.unique(worlds_of(table))
    group_by = "domain" if len(worlds) >= 2 else "scene"
    stages = ("cross-validating", "cross-validating without SWIR", "cross-validating with red and NIR only",
              "fitting")

    def stage(k: int) -> None:
        if progress is not None:
            progress(stages[k], k, len(stages))

    stage(0)
    metrics = cross_validate(table, seed, params=params, group_by=group_by)
    stage(1)
    blind_metrics = cross_validate(without_swir(table), seed, params=params, group_by=group_by, importance=False)
    stage(2)
    red_nir_metrics = cross_validate(red_nir_only(table), seed, params=params, group_by=group_by,
                                     importance=False)
    stage(3)
    folder = Path(folder)
    fitted = fit_classifier(table, seed, params, calibrate=metrics["calibration"]["used"], name=folder.name)
    card = {
        **fitted.card,
        "name": folder.name, "version": datetime.now(UTC).strftime("%Y%m%d%H%M%S"),
        "created": datetime.now(UTC).isoformat(timespec="seconds"), "estimator": type(fitted.estimator).__name__,
        "training_data": {"sources": sources, "seeds": seeds, "sites_per_seed": sites_per_seed,
                          "domains": [str(w) for w in worlds],
                          "worlds_drawn": sorted({str(d) for d in domains_of(table)}), **_counts(table),
                          "content_hash": _table_hash(table), "settings_hash": settings.config_hash(),
                          "table_file": TABLE_FILE},
        "cv_metrics": metrics, "libraries": _versions(), "command": command, "random_seed": seed,
        "training_params": asdict(params),
        "without_swir": {"file": MODEL_WITHOUT_SWIR_FILE, "missing_features": list(SWIR_FEATURES),
                         "used_for": "patches whose imagery has no SWIR band",
                         "cv_accuracy": blind_metrics["accuracy"], "cv_per_class": blind_metrics["per_class"],
                         **({"worst_domain": blind_metrics["worst_domain"]} if "worst_domain" in blind_metrics
                            else {})},
    }
    card["red_nir_only"] = {"file": MODEL_RED_NIR_FILE, "missing_features": [*SWIR_FEATURES, *VISIBLE_FEATURES],
                            "used_for": "patches whose imagery has red and NIR only (no blue, green or SWIR)",
                            "cv_accuracy": red_nir_metrics["accuracy"], "cv_per_class": red_nir_metrics["per_class"],
                            **({"worst_domain": red_nir_metrics["worst_domain"]}
                               if "worst_domain" in red_nir_metrics else {})}
    save_model(fitted.estimator, folder, card, without_swir=fitted.without_swir, red_nir=fitted.red_nir)
    table.to_csv(folder / TABLE_FILE, index=False, compression="gzip")
    return card


def read_training_table(folder: Path) -> pd.DataFrame:
    """The training table a model folder was fitted on (:data:`TABLE_FILE`), features as floats."""
    path = Path(folder) / TABLE_FILE
    if not path.is_file():
        raise InputError(f"model {folder} has no training table ({TABLE_FILE}); retrain it with 'gmsense train'")
    table = pd.read_csv(path, compression="gzip", dtype={"scene": str, "label": str, "domain": str})
    return table.astype(dict.fromkeys(FEATURES, float))


def _finite_median(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return round(float(np.median(finite)), 6) if finite.size else None


def _counts(table: pd.DataFrame) -> dict[str, Any]:
    return {"patches": len(table), "scenes": int(table["scene"].nunique()) if len(table) else 0,
            "class_counts": {str(k): int(v) for k, v in table["label"].value_counts().items()}}


def confusion_png(metrics: dict[str, Any], path: Path) -> Path:
    """The cross-validated confusion matrix as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, matrix = metrics["confusion"]["labels"], np.array(metrics["confusion"]["matrix"])
    fig, ax = plt.subplots(figsize=(4.8, 4.2), dpi=120)
    ax.imshow(matrix, cmap="Greys")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > matrix.max() / 2 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("truth")
    how = "leave-one-domain-out CV" if metrics.get("grouped_by") == "domain" else "scene-grouped CV"
    ax.set_title(f"{how}, accuracy {metrics['accuracy']:.2f}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def evaluate_against_rules(classifier: PatchClassifier, seeds: list[int], sites_per_seed: int = 2,
                           settings: Settings | None = None) -> dict[str, Any]:
    """Accuracy and macro F1 over human-made classes, of the model and of the rule baseline, on
    the patches the detector proposes in scenes of ``seeds`` (labelled by truth overlap)."""
    from shapely import wkt
    from sklearn.metrics import f1_score

    from gmsense.pipeline import analyse_cube
    from gmsense.sources.synthetic import synthesize

    settings = settings or Settings()
    truth_labels, rule_labels, metrics = [], [], []
    for seed in seeds:
        for site in random_licences(seed, sites_per_seed):
            cube, truth = synthesize(site, site.buffered(settings.sites.buffer_m), settings.synthetic, seed=seed)
            result = analyse_cube(site, cube, settings)
            truth_labels += label_patches([wkt.loads(p.local_wkt) for p in result.patches], truth)
            rule_labels += [p.disturbance_class for p in result.patches]
            metrics += [p.metrics for p in result.patches]
    model_labels = [c for c, _ in classifier.predict(metrics)]
    human = list(HUMAN_MADE_CLASSES)
    out: dict[str, Any] = {"patches": len(truth_labels), "seeds": seeds}
    for key, predicted in (("model", model_labels), ("rules", rule_labels)):
        agree = np.array(predicted) == np.array(truth_labels)
        out[key] = {"accuracy": float(agree.mean()) if agree.size else float("nan"),
                    "macro_f1": float(f1_score(truth_labels, predicted, labels=human, average="macro",
                                               zero_division=0)) if truth_labels else float("nan")}
    return out
