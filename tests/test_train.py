"""The researchers' loop: training data, scene-grouped CV, safe model files, scanning with a model."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from shapely.geometry import LineString, box
from typer.testing import CliRunner

from gmsense.classify.model import FEATURES, load_model
from gmsense.classify.train import (
    TrainingParams,
    cross_validate,
    label_patches,
    save_model,
    train,
)
from gmsense.cli import app
from gmsense.errors import InputError

runner = CliRunner()

# The mechanics (folds, cards, files, calibration, importance, explanations) on a tiny table do
# not need the full boosting of `gmsense train` (TrainingParams()): a light setting, same assertions.
LIGHT = TrainingParams(max_iter=30, importance_repeats=2)


def test_patches_take_the_class_of_the_event_they_overlap_most() -> None:
    truth = gpd.GeoDataFrame({"disturbance_class": ["trench", "pad"]},
                             geometry=[LineString([(0, 0), (300, 0)]).buffer(3), box(500, 500, 530, 530)])
    patches = [box(0, -10, 200, 10), box(495, 495, 540, 540), box(1000, 1000, 1100, 1100),
               box(505, 500, 525, 560)]
    assert label_patches(patches, truth) == ["trench", "pad", "natural", "pad"]
    near = [box(0, 12, 100, 20)]  # 9 m beside the trench: within the 15 m tolerance
    assert label_patches(near, truth) == ["trench"]


def _table(n_scenes: int = 6, seed: int = 0) -> pd.DataFrame:
    """A feature table with learnable classes: elongation and brightness separate them."""
    rng = np.random.default_rng(seed)
    rows = []
    for scene in range(n_scenes):
        for label, elong, swir in (("trench", 15, 1.4), ("pad", 1.5, 1.5), ("clearing", 1.6, 1.1), ("natural", 2, 0.6)):
            for _ in range(5):
                f = dict.fromkeys(FEATURES, np.nan)
                f.update(elongation=elong * rng.uniform(0.8, 1.2), swir1_ratio=swir * rng.uniform(0.9, 1.1),
                         area_px_m2=rng.uniform(300, 20_000))
                rows.append({"scene": f"s{scene}", "label": label, **f})
    return pd.DataFrame(rows)


def test_cross_validation_is_grouped_by_scene_and_reproducible() -> None:
    table = _table()
    a, b = cross_validate(table, seed=3, params=LIGHT), cross_validate(table, seed=3, params=LIGHT)
    assert a == b
    assert a["folds"] == 5
    assert a["grouped_by"] == "scene"
    assert a["accuracy"] > 0.8, "the classes in this table are separable"
    assert sum(map(sum, a["confusion"]["matrix"])) == len(table)
    with pytest.raises(InputError, match="two scenes"):
        cross_validate(table[table.scene == "s0"], params=LIGHT)


def test_model_folder_round_trip_and_safety(tmp_path: Path) -> None:
    card = train([], tmp_path / "m1", table=_table(), command="test", params=LIGHT)
    assert card["training_params"] == {"max_iter": 30, "learning_rate": 0.08, "importance_repeats": 2}
    assert set(json.loads((tmp_path / "m1" / "model_card.json").read_text())) >= {
        "version", "created", "features", "classes", "training_data", "cv_metrics", "libraries", "command"}
    assert card["training_data"]["content_hash"]
    calibration = card["cv_metrics"]["calibration"]
    assert 0 <= calibration["ece_uncalibrated"] <= 1
    model = load_model(tmp_path / "m1")
    calibrated = type(model.estimator).__name__ == "CalibratedClassifierCV"
    assert calibrated == calibration["used"] == (calibration["ece_sigmoid"] < calibration["ece_uncalibrated"])
    metrics = {"elongation": 14.0, "swir1_ratio": 1.4, "area_px_m2": 2000.0}
    [(klass, confidence)] = model.predict([metrics])
    assert klass == "trench"
    assert 0 < confidence <= 1

    card_file = tmp_path / "m1" / "model_card.json"
    stale = json.loads(card_file.read_text())
    stale["features"] = stale["features"][:-1]
    card_file.write_text(json.dumps(stale))
    with pytest.raises(InputError, match="retrain"):
        load_model(tmp_path / "m1")

    save_model({"estimator": Path("/etc/passwd")}, tmp_path / "evil", {"features": list(FEATURES)})
    with pytest.raises(InputError, match="will not load"):
        load_model(tmp_path / "evil")
    with pytest.raises(InputError, match="not a model folder"):
        load_model(tmp_path)


@pytest.mark.slow
def test_train_on_synthetic_scenes_then_scan_with_the_model(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--synthetic-seeds", "101-104", "--sites-per-seed", "1", "--name", "tiny",
                                 "--models-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "tiny" / "confusion.png").stat().st_size > 1000
    card = json.loads((tmp_path / "tiny" / "model_card.json").read_text())
    # The training table (synthetic_training_set([101, ..., 104], sites_per_seed=1)), as the card counts it.
    assert card["training_data"]["patches"] > 5
    assert set(card["training_data"]["class_counts"]) <= {"trench", "pad", "track", "clearing", "natural"}
    assert card["training_params"] == {"max_iter": 200, "learning_rate": 0.08, "importance_repeats": 5}
    result = runner.invoke(app, ["models", "--models-dir", str(tmp_path)])
    assert "tiny" in result.output

    from gmsense.config import configs_dir
    from gmsense.geo.sites import read_sites, write_sites
    from gmsense.store import Store

    sites_file = write_sites(read_sites(configs_dir() / "demo_sites.geojson")[:1], tmp_path / "one.geojson")
    db = tmp_path / "m.db"
    result = runner.invoke(app, ["scan", "--sites", str(sites_file), "--model", str(tmp_path / "tiny"),
                                 "--db", str(db), "--no-progress"])
    assert result.exit_code == 0, result.output
    store = Store(str(db))
    [scan] = store.scans()
    assert scan.detector == "model"
    assert scan.model_version.startswith("tiny@")
    assert all("rule_class" in p.metrics for p in store.patch_rows())
    for p in store.patch_rows():  # the calibrated probabilities behind the label, kept for review and replay
        probabilities = p.metrics["class_probabilities"]
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-3)
        if p.disturbance_class in probabilities:
            assert p.confidence == pytest.approx(max(probabilities.values()), abs=1e-3)

    result = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "tiny"), "--synthetic-seeds", "105",
                                 "--sites-per-seed", "1"])
    assert result.exit_code == 0, result.output
    assert "rules" in result.output


def test_bad_seeds_and_detector(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--synthetic-seeds", "one-two", "--name", "x", "--models-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "whole numbers" in result.output
    result = runner.invoke(app, ["train", "--synthetic-seeds", "101", "--domains", "randomised:wetland,volcano",
                                 "--name", "x", "--models-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown biome volcano" in result.output
    result = runner.invoke(app, ["bench", "accuracy", "--seeds", "1", "--domains", "randomised:tundra",
                                 "--out", str(tmp_path / "b.json")])
    assert result.exit_code == 2
    assert "unknown biome tundra" in result.output
    no_model = tmp_path / "rules-only.yaml"
    no_model.write_text("classify:\n  model: null\n")
    result = runner.invoke(app, ["scan", "--sites", "x.geojson", "--detector", "model", "--config", str(no_model)])
    assert result.exit_code == 2
    assert "--model PATH" in result.output


def test_expected_calibration_error() -> None:
    from gmsense.classify.train import expected_calibration_error

    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.5, 1.0, 20_000)  # the first class is the top one
    honest = rng.uniform(size=confidence.size) < confidence
    proba = np.column_stack([confidence, 1 - confidence])
    assert expected_calibration_error(proba, honest) < 0.02
    overconfident = rng.uniform(size=confidence.size) < confidence - 0.3
    assert expected_calibration_error(proba, overconfident) > 0.2


def test_a_calibrated_model_saves_and_loads_safely(tmp_path: Path) -> None:
    from gmsense.classify.train import fit_calibrated

    table = _table()
    estimator = fit_calibrated(table[list(FEATURES)].to_numpy(), table["label"].to_numpy(),
                               table["scene"].to_numpy(), 0, LIGHT)
    assert type(estimator).__name__ == "CalibratedClassifierCV"
    save_model(estimator, tmp_path / "cal", {"name": "cal", "version": "1", "features": list(FEATURES)})
    model = load_model(tmp_path / "cal")
    proba = model.estimator.predict_proba(table[list(FEATURES)].to_numpy())
    assert np.allclose(proba.sum(axis=1), 1.0)


def test_feature_importance_names_the_features_that_separate_the_classes() -> None:
    importance = cross_validate(_table(), seed=1, params=LIGHT)["feature_importance"]
    assert list(importance)[:2] == sorted(["elongation", "swir1_ratio"], key=lambda f: -importance[f])
    assert set(importance) == set(FEATURES)
    assert importance["elongation"] > 0.05
    assert all(abs(importance[f]) < 1e-9 for f in FEATURES if f not in ("elongation", "swir1_ratio", "area_px_m2"))


def test_each_prediction_is_explained_by_the_features_that_support_it(tmp_path: Path) -> None:
    card = train([], tmp_path / "m", table=_table(), command="test", params=LIGHT)
    assert card["feature_medians"]["elongation"] > 1
    model = load_model(tmp_path / "m")
    trench = {"elongation": 14.0, "swir1_ratio": 1.4, "area_px_m2": 2000.0}
    [(klass, confidence)] = model.predict([trench])
    [why] = model.explain([trench])
    assert klass == "trench"
    assert why, "a confident prediction has supporting features"
    assert why[0]["feature"] == "elongation", "a trench is a trench because it is long and thin"
    assert [w["effect"] for w in why] == sorted((w["effect"] for w in why), reverse=True)
    # The effect is the fall in the class's probability with the feature at its typical value.
    typical = dict(trench, elongation=card["feature_medians"]["elongation"])
    proba = model.estimator.predict_proba(np.array([[typical.get(f, np.nan) for f in FEATURES]]))[0]
    assert why[0]["effect"] == pytest.approx(confidence - proba[list(model.estimator.classes_).index("trench")],
                                             abs=2e-3)
    assert model.explain([]) == []


def test_patches_of_imagery_without_swir_go_to_the_model_trained_without_it(tmp_path: Path) -> None:
    from gmsense.classify.model import SWIR_FEATURES
    from gmsense.classify.train import without_swir

    table = _table()
    blind = without_swir(table)
    assert blind[list(SWIR_FEATURES)].isna().all().all()
    assert blind.drop(columns=list(SWIR_FEATURES)).equals(table.drop(columns=list(SWIR_FEATURES)))
    card = train([], tmp_path / "m", table=table, command="test", params=LIGHT)
    assert card["without_swir"]["missing_features"] == list(SWIR_FEATURES)
    assert 0 <= card["without_swir"]["cv_accuracy"] <= 1
    model = load_model(tmp_path / "m")
    assert model.without_swir is not None
    no_swir = {"elongation": 1.5, "area_px_m2": 2000.0, "blue_ratio": 1.2, "green_ratio": 1.1}  # no SWIR band
    with_swir = {**no_swir, "swir1_ratio": 1.5}
    x = np.array([[no_swir.get(f, np.nan) for f in FEATURES]])
    [(klass, confidence)] = model.predict([no_swir])
    assert confidence == pytest.approx(model.without_swir.predict_proba(x).max(), abs=1e-3)
    assert klass == model.without_swir.classes_[model.without_swir.predict_proba(x).argmax()]
    [(_, confidence_with)] = model.predict([with_swir])
    x_with = np.array([[with_swir.get(f, np.nan) for f in FEATURES]])
    assert confidence_with == pytest.approx(model.estimator.predict_proba(x_with).max(), abs=1e-3)
    [why] = model.explain([no_swir])
    assert all(w["feature"] not in SWIR_FEATURES for w in why)
    # Red and NIR only (no blue, green or SWIR): the third estimator, trained without all of them.
    from gmsense.classify.model import VISIBLE_FEATURES
    from gmsense.classify.train import red_nir_only

    assert model.red_nir is not None
    assert card["red_nir_only"]["missing_features"] == [*SWIR_FEATURES, *VISIBLE_FEATURES]
    assert red_nir_only(table)[list(VISIBLE_FEATURES)].isna().all().all()
    red_nir = {"elongation": 1.5, "area_px_m2": 2000.0, "red_ratio": 2.0}
    x_red = np.array([[red_nir.get(f, np.nan) for f in FEATURES]])
    [(klass, confidence)] = model.predict([red_nir])
    assert confidence == pytest.approx(model.red_nir.predict_proba(x_red).max(), abs=1e-3)
    assert klass == model.red_nir.classes_[model.red_nir.predict_proba(x_red).argmax()]


def test_small_tables_are_fitted_and_labelled_on_one_openmp_thread() -> None:
    """Thread barriers dominate on tiny tables and spin against busy cores: below the limit the
    trees use one OpenMP thread, above it the machine's default."""
    from threadpoolctl import threadpool_info

    from gmsense.classify.model import SINGLE_THREAD_BELOW, threads_for

    def openmp_threads() -> set[int]:
        return {p["num_threads"] for p in threadpool_info() if p["user_api"] == "openmp"}

    load_model(Path(__file__).resolve().parents[1] / "models" / "default")  # scikit-learn's OpenMP is loaded
    default = openmp_threads()
    assert default, "scikit-learn's OpenMP runtime must be loaded"
    with threads_for(10):
        assert openmp_threads() == {1}
    with threads_for(SINGLE_THREAD_BELOW):
        assert openmp_threads() == default
    assert openmp_threads() == default


