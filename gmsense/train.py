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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gmsense import __version__
from gmsense.config import Settings
from gmsense.errors import InputError

CLASSES = ("trench", "pad", "track", "clearing", "natural")
FEATURES = (
    "n_pixels", "magnitude", "area_px_m2", "length_m", "width_m", "elongation", "curvature", "solidity",
    "blue_ratio", "green_ratio", "red_ratio", "nir_ratio", "swir1_ratio", "swir2_ratio",
    "red_after", "nir_after", "swir1_after", "swir2_after",
    "z_ndvi", "z_nbr", "z_ndmi", "z_bsi", "persistence",
    "line_share", "ridge", "ring_drop_near", "ring_drop_far", "contrast_after", "ring_ndvi_before",
)
#: Features that need a shortwave-infrared band. Imagery without one (a 10 m band subset, some
#: drones and cameras) leaves them missing; a second estimator trained without them labels those
#: patches (:func:`without_swir`, ``MODEL_WITHOUT_SWIR_FILE``).
SWIR_FEATURES = ("swir1_ratio", "swir2_ratio", "swir1_after", "swir2_after", "z_nbr", "z_ndmi", "z_bsi")
MATCH_TOLERANCE_M = 15.0
MODEL_FILE = "model.skops"
MODEL_WITHOUT_SWIR_FILE = "model_without_swir.skops"
CARD_FILE = "model_card.json"
#: Types a model file may contain: scikit-learn estimators and numpy scalars, nothing else.
#: The exact types (beyond those skops trusts by default) that gmsense's own models hold: the
#: trees of HistGradientBoostingClassifier, numpy dtypes, and the parts of a Platt-calibrated
#: CalibratedClassifierCV. Anything else in a model file is refused before loading, whatever its
#: module: a prefix such as ``numpy.`` would also admit functions that run code (for example
#: ``numpy.testing._private.utils.runstring``, which skops would call while loading).
ALLOWED_MODEL_TYPES = frozenset({
    "numpy.dtype",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
})


