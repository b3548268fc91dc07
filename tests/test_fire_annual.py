"""A burn on annual composites, rescaled per image or not, is natural with agent fire; a clearing with
the same NDVI drop but no char is not (issue 15: the real BC wildfire's causes, on planted data)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from affine import Affine
from shapely.geometry import box

from gmsense.api import analyse
from gmsense.classify.trust import natural_agents, trusted_label
from gmsense.config import TrustSettings, load_settings
from gmsense.detect.agents import signatures
from gmsense.testutils import BANDS, SOIL, VEGETATION

SETTINGS = TrustSettings()
CHAR = np.array([0.03, 0.035, 0.035, 0.06, 0.09, 0.08])
YEARS = tuple(range(2000, 2011))


def _ndvi(spectrum: np.ndarray) -> float:
    return float((spectrum[3] - spectrum[2]) / (spectrum[3] + spectrum[2]))


def _burn_and_clearing() -> tuple[np.ndarray, np.ndarray]:
    """A burn (90 % char) and a clearing (canopy over bare soil) with the same NDVI."""
    burn = 0.1 * VEGETATION + 0.9 * CHAR
    shares = np.linspace(0, 1, 10_001)
    ndvis = np.array([_ndvi(s * VEGETATION + (1 - s) * SOIL) for s in shares])
    s = shares[np.argmin(np.abs(ndvis - _ndvi(burn)))]
    return burn, s * VEGETATION + (1 - s) * SOIL


def test_the_planted_burn_and_clearing_lose_the_same_ndvi() -> None:
    burn, clearing = _burn_and_clearing()
    assert _ndvi(burn) == pytest.approx(_ndvi(clearing), abs=1e-3)
    assert _ndvi(VEGETATION) - _ndvi(burn) > 0.3


def _series(before: np.ndarray, fire_year: np.ndarray, after: np.ndarray) -> dict[str, np.ndarray]:
    """One composite a year 2000-2010: ``before`` to 2004, ``fire_year`` in 2005, ``after`` from 2006."""
    rows = [before] * 5 + [fire_year] + [after] * 5
    return {b: np.array([r[k] for r in rows]) for k, b in enumerate(BANDS)}


def test_a_fire_after_its_years_composite_is_measured_on_the_next_one() -> None:
    """The fire year's composite was made before the fire (a best-available-pixel date): the burn
    shows in the next composite, where Key and Benson's extended assessment reads it."""
    times = np.array([f"{y}-07-15" for y in YEARS], dtype="datetime64[ns]")
    burn, _ = _burn_and_clearing()
    dry = 0.8 * VEGETATION + 0.2 * SOIL  # the fire year's composite: a little drier, not burnt yet
    series = _series(VEGETATION, dry, burn)
    initial = signatures(series, times, np.datetime64("2005-07-15"))
    assert initial["sig_dnbr"] < SETTINGS.fire_min_dnbr
    extended = signatures(series, times, np.datetime64("2005-07-15"), extended=True)
    assert extended["sig_fire_extended"] == 1.0
    assert extended["sig_dnbr"] >= 0.5
    assert extended["sig_nir_ratio"] < SETTINGS.fire_max_nir_ratio
    metrics = {**extended, "area_px_m2": 30_000.0, "solidity": 0.7}
    label = trusted_label("natural", 0.8, metrics, SETTINGS, probabilities={"natural": 0.8})
    assert (label.disturbance_class, label.natural_agent) == ("natural", "fire")
    # The same year read without the next composite: no agent explains the patch.
    metrics = {**initial, "nir_ratio": float(dry[3] / VEGETATION[3]), "area_px_m2": 30_000.0, "solidity": 0.7}
    assert trusted_label("natural", 0.8, metrics, SETTINGS).disturbance_class == "uncertain"


