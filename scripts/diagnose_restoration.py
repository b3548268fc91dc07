"""Why does a county's restoration rate miss the truth? Per county of synthetic restoration worlds (latest
year): the estimated and true rates, and the polygons whose restored area differs, with their scenario, true
and estimated restored area, the share of the county's mine land the difference is, and the recent years of
ratio, true cover, pixel counts and statuses (so a gap year, a biased reference or a late second season shows).
The summary adds, per seed, the restored area misallocated: the sum over polygons of |estimated - true|
restored area in the latest year, in points of the mine land counted (a county's error is its share of
it, less what cancels). Tuning seeds only: 1001-1003 are the bench's held-out evaluation.

    PYTHONPATH=. python scripts/diagnose_restoration.py --seeds 1-10 [--polygons 200] [--cache /tmp/rworlds] \\
        [--out /tmp/rdiag.csv] [--config FILE] [--no-land-cover] [--quiet]

``--config`` runs other settings (e.g. ``restoration: {pre_damage_years: 0}`` to see what the
calibration against the ground before damage adds); ``--no-land-cover`` runs without the world's map.

``--bias`` prints the estimated ratio minus the true cover over the polygon-years (whole polygons, not the
partial scenario) by true cover, and near the threshold (true cover 0.7-0.9) by kind, land cover, reference
source and size: a systematic under-reading near high cover shows there. ``--reference`` runs a
counterfactual reference (the status rules, soil line and everything else unchanged): ``own-ground``
gives every polygon pixel, in every year it has a reference, the noise-free NDVI of the land under it
without the pit (what the truth's cover is relative to, :func:`ground_ndvi`; no archive can see it for a
pit dug before it began), ``noise-free-ring`` computes the shipped reference from the noise-free imagery
(the ring without the composites' per-pixel noise), ``cell-level`` gives every polygon pixel the ground under it
without its fine texture (each landscape cell's NDVI level that year, :func:`cell_level_ndvi`): the best any
prediction from the land around a pit can do when it knows the cells, not the texture under the pit. If the
county errors vanish with ``own-ground`` and stay with ``noise-free-ring``, they come from predicting the ground
under a pit from the land around it, not from noise, the soil line or the rules; if they stay with ``cell-level``,
from the texture under the pit, which no reference from around it can see.

``--expected-sd SD`` runs a counterfactual accounting (statuses unchanged): each polygon's restored share is the
share the rule gives, averaged over a lasting error of its ratio drawn from a normal distribution with
standard deviation ``SD`` (:func:`expected_shares`), so a polygon at the threshold counts about half its area instead
of all or none; it tells whether a probability of restoration would bring the county rates closer to the truth
than the definition's hard count.

Worlds are cached in ``--cache`` (one folder per seed and size), so a changed estimator is re-run on the same
imagery.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd

from gmsense.bench.restoration import BENCH_SEEDS, account, score, true_accounting
from gmsense.config import Settings, load_settings
from gmsense.restoration import reference as ref
from gmsense.restoration import run as restoration_run
from gmsense.restoration.status import restored_shares
from gmsense.sources.synthetic.restoration import (
    World,
    WorldSpec,
    at_resolution,
    draw_world,
    ground_ndvi,
    land_cover_map,
    true_ndvi,
    write_restoration_world,
)

SHOWN_YEARS = 5  # recent years printed per polygon
MIN_SHARE_PP = 0.5  # print polygons whose difference is at least this many points of their county's rate
REFERENCES = ("ring", "own-ground", "noise-free-ring", "cell-level")
COVER_BINS = [-0.01, 0.1, 0.5, 0.7, 0.75, 0.8, 0.85, 0.9, 1.0]
SIZE_BINS_HA = [0, 2, 5, 10, 20, 31]
#: Equally likely values of a standard normal error (the midpoints of 40 equal-probability bins).
ERROR_QUANTILES = np.array([NormalDist().inv_cdf((k + 0.5) / 40) for k in range(40)])


def seeds_of(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    held = sorted(set(out) & set(BENCH_SEEDS))
    if held:
        raise SystemExit(f"seeds {held} are the bench's held-out evaluation: diagnose on others")
    return out


def world_of(cache: Path, spec: WorldSpec) -> dict[str, Path]:
    """The world of ``spec`` in ``cache``, written once (a world cached before it had a land-cover map gets
    one: the map uses no random draw, so the rest of the world is the same)."""
    import rasterio

    folder = cache / f"seed{spec.seed}-p{spec.polygons}-{spec.first_year}-{spec.last_year}"
    paths = {"composites": folder / "composites", "register": folder / "register.gpkg", "truth": folder / "truth.csv",
             "polygons": folder / "polygons.csv", "land_cover": folder / "landcover.tif"}
    if not paths["polygons"].exists():
        write_restoration_world(folder, spec)
    elif not paths["land_cover"].exists():
        with rasterio.open(paths["composites"] / f"{spec.last_year}.tif") as src:
            profile = {**src.profile, "count": 1, "dtype": "uint8", "nodata": 0}
        with rasterio.open(paths["land_cover"], "w", **profile) as dst:
            dst.write(land_cover_map(draw_world(spec)), 1)
    return paths


def cell_level_ndvi(world: World, year: int) -> np.ndarray:
    """The noise-free NDVI of the land without the pits and without the fine texture (each landscape cell's level
    in ``year``, villages and roads bare) on the composites' grid: :func:`ground_ndvi` less what the cells do not
    tell."""
    factor = np.array([world.year_factor[world.covers[c]][year] for c in world.cell_cover], dtype="float32")
    ndvi = np.clip((world.cell_level.astype("float32") * factor)[world.cell_of], 0.2, 0.92)
    ndvi[world.villages] = 0.18
    return at_resolution(world, ndvi)


@contextmanager
def counterfactual_reference(kind: str, spec: WorldSpec) -> Iterator[None]:
    """Within the block, the restoration run's reference of every polygon pixel with a vegetated ring is
    ``kind`` (module docstring; ``ring``: the shipped one, unchanged; pits without a vegetated ring keep
    the land-cover fallback). The run reads the world's composites on their own grid, so a window's
    offset in the world is its transform's."""
    if kind == "ring":
        yield
        return
    world = draw_world(spec)
    if kind == "own-ground":
        field = np.stack([ground_ndvi(world, year) for year in spec.years])
    elif kind == "cell-level":
        field = np.stack([cell_level_ndvi(world, year) for year in spec.years])
    else:
        field = np.stack([at_resolution(world, true_ndvi(world, year)) for year in spec.years])
    res, (x0, y0) = spec.resolution, spec.origin

    def window(shape: tuple[int, ...], transform) -> np.ndarray:
        row, col = round((y0 - transform.f) / res), round((transform.c - x0) / res)
        if row < 0 or col < 0 or shape[0] != field.shape[0]:
            raise SystemExit("the run's window is not on the world's grid: run the world's composites")
        return field[:, row:row + shape[1], col:col + shape[2]]

    ring_reference = ref.ring_reference

    def ring(ndvi, polygon, ring_mask, transform, settings, classes=None, ring_classes=None):
        here = window(ndvi.shape, transform)
        if kind == "noise-free-ring":
            ndvi = np.where(np.isfinite(ndvi), here, np.nan)
        found = ring_reference(ndvi, polygon, ring_mask, transform, settings, classes, ring_classes)
        if kind == "noise-free-ring":
            return found
        return ref.Reference(np.where(np.isfinite(found.ndvi), here[:, polygon], np.nan), found.n_pixels,
                             found.source)

    ref.ring_reference = ring
    try:
        yield
    finally:
        ref.ring_reference = ring_reference


