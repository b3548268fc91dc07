"""``gmsense restoration composites`` on local imagery: Landsat Collection 2 Level-2 products of three sensors
built in the test (tests/product_factory.py), composed per year and read back by ``restoration run``.

The products hold known surface reflectance per pixel and date (DN = (reflectance + 0.2) / 2.75e-5), clouds,
shadow and snow in QA_PIXEL, ETM+ scan-line gaps (fill) and a date outside the season, so every composite
value can be computed here by hand: the per-pixel median of the clear in-season observations, TM and ETM+
made OLI-like with Roy et al. (2016) OLS first.
"""

from __future__ import annotations

import json
import tracemalloc
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyproj
import pytest
import rasterio
from affine import Affine
from rasterio.features import geometry_mask
from shapely.geometry import box

from gmsense.config import Settings
from gmsense.cube.harmonise import TRANSFORMS
from gmsense.errors import ImageryError, InputError
from gmsense.restoration.composites import COUNT_BAND, Season, build_composites, reduce_stack, valid_year_file
from gmsense.sources._bands import QA_CLOUD, QA_CLOUD_SHADOW, QA_DILATED_CLOUD, QA_SNOW
from gmsense.store import Store
from gmsense.testutils import SOIL, VEGETATION, run_cli
from tests.product_factory import OLI_SR, write_landsat

UTM52 = pyproj.CRS.from_epsg(32652)
X0, Y0, N = 599_985.0, 5_290_005.0, 24  # Landsat lattice: edges at odd multiples of 15 m; 24 x 24 px of 30 m
T30 = Affine(30.0, 0.0, X0, 0.0, -30.0, Y0)
BANDS = tuple(OLI_SR)  # blue .. swir2
#: The mine pit: 5 x 5 pixels in the middle, bare from 2013 on.
PIT = box(X0 + 9 * 30, Y0 - 14 * 30, X0 + 14 * 30, Y0 - 9 * 30)
BARE_FROM = 2013
OLS = TRANSFORMS["roy2016_ols"]
#: (day, sensor prefix) of every product; the March dates are outside the May-September season.
PRODUCTS = [
    ("2011-03-10", "LT05"), ("2011-06-02", "LT05"), ("2011-07-20", "LE07"), ("2011-08-21", "LT05"),
    ("2012-06-05", "LE07"), ("2012-07-07", "LE07"), ("2012-09-09", "LE07"),
    ("2013-05-20", "LE07"), ("2013-06-21", "LC08"), ("2013-07-23", "LC08"),
    ("2014-06-10", "LE07"), ("2014-06-18", "LC08"), ("2014-07-12", "LE07"), ("2014-08-05", "LC08"),
    ("2014-03-15", "LC08"),
    ("2015-05-28", "LE07"), ("2015-07-15", "LC08"), ("2015-09-01", "LC08"),
]
YEARS = (2011, 2012, 2013, 2014, 2015)


def truth(day: str, k: int) -> np.ndarray:
    """The surface reflectance the sensor of product ``k`` records on ``day``: ``(band, y, x)``, vegetation with
    a bare pit from :data:`BARE_FROM`, a per-date and per-pixel shift so no two observations are equal."""
    rows, cols = np.mgrid[0:N, 0:N]
    veg = np.broadcast_to(VEGETATION[:, None, None], (6, N, N)).astype("float64").copy()
    if int(day[:4]) >= BARE_FROM:
        inside = geometry_mask([PIT], out_shape=(N, N), transform=T30, invert=True)
        veg[:, inside] = SOIL[:, None]
    return veg + 0.002 * ((k * 7 + rows + 3 * cols) % 11)[None] - 0.01