def without_swir(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with its SWIR features missing: what a model for imagery without SWIR bands is
    trained on (a model that saw SWIR everywhere would read "missing" as a class signal)."""
    blind = table.copy()
    blind.loc[:, list(SWIR_FEATURES)] = np.nan
    return blind


def features_of(metrics: dict[str, Any]) -> list[float]:
    """The feature vector of a patch (its stored metrics), NaN for what the imagery lacked."""
    return [float(metrics[f]) if metrics.get(f) is not None else np.nan for f in FEATURES]


def random_licences(seed: int, n: int) -> list[Any]:
    """``n`` licences of 0.5-2 km2 in Heilongjiang, deterministic from ``seed`` (scenario ``mixed``)."""
    import pyproj
    from shapely import affinity
    from shapely.geometry import box

    from gmsense.sites import Site, utm_crs_for

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


def label_patches(patch_geometries: list[Any], truth: Any) -> list[str]:
    """The class of the truth event each patch overlaps most (within the tolerance), else natural."""
    labels = []
    buffered = [(g.buffer(MATCH_TOLERANCE_M), c) for g, c in zip(truth.geometry, truth.disturbance_class, strict=True)]
    for geom in patch_geometries:
        overlaps = [(geom.intersection(b).area, c) for b, c in buffered if geom.intersects(b)]
        labels.append(max(overlaps)[1] if overlaps else "natural")
    return labels


def synthetic_training_set(seeds: list[int], sites_per_seed: int = 2, settings: Settings | None = None) -> pd.DataFrame:
    """Features and labels of every patch the detector proposes in synthetic scenes."""
    from shapely import wkt

    from gmsense.pipeline import analyse_cube
    from gmsense.sources.synthetic import synthesize

    settings = settings or Settings()
    rows = []
    for seed in seeds:
        for site in random_licences(seed, sites_per_seed):
            cube, truth = synthesize(site, site.buffered(settings.sites.buffer_m), settings.synthetic, seed=seed)
            result = analyse_cube(site, cube, settings)
            geoms = [wkt.loads(p.local_wkt) for p in result.patches]
            for record, label in zip(result.patches, label_patches(geoms, truth), strict=True):
                rows.append({"scene": f"{seed}/{site.site_id}", "label": label,
                             **dict(zip(FEATURES, features_of(record.metrics), strict=True))})
    return pd.DataFrame(rows, columns=["scene", "label", *FEATURES])


def _table_hash(table: pd.DataFrame) -> str:
    return hashlib.sha256(pd.util.hash_pandas_object(table, index=False).values.tobytes()).hexdigest()[:16]


def _grouped_splits(x: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
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


def cross_validate(table: pd.DataFrame, seed: int = 0, folds: int = 5) -> dict[str, Any]:
    """Per-class precision, recall and F1, a confusion matrix, the calibration of the confidence
    (ECE, before and after calibration) and each feature's permutation importance (the mean fall
    in held-out accuracy when its values are shuffled, 5 repeats) from scene-grouped folds."""
    from sklearn.inspection import permutation_importance
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    x, y, groups = table[list(FEATURES)].to_numpy(), table["label"].to_numpy(), table["scene"].to_numpy()
    splits = _grouped_splits(x, y, groups, folds)
    if not splits:
        raise InputError("cross-validation needs patches from at least two scenes; add seeds")
    predicted_raw, predicted_cal = np.empty_like(y), np.empty_like(y)
    top_raw, top_cal = np.zeros(len(y)), np.zeros(len(y))
    importance = np.zeros(len(FEATURES))
    for train, test in splits:
        raw = _estimator(seed).fit(x[train], y[train])
        importance += len(test) * permutation_importance(raw, x[test], y[test], n_repeats=5,
                                                         random_state=seed).importances_mean
        calibrated = fit_calibrated(x[train], y[train], groups[train], seed)
        p_raw, p_cal = raw.predict_proba(x[test]), calibrated.predict_proba(x[test])
        predicted_raw[test], predicted_cal[test] = raw.classes_[p_raw.argmax(axis=1)], calibrated.classes_[
            p_cal.argmax(axis=1)]
        top_raw[test], top_cal[test] = p_raw.max(axis=1), p_cal.max(axis=1)
    ece_raw = expected_calibration_error(top_raw[:, None], predicted_raw == y)
    ece_cal = expected_calibration_error(top_cal[:, None], predicted_cal == y)
    use_calibration = ece_cal < ece_raw
    predicted = predicted_cal if use_calibration else predicted_raw
    labels = [c for c in CLASSES if c in set(y) | set(predicted)]
    p, r, f, support = precision_recall_fscore_support(y, predicted, labels=labels, zero_division=0)
    return {"folds": len(splits), "grouped_by": "scene", "accuracy": float((predicted == y).mean()),
            "per_class": {c: {"precision": round(float(p[i]), 3), "recall": round(float(r[i]), 3),
                              "f1": round(float(f[i]), 3), "support": int(support[i])} for i, c in enumerate(labels)},
            "confusion": {"labels": labels, "matrix": confusion_matrix(y, predicted, labels=labels).tolist()},
            "feature_importance": {f: round(float(v), 4) for v, f in sorted(
                zip(importance / len(y), FEATURES, strict=True), reverse=True)},
            "calibration": {"ece_uncalibrated": round(ece_raw, 4), "ece_sigmoid": round(ece_cal, 4),
                            "used": bool(use_calibration),
                            "method": "Platt (sigmoid) on scene-grouped inner folds, kept only if it lowers the "
                                      "cross-validated ECE of the confidence"}}


def fit_calibrated(x: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int) -> Any:
    """The estimator with its probabilities calibrated (Platt scaling, one-vs-rest) on
    scene-grouped inner folds; the uncalibrated estimator when there are too few scenes."""
    from sklearn.calibration import CalibratedClassifierCV

    splits = _grouped_splits(x, y, groups, 3)
    # Each inner training part must hold every class, or calibration cannot be fitted.
    if not splits or any(len(np.unique(y[train])) < len(np.unique(y)) for train, _ in splits):
        return _estimator(seed).fit(x, y)
    calibrated = CalibratedClassifierCV(_estimator(seed), method="sigmoid", cv=splits).fit(x, y)
    calibrated.cv = len(splits)  # the fitted model need not carry the row indices of its folds
    return calibrated


MISSING = -999.0  # stands for a feature the imagery could not give (e.g. no SWIR band)


def _estimator(seed: int) -> Any:
    """Gradient-boosted trees; missing features become a sentinel the trees can split on (a
    feature missing in every training patch would otherwise break the binning)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline

    return make_pipeline(
        SimpleImputer(strategy="constant", fill_value=MISSING, keep_empty_features=True),
        HistGradientBoostingClassifier(max_iter=200, learning_rate=0.08, class_weight="balanced", random_state=seed))