def expected_shares(pixel_ratio: np.ndarray, statuses: list[str | None], settings, polygon: np.ndarray | None = None,
                    sd: float = 0.0) -> np.ndarray:
    """The restored share per year of :func:`gmsense.restoration.status.restored_shares` expected when every pixel's
    ratio reads its true cover off by one error lasting over the years (the ground under the pit predicted from the
    land around it), normal with standard deviation ``sd``: the mean of the rule's share over
    :data:`ERROR_QUANTILES` of it (all ratios read that much lower; a shift moves every part's ratio by as much and
    leaves the split into parts alone). ``sd`` 0: the rule's share."""
    if sd <= 0:
        return restored_shares(pixel_ratio, statuses, settings, polygon)
    pixel_ratio = np.asarray(pixel_ratio, dtype=float)
    return np.mean([restored_shares(pixel_ratio - sd * z, statuses, settings, polygon) for z in ERROR_QUANTILES],
                   axis=0)


@contextmanager
def expected_accounting(sd: float) -> Iterator[None]:
    """Within the block, the restoration run stores :func:`expected_shares` with ``sd`` as each polygon's restored
    share (``sd`` 0: unchanged)."""
    if sd <= 0:
        yield
        return
    shipped = restoration_run.restored_shares

    def shares(pixel_ratio, statuses, settings, polygon=None):
        return expected_shares(pixel_ratio, statuses, settings, polygon, sd)

    restoration_run.restored_shares = shares
    try:
        yield
    finally:
        restoration_run.restored_shares = shipped


