"""The synthetic world: determinism, truth agrees with imagery, the GeoTIFF layout round-trips."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.features import geometry_mask

from gmsense import cube as cubeops
from gmsense.config import Settings, configs_dir
from gmsense.detect.patches import grid_transform
from gmsense.sites import read_sites
from gmsense.sources.synthetic import ANTHROPOGENIC, synthesize
from gmsense.sources.synthetic_io import write_scene

SETTINGS = Settings()
SITES = {s.site_id: s for s in read_sites(configs_dir() / "demo_sites.geojson")}


def _scene(site_id: str, seed: int = 0):
    site = SITES[site_id]
    return synthesize(site, site.buffered(500), SETTINGS.synthetic, seed=seed)


def test_same_seed_same_scene_other_seed_other_scene() -> None:
    a, truth_a = _scene("HLJ-EXP-001")
    b, truth_b = _scene("HLJ-EXP-001")
    _c, truth_c = _scene("HLJ-EXP-001", seed=1)
    assert a.identical(b)
    assert truth_a.equals(truth_b)
    assert not truth_a.geometry.geom_equals(truth_c.geometry).all()


def test_cube_contract() -> None:
    cube, _ = _scene("HLJ-MIN-003")
    assert cube["red"].dims == ("time", "y", "x")
    assert all(cube[b].dtype == np.float32 for b in ("blue", "green", "red", "nir", "swir1", "swir2"))
    assert cube["clear"].dtype == bool
    assert cube.rio.crs.to_epsg() == 32652
    assert np.all(np.diff(cube["time"].values) > np.timedelta64(0))
    assert 0.5 < float(cube["clear"].mean()) < 1.0, "some clouds, mostly clear"


def test_truth_footprints_show_index_drops() -> None:
    cube, truth = _scene("HLJ-EXP-001")
    assert set(truth.disturbance_class) >= {"trench", "pad", "natural"}
    ndvi = cubeops.index(cubeops.masked(cube), "ndvi")
    transform = grid_transform(cube)
    shape = (cube.sizes["y"], cube.sizes["x"])
    for _, event in truth.iterrows():
        inside = geometry_mask([event.geometry], shape, transform, invert=True)
        if inside.sum() == 0:
            continue
        start = np.datetime64(event.start)
        year = int(event.start[:4])
        before = ndvi.sel(time=slice(f"{year - 1}-07-01", f"{year - 1}-08-31")).values[:, inside]
        after = ndvi.sel(time=slice(str(start + np.timedelta64(10, "D")), f"{year}-08-31")).values[:, inside]
        if not np.isfinite(after).any():
            continue
        assert np.nanmedian(before) - np.nanmedian(after) > 0.1, f"{event.event_id} ({event.kind}) shows no drop"


def test_events_inside_and_outside_by_scenario() -> None:
    _, truth = _scene("HLJ-EXP-002")
    human = truth[truth.disturbance_class.isin(ANTHROPOGENIC)]
    assert (~human.inside_licence).sum() >= 2, "the boundary scenario puts damage across and outside the line"
    _, quiet = _scene("HLJ-MIN-003")
    assert len(quiet) == 0


def test_unknown_scenario_is_an_error() -> None:
    site = SITES["HLJ-MIN-003"]
    with pytest.raises(ValueError, match="unknown synthetic scenario"):
        synthesize(site, site.buffered(500), SETTINGS.synthetic, scenario="volcano")


def test_written_scene_is_a_local_geotiff_folder(tmp_path: Path) -> None:
    folder = write_scene(SITES["HLJ-EXP-001"], SETTINGS, tmp_path / "scene")
    files = sorted(folder.glob("*.tif"))
    cube, truth = _scene("HLJ-EXP-001")
    assert len(files) == cube.sizes["time"]
    with rasterio.open(files[3]) as src:
        assert src.descriptions == ("B02", "B03", "B04", "B08", "B11", "B12", "SCL")
        assert src.scales[0] == pytest.approx(1e-4)
        red = src.read(3) * src.scales[2]
    np.testing.assert_allclose(red, cube["red"].values[3], atol=6e-5)
    written_truth = gpd.read_file(folder / "truth.geojson")
    assert len(written_truth) == len(truth)
    assert written_truth.crs.to_epsg() == 4326


def test_every_confounder_occurs_across_the_benchmark_seeds() -> None:
    from gmsense.sources.synthetic import _rng_for, acquisition_dates, plan_events
    from gmsense.train import random_licences

    kinds: set[str] = set()
    for seed in range(1, 9):
        for site in random_licences(seed, 3):
            rng = _rng_for(site.site_id, seed)
            acquisition_dates(SETTINGS.synthetic, rng)  # the same draws synthesize makes first
            kinds |= {e.kind for e in plan_events(site, site.buffered(500), SETTINGS.synthetic, "mixed", rng)}
    assert kinds >= {"trench", "pad", "track", "clearing", "fire", "windthrow", "flood"}


def test_fields_misregistration_and_an_imperfect_cloud_mask() -> None:
    from gmsense.train import random_licences

    site = random_licences(2, 1)[0]
    cube, truth = synthesize(site, site.buffered(500), SETTINGS.synthetic, seed=2)
    assert (truth.kind == "harvest").any(), "crop fields with their harvest are in the truth"
    clear = cube["clear"].values
    scl = cube["scl"].values
    blue = cube["blue"].values
    from scipy import ndimage

    rims = [ndimage.binary_dilation(scl[t] == 9, iterations=2) & (scl[t] != 9) for t in range(scl.shape[0])]
    rim = np.stack(rims)
    assert clear[rim].mean() > 0.5, "cloud edges pass the scene classification as clear"
    median_clear_blue = np.median(blue[clear & ~rim])
    assert np.median(blue[rim & clear]) > median_clear_blue + 0.02, "and they are hazy"