def _versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "gmsense": __version__}
    for package in ("scikit-learn", "numpy", "skops"):
        out[package] = importlib.metadata.version(package)
    return out


def save_model(estimator: Any, folder: Path, card: dict[str, Any], without_swir: Any = None) -> Path:
    """Write ``model.skops`` (and ``model_without_swir.skops`` if given) and ``model_card.json``."""
    import skops.io as sio

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sio.dump(estimator, folder / MODEL_FILE)
    if without_swir is not None:
        sio.dump(without_swir, folder / MODEL_WITHOUT_SWIR_FILE)
    (folder / CARD_FILE).write_text(json.dumps(card, indent=2, ensure_ascii=False), encoding="utf-8")
    return folder


def train(seeds: list[int], folder: Path, *, sites_per_seed: int = 2, seed: int = 0, command: str = "",
          settings: Settings | None = None, table: pd.DataFrame | None = None,
          labelled: list[tuple[str, pd.DataFrame]] | None = None) -> dict[str, Any]:
    """Train on synthetic scenes of ``seeds`` (or on ``table``) plus ``labelled`` tables (a
    description of where they came from, and rows of scene, label, features: reviewers' labels or
    researchers' polygons, see gmsense.labels); cross-validate grouped by scene; save model and card."""
    settings = settings or Settings()
    if table is None:
        table = synthetic_training_set(seeds, sites_per_seed, settings) if seeds else pd.DataFrame(
            columns=["scene", "label", *FEATURES])
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
    metrics = cross_validate(table, seed)
    x, y = table[list(FEATURES)].to_numpy(), table["label"].to_numpy()
    estimator = (fit_calibrated(x, y, table["scene"].to_numpy(), seed) if metrics["calibration"]["used"]
                 else _estimator(seed).fit(x, y))
    blind = without_swir(table)
    blind_metrics = cross_validate(blind, seed)
    estimator_without_swir = _estimator(seed).fit(blind[list(FEATURES)].to_numpy(), y)
    folder = Path(folder)
    card = {
        "name": folder.name, "version": datetime.now(UTC).strftime("%Y%m%d%H%M%S"),
        "created": datetime.now(UTC).isoformat(timespec="seconds"), "estimator": type(estimator).__name__,
        "features": list(FEATURES), "classes": [str(c) for c in estimator.classes_],
        "training_data": {"sources": sources, "seeds": seeds, "sites_per_seed": sites_per_seed, **_counts(table),
                          "content_hash": _table_hash(table), "settings_hash": settings.config_hash()},
        "cv_metrics": metrics, "libraries": _versions(), "command": command, "random_seed": seed,
        "feature_medians": {f: _finite_median(x[:, j]) for j, f in enumerate(FEATURES)},
        "without_swir": {"file": MODEL_WITHOUT_SWIR_FILE, "missing_features": list(SWIR_FEATURES),
                         "used_for": "patches whose imagery has no SWIR band",
                         "cv_accuracy": blind_metrics["accuracy"], "cv_per_class": blind_metrics["per_class"]},
    }
    save_model(estimator, folder, card, without_swir=estimator_without_swir)
    return card


