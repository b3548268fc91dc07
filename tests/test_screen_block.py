"""The screen across pixels (gmsense.detect._screen_block) gives, bit for bit, what the per-pixel
screen kernel gives: the same candidates and the same weak runs, on any block of pixels."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gmsense.config import DetectSettings
from gmsense.detect._screen_block import LANES
from gmsense.detect.change import _screen


def _anomaly(rng: np.random.Generator, n_pix: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T, P) float32 anomalies over 3-4 seasons: noise, a seasonal shape, cloud dips, steps, NaN holes,
    and some pixels seen on very few dates (unstable fits) or never."""
    years = int(rng.integers(3, 5))
    per_year = int(rng.integers(6, 20))
    doy = np.concatenate([np.sort(rng.uniform(121, 273, per_year)) for _ in range(years)])
    year = np.repeat(np.arange(2018, 2018 + years), per_year)
    n_time = doy.size
    shape = rng.normal(0, 0.15, (1, n_pix)) * np.cos(2 * np.pi * doy / 365.25)[:, None]
    values = rng.normal(0, rng.choice([0.005, 0.03, 0.08]), (n_time, n_pix)) + shape
    values += np.where(rng.random((n_time, n_pix)) < 0.05, -rng.uniform(0, 0.6, (n_time, n_pix)), 0)
    step = rng.random(n_pix) < 0.3
    start = rng.integers(0, n_time, n_pix)
    values -= (step & (np.arange(n_time)[:, None] >= start)) * rng.uniform(0.02, 0.4, n_pix)
    values[rng.random((n_time, n_pix)) < rng.uniform(0, 0.6)] = np.nan
    sparse = rng.random(n_pix) < 0.05
    values[:, sparse] = np.where(rng.random((n_time, int(sparse.sum()))) < 0.15, values[:, sparse], np.nan)
    values[:, rng.random(n_pix) < 0.02] = np.nan
    return np.ascontiguousarray(values, dtype="float32"), doy, year


def _same(anomaly: np.ndarray, doy: np.ndarray, year: np.ndarray, detect: DetectSettings) -> None:
    block = _screen(anomaly, doy, year, detect, weak=True)
    reference = _screen(anomaly, doy, year, detect, weak=True, per_pixel=True)
    np.testing.assert_array_equal(block[0], reference[0])
    np.testing.assert_array_equal(block[1], reference[1])  # NaN where NaN, every other bit equal


@pytest.mark.parametrize("seed", range(12))
def test_block_screen_equals_the_per_pixel_screen(seed: int) -> None:
    rng = np.random.default_rng(seed)
    detect = DetectSettings(confirm_obs=int(rng.integers(1, 4)), min_baseline_obs=int(rng.integers(2, 8)),
                            sigma_floor=float(rng.choice([0.01, 0.04])), baseline_seasons=int(rng.integers(1, 4)),
                            line_confirm_obs=int(rng.integers(2, 4)), min_persistence=float(rng.choice([0.0, 0.6])))
    anomaly, doy, year = _anomaly(rng, n_pix=LANES * 2 + 37)  # two full lane blocks and a partial one
    _same(anomaly, doy, year, detect)
    candidate, weak = _screen(anomaly, doy, year, detect, weak=True)
    assert candidate.any(), "the case screens some pixels in"
    assert not candidate.all(), "and some out"
    assert np.isfinite(weak[:, 2]).any(), "some weak runs are compared"


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_pix=st.integers(1, LANES + 3))
def test_block_screen_equals_the_per_pixel_screen_on_any_width(seed: int, n_pix: int) -> None:
    anomaly, doy, year = _anomaly(np.random.default_rng(seed), n_pix)
    _same(anomaly, doy, year, DetectSettings())


def test_a_pixel_screens_the_same_alone_and_among_others() -> None:
    anomaly, doy, year = _anomaly(np.random.default_rng(5), n_pix=LANES + 10)
    candidate, weak = _screen(anomaly, doy, year, DetectSettings(), weak=True)
    for p in (0, 3, LANES - 1, LANES, LANES + 9):
        alone = _screen(np.ascontiguousarray(anomaly[:, [p]]), doy, year, DetectSettings(), weak=True)
        assert alone[0][0] == candidate[p]
        np.testing.assert_array_equal(alone[1][0], weak[p])