def _annual_cube(rescaled: bool) -> xr.Dataset:
    """Forest at 30 m, one composite a year 2000-2010; from 2006 a 6 x 6 px burn and, apart, a
    6 x 6 px clearing of the same NDVI; a bright rock and a dark lake keep each image's range."""
    rng = np.random.default_rng(3)
    ny = nx = 24
    burn, clearing = _burn_and_clearing()
    refl = np.broadcast_to(VEGETATION[None, :, None, None], (len(YEARS), 6, ny, nx)).copy()
    refl *= 1 + rng.normal(0, 0.01, refl.shape)
    after = np.array(YEARS) >= 2006
    refl[np.ix_(after, range(6), range(4, 10), range(4, 10))] = burn[None, :, None, None]
    refl[np.ix_(after, range(6), range(14, 20), range(14, 20))] = clearing[None, :, None, None]
    refl[:, :, 22, 22] = [0.30, 0.35, 0.40, 0.45, 0.50, 0.45]  # rock
    refl[:, :, 1, 22] = [0.02, 0.03, 0.01, 0.005, 0.003, 0.002]  # lake
    if rescaled:  # every band of every image spans 0..1, as min-max rescaled composites do
        low, high = refl.min(axis=(2, 3), keepdims=True), refl.max(axis=(2, 3), keepdims=True)
        refl = (refl - low) / (high - low)
    times = np.array([f"{y}-07-15" for y in YEARS], dtype="datetime64[ns]")
    xs = 500_000.0 + (np.arange(nx) + 0.5) * 30
    ys = 6_000_000.0 - (np.arange(ny) + 0.5) * 30
    data = {b: (("time", "y", "x"), refl[:, k].astype("float32")) for k, b in enumerate(BANDS)}
    data["clear"] = (("time", "y", "x"), np.ones((len(YEARS), ny, nx), bool))
    attrs = {"source": "test", "platform": "test", "resolution_m": 30.0, "composite": "annual"}
    if rescaled:
        attrs["rescaled_per_image"] = 1
    cube = xr.Dataset(data, coords={"time": times, "y": ys, "x": xs}, attrs=attrs)
    return cube.rio.write_crs("EPSG:32610").rio.write_transform(Affine(30.0, 0, 500_000.0, 0, -30.0, 6_000_000.0))


@pytest.mark.parametrize("rescaled", [False, True], ids=["reflectance", "rescaled_per_image"])
def test_a_planted_burn_on_annual_composites_is_fire_and_a_clearing_is_not(rescaled: bool) -> None:
    cube = _annual_cube(rescaled)
    settings = load_settings()
    settings = settings.model_copy(update={"sites": settings.sites.model_copy(update={"buffer_m": 60.0})})
    licence = box(500_060.0, 6_000_000.0 - 660.0, 500_660.0, 6_000_000.0 - 60.0)
    patches = analyse(cube, licence, settings=settings, model=None, site_id="annual").patches
    burn_area = box(500_000.0 + 4 * 30, 6_000_000.0 - 10 * 30, 500_000.0 + 10 * 30, 6_000_000.0 - 4 * 30)
    clearing_area = box(500_000.0 + 14 * 30, 6_000_000.0 - 20 * 30, 500_000.0 + 20 * 30, 6_000_000.0 - 14 * 30)
    burns = [m for g, m in zip(patches.geometry, patches["metrics"], strict=True) if g.intersects(burn_area)]
    clearings = [m for g, m in zip(patches.geometry, patches["metrics"], strict=True) if g.intersects(clearing_area)]
    assert burns, "the burn is detected"
    assert clearings, "the clearing is detected"
    for metrics in burns:
        assert ("sig_nir_rank_after" in metrics) == rescaled, "ranks are measured on rescaled imagery only"
        found, _ = natural_agents(metrics, SETTINGS)
        assert found, metrics
        assert found[0].agent == "fire", metrics
        assert trusted_label("natural", 0.9, metrics, SETTINGS).natural_agent == "fire"
    for metrics in clearings:
        found, _ = natural_agents(metrics, SETTINGS)
        assert "fire" not in [a.agent for a in found], metrics
        assert trusted_label("natural", 0.9, metrics, SETTINGS).natural_agent != "fire"
    if rescaled:  # what the fire test reads there: the burn is dark in the NIR, the clearing bright in the visible
        assert max(m["sig_nir_rank_after"] for m in burns) <= SETTINGS.fire_max_nir_rank
        assert min(m["sig_visible_rank_after"] for m in clearings) > SETTINGS.fire_max_visible_rank
    # A classifier's work on rescaled imagery reads reflectance that is not there: the burn a model calls
    # a clearing is the fire its ranks show, the clearing stays flagged as uncertain; on reflectance the
    # model's label stands.
    for metrics in burns:
        label = trusted_label("clearing", 0.95, metrics, SETTINGS, probabilities={"clearing": 0.95})
        assert (label.disturbance_class, label.natural_agent) == (("natural", "fire") if rescaled
                                                                  else ("clearing", None))
        if rescaled:
            assert "rescaled per image" in label.reason
    for metrics in clearings:
        label = trusted_label("clearing", 0.95, metrics, SETTINGS, probabilities={"clearing": 0.95})
        assert label.disturbance_class == ("uncertain" if rescaled else "clearing")
