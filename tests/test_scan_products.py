"""`gmsense scan --source local` on imagery as delivered: a synthetic scene re-packaged as Sentinel-2 SAFE
products (folders and zips, baseline 04.00 offsets), Landsat C2 L2 products (folders and tars) and a STAC
catalogue (tests/packaging.py); the planted trenches are found in each, as in the GeoTIFF folder."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pytest
from typer.testing import CliRunner

from gmsense.cli import app
from gmsense.config import Settings, configs_dir
from gmsense.geo.sites import read_sites, write_sites
from gmsense.sources.synthetic.io import write_scene
from gmsense.store import Store
from tests.product_factory import repackage_scene

runner = CliRunner()


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The synthetic scene of HLJ-EXP-001 (dated GeoTIFFs + truth) and the licence file."""
    tmp = tmp_path_factory.mktemp("scene")
    site = next(s for s in read_sites(configs_dir() / "demo_sites.geojson") if s.site_id == "HLJ-EXP-001")
    return write_scene(site, Settings(), tmp / "scene"), write_sites([site], tmp / "site.gpkg")


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["safe", "landsat", "stac"])
def test_scan_of_delivered_products_finds_the_trenches(scene: tuple[Path, Path], tmp_path: Path,
                                                       layout: str) -> None:
    folder, sites_file = scene
    imagery = repackage_scene(folder, tmp_path / layout, layout)
    db = tmp_path / "scan.db"
    args = ["scan", "--no-progress", "--sites", sites_file, "--source", "local", "--imagery", imagery, "--db", db]
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    store = Store(str(db))
    [unit] = store.scan(1)[1]
    assert unit.status == "done"
    site_crs = read_sites(sites_file)[0].crs
    truth = gpd.read_file(folder / "truth.geojson").to_crs(site_crs)
    rows = store.patch_rows()
    patches = gpd.GeoSeries.from_wkt([r.geometry_wkt for r in rows], crs=4326).to_crs(site_crs)
    trenches = truth[truth.kind == "trench"]
    found = sum(bool(patches.intersects(geom.buffer(15)).any()) for geom in trenches.geometry)
    assert found == len(trenches), f"{layout}: {found} of {len(trenches)} trenches found"
    evidence = [r.metrics["evidence"] for r in rows]
    assert evidence, "patches carry their evidence"


def test_scan_of_a_bad_product_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    import numpy as np
    import pyproj
    from affine import Affine

    from tests.product_factory import write_safe

    utm, t10 = pyproj.CRS.from_epsg(32652), Affine(10.0, 0.0, 424_000.0, 0.0, -10.0, 5_205_800.0)
    dn10 = {b: np.full((8, 8), 2000, "uint16") for b in ("B02", "B03", "B04", "B08")}
    dn20 = {b: np.full((4, 4), 2000, "uint16") for b in ("B11", "B12")}
    write_safe(tmp_path / "imagery", "2021-06-14", dn10, dn20, np.full((4, 4), 4, "uint8"), utm, t10, omit=("SCL",))
    sites = configs_dir() / "demo_sites.geojson"
    db = tmp_path / "scan.db"
    base = ["scan", "--no-progress", "--sites", str(sites), "--source", "local", "--imagery", str(tmp_path / "imagery"),
            "--db", str(db)]
    result = runner.invoke(app, base)
    assert result.exit_code == 2, result.output
    assert "no scene classification" in " ".join(result.output.split())
    result = runner.invoke(app, [*base, "--layout", "stac"])
    assert result.exit_code == 2, result.output
    assert "as the layout 'stac' says" in " ".join(result.output.split())
    assert not db.exists()
