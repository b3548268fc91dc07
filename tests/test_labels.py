"""Retraining from people's labels: reviewers' decisions (``labels export``) and a researcher's
polygons over local imagery, into ``gmsense train`` with scene-grouped validation and a model card."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pytest

from gmsense.classify.labels import polygon_training_rows, reviewed_training_rows
from gmsense.classify.model import FEATURES, load_model
from gmsense.config import configs_dir
from gmsense.review import auth, service
from gmsense.store import Store
from gmsense.testutils import run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic scene of the demo licences as GeoTIFF folders with truth.geojson."""
    out = tmp_path_factory.mktemp("labels-scene")
    code, output = run_cli("synth", "--sites", configs_dir() / "demo_sites.geojson", "--out", out, "--seed", "3")
    assert code == 0, output
    return out


@pytest.fixture(scope="module")
def reviewed(demo_folder: Path) -> tuple[Store, Path]:
    """The demo's store (this module's copy) with every patch flag decided, and its labels export."""
    out = demo_folder
    store = Store(str(out / "gmsense.db"))
    user = auth.add_user(store, "rita", "reviewer-password-1", "reviewer")
    items = [f for f in service.queue(store, page_size=100).items if f["patch_id"]]
    for k, flag in enumerate(items):
        if k % 3 == 0:
            service.decide(store, flag["id"], user, "dismiss", "natural_change", "fallen trees")
        else:
            service.decide(store, flag["id"], user, "confirm", "violation", "spoil visible")
    path = out / "labels.gpkg"
    code, output = run_cli("labels", "export", "--out", path, "--db", store.url)
    assert code == 0, output
    return store, path


def test_labels_export_carries_the_decisions_and_the_features(reviewed: tuple[Store, Path]) -> None:
    store, path = reviewed
    frame = gpd.read_file(path)
    decided = service.labels(store)
    assert len(frame) == len(decided) > 0
    assert set(FEATURES) <= set(frame.columns)
    natural = frame[frame["reason"] == "natural_change"]
    assert (natural["disturbance_class"] == "natural").all()
    confirmed = frame[frame["decision"] == "confirmed"]
    assert (confirmed["disturbance_class"] == confirmed["detected_class"]).all()
    rows = reviewed_training_rows(path)
    assert len(rows) == len(frame)
    assert rows["scene"].str.startswith("review:").all()
    assert rows[list(FEATURES)].notna().to_numpy().mean() > 0.8


def test_polygon_labels_over_local_imagery_label_the_proposed_patches(scene: Path) -> None:
    truth = scene / "HLJ-EXP-001" / "truth.geojson"
    rows = polygon_training_rows(truth, scene / "HLJ-EXP-001")
    assert len(rows) > 0
    assert set(rows["label"]) <= {"trench", "pad", "track", "clearing", "natural"}
    human = set(gpd.read_file(truth).query("disturbance_class != 'natural'")["disturbance_class"])
    assert set(rows["label"]) & human  # the planted works are among the labelled patches
    everything = polygon_training_rows(truth, scene / "HLJ-EXP-001", unlabelled="natural")
    assert len(everything) >= len(rows)


def test_train_from_reviewed_and_polygon_labels_writes_a_model_card(
        reviewed: tuple[Store, Path], scene: Path, tmp_path: Path) -> None:
    _, labels = reviewed
    code, output = run_cli("train", "--name", "people", "--models-dir", tmp_path, "--labels", labels,
                           "--labels", scene / "HLJ-EXP-001" / "truth.geojson", "--imagery", scene / "HLJ-EXP-001")
    assert code == 0, output
    card = json.loads((tmp_path / "people" / "model_card.json").read_text())
    sources = [s["source"] for s in card["training_data"]["sources"]]
    assert any("reviewers' decisions" in s for s in sources)
    assert any("researcher polygons" in s for s in sources)
    assert card["cv_metrics"]["grouped_by"] == "scene"
    assert card["training_data"]["scenes"] >= 2
    model = load_model(tmp_path / "people")
    assert model.predict([dict.fromkeys(FEATURES, 1.0)])[0][0] in card["classes"]


def test_bad_labels_are_refused_with_a_message(scene: Path, tmp_path: Path) -> None:
    truth = scene / "HLJ-EXP-001" / "truth.geojson"
    code, output = run_cli("train", "--name", "x", "--models-dir", tmp_path, "--labels", truth)
    assert code == 2
    assert "--imagery" in output
    wrong = gpd.read_file(truth)
    wrong.loc[0, "disturbance_class"] = "volcano"
    bad = tmp_path / "bad.geojson"
    wrong.to_file(bad)
    code, output = run_cli("train", "--name", "x", "--models-dir", tmp_path, "--labels", bad, "--imagery",
                           scene / "HLJ-EXP-001")
    assert code == 2
    assert "volcano" in output
    code, output = run_cli("train", "--name", "x", "--models-dir", tmp_path)
    assert code == 2
    assert "--synthetic-seeds" in output
    elsewhere = scene / "HLJ-EXP-002" / "truth.geojson"
    code, output = run_cli("train", "--name", "x", "--models-dir", tmp_path, "--labels", elsewhere, "--imagery",
                           scene / "HLJ-EXP-001")
    assert code == 2
    assert "does not cover" in output
    assert not (tmp_path / "x").exists()