def qa_of(day: str, prefix: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    """QA_PIXEL and the fill (no data) of product ``k``: clouds, shadow, snow and dilated cloud in corners;
    ETM+ after 2003 with SLC-off gaps (fill) in every 6th column."""
    qa = np.full((N, N), 1 << 6, "uint16")
    qa[k % 4: k % 4 + 3, 0:4] = QA_CLOUD
    qa[20:22, k % 5: k % 5 + 3] = QA_CLOUD_SHADOW
    qa[k % 3, 20:23] = QA_SNOW
    qa[12, 2 + k % 7] = QA_DILATED_CLOUD
    fill = np.zeros((N, N), bool)
    if prefix == "LE07":
        fill[:, (np.arange(N) + k) % 6 == 0] = True
        qa[fill] = 1  # fill bit
    return qa, fill


def write_archive(folder: Path) -> Path:
    for k, (day, prefix) in enumerate(PRODUCTS):
        refl = truth(day, k)
        qa, fill = qa_of(day, prefix, k)
        dn = {b: np.clip(np.round((refl[i] + 0.2) / 2.75e-5), 1, 65535).astype("uint16") for i, b in enumerate(BANDS)}
        for b in BANDS:
            dn[b][fill] = 0
        write_landsat(folder, day, dn, qa, UTM52, T30, prefix=prefix, as_tar=k % 3 == 1)
    return folder


SEASON = Season((5, 1), (9, 30))


def expected(year: int, season: Season = SEASON) -> tuple[np.ndarray, np.ndarray]:
    """The composite of ``year`` by hand: (median (band, y, x), count (y, x))."""
    start, end = season.window(year)
    stack = []
    for k, (day, prefix) in enumerate(PRODUCTS):
        if not start <= day <= end:
            continue
        refl = truth(day, k)
        refl = (np.round((refl + 0.2) / 2.75e-5) * 2.75e-5 - 0.2)  # as the DN holds it
        if prefix in ("LT05", "LE07"):
            refl = np.stack([OLS.apply(b, refl[i]) for i, b in enumerate(BANDS)])
        qa, fill = qa_of(day, prefix, k)
        clear = ((qa & 0b111111) == 0) & ~fill
        stack.append(np.where(clear[None], refl, np.nan))
    values = np.stack(stack)
    count = np.isfinite(values[:, 0]).sum(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # pixels without a clear observation
        median = np.nanmedian(values, axis=0)
    return median, count


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_archive(tmp_path_factory.mktemp("archive") / "landsat")


@pytest.fixture(scope="module")
def aoi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("aoi") / "aoi.geojson"
    gpd.GeoDataFrame({"name": ["area"]}, geometry=[box(X0, Y0 - N * 30, X0 + N * 30, Y0)],
                     crs=UTM52).to_crs(4326).to_file(path)
    return path


def read_year(path: Path) -> tuple[np.ndarray, np.ndarray, list[str], Affine]:
    with rasterio.open(path) as src:
        data = src.read()
        return data[:-1], data[-1], list(src.descriptions), src.transform


def on_products_lattice(values: np.ndarray, transform: Affine) -> np.ndarray:
    """``values`` (band, y, x) of a composite cut to the products' 24 x 24 pixels."""
    col, row = round((X0 - transform.c) / 30), round((transform.f - Y0) / 30)
    return values[:, row:row + N, col:col + N]


# --------------------------------------------------------------------------------------------


def test_composites_equal_the_harmonised_median_of_the_clear_season(archive: Path, aoi: Path, tmp_path: Path) -> None:
    out = tmp_path / "composites"
    code, output = run_cli("restoration", "composites", "--source", "local", "--imagery", archive, "--aoi", aoi,
                           "--start-year", 2011, "--end-year", 2015, "--out", out)
    assert code == 0, output
    assert "5 written, 0 already there, 0 without imagery" in " ".join(output.split())
    assert sorted(p.name for p in out.iterdir()) == [*(f"{y}.tif" for y in YEARS), "composites.json"]
    for year in YEARS:
        values, count, names, transform = read_year(out / f"{year}.tif")
        assert names == [*BANDS, COUNT_BAND]
        assert transform.a == 30
        assert (transform.c - X0) % 30 == 0, "the products' own lattice"
        want, want_count = expected(year)
        got = on_products_lattice(values, transform)
        np.testing.assert_array_equal(on_products_lattice(count[None], transform)[0], want_count, err_msg=str(year))
        np.testing.assert_allclose(got, want, atol=2e-6, err_msg=str(year))
    # 2014: two ETM+ and two OLI dates overlap; the March OLI date is out of season
    _, count, _, transform = read_year(out / "2014.tif")
    count = on_products_lattice(count[None], transform)[0]
    assert count.max() == 4
    assert count[8, 9] == 4, "a pixel no cloud or gap touches: every in-season date"
    assert count[3, 1] == 1, "three of the four dates cloudy there"
    manifest = json.loads((out / "composites.json").read_text())
    assert manifest["years"]["2014"]["sensors"] == {"ETM+": 2, "OLI": 2}
    assert manifest["years"]["2011"]["sensors"] == {"ETM+": 1, "TM": 2}
    assert manifest["season"] == "05-01:09-30"
    assert manifest["method"] == "median"


def test_cloud_shadow_snow_and_slc_gaps_are_no_observation(archive: Path, aoi: Path, tmp_path: Path) -> None:
    out = tmp_path / "composites"
    code, output = run_cli("restoration", "composites", "--imagery", archive, "--aoi", aoi, "--start-year", 2012,
                           "--end-year", 2012, "--out", out)
    assert code == 0, output
    values, count, _, transform = read_year(out / "2012.tif")
    count = on_products_lattice(count[None], transform)[0]
    red = on_products_lattice(values, transform)[2]
    # three ETM+ dates (k = 4, 5, 6), each with its own gap columns: a column all three miss has no observation
    gaps = [(np.arange(N) + k) % 6 == 0 for k in (4, 5, 6)]
    assert (count[:, gaps[0] & ~gaps[1] & ~gaps[2]] <= 2).all()
    assert count[8, 3] == 3, "clear in every date"
    # the bright cloud never leaks into the median: every value stays within the vegetation's red
    assert np.nanmax(red) < VEGETATION[2] * 0.91 + 0.03
    assert np.isnan(red[count == 0]).all()


def test_medoid_takes_every_band_from_one_clear_observation() -> None:
    rng = np.random.default_rng(3)
    values = rng.random((7, 4, 6, 5)).astype("float32")
    clear = rng.random((7, 6, 5)) > 0.3
    clear[:, 0, 0] = False
    medoid, count = reduce_stack(values, clear, "medoid")
    median, _ = reduce_stack(values, clear, "median")
    assert count[0, 0] == 0
    assert np.isnan(medoid[:, 0, 0]).all()
    for y in range(6):
        for x in range(5):
            if count[y, x] == 0:
                continue
            options = [t for t in range(7) if clear[t, y, x]]
            distances = [((values[t, :, y, x] - median[:, y, x]) ** 2).sum() for t in options]
            best = options[int(np.argmin(distances))]
            np.testing.assert_array_equal(medoid[:, y, x], values[best, :, y, x])
    with pytest.raises(InputError, match="unknown composite method"):
        reduce_stack(values, clear, "mean")


def test_restoration_run_reads_the_composites(archive: Path, tmp_path: Path) -> None:
    db = str(tmp_path / "store.db")
    register = tmp_path / "register.gpkg"
    gpd.GeoDataFrame([{"register_id": "PIT", "kind": "open_pit", "mineral_class": "energy",
                       "responsible_party": "none: historical", "province": "HLJ", "city": "Hegang",
                       "county": "A", "geometry": PIT}], crs=UTM52).to_file(register)
    code, output = run_cli("register", "import", register, "--db", db)
    assert code == 0, output
    out = tmp_path / "composites"
    code, output = run_cli("restoration", "composites", "--imagery", archive, "--register-from-db", "--db", db,
                           "--start-year", 2011, "--end-year", 2015, "--out", out, "--method", "medoid")
    assert code == 0, output
    with rasterio.open(out / "2011.tif") as src:
        # the pit (150 m) with its 100 m ring and 30 m margin: 410 m over 15 pixels of the lattice, plus one
        # pixel each side; not the products' whole 24 x 24 px
        assert (src.width, src.height) == (17, 17)
        assert src.tags()["GMSENSE_COMPOSITE_METHOD"] == "medoid"
    code, output = run_cli("restoration", "run", "--imagery", out, "--db", db)
    assert code == 0, output
    assert "1 of 1 register polygon analysed, years 2011-2015" in output
    rows = {r.year: r for r in Store(db).restoration_rows()}
    assert [rows[y].status for y in YEARS] == [None, None, "damaged", "damaged", "damaged"]
    soil_ndvi = (SOIL[3] - SOIL[2]) / (SOIL[3] + SOIL[2])
    assert rows[2015].polygon_ndvi == pytest.approx(soil_ndvi, abs=0.03)
    assert rows[2011].reference_ndvi > 0.7
    assert rows[2015].image_id == "2015.tif"
    # the same archive read directly (median NDVI of the season per pixel): the same statuses
    direct = str(tmp_path / "direct.db")
    assert run_cli("register", "import", register, "--db", direct)[0] == 0
    code, output = run_cli("restoration", "run", "--imagery", archive, "--db", direct)
    assert code == 0, output
    assert [r.status for r in sorted(Store(direct).restoration_rows(), key=lambda r: r.year)] == \
        [None, None, "damaged", "damaged", "damaged"]


def test_a_written_year_is_skipped_and_a_broken_one_built_again(archive: Path, aoi: Path, tmp_path: Path) -> None:
    out = tmp_path / "composites"
    args = ("restoration", "composites", "--imagery", archive, "--aoi", aoi, "--start-year", 2011, "--end-year",
            2015, "--out", out)
    assert run_cli(*args)[0] == 0
    stamps = {y: (out / f"{y}.tif").stat().st_mtime_ns for y in YEARS}
    (out / "2015.tif").unlink()
    data = (out / "2014.tif").read_bytes()
    (out / "2014.tif").write_bytes(data[: len(data) // 2])  # truncated
    (out / ".2013.tif.x1y2.partial.tif").write_bytes(b"left by a killed run")
    code, output = run_cli(*args)
    assert code == 0, output
    assert "2 written, 3 already there" in " ".join(output.split())
    assert not (out / ".2013.tif.x1y2.partial.tif").exists()
    for year in (2011, 2012, 2013):
        assert (out / f"{year}.tif").stat().st_mtime_ns == stamps[year], "valid: not written again"
    for year in (2014, 2015):
        values, _, _, transform = read_year(out / f"{year}.tif")
        np.testing.assert_allclose(on_products_lattice(values, transform), expected(year)[0], atol=2e-6)
    # another method or season is another composite: every year is built again
    code, output = run_cli(*args, "--season", "06-01:08-31")
    assert code == 0, output
    assert "5 written, 0 already there" in " ".join(output.split())
    values, count, _, transform = read_year(out / "2014.tif")
    want, _ = expected(2014, Season((6, 1), (8, 31)))
    np.testing.assert_allclose(on_products_lattice(values, transform), want, atol=2e-6)
    assert on_products_lattice(count[None], transform)[0].max() == 4


def test_an_interrupted_year_leaves_no_file(archive: Path, aoi: Path, tmp_path: Path) -> None:
    from gmsense.restoration.archive import LocalArchive, aoi_area

    class Failing(LocalArchive):
        """Fails in the middle of 2013, after some of its blocks were written."""

        def _block(self, window, grid, start, end, method, covered):  # type: ignore[no-untyped-def]
            if start.startswith("2013") and window.col_off + window.row_off > 8:
                raise ImageryError("the disk went away")
            return super()._block(window, grid, start, end, method, covered)

    out = tmp_path / "composites"
    source = Failing(archive, Settings(), block_px=8)
    with pytest.raises(ImageryError, match="the disk went away"):
        build_composites(source, aoi_area(aoi), YEARS, SEASON, "median", out)
    assert sorted(p.name for p in out.iterdir()) == ["2011.tif", "2012.tif"], "no 2013.tif, no temporary file"
    run = build_composites(LocalArchive(archive, Settings(), block_px=8), aoi_area(aoi), YEARS,
                           SEASON, "median", out)
    assert (run.of("skipped"), run.of("written")) == ([2011, 2012], [2013, 2014, 2015])
    assert run.windows == 16, "26 x 26 px in blocks of 8"
    values, _, _, transform = read_year(out / "2013.tif")
    np.testing.assert_allclose(on_products_lattice(values, transform), expected(2013)[0], atol=2e-6)


def test_years_without_imagery_and_user_mistakes(archive: Path, aoi: Path, tmp_path: Path) -> None:
    out = tmp_path / "composites"
    code, output = run_cli("restoration", "composites", "--imagery", archive, "--aoi", aoi, "--start-year", 2009,
                           "--end-year", 2011, "--out", out)
    assert code == 0, output
    text = " ".join(output.split())
    assert "1 written, 0 already there, 2 without imagery" in text
    assert "no imagery of the area in the season of 2009, 2010" in text
    assert not (out / "2009.tif").exists()
    mistakes = [
        (("--aoi", aoi, "--register-from-db"), "--register-from-db (the store's register polygons) or --aoi FILE"),
        (("--aoi", aoi, "--season", "05-01-09-30"), "is not MM-DD:MM-DD"),
        (("--aoi", aoi, "--season", "02-29:09-30"), "02-29 is not a day of every year"),
        (("--aoi", aoi, "--method", "mean"), "unknown --method 'mean'"),
        (("--aoi", tmp_path / "none.geojson"), "file does not exist"),
    ]
    for extra, message in mistakes:
        code, output = run_cli("restoration", "composites", "--imagery", archive, "--start-year", 2011,
                               "--end-year", 2011, "--out", out, *extra)
        assert code == 2, output
        assert message in " ".join(output.split()), output
    far = tmp_path / "far.geojson"
    gpd.GeoDataFrame(geometry=[box(10, 50, 10.01, 50.01)], crs=4326).to_file(far)
    code, output = run_cli("restoration", "composites", "--imagery", archive, "--aoi", far, "--start-year", 2011,
                           "--end-year", 2011, "--out", out)
    assert code == 2
    assert "does not cover the area" in " ".join(output.split())
    code, output = run_cli("restoration", "composites", "--aoi", aoi, "--start-year", 2011, "--end-year", 2011,
                           "--out", out)
    assert code == 2
    assert "--source local needs --imagery PATH" in " ".join(output.split())


def test_memory_holds_one_block_not_the_area(tmp_path: Path) -> None:
    """A 1,024 x 1,024-pixel area with eight dates: the whole season's stack would take 235 MB (8 dates x
    7 float32 planes); the composites are made in blocks of 256 px and stay far below it."""
    n, side = 1024, 30.0
    transform = Affine(side, 0, X0, 0, -side, Y0)
    rows, cols = np.mgrid[0:n, 0:n]
    days = ["2020-05-10", "2020-05-26", "2020-06-11", "2020-06-27", "2020-07-13", "2020-07-29", "2020-08-14",
            "2020-08-30"]
    for k, day in enumerate(days):
        dn = {b: (20000 + 1000 * i + (rows * 3 + cols + k * 5) % 200).astype("uint16") for i, b in enumerate(BANDS)}
        write_landsat(tmp_path / "big", day, dn, np.full((n, n), 1 << 6, "uint16"), UTM52, transform)
    aoi = tmp_path / "aoi.geojson"
    gpd.GeoDataFrame(geometry=[box(X0, Y0 - n * side, X0 + n * side, Y0)], crs=UTM52).to_crs(4326).to_file(aoi)
    stack_bytes = len(days) * (len(BANDS) + 1) * n * n * 4
    from gmsense.restoration.archive import LocalArchive, aoi_area

    area = aoi_area(aoi)
    tracemalloc.start()
    try:
        run = build_composites(LocalArchive(tmp_path / "big", Settings()), area, (2020,), SEASON,
                               "median", tmp_path / "out")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert run.windows == 25, "1,026 px (the area plus a pixel each side) in blocks of 256: 5 x 5"
    assert peak < stack_bytes / 4, f"peak {peak / 1e6:.0f} MB against {stack_bytes / 1e6:.0f} MB for the stack"
    with rasterio.open(tmp_path / "out" / "2020.tif") as src:
        count = src.read(src.count)
        red = src.read(3)
    inside = count > 0
    assert inside.sum() == n * n
    assert (count[inside] == len(days)).all()
    assert np.isfinite(red[inside]).all()


def test_season_parsing() -> None:
    assert Season.parse("05-01:09-30").window(2014) == ("2014-05-01", "2014-09-30")
    south = Season.parse("10-01:04-30")
    assert south.crosses_new_year
    assert south.window(2021) == ("2020-10-01", "2021-04-30")
    from gmsense.config import SeasonSettings

    assert str(Season.of(SeasonSettings())) == "05-01:09-30"
    assert str(Season.of(SeasonSettings(start_month=10, end_month=2))) == "10-01:02-28"
    assert valid_year_file(Path("/nonexistent.tif"), None, (), {}) is False  # type: ignore[arg-type]


def test_sentinel2_and_landsat_in_one_folder_compose_together(tmp_path: Path) -> None:
    """A folder holding a Landsat 8 product and a Sentinel-2 SAFE product of one season: both are read, onto
    the Sentinel-2 10 m lattice (Landsat warped bilinear), and each pixel's composite holds both dates."""
    from tests.product_factory import write_safe

    archive = tmp_path / "mixed"
    x0, y0 = 600_000.0, 5_290_000.0  # S2 edges on multiples of 10 m; Landsat's at odd multiples of 15 m
    landsat = Affine(30.0, 0.0, x0 - 15, 0.0, -30.0, y0 + 15)
    red, nir = 0.05, 0.35
    dn = {b: np.full((12, 12), round((v + 0.2) / 2.75e-5), "uint16")
          for b, v in zip(BANDS, (0.03, 0.06, red, nir, 0.18, 0.08), strict=True)}
    write_landsat(archive, "2020-06-10", dn, np.full((12, 12), 1 << 6, "uint16"), UTM52, landsat)
    s2 = Affine(10.0, 0.0, x0, 0.0, -10.0, y0)
    dn10 = {"B02": np.full((30, 30), 1300 + 1000, "uint16"), "B03": np.full((30, 30), 1600 + 1000, "uint16"),
            "B04": np.full((30, 30), 700 + 1000, "uint16"), "B08": np.full((30, 30), 4500 + 1000, "uint16")}
    dn20 = {"B11": np.full((15, 15), 1800 + 1000, "uint16"), "B12": np.full((15, 15), 800 + 1000, "uint16")}
    write_safe(archive, "2020-07-05", dn10, dn20, np.full((15, 15), 4, "uint8"), UTM52, s2,
               offsets=dict.fromkeys([*dn10, *dn20], -1000))
    aoi = tmp_path / "aoi.geojson"
    gpd.GeoDataFrame(geometry=[box(x0 + 50, y0 - 250, x0 + 250, y0 - 50)], crs=UTM52).to_crs(4326).to_file(aoi)
    out = tmp_path / "composites"
    code, output = run_cli("restoration", "composites", "--imagery", archive, "--aoi", aoi, "--start-year", 2020,
                           "--end-year", 2020, "--out", out)
    assert code == 0, output
    with rasterio.open(out / "2020.tif") as src:
        assert src.transform.a == 10.0, "the finest lattice: Sentinel-2's"
        data = {name: src.read(i + 1) for i, name in enumerate(src.descriptions)}
    assert (data["clear_count"] == 2).all()
    np.testing.assert_allclose(data["red"], (0.07 + red) / 2, atol=1e-4)
    np.testing.assert_allclose(data["nir"], (0.45 + nir) / 2, atol=1e-4)
    sensors = json.loads((out / "composites.json").read_text())["years"]["2020"]["sensors"]
    assert sensors == {"MSI": 1, "OLI": 1}
