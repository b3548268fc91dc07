"""The learned patch classifier at inference time: its classes, its features, safe loading of a
model folder (skops with an exact allow-list of types, never pickle) and prediction with an
explanation per patch. Training lives in :mod:`gmsense.classify.train`, which imports this module
(never the other way round).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gmsense.classify.trust import TrainingDomain
from gmsense.errors import InputError

FEATURES = (
    "magnitude", "area_px_m2", "length_m", "width_m", "elongation", "curvature", "solidity",
    "blue_ratio", "green_ratio", "red_ratio", "nir_ratio", "swir1_ratio", "swir2_ratio",
    "red_after", "nir_after", "swir1_after", "swir2_after",
    "z_ndvi", "z_nbr", "z_ndmi", "z_bsi", "persistence",
    "line_share", "ridge", "ring_drop_near", "ring_drop_far", "contrast_after", "ring_ndvi_before",
)
#: Features that need a shortwave-infrared band. Imagery without one (a 10 m band subset, some
#: drones and cameras) leaves them missing; a second estimator trained without them labels those
#: patches (:func:`without_swir`, ``MODEL_WITHOUT_SWIR_FILE``).
SWIR_FEATURES = ("swir1_ratio", "swir2_ratio", "swir1_after", "swir2_after", "z_nbr", "z_ndmi", "z_bsi")
#: Features that need the blue or green band: imagery of red and NIR only (an NDVI pair, as some
#: archives and cameras give) leaves them missing too; a third estimator, trained without them and
#: without SWIR, labels those patches (``MODEL_RED_NIR_FILE``).
VISIBLE_FEATURES = ("blue_ratio", "green_ratio")
MODEL_FILE = "model.skops"
MODEL_WITHOUT_SWIR_FILE = "model_without_swir.skops"
MODEL_RED_NIR_FILE = "model_red_nir.skops"
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


# Below this many rows the trees are fitted, and patches labelled, on one OpenMP thread. On tables this small
# each boosting round is microseconds of work between thread barriers, and the barriers dominate:
# a cross-validation of 15 patches took 2.4 s with 2 threads and 1.5 s with one on an idle 2-core
# machine, and with the cores busy the spinning threads made it 25-350 s against 4 s with one.
# The fitted model is the same either way.
SINGLE_THREAD_BELOW = 5_000


@contextmanager
def threads_for(n_rows: int) -> Iterator[None]:
    """One OpenMP thread while fitting or scoring a table of ``n_rows`` below SINGLE_THREAD_BELOW
    (a prediction of 20 patches: 7 ms either way on an idle machine, 180-490 ms with two threads
    beside busy cores)."""
    if n_rows >= SINGLE_THREAD_BELOW:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="openmp"):
        yield


def features_of(metrics: dict[str, Any]) -> list[float]:
    """The feature vector of a patch (its stored metrics), NaN for what the imagery lacked."""
    return [float(metrics[f]) if metrics.get(f) is not None else np.nan for f in FEATURES]


MISSING = -999.0  # stands for a feature the imagery could not give (e.g. no SWIR band)


@dataclass(frozen=True)
class PatchClassifier:
    """A trained model and its card; ``predict`` gives a class and a confidence per patch."""

    estimator: Any
    card: dict[str, Any]
    without_swir: Any = None  # the estimator for patches of imagery without SWIR bands, if the folder has one
    red_nir: Any = None  # the estimator for patches of imagery with red and NIR only, if the folder has one

    @property
    def version(self) -> str:
        """``name@version`` from the model card, as scans record it."""
        return f"{self.card['name']}@{self.card['version']}"

    def _route(self, x: np.ndarray) -> np.ndarray:
        """Per row, the estimator that labels it: 0 the main one; 1 the one without SWIR (no SWIR
        feature at all, and the model has one); 2 the red-and-NIR one (no SWIR and no blue or green
        feature either, and the model has one)."""
        route = np.zeros(len(x), dtype=int)
        no_swir = np.isnan(x[:, [FEATURES.index(f) for f in SWIR_FEATURES]]).all(axis=1)
        no_visible = np.isnan(x[:, [FEATURES.index(f) for f in VISIBLE_FEATURES]]).all(axis=1)
        if self.without_swir is not None:
            route[no_swir] = 1
        if self.red_nir is not None:
            route[no_swir & no_visible] = 2
        return route

    def _proba(self, x: np.ndarray, route: np.ndarray) -> np.ndarray:
        proba = np.empty((len(x), len(self.estimator.classes_)))
        with threads_for(len(x)):
            for k, estimator in enumerate((self.estimator, self.without_swir, self.red_nir)):
                rows = route == k
                if rows.any():
                    proba[rows] = estimator.predict_proba(x[rows])
        return proba

    @property
    def training_domain(self) -> TrainingDomain | None:
        """What the model was trained on (from its card), for the novelty check; None for older cards."""
        return TrainingDomain.from_card(self.card)

    def probabilities(self, metrics: list[dict[str, Any]]) -> list[dict[str, float]]:
        """Per patch, the calibrated probability of every class (see :meth:`predict`)."""
        if not metrics:
            return []
        x = np.array([features_of(m) for m in metrics])
        proba = self._proba(x, self._route(x))
        return [{str(c): float(p) for c, p in zip(self.estimator.classes_, row, strict=True)}
                for row in proba]

    def predict(self, metrics: list[dict[str, Any]]) -> list[tuple[str, float]]:
        """The class (trench, pad, track, clearing or natural) and its probability for each
        patch, from the patches' ``metrics`` (e.g. ``Result.patches["metrics"]``). Patches
        without any SWIR feature are labelled by the estimator trained without SWIR, when the
        model has one."""
        if not metrics:
            return []
        x = np.array([features_of(m) for m in metrics])
        proba = self._proba(x, self._route(x))
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
        route = self._route(x)
        proba = self._proba(x, route)
        best = proba.argmax(axis=1)
        typical = np.array([np.nan if medians.get(f) is None else medians[f] for f in FEATURES])
        n, k = x.shape
        occluded = np.repeat(x, k, axis=0)
        columns = np.tile(np.arange(k), n)
        occluded[np.arange(n * k), columns] = typical[columns]
        # An occluded row keeps its patch's estimator (setting a SWIR feature must not switch it).
        drop = proba[np.arange(n), best][:, None] - self._proba(occluded, np.repeat(route, k)).reshape(n, k, -1)[
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
                  for name in (MODEL_FILE, MODEL_WITHOUT_SWIR_FILE, MODEL_RED_NIR_FILE)]
    return PatchClassifier(estimators[0], card, estimators[1], estimators[2])


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


def resolve_model(name: str) -> Path:
    """A model folder from a path, or from a name under the shipped models/ folder."""
    from gmsense.config import models_dir

    for candidate in (Path(name), models_dir() / name):
        if candidate.is_dir():
            return candidate
    known = sorted(p.name for p in models_dir().glob("*") if p.is_dir())
    raise InputError(f"no model {name!r}: not a folder, nor one of the shipped models ({', '.join(known) or 'none'})")
