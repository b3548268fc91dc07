"""Domains of the synthetic world: classic unchanged (pinned), every domain a valid cube at 10/20/30 m,
band sets, land cover and events as designed per biome, winter works, spreading dieback, terrain,
determinism, names, and the CLI knob."""

from __future__ import annotations

import hashlib
import itertools
import warnings
from functools import cache
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyproj
import pytest
import rasterio
import xarray as xr
from affine import Affine
from shapely.geometry import Point, box
from typer.testing import CliRunner

from gmsense.classify.train import random_licences
from gmsense.cli import SYNTH_DOMAIN_HELP, app
from gmsense.config import Settings, configs_dir
from gmsense.cube import ops as cubeops
from gmsense.cube.contract import validate_cube
from gmsense.geo.sites import Site, read_sites, utm_crs_for
from gmsense.records import NATURAL_AGENTS
from gmsense.sources.synthetic import DOMAINS, MODIFIERS, TRUTH_COLUMNS, domain_named, synthesize
from gmsense.sources.synthetic._biomes import BIOMES, EventSizes
from gmsense.sources.synthetic._events import Event
from gmsense.sources.synthetic._landscape import Landscape, fraction
from gmsense.sources.synthetic._plan import shape
from gmsense.sources.synthetic._render import apply_stamp, make_stamp
from gmsense.sources.synthetic._terrain import make_terrain

SITES = {s.site_id: s for s in read_sites(configs_dir() / "demo_sites.geojson")}
#: Two seasons: the cheapest span with events (the first season is history only).
SHORT = Settings.model_validate({"synthetic": {"start": "2020-04-01", "end": "2021-10-31"}}).synthetic
THREE = Settings.model_validate({"synthetic": {"start": "2020-04-01", "end": "2022-10-31"}}).synthetic
OLD_TRUTH_COLUMNS = ["event_id", "site_id", "kind", "disturbance_class", "start", "first_observed", "regrowth_years",
                     "recovery_status", "inside_licence", "area_m2"]
BIOME_NAMES = [n for n in DOMAINS if n != "classic"]


def _cube_hash(cube: xr.Dataset) -> str:
    h = hashlib.sha256()
    for name in ("time", "y", "x", "blue", "green", "red", "nir", "swir1", "swir2", "clear", "scl"):
        h.update(np.ascontiguousarray(cube[name].values).tobytes())
    return h.hexdigest()


def _truth_hash(truth: gpd.GeoDataFrame) -> str:
    h = hashlib.sha256(truth[OLD_TRUTH_COLUMNS].to_json(orient="records", double_precision=15).encode())
    for g in truth.geometry:
        h.update(g.wkb)
    return h.hexdigest()


def _site(name: str, lon: float, lat: float, w: float = 900.0, h: float = 700.0, **attrs: str) -> Site:
    crs = utm_crs_for(lon, lat)
    x, y = pyproj.Transformer.from_crs(4326, crs, always_xy=True).transform(lon, lat)
    return Site(f"T-{name}", box(x - w / 2, y - h / 2, x + w / 2, y + h / 2), crs, attrs)


def _biome_site(biome: str, w: float = 900.0, h: float = 700.0) -> Site:
    b = BIOMES[biome]
    return _site(biome, float(np.mean(b.lon)), float(np.mean(b.lat)), w, h)


@cache
def _scene(biome: str, modifiers: str = "", seed: int = 1, scenario: str | None = None, span: str = "short",
           ) -> tuple[xr.Dataset, gpd.GeoDataFrame]:
    site = _biome_site(biome)
    settings = {"short": SHORT, "three": THREE, "full": Settings().synthetic}[span]
    return synthesize(site, site.buffered(500), settings, seed=seed, scenario=scenario,
                      domain=biome + modifiers)


# --- classic is the world it always was --------------------------------------------------------------------------

