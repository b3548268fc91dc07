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

Worlds are cached in ``--cache`` (one folder per seed and size), so a changed estimator is re-run on the same
imagery.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from gmsense.bench.restoration import BENCH_SEEDS, account, score, true_accounting
from gmsense.config import Settings, load_settings
from gmsense.sources.synthetic.restoration import WorldSpec, draw_world, land_cover_map, write_restoration_world

SHOWN_YEARS = 5  # recent years printed per polygon
MIN_SHARE_PP = 0.5  # print polygons whose difference is at least this many points of their county's rate


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


def diagnose(seed: int, polygons: int, years: int, cache: Path, settings: Settings, land_cover: bool = True,
             quiet: bool = False) -> tuple[list[dict], dict]:
    spec = WorldSpec(polygons=polygons, first_year=2024 - years + 1, last_year=2024, seed=seed)
    paths = world_of(cache, spec)
    with tempfile.TemporaryDirectory(prefix="gmsense-rdiag-") as tmp:
        report, _ = account(paths["register"], paths["composites"], Path(tmp), settings,
                            paths["land_cover"] if land_cover else None)
        truth = pd.read_csv(paths["truth"])
        scenario = pd.read_csv(paths["polygons"])
        figures = score(report, truth, scenario)
        est = pd.read_csv(report / "status_by_polygon_year.csv")
    last = int(truth["year"].max())
    merged = truth.merge(est[["register_id", "year", "status", "ratio", "restored_m2", "n_pixels", "reference_ndvi",
                              "polygon_ndvi"]], on=["register_id", "year"], how="left", suffixes=("_true", "_est"))
    merged = merged.merge(scenario[["register_id", "scenario", "land_cover", "planted_share", "works"]],
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
    return rows, figures


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
    args = parser.parse_args()
    settings = load_settings(args.config)
    rows, summary = [], []
    for seed in seeds_of(args.seeds):
        found, figures = diagnose(seed, args.polygons, args.years, args.cache, settings, not args.no_land_cover,
                                  args.quiet)
        rows += found
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
    if args.out:
        pd.DataFrame(rows).to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