def test_training_across_worlds_holds_one_world_out_at_a_time(tmp_path: Path) -> None:
    """Scenes of three biomes (one seen through two sensors): the cross-validation holds each biome out
    whole, under every sensor, reports it and the worst, and the model folder keeps the table it was
    fitted on (the benchmark refits from it)."""
    from gmsense.classify.train import TABLE_FILE, domains_of, fit_classifier, read_training_table, worlds_of

    table = _table(n_scenes=6)
    table["domain"] = [("classic", "steppe_grassland+landsat", "wetland", "classic", "steppe_grassland+landsat",
                        "wetland+30m+cloudy")[int(s[1:]) % 6] for s in table.scene]
    assert set(table.domain) >= {"wetland", "wetland+30m+cloudy"}
    # The third world is different: its pads look like the others' clearings. A model that never saw
    # it cannot know, so its held-out accuracy must be the worst.
    odd = table.domain.str.startswith("wetland") & (table.label == "pad")
    table.loc[odd, "swir1_ratio"] = 1.1 * np.random.default_rng(1).uniform(0.9, 1.1, int(odd.sum()))
    metrics = cross_validate(table, seed=0, params=LIGHT, group_by="domain")
    assert metrics["grouped_by"] == "domain"
    assert metrics["folds"] == 3
    assert set(metrics["per_domain"]) == {"classic", "steppe_grassland", "wetland"}
    assert sum(d["patches"] for d in metrics["per_domain"].values()) == len(table)
    assert metrics["worst_domain"]["domain"] == "wetland"
    assert metrics["per_domain"]["wetland"]["recall"]["pad"] < 0.5
    card = train([], tmp_path / "m", table=table, command="test", params=LIGHT)
    assert card["cv_metrics"]["grouped_by"] == "domain"
    assert card["training_data"]["domains"] == ["classic", "steppe_grassland", "wetland"]
    assert card["training_data"]["worlds_drawn"] == ["classic", "steppe_grassland+landsat", "wetland",
                                                     "wetland+30m+cloudy"]
    again = read_training_table(tmp_path / "m")
    assert (tmp_path / "m" / TABLE_FILE).is_file()
    pd.testing.assert_frame_equal(again[list(FEATURES)], table[list(FEATURES)].astype(float))
    assert list(domains_of(again)) == list(table.domain)
    assert sorted(set(worlds_of(again))) == ["classic", "steppe_grassland", "wetland"]
    without = fit_classifier(again[worlds_of(again) != "wetland"], params=LIGHT)
    assert without.card["training_domain"]["size_max"]  # novelty is known for the refitted model too
    assert domains_of(table.drop(columns="domain")).tolist() == ["labelled"] * len(table)