def _finite_median(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return round(float(np.median(finite)), 6) if finite.size else None


def _counts(table: pd.DataFrame) -> dict[str, Any]:
    return {"patches": len(table), "scenes": int(table["scene"].nunique()) if len(table) else 0,
            "class_counts": {str(k): int(v) for k, v in table["label"].value_counts().items()}}


@dataclass(frozen=True)
class PatchClassifier:
    """A trained model and its card; ``predict`` gives a class and a confidence per patch."""

    estimator: Any
    card: dict[str, Any]
    without_swir: Any = None  # the estimator for patches of imagery without SWIR bands, if the folder has one

    @property
    def version(self) -> str:
        return f"{self.card['name']}@{self.card['version']}"

    def _blind(self, x: np.ndarray) -> np.ndarray:
        """Rows (bool) the estimator without SWIR labels: no SWIR feature at all, and one exists."""
        if self.without_swir is None:
            return np.zeros(len(x), dtype=bool)
        return np.isnan(x[:, [FEATURES.index(f) for f in SWIR_FEATURES]]).all(axis=1)

    def _proba(self, x: np.ndarray, blind: np.ndarray) -> np.ndarray:
        proba = np.empty((len(x), len(self.estimator.classes_)))
        if (~blind).any():
            proba[~blind] = self.estimator.predict_proba(x[~blind])
        if blind.any():
            proba[blind] = self.without_swir.predict_proba(x[blind])
        return proba

    def predict(self, metrics: list[dict[str, Any]]) -> list[tuple[str, float]]:
        if not metrics:
            return []
        x = np.array([features_of(m) for m in metrics])
        proba = self._proba(x, self._blind(x))
        best = proba.argmax(axis=1)
        return [(str(self.estimator.classes_[b]), round(float(proba[i, b]), 3)) for i, b in enumerate(best)]

    def explain(self, metrics: list[dict[str, Any]], top: int = 3) -> list[list[dict[str, Any]]]:
        """Per patch, the ``top`` features that most support its predicted class: each feature in
        turn is set to its median over the training patches, and the fall in the predicted class's
        probability is that feature's ``effect`` (an occlusion attribution; empty when the card
        has no medians)."""
        medians = self.card.get("feature_medians")
        if not metrics or not medians:
            return [[] for _ in metrics]
        x = np.array([features_of(m) for m in metrics])
        blind = self._blind(x)
        proba = self._proba(x, blind)
        best = proba.argmax(axis=1)
        typical = np.array([np.nan if medians.get(f) is None else medians[f] for f in FEATURES])
        n, k = x.shape
        occluded = np.repeat(x, k, axis=0)
        columns = np.tile(np.arange(k), n)
        occluded[np.arange(n * k), columns] = typical[columns]
        # An occluded row keeps its patch's estimator (setting a SWIR feature must not switch it).
        drop = proba[np.arange(n), best][:, None] - self._proba(occluded, np.repeat(blind, k)).reshape(n, k, -1)[
            np.arange(n), :, best]
        out = []
        for i in range(n):
            order = [j for j in np.argsort(-drop[i]) if drop[i, j] > 0][:top]
            out.append([{"feature": FEATURES[j], "value": None if np.isnan(x[i, j]) else round(float(x[i, j]), 4),
                         "typical": None if np.isnan(typical[j]) else round(float(typical[j]), 4),
                         "effect": round(float(drop[i, j]), 3)} for j in order])
        return out


def load_model(folder: Path) -> PatchClassifier:
    """Load a model folder safely: only the types gmsense's models hold are accepted (skops'
    defaults plus ALLOWED_MODEL_TYPES), and the card's feature list must be the one this version of
    gmsense computes."""
    folder = Path(folder)
    if not (folder / MODEL_FILE).is_file() or not (folder / CARD_FILE).is_file():
        raise InputError(f"{folder} is not a model folder: it needs {MODEL_FILE} and {CARD_FILE}")
    card = json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))
    if card.get("features") != list(FEATURES):
        raise InputError(
            f"model {folder} was trained on features {card.get('features')} but this gmsense computes "
            f"{list(FEATURES)}; retrain it with 'gmsense train'")
    estimators = [_load_estimator(folder / name) if (folder / name).is_file() else None
                  for name in (MODEL_FILE, MODEL_WITHOUT_SWIR_FILE)]
    return PatchClassifier(estimators[0], card, estimators[1])


def _load_estimator(path: Path) -> Any:
    """One skops file, after checking that every type it names that skops does not trust by
    default is in ALLOWED_MODEL_TYPES; nothing in the file is imported or run before that."""
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:  # a corrupt zip or schema: say so rather than show a traceback
        raise InputError(f"model file {path} cannot be read: {exc}") from exc
    refused = sorted(set(untrusted) - ALLOWED_MODEL_TYPES)
    if refused:
        raise InputError(f"model file {path} contains types gmsense will not load: "
                         f"{', '.join(refused)}; only models written by 'gmsense train' are "
                         "accepted")
    try:
        return sio.load(path, trusted=sorted(untrusted))
    except Exception as exc:  # allowed types but a broken file (or one from another scikit-learn)
        raise InputError(f"model file {path} cannot be loaded: {exc}") from exc


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
    ax.set_title(f"scene-grouped CV, accuracy {metrics['accuracy']:.2f}", fontsize=9)
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
    human = [c for c in CLASSES if c != "natural"]
    out: dict[str, Any] = {"patches": len(truth_labels), "seeds": seeds}
    for key, predicted in (("model", model_labels), ("rules", rule_labels)):
        agree = np.array(predicted) == np.array(truth_labels)
        out[key] = {"accuracy": float(agree.mean()) if agree.size else float("nan"),
                    "macro_f1": float(f1_score(truth_labels, predicted, labels=human, average="macro",
                                               zero_division=0)) if truth_labels else float("nan")}
    return out
