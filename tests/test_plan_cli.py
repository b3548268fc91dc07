"""``gmsense plan``: a province of licences planned before anything is fetched, totals that add up,
warnings with their numbers, and bad input as one line with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pytest
from shapely.geometry import box

from gmsense.batch.forecast import LONG_LICENCE_S, wall_seconds
from gmsense.testutils import run_cli

X0, Y0 = 500_000.0, 5_200_000.0  # UTM 52N, Heilongjiang


def _write(path: Path, boxes: dict[str, tuple[float, float, float, float]]) -> Path:
    frame = gpd.GeoDataFrame({"site_id": list(boxes), "licence_type": "exploration"},
                             geometry=[box(*b) for b in boxes.values()], crs="EPSG:32652")
    frame.to_crs("EPSG:4326").to_file(path, driver="GeoJSON")
    return path


def test_a_province_of_a_thousand_licences_and_a_giant(tmp_path: Path) -> None:
    boxes = {f"S{k:04d}": (X0 + 2_000 * (k % 40), Y0 + 2_000 * (k // 40), X0 + 2_000 * (k % 40) + 300,
                           Y0 + 2_000 * (k // 40) + 300) for k in range(1_000)}
    boxes["GIANT"] = (X0 - 250_000, Y0 - 100_000, X0 - 50_000, Y0 + 100_000)  # 200 km wide
    sites = _write(tmp_path / "province.geojson", boxes)
    code, output = run_cli("plan", "--sites", sites, "--memory-limit", "2GB", "--workers", "4", "--top", "5",
                           "--json", tmp_path / "plan.json")
    assert code == 0, output
    plan = json.loads((tmp_path / "plan.json").read_text())
    totals = plan["totals"]
    assert totals["licences"] == 1_001
    assert "1001 licences" in output
    assert f"{totals['units']} units, {totals['tiles']} tiles" in output
    assert len(plan["units"]) == totals["units"]
    assert {s for u in plan["units"] for s in u["site_ids"]} == set(boxes), "every licence planned"
    assert all(u["bytes"] <= plan["memory_limit_bytes"] for u in plan["units"])
    giant = [u for u in plan["units"] if u["site_ids"] == ["GIANT"]]
    assert len(giant) == totals["tiles"] > 100, "only the giant is tiled"
    assert totals["units"] - len(giant) < 1_000 / 4, "the small licences are grouped"
    seconds = [u["seconds"] for u in plan["units"]]
    assert totals["core_hours"] == pytest.approx(sum(seconds) / 3600, abs=1e-3)
    assert totals["core_hours"] / 4 <= totals["wall_hours"] + 1e-3 <= totals["core_hours"] + 2e-3
    [warning] = plan["warnings"]  # the giant alone takes over an hour
    giant_row = next(r for r in plan["licences"] if r["site_ids"] == ["GIANT"])
    assert giant_row["seconds"] > LONG_LICENCE_S
    assert warning.startswith("licence GIANT: about ")
    assert f"{giant_row['tiles']} tiles" in warning
    assert "warning: licence GIANT: about" in output
    assert "the 5 longest of" in output


def test_a_licence_too_large_for_the_memory_limit_even_in_tiles_is_named_with_numbers(tmp_path: Path) -> None:
    sites = _write(tmp_path / "one.geojson", {"WIDE": (X0, Y0, X0 + 3_000, Y0 + 3_000)})
    code, output = run_cli("plan", "--sites", sites, "--memory-limit", "20MB", "--buffer", "0")
    assert code == 0, output
    assert "warning: licence WIDE: a tile of 600 m with its 300 m margins needs about" in output
    assert "above the memory limit of 20.0 MB" in output


@pytest.mark.parametrize(("args", "expected"), [
    (("--sites", "missing.geojson"), "does not exist"),
    (("--memory-limit", "lots"), "--memory-limit: cannot read the memory size 'lots'"),
    (("--start", "2021-13-01"), "--start '2021-13-01' is not a real calendar date"),
    (("--source", "local"), "--source local needs --imagery"),
    (("--source", "local", "--imagery", "nowhere"), "does not exist"),
])
def test_bad_input_is_one_clear_line_and_exit_2(tmp_path: Path, args: tuple[str, ...], expected: str) -> None:
    sites = _write(tmp_path / "one.geojson", {"A": (X0, Y0, X0 + 300, Y0 + 300)})
    full = args if "--sites" in args else ("--sites", sites, *args)
    code, output = run_cli("plan", *full)
    assert code == 2, output
    assert expected in output


def test_wall_time_puts_the_longest_units_first() -> None:
    assert wall_seconds([2.0, 3.0, 4.0, 3.0], 2) == 6.0
    assert wall_seconds([1.0, 1.0, 5.0, 1.0, 1.0, 1.0], 2) == 5.0
    assert wall_seconds([5.0], 8) == 5.0
    assert wall_seconds([], 3) == 0.0


def test_a_lone_large_licence_is_planned_on_every_worker(tmp_path: Path) -> None:
    """As the scan does: one licence and two worker processes, the plan cuts it in two tiles (its
    wall time about half its core time); on one worker it stays whole."""
    sites = _write(tmp_path / "one.geojson", {"LARGE": (X0, Y0, X0 + 7_000, Y0 + 7_000)})
    plans = {}
    for workers in (1, 2):
        code, output = run_cli("plan", "--sites", sites, "--memory-limit", "16GB", "--workers", str(workers),
                               "--json", tmp_path / f"plan{workers}.json")
        assert code == 0, output
        plans[workers] = json.loads((tmp_path / f"plan{workers}.json").read_text())["totals"]
    assert plans[1]["units"] == 1
    assert plans[1]["tiles"] == 0
    assert plans[2]["units"] == plans[2]["tiles"] == 2
    assert plans[2]["wall_hours"] < 0.6 * plans[1]["wall_hours"]