def test_the_training_scenes_report_their_progress() -> None:
    from gmsense.classify.train import synthetic_training_set

    calls: list[tuple[str, int, int]] = []
    table = synthetic_training_set([101], 2, progress=lambda scene, done, total: calls.append((scene, done, total)))
    assert [(done, total) for _, done, total in calls] == [(1, 2), (2, 2)]
    assert set(table["scene"]) <= {scene for scene, _, _ in calls}


def test_randomised_training_draws_each_seeds_world_of_every_biome() -> None:
    """``--domains randomised:...``: each seed's scene of a biome is that seed's random world of it, and
    the scenes and rows name the world drawn."""
    from gmsense.classify.train import randomised_worlds, synthetic_training_set, worlds_of
    from gmsense.sources.synthetic import randomised_domain

    worlds = randomised_worlds(["cropland_plain", "wetland"])
    assert worlds == ["randomised:cropland_plain", "randomised:wetland"]
    calls: list[str] = []
    table = synthetic_training_set([105, 106], 1, domains=worlds,
                                   progress=lambda scene, done, total: calls.append(scene))
    drawn = [randomised_domain(biome, seed).name for seed in (105, 106) for biome in ("cropland_plain", "wetland")]
    assert [scene.split("/")[0] for scene in calls] == drawn
    assert set(table.domain) <= set(drawn)
    assert set(worlds_of(table)) <= {"cropland_plain", "wetland"}