#: Hashes of classic scenes (sha256 of the cube's coordinates and variables, and of the truth's
#: original columns and geometries). The truth's are from before domains existed; the cubes' were
#: re-pinned on 2026-11-30 when the spectral mixing stopped using BLAS (the BLAS product's bits
#: depended on the machine's kernel and thread count: the 30 m pin failed on an AVX2 host): every
#: band value within 1.2e-7 of the earlier pins' cubes, masks and truth identical.
CLASSIC_PINS = [
    ("HLJ-EXP-001", 10.0, 0, None, "33ba9201bdd9e69d5f8bf6b7c467de880eb92d31e1ec20b83345ef185a546b4c",
     "43d04dc9c64b443fc0ee4a5e61bf4034c9edfc45ae563ae5304c2008f9abed01"),
    ("HLJ-EXP-002", 30.0, 5, "mixed", "a1161bd543d317b03183fd002158e39590dfd10676643a58224b2ba252804870",
     "599fc62f7442deeb21e9bb1a50e553245d787b246d874900371096e8482aa198"),
]


@pytest.mark.parametrize(("site_id", "res", "seed", "scenario", "cube_sha", "truth_sha"), CLASSIC_PINS)
def test_classic_scenes_are_unchanged(site_id: str, res: float, seed: int, scenario: str | None, cube_sha: str,
                                      truth_sha: str) -> None:
    site = SITES[site_id]
    settings = SHORT.model_copy(update={"resolution_m": res})
    cube, truth = synthesize(site, site.buffered(500), settings, seed=seed, scenario=scenario)
    assert _cube_hash(cube) == cube_sha
    assert _truth_hash(truth) == truth_sha
    assert cube.attrs["domain"] == "classic"
    assert (truth.domain == "classic").all()
    again, _ = synthesize(site, site.buffered(500), settings.model_copy(update={"domain": "classic"}), seed=seed,
                          scenario=scenario, domain="classic")
    assert _cube_hash(again) == cube_sha


def test_a_scene_is_the_same_bits_whatever_the_blas_threads() -> None:
    """The world must not depend on the machine: its spectral mixing uses no BLAS, whose sums a
    thread limit (or another CPU's kernel) reorders."""
    from threadpoolctl import threadpool_limits

    site = SITES["HLJ-EXP-002"]
    settings = SHORT.model_copy(update={"resolution_m": 30.0})
    with threadpool_limits(limits=1, user_api="blas"):
        one, _ = synthesize(site, site.buffered(500), settings, seed=5, scenario="mixed")
    with threadpool_limits(limits=2, user_api="blas"):
        two, _ = synthesize(site, site.buffered(500), settings, seed=5, scenario="mixed")
    assert _cube_hash(one) == _cube_hash(two) == CLASSIC_PINS[1][4]


def test_ordered_matmul_is_a_product_summed_in_one_fixed_order() -> None:
    from gmsense.sources.synthetic._landscape import ordered_matmul

    rng = np.random.default_rng(0)
    a, b = rng.random((6, 9), dtype="float32"), rng.random((9, 500), dtype="float32")
    got = ordered_matmul(a, b)
    expected = np.zeros((6, 500), dtype="float32")
    for k in range(9):  # the order it promises, one elementwise rounding per step
        expected = expected + a[:, k, None] * b[k][None, :]
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_allclose(got, a.astype("float64") @ b.astype("float64"), rtol=1e-6)
    assert got.dtype == np.float32


def test_classic_random_licences_and_mixed_scene_are_unchanged() -> None:
    h = hashlib.sha256()
    for seed in (1, 2, 3, 101):
        for site in random_licences(seed, 3):
            h.update(site.site_id.encode() + site.geometry.wkb + site.crs.to_wkt().encode()
                     + repr(sorted(site.attrs.items())).encode())
    assert h.hexdigest() == "4faec8c5819adc1f0625e55eacb92fc51a6a67ebfa9562f33899a3d01b97be12"
    site = random_licences(3, 1)[0]
    cube, truth = synthesize(site, site.buffered(500), SHORT, seed=3)
    assert _cube_hash(cube) == "01511a27f079158e0398b353b81d1baa9ee181d57dc357e98b8d050c6bcc0d78"
    assert _truth_hash(truth) == "5d5207062d71379a59ec49d07cccc5d95e0bf16c4ba83140861aec0f03f46c30"


def test_classic_settings_keep_their_hash() -> None:
    """Naming the classic world changes nothing (stores scanned before domains existed do not
    rescan); any other world changes the hash."""
    classic = Settings().config_hash()
    assert classic == Settings.model_validate({"synthetic": {"domain": "classic"}}).config_hash()
    assert Settings.model_validate({"synthetic": {"domain": "boreal_forest"}}).config_hash() != classic


