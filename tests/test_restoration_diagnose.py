"""The restoration diagnosis's counterfactual accounting (scripts/diagnose_restoration.py --expected-sd): a
polygon's restored share averaged over a lasting error of its ratio, against the rule's hard share."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest

from gmsense.config import RestorationSettings
from gmsense.restoration import run as restoration_run
from gmsense.restoration.status import classify, restored_shares

S = RestorationSettings()
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "diagnose_restoration.py"


@pytest.fixture(scope="module")
def diagnose():
    spec = importlib.util.spec_from_file_location("diagnose_restoration", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def hovering(level: float, pixels: int = 30, years: int = 12) -> tuple[np.ndarray, list[str | None]]:
    """A one-part polygon damaged in its first year, greening over three years, then at ``level``."""
    ramp = [0.05, 0.3, 0.6] + [level] * (years - 3)
    rng = np.random.default_rng(0)
    pixel_ratio = np.array(ramp)[:, None] + rng.normal(0, 0.01, (years, pixels))
    pixel_ratio -= pixel_ratio.mean(axis=1, keepdims=True) - np.array(ramp)[:, None]  # the mean is the level
    return pixel_ratio, classify(pixel_ratio.mean(axis=1), S).statuses


def test_without_an_error_the_expected_share_is_the_rules_share(diagnose):
    pixel_ratio, statuses = hovering(0.79)
    np.testing.assert_array_equal(diagnose.expected_shares(pixel_ratio, statuses, S, sd=0.0),
                                  restored_shares(pixel_ratio, statuses, S))


@pytest.mark.parametrize("level", [0.79, 0.81])
def test_a_polygon_at_the_threshold_counts_the_probability_that_it_is_restored(diagnose, level):
    pixel_ratio, statuses = hovering(level)
    hard = restored_shares(pixel_ratio, statuses, S)[-1]
    expected = diagnose.expected_shares(pixel_ratio, statuses, S, sd=0.02)[-1]
    assert hard == (1.0 if level >= S.restored_ratio else 0.0)
    # restored when the true cover (the ratio less the error) reaches 0.8: P(error <= level - 0.8)
    assert expected == pytest.approx(NormalDist(0, 0.02).cdf(level - S.restored_ratio), abs=0.03)
    assert 0.2 < expected < 0.8


@pytest.mark.parametrize(("level", "share"), [(0.97, 1.0), (0.3, 0.0)])
def test_a_polygon_far_from_the_threshold_keeps_its_hard_share(diagnose, level, share):
    pixel_ratio, statuses = hovering(level)
    assert diagnose.expected_shares(pixel_ratio, statuses, S, sd=0.02)[-1] == pytest.approx(share)


def test_a_partly_restored_polygon_keeps_its_parts(diagnose):
    years, pixels = 12, 40
    pixel_ratio = np.full((years, pixels), 0.05)
    pixel_ratio[3:, :16] = 0.95  # 40 % planted and grown, the rest bare
    statuses = classify(pixel_ratio.mean(axis=1), S).statuses
    expected = diagnose.expected_shares(pixel_ratio, statuses, S, sd=0.02)
    np.testing.assert_allclose(expected[-1], 0.4)
    np.testing.assert_allclose(expected, restored_shares(pixel_ratio, statuses, S))


def test_the_counterfactual_accounting_is_undone_after_its_block(diagnose):
    shipped = restoration_run.restored_shares
    with diagnose.expected_accounting(0.02):
        assert restoration_run.restored_shares is not shipped
        pixel_ratio, statuses = hovering(0.79)
        assert 0.2 < restoration_run.restored_shares(pixel_ratio, statuses, S)[-1] < 0.8
    assert restoration_run.restored_shares is shipped
    with diagnose.expected_accounting(0.0):
        assert restoration_run.restored_shares is shipped
