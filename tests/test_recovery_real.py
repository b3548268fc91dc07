"""Recovery on real data: the 2005 British Columbia wildfire (Landsat annual composites 2002-2024)."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.features import geometry_mask

from gmsense.recovery import recovery_metrics, ring_mask, trajectory

NIR, SWIR2 = 3, 5  # band order in the composites: blue, green, red, nir, swir16, swir22


def _bc_wildfire(real_data: Path) -> tuple[list, dict]:
    folder = real_data / "specrec_bc06_wildfire"
    files = sorted((folder / "bap_30m_minmax_normalized").glob("*.tif"))
    stack = []
    for f in files:
        with rasterio.open(f) as src:
            stack.append(src.read().astype("float64"))
            transform, shape = src.transform, (src.height, src.width)
    cube = np.stack(stack)
    cube[cube == 0] = np.nan  # the package's no-data value
    nbr = (cube[:, NIR] - cube[:, SWIR2]) / (cube[:, NIR] + cube[:, SWIR2])
    times = np.array([f"{f.stem}-07-01" for f in files], dtype="datetime64[ns]")
    polygon = gpd.read_file(folder / "wildfire_516.gpkg").geometry.iloc[0]
    inside = geometry_mask([polygon], shape, transform, invert=True)
    ring = ring_mask(polygon, [polygon], shape, transform)
    # The whole record from 2002 on: a "detection" in 2003 makes the trajectory start in 2002.
    obs = trajectory(nbr, times, inside, ring, np.datetime64("2003-01-01"), "nbr")
    seasons = np.array([o.season for o in obs])
    metrics = recovery_metrics(seasons, np.array([o.relative for o in obs]), disturbance_season=2005,
                               reference_seasons=(2003, 2004), absolute=np.array([o.patch_value for o in obs]))
    return obs, metrics


@pytest.mark.realdata
def test_bc_wildfire_trajectory_drops_in_2006_and_recovers_partly(real_data: Path) -> None:
    obs, metrics = _bc_wildfire(real_data)
    rel = {o.season: o.relative for o in obs}
    assert min(rel, key=rel.get) == 2006, "the deepest drop against the ring is the year after the fire"
    assert rel[2006] < rel[2004] - 0.2
    assert rel[2012] > rel[2006], "regrowth under way"
    assert rel[2023] > rel[2012]
    assert metrics["trough_season"] == 2006
    assert metrics["magnitude"] == pytest.approx(0.30, abs=0.05)
    assert 0.6 < metrics["recovery_ratio"] < 1.0, "most, not all, of the loss regained by 2024"
    # 80 % of the loss is regained only at the very end of the record, if at all.
    assert metrics["y2r"] is None or metrics["y2r"] >= 15
    assert metrics["rri"] is not None
    assert 0 < metrics["rri"] < 0.6, "five years on, less than 60 % regained"
    assert metrics["slope"] > 0