def print_bias(merged: pd.DataFrame) -> None:
    """Estimated ratio minus true cover (module docstring) of ``merged`` (per polygon-year: ``ratio``,
    ``cover``, ``status_true``, ``scenario``, ``kind``, ``land_cover``, ``reference_source``, ``area_m2``)."""
    rows = merged[merged["ratio"].notna() & merged["status_true"].notna() & (merged["scenario"] != "partial")]
    rows = rows.assign(error=rows["ratio"] - rows["cover"], true_cover=pd.cut(rows["cover"], COVER_BINS),
                       size_ha=pd.cut(rows["area_m2"] / 1e4, SIZE_BINS_HA))
    stats = ["count", "mean", "median", "std"]
    print("\nestimated ratio - true cover, whole polygons, by true cover:")
    print(rows.groupby("true_cover", observed=True)["error"].agg(stats).round(4).to_string())
    near = rows[(rows["cover"] >= 0.7) & (rows["cover"] <= 0.9)]
    for key in ("kind", "land_cover", "reference_source", "size_ha"):
        print(f"\ntrue cover 0.7-0.9, by {key}:")
        print(near.groupby(key, observed=True)["error"].agg(stats).round(4).to_string())


def diagnose(seed: int, polygons: int, years: int, cache: Path, settings: Settings, land_cover: bool = True,
             quiet: bool = False, reference: str = "ring", expected_sd: float = 0.0
             ) -> tuple[list[dict], dict, pd.DataFrame]:
    spec = WorldSpec(polygons=polygons, first_year=2024 - years + 1, last_year=2024, seed=seed)
    paths = world_of(cache, spec)
    with tempfile.TemporaryDirectory(prefix="gmsense-rdiag-") as tmp, counterfactual_reference(reference, spec), \
            expected_accounting(expected_sd):
        report, _ = account(paths["register"], paths["composites"], Path(tmp), settings,
                            paths["land_cover"] if land_cover else None)
        truth = pd.read_csv(paths["truth"])
        scenario = pd.read_csv(paths["polygons"])
        figures = score(report, truth, scenario)
        est = pd.read_csv(report / "status_by_polygon_year.csv")
    last = int(truth["year"].max())
    merged = truth.merge(est[["register_id", "year", "status", "ratio", "restored_m2", "n_pixels", "reference_ndvi",
                              "polygon_ndvi", "reference_source"]], on=["register_id", "year"], how="left",
                         suffixes=("_true", "_est"))
    merged = merged.merge(scenario[["register_id", "scenario", "kind", "land_cover", "planted_share", "works"]],
                          on="register_id")
    true_counties = true_accounting(truth, "county")
    now = merged[merged["year"] == last]
    now = now[now["status_true"].notna() | now["status_est"].notna()]
    difference = (now["restored_m2_est"].fillna(0.0) - now["restored_m2_true"]).abs().sum()
    figures["misallocated_pp"] = round(100 * float(difference) / float(now["area_m2"].sum()), 3)
    rows = []
    for county in sorted(merged["county"].unique()):
        now = merged[(merged["county"] == county) & (merged["year"] == last)]
        counted = now[now["status_true"].notna() | now["status_est"].notna()]
        total = float(counted["area_m2"].sum())
        t = true_counties[(true_counties["group"] == county) & (true_counties["year"] == last)].iloc[0]
        rate = next(c for c in figures["counties"] if c["county"] == county)
        say = (lambda *_: None) if quiet else print
        say(f"\nseed {seed} county {county}: true {t['restoration_rate']:.3f} est {rate['estimated_rate']:.3f} "
              f"error {rate['error_pp']:.2f} pp, {len(counted)} polygons, {total / 1e4:.1f} ha")
        for r in counted.itertuples():
            est_m2 = 0.0 if pd.isna(r.restored_m2_est) else float(r.restored_m2_est)
            diff = est_m2 - float(r.restored_m2_true)
            pp = 100 * diff / total
            history = merged[(merged["register_id"] == r.register_id) & (merged["year"] > last - SHOWN_YEARS)]
            rows.append({"seed": seed, "county": county, "register_id": r.register_id, "scenario": r.scenario,
                         "land_cover": r.land_cover, "area_ha": round(r.area_m2 / 1e4, 2),
                         "true_restored_ha": round(r.restored_m2_true / 1e4, 2),
                         "est_restored_ha": round(est_m2 / 1e4, 2),
                         "pp": round(pp, 2), "status_true": r.status_true, "status_est": r.status_est,
                         "gap_years": int((history["n_pixels"].fillna(0) < 0.5 * history["n_pixels"].max()).sum()),
                         "ratio_minus_cover": round(float(np.nanmean(history["ratio"] - history["cover"])), 3)})
            if abs(pp) < MIN_SHARE_PP:
                continue
            say(f"  {r.register_id} {r.scenario:10s} {r.land_cover:9s} {r.area_m2 / 1e4:5.1f} ha planted "
                  f"{r.planted_share:.2f} works {r.works}: restored true {r.restored_m2_true / 1e4:.2f} est "
                  f"{est_m2 / 1e4:.2f} ha ({pp:+.1f} pp), status {r.status_true} / {r.status_est}")
            for h in history.itertuples():
                say(f"      {h.year} cover {h.cover:.2f} ratio {h.ratio if pd.notna(h.ratio) else float('nan'):.2f}"
                      f" px {h.n_pixels:.0f} ref {h.reference_ndvi if pd.notna(h.reference_ndvi) else float('nan'):.2f}"
                      f" true {h.status_true}/{h.restored_m2_true / 1e4:.2f} ha est {h.status_est}/"
                      f"{(0 if pd.isna(h.restored_m2_est) else h.restored_m2_est) / 1e4:.2f} ha")
    return rows, figures, merged.assign(seed=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="1-5")
    parser.add_argument("--polygons", type=int, default=200)
    parser.add_argument("--years", type=int, default=30)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "gmsense-rworlds")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--config", type=Path, help="settings file (YAML) to run instead of the defaults")
    parser.add_argument("--no-land-cover", action="store_true", help="run without the world's land-cover map")
    parser.add_argument("--quiet", action="store_true", help="print the summary only")
    parser.add_argument("--bias", action="store_true", help="print the ratio's error against the true cover")
    parser.add_argument("--reference", choices=REFERENCES, default="ring",
                        help="a counterfactual reference (module docstring); ring: the shipped one")
    parser.add_argument("--expected-sd", type=float, default=0.0,
                        help="count each polygon's restored area expected under a lasting ratio error of this sd")
    args = parser.parse_args()
    settings = load_settings(args.config)
    rows, summary, years = [], [], []
    for seed in seeds_of(args.seeds):
        found, figures, merged = diagnose(seed, args.polygons, args.years, args.cache, settings,
                                          not args.no_land_cover, args.quiet, args.reference,
                                          args.expected_sd)
        rows += found
        years.append(merged)
        summary.append({"seed": seed, "status_accuracy": figures["status_accuracy"],
                        "restored_area_error_median": figures["restored_area_error_median"],
                        "county_max_pp": figures["county_rate_error_pp_max"],
                        "county_median_pp": figures["county_rate_error_pp_median"],
                        "misallocated_pp": figures["misallocated_pp"],
                        "county_errors": [c["error_pp"] for c in figures["counties"]]})
    table = pd.DataFrame(summary)
    print("\n" + table.to_string(index=False))
    errors = [e for s in summary for e in s["county_errors"] if e is not None]
    print(f"\nall seeds: status accuracy {np.mean(table['status_accuracy']):.3f}, county error max {max(errors):.2f} "
          f"median {np.median(errors):.2f} mean {np.mean(errors):.2f} pp, within 2 pp {sum(e <= 2 for e in errors)} of "
          f"{len(errors)}; restored area misallocated (sum |est - true| / mine land, latest year) "
          f"{np.mean(table['misallocated_pp']):.2f} pp")
    if args.bias:
        print_bias(pd.concat(years))
    if args.out:
        pd.DataFrame(rows).to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