# --- every domain is a valid cube at 10, 20 and 30 m --------------------------------------------------------------

@pytest.mark.parametrize("res", ["10m", "20m", "30m"])
@pytest.mark.parametrize("biome", list(DOMAINS))
def test_every_domain_follows_the_cube_contract(biome: str, res: str) -> None:
    site = _biome_site(biome, 600.0, 500.0)
    cube, truth = synthesize(site, site.buffered(300), SHORT, seed=2, domain=f"{biome}+{res}")
    validate_cube(cube, required=("blue", "green", "red", "nir", "swir1", "swir2"), where=biome)
    assert cube.attrs["resolution_m"] == float(res[:-1])
    assert float(cube["x"].values[1] - cube["x"].values[0]) == float(res[:-1])
    assert cube.attrs["domain"] == f"{biome}+{res}"
    assert 0.3 < float(cube["clear"].mean()) < 1.0
    assert list(truth.columns) == TRUTH_COLUMNS
    assert truth.crs == cube.rio.crs
    assert (truth.domain == cube.attrs["domain"]).all()
    natural = truth.disturbance_class == "natural"
    assert truth.natural_agent[natural].isin(NATURAL_AGENTS).all()
    assert (truth.natural_agent[natural] == truth.kind[natural]).all()
    assert (truth.natural_agent[~natural] == "").all()


def test_band_sets_and_sensors() -> None:
    s2, _ = _scene("steppe_grassland", "+30m", seed=3)
    blind, _ = _scene("steppe_grassland", "+30m+s2_no_swir", seed=3)
    assert "swir1" not in blind
    assert "swir2" not in blind
    assert [b for b in ("blue", "green", "red", "nir") if b in blind] == ["blue", "green", "red", "nir"]
    validate_cube(blind)
    for band in ("blue", "green", "red", "nir"):  # the same world, only without SWIR
        np.testing.assert_array_equal(blind[band].values, s2[band].values)
    landsat, _ = _scene("steppe_grassland", "+landsat", seed=3)
    assert landsat.attrs["platform"] == "landsat-like"
    assert landsat.attrs["resolution_m"] == 30.0
    assert {"swir1", "swir2"} <= set(landsat.data_vars)
    gaps = np.diff(landsat["time"].values).astype("timedelta64[D]").astype(int)
    assert gaps[gaps < 100].min() >= 8, "Landsat revisits every 8-16 days"
    with pytest.raises(ValueError, match="landsat images are 30 m"):
        domain_named("steppe_grassland+landsat+10m")


def test_cloud_regimes_change_the_clear_share() -> None:
    clear = {c: float(_scene("cropland_plain", f"+30m+{c}", seed=4)[0]["clear"].mean())
             for c in ("clear", "normal", "cloudy")}
    assert clear["clear"] > clear["normal"] > clear["cloudy"]


def test_season_shift_moves_green_up() -> None:
    early, _ = _scene("steppe_grassland", "+30m+shift-21", seed=5)
    late, _ = _scene("steppe_grassland", "+30m+shift+21", seed=5)

    def june_ndvi(cube: xr.Dataset) -> float:
        ndvi = cubeops.index(cubeops.masked(cube), "ndvi")
        return float(ndvi.sel(time=ndvi["time"].dt.month == 6).median())

    assert june_ndvi(early) > june_ndvi(late) + 0.05


# --- the biomes are different worlds -------------------------------------------------------------------------------

def _shares(biome: str) -> dict[str, float]:
    from gmsense.sources.synthetic import _rng_for, scene_grid
    from gmsense.sources.synthetic._world import build_world

    site = _biome_site(biome, 1500.0, 1200.0)
    region = site.buffered(500)
    grid = scene_grid(region, site.crs, 30.0)
    xs, ys, transform = grid.xs(), grid.ys(), grid.transform
    land = build_world(region, site.geometry, (ys.size, xs.size), transform, np.array([2020, 2021]),
                       _rng_for(site.site_id, 1), BIOMES[biome], 30.0, 45.0)
    crop = float(np.asarray(land.crop_shares.sum(axis=0)).mean()) if land.crop_shares is not None else 0.0
    return {"forest": float(land.forest.mean()), "grass": float(land.grass.mean()), "crop": crop,
            "water": float((land.water + land.wetland).mean()), "veg_max": float(land.veg_max.mean()),
            "shrub": 0.0 if land.shrub is None else float(land.shrub.mean()), "relief": float(
                0.0 if land.terrain is None else np.ptp(land.terrain.dem)), "fields": len(land.fields)}


