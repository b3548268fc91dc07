"""The researcher's documentation works: the tutorial notebook runs end to end on the real
Sentinel-2 cube, and the API reference builds from the docstrings with warnings as errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from jupyter_client.manager import KernelManager

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
NOTEBOOK = DOCS / "tutorial.ipynb"
KERNEL = "gmsense-docs"


def _kernel_manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> KernelManager:
    """A kernel of this interpreter (the .venv's python), from a kernel spec in ``tmp_path``:
    nothing is registered or written outside it (connection files, IPython profile)."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec = tmp_path / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "gmsense docs", "language": "python"}), encoding="utf-8")
    for variable, folder in (("JUPYTER_RUNTIME_DIR", "runtime"), ("IPYTHONDIR", "ipython"),
                             ("JUPYTER_DATA_DIR", "data"), ("JUPYTER_CONFIG_DIR", "config")):
        (tmp_path / folder).mkdir()
        monkeypatch.setenv(variable, str(tmp_path / folder))
    specs = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")])
    return KernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)


def _outputs(nb: Any) -> tuple[str, list[str], int]:
    """Everything the notebook printed, its rich (HTML) outputs, and how many figures it drew."""
    text, html, figures = [], [], 0
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output["output_type"] == "stream" and output["name"] == "stdout":
                text.append(output["text"])
            data = output.get("data", {})
            text.append(data.get("text/plain", ""))
            html.append(data.get("text/html", ""))
            figures += "image/png" in data
    return "\n".join(text), html, figures


def test_the_tutorial_is_stored_without_outputs() -> None:
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    assert all(not c.outputs and c.execution_count is None for c in code), \
        "clear the outputs of docs/tutorial.ipynb before committing it"


@pytest.mark.slow
@pytest.mark.realdata
def test_the_tutorial_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Open the real Romania cube, draw a licence, analyse it, plot, label, retrain, compare:
    every cell runs without an error and the key results are there."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, km=_kernel_manager(tmp_path, monkeypatch), timeout=300,
                            resources={"metadata": {"path": str(DOCS)}})
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails

    errors = [o for c in nb.cells for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors
    text, html, figures = _outputs(nb)
    found = re.search(r"(\d+) patches on licence RO-TUTORIAL", text)
    assert found, text[:2000]
    n_patches = int(found.group(1))
    assert n_patches > 0
    assert re.search(r"trained on \d+ patches from \d+ scenes", text)
    agreement = re.search(r"class agreement between the default and the tutorial model: (\d+)% of (\d+) patches",
                          text)
    assert agreement, text[-2000:]
    assert int(agreement.group(2)) == n_patches
    assert 0 <= int(agreement.group(1)) <= 100
    # the agreement table: default model's classes by the tutorial model's, with margins
    assert any("tutorial model" in h and "default model" in h and "All" in h for h in html)
    assert figures >= 3  # the licence on NDVI, the patches on NDVI, a patch's trajectory


@pytest.mark.slow
def test_the_api_reference_builds_with_warnings_as_errors(tmp_path: Path) -> None:
    """``mkdocs build --strict``: a docstring griffe cannot parse, a broken link or a page left
    out of the nav fails the build."""
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(ROOT / "mkdocs.yml"), "--site-dir", str(site)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "WARNING" not in output, output
    api = (site / "api.html").read_text(encoding="utf-8")
    for name in ("gmsense.analyse", "gmsense.open_imagery", "gmsense.load_model", "gmsense.Result",
                 "gmsense.cube.contract", "validate_cube", "gmsense.classify.model", "PatchClassifier",
                 "gmsense.classify.train", "TrainingParams", "synthetic_training_set", "gmsense.geo.sites",
                 "read_sites"):
        assert name in api, name
    assert ":func:" not in api  # reStructuredText roles are rendered, not shown
    for page in ("index.html", "tutorial.html", "recovery.html", "earthengine.html", "samples/index.html",
                 "tutorial.ipynb"):
        assert (site / page).is_file(), page
