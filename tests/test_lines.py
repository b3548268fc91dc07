"""The line pass: weak drops along a new thin line become breaks; the same drops elsewhere do not."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from gmsense.config import DetectSettings, SeasonSettings
from gmsense.cube import ops as cubeops
from gmsense.detect.change import detect_breaks
from gmsense.detect.lines import add_line_breaks, ring
from gmsense.detect.patches import extract_patches
from gmsense.testutils import make_cube

DETECT = DetectSettings()
SEASON = SeasonSettings()
SIZE = 40
LINE_ROW, LINE_COLS = 20, slice(8, 30)  # 220 m long, one pixel wide
START = "2021-06-20"


def _ndvi(seed: int = 0, noise: float = 0.004, resolution: float = 10.0) -> xr.DataArray:
    cube = make_cube(ny=SIZE, nx=SIZE, seed=seed, noise=noise, cloud_share=0.15, resolution=resolution)
    return cubeops.index(cubeops.growing_season(cubeops.masked(cube), SEASON), "ndvi").load()


def _lower(ndvi: xr.DataArray, rows: slice | int, cols: slice, by: float, since: str | None = None) -> xr.DataArray:
    """``ndvi`` lowered by ``by`` on the pixels given, from ``since`` (always when None)."""
    out = ndvi.copy()
    when = np.ones(out.sizes["time"], dtype=bool) if since is None else out["time"].values >= np.datetime64(since)
    values = out.values
    values[np.ix_(when, np.atleast_1d(np.arange(SIZE)[rows]), np.arange(SIZE)[cols])] -= by
    out.values = values
    return out


def _lines(ndvi: xr.DataArray, settings: DetectSettings = DETECT) -> xr.Dataset:
    return add_line_breaks(detect_breaks(ndvi, settings).load(), ndvi, settings)


def test_a_weak_new_line_becomes_a_break_the_pixel_test_alone_misses() -> None:
    ndvi = _lower(_ndvi(), LINE_ROW, LINE_COLS, 0.1, START)
    result = _lines(ndvi)
    line = np.zeros((SIZE, SIZE), dtype=bool)
    line[LINE_ROW, LINE_COLS] = True
    plain = detect_breaks(ndvi, DETECT).load()
    assert np.isnat(plain["first_detected"].values[line]).mean() > 0.9, "the per-pixel test alone misses the line"
    assert result["line"].values[line].mean() > 0.8
    assert not result["line"].values[~line].any()
    first = result["first_detected"].values[line & result["line"].values]
    assert (first >= np.datetime64(START)).all()
    assert (first <= np.datetime64("2021-07-31")).all()
    patches, _ = extract_patches(result, DETECT.min_patch_m2)
    assert len(patches) == 1
    assert patches[0].shape["length_m"] > 150
    assert patches[0].context["line_share"] == 1.0


@pytest.mark.parametrize("resolution", [20.0, 30.0])
def test_a_weak_new_line_is_found_on_coarse_pixels_too(resolution: float) -> None:
    """At 20 and 30 m the line's ring starts at its edge (10 m is under half a pixel): the ring
    must not come out empty, which would reject every line at those resolutions."""
    ndvi = _lower(_ndvi(resolution=resolution), LINE_ROW, LINE_COLS, 0.1, START)
    result = _lines(ndvi)
    line = np.zeros((SIZE, SIZE), dtype=bool)
    line[LINE_ROW, LINE_COLS] = True
    assert result["line"].values[line].mean() > 0.8
    assert not result["line"].values[~line].any()


@pytest.mark.parametrize("steps", [(0, 1), (0, 3), (1, 2), (2, 4)])
def test_a_ring_is_the_pixels_between_its_steps_out(steps: tuple[int, int]) -> None:
    mask = np.zeros((15, 15), dtype=bool)
    mask[7, 4:11] = True
    rows, cols = np.indices(mask.shape)
    distance = np.min([np.abs(rows - 7) + np.abs(cols - c) for c in range(4, 11)], axis=0)
    assert np.array_equal(ring(mask, steps), (distance > steps[0]) & (distance <= steps[1]))
    assert ring(mask, steps).any()
    assert not (ring(mask, steps) & mask).any()


@pytest.mark.parametrize(("what", "rows", "cols"), [
    ("a compact patch", slice(14, 24), slice(10, 20)),
    ("a short line", LINE_ROW, slice(8, 13)),
])
def test_weak_drops_that_draw_no_line_stay_out(what: str, rows: slice | int, cols: slice) -> None:
    result = _lines(_lower(_ndvi(), rows, cols, 0.1, START))
    assert not result["line"].values.any(), what
    assert np.isnat(result["first_detected"].values).all(), what


def test_an_existing_road_answering_a_dry_year_is_not_a_new_line() -> None:
    road = _lower(_ndvi(), LINE_ROW, LINE_COLS, 0.35)
    assert not _lines(_lower(road, LINE_ROW, LINE_COLS, 0.1, START))["line"].values.any()


def test_a_line_beside_a_wider_change_of_the_same_weeks_is_not_a_new_line() -> None:
    # Rows 22-25 drop as much over the same weeks (the edge of a harvest, a dry field): the line
    # is part of that change. The share of weak runs around it is not what rejects it here.
    settings = DetectSettings(line_max_ring_share=1.0)
    ndvi = _lower(_lower(_ndvi(), LINE_ROW, LINE_COLS, 0.1, START), slice(LINE_ROW + 2, LINE_ROW + 6), LINE_COLS,
                  0.1, START)
    assert not _lines(ndvi, settings)["line"].values[LINE_ROW].any()
    alone = _lines(_lower(_ndvi(), LINE_ROW, LINE_COLS, 0.1, START), settings)
    assert alone["line"].values[LINE_ROW].any()


def test_without_the_line_pass_nothing_is_added() -> None:
    settings = DetectSettings(line_pass=False)
    ndvi = _lower(_ndvi(), LINE_ROW, LINE_COLS, 0.1, START)
    result = _lines(ndvi, settings)
    assert not result["line"].values.any()
    assert np.isnat(result["weak_first"].values).all()


def test_weak_runs_are_the_same_however_the_cube_is_chunked() -> None:
    ndvi = _lower(_ndvi(seed=3, noise=0.02), LINE_ROW, LINE_COLS, 0.1, START)
    whole = detect_breaks(ndvi, DETECT).load()
    chunked = detect_breaks(ndvi.chunk({"y": 13, "x": 17}), DETECT).load()
    xr.testing.assert_identical(whole, chunked)
    assert whole["weak_first"].notnull().sum() > 0


def test_a_speck_too_small_for_a_patch_joins_the_line_instead_of_keeping_it_away() -> None:
    # Where a trench covers most of a pixel, a pixel or two pass the per-pixel test: a speck under
    # min_patch_m2 (here 200 m2 of 250), which used to keep the line pass 30 m away from the whole line.
    speck = slice(18, 20)
    ndvi = _lower(_lower(_ndvi(), LINE_ROW, LINE_COLS, 0.1, START), LINE_ROW, speck, 0.25, START)
    plain = detect_breaks(ndvi, DETECT).load()
    strong = ~np.isnat(plain["first_detected"].values)
    assert strong[LINE_ROW, speck].all()
    assert strong.sum() * 100 < DETECT.min_patch_m2
    result = _lines(ndvi)
    assert result["line"].values[LINE_ROW, LINE_COLS].mean() > 0.7
    patches, _ = extract_patches(result, DETECT.min_patch_m2)
    assert len(patches) == 1, "the speck and the line are one patch"
    assert patches[0].shape["length_m"] > 150


def test_a_patch_still_keeps_a_line_away_and_a_lone_speck_makes_nothing() -> None:
    near = _lower(_lower(_ndvi(), LINE_ROW, LINE_COLS, 0.1, START), slice(22, 26), slice(14, 18), 0.3, START)
    result = _lines(near)  # a 16-pixel patch 20 m from the line: the line within 30 m of it is left to it
    assert not result["line"].values[LINE_ROW, 13:19].any()
    lone = _lines(_lower(_ndvi(), LINE_ROW, slice(18, 20), 0.25, START))
    assert not lone["line"].values.any()
    assert extract_patches(lone, DETECT.min_patch_m2)[0] == []


@pytest.mark.parametrize("resolution", [20.0, 30.0])
def test_a_sub_pixel_line_is_found_at_20_and_30_m(resolution: float) -> None:
    # line_ring_m starts 10 m out: less than a pixel here. The ring starts one pixel out (it was
    # empty, a dilation of 0 steps being scipy's "until nothing changes", and every line rejected).
    ndvi = _lower(_ndvi(resolution=resolution), LINE_ROW, LINE_COLS, 0.1, START)
    line = np.zeros((SIZE, SIZE), dtype=bool)
    line[LINE_ROW, LINE_COLS] = True
    result = _lines(ndvi)
    assert result["line"].values[line].mean() > 0.8
    assert not result["line"].values[~line].any()
    patches, _ = extract_patches(result, DETECT.min_patch_m2)
    assert len(patches) == 1
    assert patches[0].shape["length_m"] > 15 * resolution


@pytest.mark.parametrize("resolution", [20.0, 30.0])
def test_at_20_and_30_m_a_line_beside_a_wider_change_is_still_no_new_line(resolution: float) -> None:
    wide = _lower(_lower(_ndvi(resolution=resolution), LINE_ROW, LINE_COLS, 0.1, START),
                  slice(LINE_ROW + 2, LINE_ROW + 5), LINE_COLS, 0.1, START)
    assert not _lines(wide)["line"].values[LINE_ROW].any()
    patch = _lines(_lower(_ndvi(resolution=resolution), slice(14, 24), slice(10, 20), 0.1, START))
    assert not patch["line"].values.any(), "a compact patch of weak drops is no line"


def test_ridge_filter_on_threads_equals_one_thread() -> None:
    from gmsense.detect.lines import ridge_response

    image = np.random.default_rng(3).normal(size=(120, 90))
    one = ridge_response(image, (1.0, 2.0, 3.0))
    assert one.max() > 0
    assert np.array_equal(ridge_response(image, (1.0, 2.0, 3.0), threads=2), one)


def test_long_and_thin_decides_as_the_shape_metrics_do() -> None:
    """The line pass's shape test skips the Feret diameter when the skeleton suffices: the same
    decisions as :func:`shape_metrics`' length and elongation, on random blobs and lines."""
    from gmsense.detect.patches import long_and_thin, shape_metrics

    rng = np.random.default_rng(11)
    decided = set()
    for _ in range(300):
        h, w = rng.integers(2, 25, 2)
        mask = rng.random((h, w)) < rng.uniform(0.1, 0.9)
        if rng.random() < 0.4:  # a line, straight or bent
            mask = np.zeros((h, w), dtype=bool)
            rows = np.clip(np.round(np.linspace(0, h - 1, 3 * w) + rng.normal(0, 0.4, 3 * w)), 0, h - 1).astype(int)
            mask[rows, np.linspace(0, w - 1, 3 * w).astype(int)] = True
        if not mask.any():
            continue
        for pixel, min_length, min_elongation in ((10.0, 60.0, 4.0), (30.0, 100.0, 3.0), (10.0, 150.0, 8.0)):
            shape = shape_metrics(mask, pixel)
            expected = shape["length_m"] >= min_length and shape["elongation"] >= min_elongation
            assert long_and_thin(mask, pixel, min_length, min_elongation) == expected
            decided.add(expected)
    assert decided == {True, False}


def test_plausible_lines_counted_at_once_are_the_ones_tested_one_by_one() -> None:
    """The vectorised first tests (size, weak share, reach) keep exactly the components the
    per-component tests keep."""
    from scipy import ndimage

    from gmsense.detect.lines import ARC_OVER_DIAGONAL, _plausible

    rng = np.random.default_rng(4)
    settings = DetectSettings()
    for pixel in (10.0, 30.0):
        labels, _ = ndimage.label(rng.random((150, 150)) < 0.45, structure=np.ones((3, 3), dtype=bool))
        has_weak = rng.random(labels.shape) < 0.6
        boxes = ndimage.find_objects(labels)
        expected = []
        for label, box in enumerate(boxes, start=1):
            part = labels[box] == label
            if part.sum() < 3 or has_weak[box][part].mean() <= 0.5:
                continue
            reach = min(part.sum() * np.sqrt(2), ARC_OVER_DIAGONAL * np.hypot(*part.shape)) * pixel
            if reach < settings.line_min_length_m or reach**2 / (part.sum() * pixel**2) < settings.line_min_elongation:
                continue
            expected.append(label)
        assert expected, "the random scene has plausible lines"
        assert _plausible(labels, boxes, has_weak, pixel, settings).tolist() == expected