def test_land_cover_shares_differ_between_biomes() -> None:
    s = {b: _shares(b) for b in BIOME_NAMES}
    assert s["boreal_forest"]["forest"] > 0.75
    assert s["steppe_grassland"]["forest"] < 0.2 < s["boreal_forest"]["forest"]
    assert s["steppe_grassland"]["grass"] + s["steppe_grassland"]["shrub"] > 0.6
    assert s["steppe_grassland"]["shrub"] > 0.02
    assert s["boreal_forest"]["shrub"] == 0
    assert s["steppe_grassland"]["veg_max"] < s["boreal_forest"]["veg_max"] - 0.2, "steppe is greener at most half"
    assert s["cropland_plain"]["crop"] > 0.5
    assert s["cropland_plain"]["fields"] > 20
    assert s["cropland_plain"]["fields"] > 5 * s["boreal_forest"]["fields"]
    assert s["wetland"]["water"] > 2 * max(s[b]["water"] for b in BIOME_NAMES if b != "wetland")
    assert s["mountain_forest"]["relief"] > 400
    assert all(s[b]["relief"] == 0 for b in BIOME_NAMES
                                                        if b != "mountain_forest")


def test_cropland_has_crops_with_their_own_calendars() -> None:
    _, truth = _scene("cropland_plain", "+30m", seed=1)
    harvests = truth[truth.kind == "harvest"]
    assert len(harvests) > 20
    months = harvests.start.str[5:7].astype(int)
    assert months.min() <= 7, "wheat in July"
    assert months.max() >= 9, "maize and rice in September-October"
    assert (harvests.natural_agent == "harvest").all()


def test_different_domains_give_different_landscapes_for_the_same_seed() -> None:
    site = _biome_site("boreal_forest")
    cubes = {b: synthesize(site, site.buffered(500), SHORT, seed=1, domain=f"{b}+30m")[0]
             for b in ("boreal_forest", "steppe_grassland", "cropland_plain")}
    ndvi = {b: float(cubeops.index(cubeops.masked(c), "ndvi").sel(time=c["time"].dt.month == 7).median())
            for b, c in cubes.items()}
    assert ndvi["boreal_forest"] > ndvi["steppe_grassland"] + 0.15
    assert not np.array_equal(cubes["boreal_forest"]["nir"].values, cubes["cropland_plain"]["nir"].values)


def test_same_seed_same_domain_scene() -> None:
    site = _biome_site("mountain_forest")
    a, ta = synthesize(site, site.buffered(500), SHORT, seed=7, domain="mountain_forest+30m")
    b, tb = synthesize(site, site.buffered(500), SHORT, seed=7, domain="mountain_forest+30m")
    assert a.identical(b)
    assert ta.equals(tb)
    c, _ = synthesize(site, site.buffered(500), SHORT, seed=8, domain="mountain_forest+30m")
    assert not np.array_equal(a["nir"].values, c["nir"].values)


# --- events ------------------------------------------------------------------------------------------------------

def test_event_size_ranges() -> None:
    rng = np.random.default_rng(0)
    centre = Point(0, 0)
    boreal = BIOMES["boreal_forest"].sizes
    trenches = [shape("trench", centre, rng, boreal)[0].area for _ in range(400)]
    assert min(trenches) < 300, "from about 2 m x 50 m (0.01 ha)"
    assert max(trenches) > 1_500, "to 8 m x 500 m"
    assert min(trenches) >= 2 * 50 * 0.99
    clearings = [shape("clearing", centre, rng, boreal)[0].area / 1e4 for _ in range(400)]
    assert min(clearings) < 1
    assert 190 < max(clearings) <= 200.01, "clearings up to 200 ha"
    pits = [shape("open_pit", centre, rng, BIOMES["steppe_grassland"].sizes, "large")[0].area / 1e4
            for _ in range(50)]
    assert min(pits) >= 100
    assert max(pits) <= 200.01
    assert BIOMES["cropland_plain"].sizes.clearing_ha == EventSizes().clearing_ha, "no large clearings on farmland"


