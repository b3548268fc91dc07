"""Patches from breaks: labels per season, polygons, shape metrics, rule classes."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from skimage.draw import line

from gmsense.classify.baseline import classify_patch
from gmsense.config import ClassifySettings
from gmsense.detect.patches import Patch, extract_patches, label_breaks, shape_metrics

NAT = np.datetime64("NaT", "ns")


def _breaks(first: np.ndarray, res: float = 10.0) -> xr.Dataset:
    ny, nx = first.shape
    coords = {"y": 5_000_000 - (np.arange(ny) + 0.5) * res, "x": 500_000 + (np.arange(nx) + 0.5) * res}
    confirmed = np.where(np.isnat(first), NAT, first + np.timedelta64(10, "D"))
    return xr.Dataset({
        "first_detected": (("y", "x"), first),
        "confirmed_on": (("y", "x"), confirmed),
        "magnitude": (("y", "x"), np.where(np.isnat(first), np.nan, 0.3).astype("float32")),
    }, coords=coords)


def test_touching_pixels_of_different_seasons_are_different_patches() -> None:
    first = np.full((10, 10), NAT)
    first[2:5, 2:5] = np.datetime64("2020-06-01", "ns")
    first[5:8, 2:5] = np.datetime64("2021-06-01", "ns")
    labels = label_breaks(first)
    assert len(np.unique(labels[labels > 0])) == 2


def test_extract_patches_geometry_dates_and_small_ones_dropped() -> None:
    first = np.full((20, 20), NAT)
    first[2:6, 2:6] = np.datetime64("2020-06-01", "ns")
    first[3, 4] = np.datetime64("2020-05-20", "ns")
    first[15, 15] = np.datetime64("2020-06-01", "ns")  # a single 100 m2 pixel
    patches, labels = extract_patches(_breaks(first), min_area_m2=150)
    assert len(patches) == 1
    p = patches[0]
    assert p.geometry.area == pytest.approx(16 * 100)
    assert p.first_detected == np.datetime64("2020-05-20")
    assert p.confirmed_on == np.datetime64("2020-05-30")
    assert p.geometry.bounds == pytest.approx((500_020, 5_000_000 - 60, 500_060, 5_000_000 - 20))
    assert labels[15, 15] == 0


def test_shape_metrics_line_versus_arc_versus_square() -> None:
    straight = np.zeros((60, 60), dtype=bool)
    rr, cc = line(5, 5, 50, 40)
    straight[rr, cc] = True
    straight[rr, np.minimum(cc + 1, 59)] = True
    arc = np.zeros((60, 60), dtype=bool)
    theta = np.linspace(0, np.pi, 200)
    arc[(30 - 25 * np.sin(theta)).astype(int) + 25, (30 + 25 * np.cos(theta)).astype(int)] = True
    square = np.zeros((60, 60), dtype=bool)
    square[10:14, 10:14] = True
    s_line, s_arc, s_square = (shape_metrics(m, 10.0) for m in (straight, arc, square))
    assert s_line["elongation"] > 8
    assert s_line["curvature"] < 0.1
    assert s_line["width_m"] < 25
    assert s_arc["curvature"] > 0.25  # sagitta / arc length of a half circle is 0.32, less the width
    assert s_square["elongation"] < 2
    assert s_square["area_px_m2"] == 1600


def _patch(shape: dict[str, float], spectral: dict[str, float] | None = None) -> Patch:
    return Patch(1, None, np.datetime64("2020-06-01"), np.datetime64("2020-06-10"), 10, 0.3, shape,
                 spectral or {"nir_ratio": 0.8, "swir1_ratio": 1.4, "red_ratio": 2.0})


@pytest.mark.parametrize(
    ("shape", "spectral", "expected"),
    [
        ({"elongation": 15, "width_m": 12, "curvature": 0.04, "area_px_m2": 2800}, None, "trench"),
        ({"elongation": 25, "width_m": 15, "curvature": 0.3, "area_px_m2": 7000}, None, "track"),
        ({"elongation": 1.5, "width_m": 30, "curvature": 0.3, "area_px_m2": 1600}, None, "pad"),
        ({"elongation": 1.8, "width_m": 60, "curvature": 0.3, "area_px_m2": 9000}, None, "clearing"),
        ({"elongation": 1.8, "width_m": 60, "curvature": 0.3, "area_px_m2": 9000},
         {"nir_ratio": 0.3, "swir1_ratio": 0.6}, "natural"),
        ({"elongation": 1.5, "width_m": 300, "curvature": 0.3, "area_px_m2": 90_000}, None, "natural"),
    ],
)
def test_rule_classes(shape: dict[str, float], spectral: dict[str, float] | None, expected: str) -> None:
    klass, confidence = classify_patch(_patch(shape, spectral), ClassifySettings())
    assert klass == expected
    assert 0 < confidence <= 1


def test_dark_change_without_swir_uses_red() -> None:
    burnt = _patch({"elongation": 1.8, "width_m": 60, "curvature": 0.3, "area_px_m2": 9000},
                   {"nir_ratio": 0.3, "red_ratio": 1.1})
    assert classify_patch(burnt, ClassifySettings())[0] == "natural"
