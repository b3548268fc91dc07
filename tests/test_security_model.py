"""Model files are untrusted input: a crafted ``model.skops`` must be refused before anything in
it runs, through ``load_model`` and through the CLI, while real models keep loading."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest
import skops.io as sio

from gmsense.classify.model import (
    ALLOWED_MODEL_TYPES,
    MODEL_FILE,
    MODEL_WITHOUT_SWIR_FILE,
    load_model,
)
from gmsense.config import configs_dir
from gmsense.errors import InputError
from gmsense.testutils import run_cli

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "default"
DANGEROUS = "numpy.testing._private.utils.runstring"  # exec(string, namespace), under numpy.


def _payload_node(marker: Path) -> dict[str, Any]:
    """A skops node that calls ``runstring(code, {})`` while loading; ``code`` creates
    ``marker``."""
    sio.dump((f"open({str(marker)!r}, 'w').write('owned')", {}), marker.with_suffix(".args.skops"))
    with zipfile.ZipFile(marker.with_suffix(".args.skops")) as archive:
        arguments = json.loads(archive.read("schema.json"))
    for key in ("protocol", "_skops_version"):
        arguments.pop(key)
    module, function = DANGEROUS.rsplit(".", 1)
    return {
        "__class__": function,
        "__module__": module,
        "__loader__": "ConstructorFromReduceNode",
        "content": arguments,
        "__id__": 1,
    }


def _crafted_model_folder(tmp_path: Path, marker: Path) -> Path:
    """The shipped model folder with one attribute of its estimator replaced by the payload."""
    folder = tmp_path / "crafted"
    shutil.copytree(SHIPPED, folder)
    with zipfile.ZipFile(SHIPPED / MODEL_FILE) as source:
        members = {name: source.read(name) for name in source.namelist()}
    schema = json.loads(members["schema.json"])
    attributes = schema["content"]["content"]
    attributes[next(iter(attributes))] = _payload_node(marker)
    members["schema.json"] = json.dumps(schema).encode()
    with zipfile.ZipFile(folder / MODEL_FILE, "w") as target:
        for name, data in members.items():
            target.writestr(name, data)
    return folder


def test_the_payload_is_real_skops_runs_it_when_told_to_trust_it(tmp_path: Path) -> None:
    """Guards the other tests: the crafted file does run code when its types are trusted."""
    marker = tmp_path / "ran-with-trust"
    folder = _crafted_model_folder(tmp_path, marker)
    untrusted = sio.get_untrusted_types(file=folder / MODEL_FILE)
    assert DANGEROUS in untrusted
    sio.load(folder / MODEL_FILE, trusted=untrusted)
    assert marker.read_text() == "owned"


def test_a_crafted_model_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    folder = _crafted_model_folder(tmp_path, marker)
    with pytest.raises(InputError, match="will not load") as refused:
        load_model(folder)
    assert DANGEROUS in str(refused.value)
    assert not marker.exists()


def test_a_crafted_model_without_swir_file_is_refused_too(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    folder = _crafted_model_folder(tmp_path, marker)
    (folder / MODEL_WITHOUT_SWIR_FILE).unlink()
    shutil.move(folder / MODEL_FILE, folder / MODEL_WITHOUT_SWIR_FILE)
    shutil.copy(SHIPPED / MODEL_FILE, folder / MODEL_FILE)
    with pytest.raises(InputError, match=DANGEROUS.replace(".", r"\.")):
        load_model(folder)
    assert not marker.exists()


def test_scan_and_evaluate_refuse_a_crafted_model_with_exit_code_2(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    folder = _crafted_model_folder(tmp_path, marker)
    code, output = run_cli(
        "scan",
        "--sites",
        configs_dir() / "demo_sites.geojson",
        "--model",
        folder,
        "--db",
        tmp_path / "scan.db",
        "--no-progress",
    )
    assert code == 2, output
    assert "will not load" in output
    assert "runstring" in output
    assert "Traceback" not in output
    code, output = run_cli("evaluate", "--model", folder, "--synthetic-seeds", "1")
    assert code == 2, output
    assert "will not load" in output
    assert not marker.exists()


def test_a_corrupt_model_file_is_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "corrupt"
    shutil.copytree(SHIPPED, folder)
    (folder / MODEL_FILE).write_bytes(b"not a zip file")
    with pytest.raises(InputError, match="cannot be read"):
        load_model(folder)


def test_the_shipped_model_loads_and_needs_only_allowed_types() -> None:
    for name in (MODEL_FILE, MODEL_WITHOUT_SWIR_FILE):
        assert set(sio.get_untrusted_types(file=SHIPPED / name)) <= ALLOWED_MODEL_TYPES
    model = load_model(SHIPPED)
    [(klass, confidence)] = model.predict(
        [{"elongation": 14.0, "swir1_ratio": 1.4, "area_px_m2": 2000.0}]
    )
    assert klass in model.card["classes"]
    assert 0 < confidence <= 1
    assert model.without_swir is not None


def test_the_allow_list_names_exact_types_not_prefixes() -> None:
    assert all(name.count(".") >= 1 and not name.endswith(".") for name in ALLOWED_MODEL_TYPES)
    assert DANGEROUS not in ALLOWED_MODEL_TYPES
    assert not any(
        name.startswith(("numpy.testing", "numpy.lib", "builtins")) for name in ALLOWED_MODEL_TYPES
    )