def test_mining_scenario_has_a_large_pit_and_clearing_labelled_clearing() -> None:
    crs = pyproj.CRS.from_epsg(32650)
    site = Site("BIG-1", box(500_000, 4_800_000, 502_600, 4_802_300), crs, {})  # 6 km2
    _, truth = synthesize(site, site.buffered(500), SHORT, seed=1, scenario="mining", domain="steppe_grassland+30m")
    pit = truth[truth.kind == "open_pit"]
    assert len(pit) == 1
    assert pit.disturbance_class.iloc[0] == "clearing"
    assert pit.natural_agent.iloc[0] == ""
    assert pit.inside_licence.iloc[0]
    big = truth[truth.disturbance_class == "clearing"]
    assert (big.area_m2 >= 100e4).sum() == 2, "an open pit and a clearing of 100-200 ha"
    assert big.area_m2.max() <= 200.01e4
    assert truth.kind.isin(["pad", "track"]).sum() == 2, "a pad and a track along a road"


def test_trenches_are_sub_pixel_at_30_m() -> None:
    cube, truth = _scene("boreal_forest", "+30m", seed=1, scenario="exploration")
    trenches = truth[truth.kind == "trench"]
    assert len(trenches) == 3
    shape_ = (cube.sizes["y"], cube.sizes["x"])
    for geom in trenches.geometry:
        rect = geom.minimum_rotated_rectangle
        sides = sorted(Point(a).distance(Point(b)) for a, b in zip(rect.exterior.coords[:-1],
                                                                   rect.exterior.coords[1:], strict=True))
        assert sides[0] < 30.0 / 3
        assert fraction(geom, shape_, cube.rio.transform(), 15).max() < 0.5, "no pixel is mostly trench"


def test_works_along_roads_touch_the_road() -> None:
    crs = pyproj.CRS.from_epsg(32650)
    site = Site("BIG-2", box(500_000, 4_800_000, 502_000, 4_801_800), crs, {})
    from gmsense.sources.synthetic import _rng_for, scene_grid
    from gmsense.sources.synthetic._plan import plan_world_events
    from gmsense.sources.synthetic._world import build_world

    region = site.buffered(500)
    grid = scene_grid(region, site.crs, 30.0)
    xs, ys, transform = grid.xs(), grid.ys(), grid.transform
    years = np.array([2020, 2021])
    for seed in range(4):
        land = build_world(region, site.geometry, (ys.size, xs.size), transform, years, _rng_for("x", seed),
                           BIOMES["steppe_grassland"], 30.0, 44.0)
        events = plan_world_events(site, region, land, years, "mining", _rng_for("y", seed),
                                   BIOMES["steppe_grassland"], transform)
        for e in events:
            if e.kind in ("pad", "track"):
                assert e.geometry.distance(land.geometries["road"]) < 3.0, f"{e.kind} of seed {seed} is off the road"


def test_winter_works_are_first_seen_in_spring() -> None:
    winter = []
    for seed in (1, 2, 3):
        _, truth = _scene("wetland", "+30m", seed=seed, span="three")
        human = truth[truth.natural_agent == ""]
        winter.append(human[human.start.str[5:7].astype(int).isin([11, 12, 1, 2, 3])])
    works = gpd.pd.concat(winter)
    assert len(works) >= 2
    for _, w in works.iterrows():
        start_year, start_month = int(w.start[:4]), int(w.start[5:7])
        season = start_year + (start_month >= 11)
        if w.first_observed:
            assert int(w.first_observed[:4]) == season, f"{w.event_id} {w.start} {w.first_observed}"
            assert 5 <= int(w.first_observed[5:7]) <= 6, "the first clear look in spring"


