"""`gmsense scan --source local` on a GeoTIFF folder written with rasterio and on the real Romania cubes."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pytest
from shapely.geometry import box
from typer.testing import CliRunner

from gmsense.cli import app
from gmsense.config import Settings, configs_dir
from gmsense.geo.sites import read_sites, write_sites
from gmsense.sources.synthetic.io import write_scene
from gmsense.store import Store

runner = CliRunner()
ROMANIA_10M_BOUNDS = (5_271_983, 2_532_005, 5_272_983, 2_533_005)  # EPSG:3035, from the file's coordinates


def _scan(*args: object) -> tuple[int, str]:
    result = runner.invoke(app, ["scan", "--no-progress", *[str(a) for a in args]])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


@pytest.mark.slow
def test_scan_of_a_geotiff_folder_finds_the_planted_trenches(tmp_path: Path) -> None:
    site = next(s for s in read_sites(configs_dir() / "demo_sites.geojson") if s.site_id == "HLJ-EXP-001")
    folder = write_scene(site, Settings(), tmp_path / "scene")
    sites_file = write_sites([site], tmp_path / "site.gpkg")
    db = tmp_path / "local.db"
    code, output = _scan("--sites", sites_file, "--source", "local", "--imagery", folder, "--db", db)
    assert code == 0, output
    truth = gpd.read_file(folder / "truth.geojson").to_crs(site.crs)
    patches = gpd.GeoDataFrame(
        [{"klass": r.disturbance_class, "geometry": r.geometry_wkt} for r in Store(str(db)).patch_rows()],
        geometry=gpd.GeoSeries.from_wkt([r.geometry_wkt for r in Store(str(db)).patch_rows()], crs=4326),
    ).to_crs(site.crs)
    for _, trench in truth[truth.kind == "trench"].iterrows():
        assert patches.intersects(trench.geometry.buffer(15)).any(), f"trench {trench.event_id} missed"
    evidence = [r.metrics["evidence"] for r in Store(str(db)).patch_rows()]
    assert all(e["after_image"] == f"{e['after_date']}_SYNTH.tif" for e in evidence), "file names as image ids"
    assert all((folder / e["before_image"]).exists() for e in evidence)


def _romania_sites(tmp_path: Path, half_size_m: float = 300) -> Path:
    minx, miny, maxx, maxy = ROMANIA_10M_BOUNDS
    cx, cy = (minx + maxx) / 2, (miny + maxy) / 2
    frame = gpd.GeoDataFrame({"site_id": ["RO-1"], "licence_type": ["exploration"]},
                             geometry=[box(cx - half_size_m, cy - half_size_m, cx + half_size_m, cy + half_size_m)],
                             crs=3035)
    path = tmp_path / "romania.gpkg"
    frame.to_file(path)
    return path


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize("cube_name", ["sentinel2_cube_subset_romania_10m.nc", "sentinel2_cube_subset_romania_20m.nc"])
def test_real_romania_forest_cube(real_data: Path, tmp_path: Path, cube_name: str) -> None:
    imagery = real_data / "nrt_romania_s2" / cube_name
    db = tmp_path / "ro.db"
    code, output = _scan("--sites", _romania_sites(tmp_path), "--source", "local", "--imagery", imagery, "--db", db)
    assert code == 0, output
    store = Store(str(db))
    [unit] = store.scan(1)[1]
    assert unit.status == "done"
    assert unit.stats["n_dates"] == 140
    assert unit.stats["crs"] == "EPSG:3035"
    patches = store.patch_rows()
    imagery_area = (ROMANIA_10M_BOUNDS[2] - ROMANIA_10M_BOUNDS[0]) * (ROMANIA_10M_BOUNDS[3] - ROMANIA_10M_BOUNDS[1])
    disturbed = sum(p.area_m2 for p in patches)
    # Mostly stable forest: the patches (including a real 2017 disturbance in the north) cover
    # a small share of the 1 km2 the imagery covers.
    assert disturbed < 0.15 * imagery_area, f"{disturbed / 1e4:.1f} ha flagged"
    largest = max(patches, key=lambda p: p.area_m2)
    assert largest.first_detected.startswith("2017"), "the largest change is the known 2017 disturbance"


@pytest.mark.realdata
def test_licence_outside_the_real_imagery_fails_clearly(real_data: Path, tmp_path: Path) -> None:
    sites = read_sites(configs_dir() / "demo_sites.geojson")[:1]  # in Heilongjiang, far from Romania
    path = write_sites(sites, tmp_path / "far.geojson")
    imagery = real_data / "nrt_romania_s2" / "sentinel2_cube_subset_romania_10m.nc"
    code, output = _scan("--sites", path, "--source", "local", "--imagery", imagery, "--db", tmp_path / "x.db")
    assert code == 1, output  # every licence failed
    assert "HLJ-EXP-001" in output
    assert "does not cover" in output
    assert Store(str(tmp_path / "x.db")).patch_rows() == []


def test_corrupt_file_in_the_folder_stops_the_scan_before_anything_is_written(tmp_path: Path) -> None:
    site = read_sites(configs_dir() / "demo_sites.geojson")[2]
    settings = Settings.model_validate({"synthetic": {"start": "2021-05-01", "end": "2022-07-01"}})
    folder = write_scene(site, settings, tmp_path / "scene")
    (folder / "2022-06-30_BROKEN.tif").write_bytes(b"not a tiff at all" * 100)
    sites_file = write_sites([site], tmp_path / "site.geojson")
    db = tmp_path / "x.db"
    code, output = _scan("--sites", sites_file, "--source", "local", "--imagery", folder, "--db", db)
    assert code == 2, output
    assert "2022-06-30_BROKEN.tif" in output
    assert "Traceback" not in output
    assert not db.exists()


def test_all_cloudy_imagery_is_a_clear_licence_failure(tmp_path: Path) -> None:
    import rasterio

    site = read_sites(configs_dir() / "demo_sites.geojson")[2]
    settings = Settings.model_validate({"synthetic": {"start": "2021-05-01", "end": "2022-07-01"}})
    folder = write_scene(site, settings, tmp_path / "scene")
    for tif in folder.glob("*.tif"):
        with rasterio.open(tif, "r+") as dst:
            dst.write(dst.read(7) * 0 + 9, 7)  # SCL 9: cloud, high probability, everywhere
    sites_file = write_sites([site], tmp_path / "site.geojson")
    code, output = _scan("--sites", sites_file, "--source", "local", "--imagery", folder, "--db", tmp_path / "c.db")
    assert code == 1, output
    assert "cloudy" in output
    assert "HLJ-MIN-003" in output