def test_dieback_spreads_over_the_years() -> None:
    rng = np.random.default_rng(3)
    geom, parts = shape("dieback", Point(0, 0), rng, BIOMES["boreal_forest"].sizes)
    event = Event("D", "dieback", geom, np.datetime64("2020-06-10"), 0.0, parts=parts)
    areas = [event.extent(np.datetime64(f"{y}-10-01")).area for y in (2020, 2021, 2022, 2023)]
    assert areas[0] < areas[-1]
    assert all(a <= b for a, b in itertools.pairwise(areas))
    # the image: the browned share of the footprint grows from one season to the next
    minx, miny, maxx, maxy = geom.buffer(30).bounds
    transform = Affine(10.0, 0, minx, 0, -10.0, maxy)
    shape_ = (int((maxy - miny) / 10) + 1, int((maxx - minx) / 10) + 1)
    ones = np.ones(shape_, dtype="float32")
    land = Landscape(shape_, 0 * ones, 0 * ones, 0 * ones, np.zeros((0, *shape_)), 0 * ones, ones, ones, ones,
                     ones, [], {}, {}, {}, 2021)
    stamp, _ = make_stamp(event, land, shape_, transform, 5, 1.0, 10.0)
    cover = np.zeros((9, stamp.fraction.shape[0], stamp.fraction.shape[1]), dtype="float32")
    cover[0] = 1.0  # all green
    browned = [float((cover[0] - apply_stamp(stamp, np.datetime64(f"{y}-09-01"), cover, cover)[0]).sum())
               for y in (2020, 2021, 2022, 2023)]
    assert browned[0] < browned[1] < browned[-1]


def test_dieback_browns_the_forest_year_after_year_in_a_scene() -> None:
    cube, truth = _scene("boreal_forest", "+30m", seed=1, span="full")
    event = truth[truth.kind == "dieback"].iloc[0]
    share = fraction(event.geometry, (cube.sizes["y"], cube.sizes["x"]), cube.rio.transform(), 15)
    ndvi = cubeops.index(cubeops.masked(cube), "ndvi")
    late = ndvi.sel(time=ndvi["time"].dt.month.isin([8, 9])).groupby("time.year").median("time")
    first = int(event.start[:4])
    base = late.sel(year=first - 1).values
    browned = [int((((base - late.sel(year=y).values) > 0.1) & (share > 0.3)).sum()) for y in range(first, 2023)]
    assert browned[-1] > browned[0] + 5, browned


def test_mountain_terrain_shades_by_date() -> None:
    terrain = make_terrain((120, 120), 30.0, BIOMES["mountain_forest"].relief_m, 42.5, np.random.default_rng(1))
    summer, summer_cast = terrain.illumination(172, 10.5)
    autumn, autumn_cast = terrain.illumination(295, 10.5)
    assert autumn_cast.mean() > summer_cast.mean() + 0.02, "long shadows when the sun is low"
    assert autumn.std() > summer.std()
    assert 0.85 < float(np.median(summer)) < 1.1, "flat-ish ground is lit as flat ground"
    cube, _ = _scene("mountain_forest", "+30m", seed=1)
    months = cube["time"].dt.month.values
    dark = (cube["scl"].values == 2).mean(axis=(1, 2))
    assert dark[months == 10].mean() > dark[(months >= 6) & (months <= 8)].mean()
    assert cube["clear"].values[cube["scl"].values == 2].all(), "terrain shadow is still a clear observation"


# --- names, settings, site properties and the CLI ----------------------------------------------------------------

def test_domain_names() -> None:
    assert set(DOMAINS) == {"classic", "boreal_forest", "steppe_grassland", "cropland_plain", "wetland",
                            "mountain_forest"}
    d = domain_named("boreal_forest+landsat+cloudy+shift+14")
    assert d.name == "boreal_forest+landsat+cloudy+shift+14"
    assert d.resolution(10.0) == 30.0
    assert domain_named("wetland+20m+s2_no_swir").name == "wetland+s2_no_swir+20m"
    assert domain_named("classic").is_classic
    assert not domain_named("classic+30m").is_classic
    for bad, message in (("volcano", "unknown synthetic domain"), ("wetland+40m", "unknown modifier"),
                         ("wetland+shift+30", "at most 21 days")):
        with pytest.raises(ValueError, match=message):
            domain_named(bad)
    for name in (*DOMAINS, *MODIFIERS, "shift+N"):
        assert name in SYNTH_DOMAIN_HELP, f"gmsense synth --help does not name {name}"


def test_domain_comes_from_argument_then_site_then_settings() -> None:
    site = _biome_site("cropland_plain")
    tagged = Site(site.site_id, site.geometry, site.crs, {"synthetic_domain": "wetland+30m"})
    settings = SHORT.model_copy(update={"domain": "steppe_grassland+30m"})
    assert synthesize(tagged, tagged.buffered(200), settings, seed=1)[0].attrs["domain"] == "wetland+30m"
    assert synthesize(site, site.buffered(200), settings, seed=1)[0].attrs["domain"] == "steppe_grassland+30m"
    cube, truth = synthesize(tagged, tagged.buffered(200), settings, seed=1, domain="cropland_plain+30m")
    assert cube.attrs["domain"] == "cropland_plain+30m"
    assert (truth.domain == "cropland_plain+30m").all()


def test_random_licences_per_domain() -> None:
    sites = random_licences(4, 6, domain="steppe_grassland")
    areas = [s.geometry.area / 1e6 for s in sites]
    assert all(1.5 * 0.99 <= a <= 6.0 * 1.01 for a in areas)
    assert all(s.attrs["synthetic_domain"] == "steppe_grassland" for s in sites)
    assert [s.geometry.wkb for s in random_licences(4, 6, domain="steppe_grassland")] == [s.geometry.wkb
                                                                                           for s in sites]
    assert random_licences(4, 1, domain="wetland")[0].geometry.area < 3.0e6 * 1.01


def test_cli_synth_domain(tmp_path: Path) -> None:
    site = _biome_site("steppe_grassland", 400.0, 300.0)
    sites_file = tmp_path / "sites.geojson"
    gpd.GeoDataFrame({"site_id": [site.site_id]}, geometry=[site.geometry], crs=site.crs).to_file(sites_file)
    config = tmp_path / "c.yaml"
    config.write_text("synthetic:\n  start: '2020-09-01'\n  end: '2021-06-15'\nsites:\n  buffer_m: 100\n")
    runner = CliRunner()
    result = runner.invoke(app, ["synth", "--sites", str(sites_file), "--out", str(tmp_path / "out"), "--domain",
                                 "steppe_grassland+30m+s2_no_swir", "--config", str(config)])
    assert result.exit_code == 0, result.output
    tif = sorted((tmp_path / "out" / site.site_id).glob("*.tif"))[0]
    with rasterio.open(tif) as src:
        assert src.descriptions == ("B02", "B03", "B04", "B08", "SCL")
        assert src.res == (30.0, 30.0)
        assert src.tags()["DOMAIN"] == "steppe_grassland+s2_no_swir+30m"
    truth = gpd.read_file(tmp_path / "out" / site.site_id / "truth.geojson")
    assert list(truth.columns) == TRUTH_COLUMNS
    bad = runner.invoke(app, ["synth", "--sites", str(sites_file), "--out", str(tmp_path / "o2"), "--domain",
                              "volcano"])
    assert bad.exit_code == 2
    assert "unknown synthetic domain" in bad.output


def test_a_southern_world_is_the_same_world_half_a_year_later() -> None:
    from gmsense.pipeline import analyse_cube
    from gmsense.sources.synthetic import scan_settings
    from gmsense.sources.synthetic._domains import HALF_YEAR_DAYS

    assert domain_named("classic+landsat+south").name == "classic+landsat+south"
    north_cube, north_truth = _scene("classic", span="three", seed=3)
    south_cube, south_truth = _scene("classic", "+south", seed=3, span="three")
    half = np.timedelta64(HALF_YEAR_DAYS, "D")
    assert (south_cube["time"].values == north_cube["time"].values + half).all()
    np.testing.assert_array_equal(south_cube["nir"].values, north_cube["nir"].values)
    assert south_cube.attrs["domain"] == "classic+south"
    assert [str(np.datetime64(s) + half) for s in north_truth["start"]] == south_truth["start"].tolist()
    green_up = south_cube["time"].dt.month.values[south_cube["nir"].mean(dim=("y", "x")).values > 0.25]
    assert set(green_up) <= {10, 11, 12, 1, 2, 3, 4, 5}, "the green season runs across New Year"
    settings = scan_settings(Settings(), "classic+south")
    assert (settings.season.start_month, settings.season.end_month) == (11, 3)
    assert scan_settings(Settings(), "classic") == Settings()
    # scanned with its season, it finds the northern world's patches, dated half a year later (the line
    # pass and the agents' "same days a year before" compare days of the season, not of the calendar
    # year: before, the line pass lost a trench whose season ran across New Year). Not bit for bit: the
    # month-based season drops the last two days of the shifted window (30 September + 184 days is 2
    # April) and the harmonic fit sees a season a day longer or shorter in leap years.
    site = _biome_site("classic")
    north = analyse_cube(site, north_cube, Settings()).patches
    south = analyse_cube(site, south_cube, settings).patches
    assert len(north) >= 5

    def found(patch: object, among: list) -> bool:
        return any(p.disturbance_class == patch.disturbance_class
                   and abs(p.area_m2 - patch.area_m2) <= 0.1 * patch.area_m2
                   and abs(np.datetime64(str(p.first_detected)[:10]) - np.datetime64(str(patch.first_detected)[:10])
                           - (half if among is south else -half)) <= np.timedelta64(3, "D") for p in among)

    assert sum(found(p, south) for p in north) >= len(north) - 1, "every northern patch but at most one"
    assert sum(found(p, north) for p in south) >= len(south) - 1

    def lines(patches: list) -> list[str]:
        return sorted(p.disturbance_class for p in patches if p.disturbance_class in ("trench", "track"))

    assert lines(south) == lines(north), "the lines whose season crosses New Year, as in the north"
    assert "trench" in lines(south) or "track" in lines(south)


def test_a_southern_world_scanned_with_a_northern_season_warns() -> None:
    from dataclasses import replace

    from gmsense.sources import SyntheticSource

    north = _biome_site("classic")
    site = replace(north, attrs={**north.attrs, "synthetic_domain": "classic+south"})
    settings = Settings.model_validate({"synthetic": {"start": "2020-04-01", "end": "2021-10-31"}})
    with pytest.warns(UserWarning, match="southern calendar.*start_month 11, end_month 3"):
        SyntheticSource(settings).load(site, site.buffered(500), None, None)
    southern = settings.with_overrides({"season.start_month": 11, "season.end_month": 3})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SyntheticSource(southern).load(site, site.buffered(500), None, None)


def test_randomised_worlds_draw_every_modifier_deterministically() -> None:
    """Domain randomisation: a biome's world per seed is fixed by the seed, is a valid domain name,
    and across seeds every sensor, pixel size, sky, a season shift and the south all occur."""
    from gmsense.sources.synthetic import biome_of, randomised_domain

    drawn = [randomised_domain("wetland", seed) for seed in range(200)]
    assert [d.name for d in drawn] == [randomised_domain("wetland", seed).name for seed in range(200)]
    assert all(domain_named(d.name) == d and biome_of(d.name) == "wetland" for d in drawn)
    assert {d.sensor.name for d in drawn} == {"s2", "s2_no_swir", "landsat"}
    assert {d.resolution(10.0) for d in drawn} == {10.0, 20.0, 30.0}
    assert {d.clouds.name for d in drawn} == {"clear", "normal", "cloudy"}
    assert {d.hemisphere for d in drawn} == {"north", "south"}
    shifts = [d.season_shift_days for d in drawn]
    assert 0 in shifts
    assert min(shifts) < 0 < max(shifts)
    assert all(abs(s) <= 21 for s in shifts)
    assert all(d.resolution(10.0) == 30.0 for d in drawn if d.sensor.name == "landsat")
    # most worlds redraw the land cover: grass to forest, sparse to dense, flat or with relief
    covered = [d for d in drawn if d.cover_draw]
    assert 0.5 < len(covered) / len(drawn) < 0.9
    assert all(d.biome.name == "wetland" and f"+cover{d.cover_draw}" in d.name for d in covered)
    grass_vigour = [d.biome.grass_vigour for d in covered]
    assert min(grass_vigour) < 0.5
    assert max(grass_vigour) > 0.75
    assert {d.biome.relief_m > 0 for d in covered} == {True, False}
    assert all(d.biome.human_kinds == DOMAINS["wetland"].biome.human_kinds for d in covered), "events stay"
    assert not any(randomised_domain("classic", seed).cover_draw for seed in range(50))
    with pytest.raises(ValueError, match="classic world keeps its own land cover"):
        domain_named("classic+cover5")
    with pytest.raises(ValueError, match="unknown modifier"):
        domain_named("wetland+cover0")
    # biomes draw independently: their modifier sequences over the seeds differ
    def modifiers(biome: str) -> list[str]:
        return [randomised_domain(biome, seed).name.partition("+")[2] for seed in range(20)]

    assert modifiers("wetland") != modifiers("boreal_forest")
    with pytest.raises(ValueError, match="unknown biome"):
        randomised_domain("volcano", 1)
