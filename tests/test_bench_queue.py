"""``gmsense bench queue`` in small (2,000 flags), on SQLite (through the command line) and PostgreSQL:
a real store filled by bulk inserts, the real review app served by uvicorn in a subprocess, real HTTP.
The checks are on what was measured, never on how long it took: every page answered for both
users, the figures and counts are those of the store, and the flags export's memory does not grow
with its rows (Python allocations traced while the CSV streams; the same trace of an export that
keeps what it produced grows, so the measure can tell)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from gmsense.bench.queue import run_queue_bench, traced_export
from gmsense.bench.queue_load import BUSY_COUNTY, fill_store
from gmsense.errors import InputError
from gmsense.store import EscalationEventRow, FlagRow, ReviewRow, SiteRow, Store
from gmsense.testutils import run_cli

FLAGS, LICENCES = 2_000, 100
FIGURES = ("queue: first page", "queue: filtered page", "queue: overdue at the city stage", "queue: deep page",
           "dashboard")


def _check_results(results: dict[str, Any], store: Store) -> None:
    rows = results["store"]["rows"]
    assert rows["flags"] == FLAGS
    assert rows["sites"] == LICENCES
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(FlagRow)) == FLAGS
        assert s.scalar(select(func.count()).select_from(ReviewRow)) == rows["reviews"] > 0
        assert s.scalar(select(func.count()).select_from(EscalationEventRow)) == rows["escalation_events"] > 0
        decided = dict(s.execute(select(FlagRow.status, func.count()).group_by(FlagRow.status)).all())
        in_county = s.scalar(select(func.count()).select_from(FlagRow).where(FlagRow.county_code == BUSY_COUNTY))
        counties = s.scalar(select(func.count(func.distinct(SiteRow.county_code))))
    assert set(decided) == {"open", "field_visit", "confirmed", "dismissed"}, "a mix of statuses"
    assert counties > 10, "licences in many counties"
    pages = results["pages"]
    assert [p["user"] for p in pages] == ["bench-province"] * 5 + ["bench-county"] * 5
    for page in pages:
        assert page["figure"].startswith(FIGURES[pages.index(page) % 5])
        assert len(page["runs_ms"]) == results["runs"]
        assert page["min_ms"] <= page["median_ms"] <= page["max_ms"]
        assert page["bytes"] > 0
    province, county = pages[:5], pages[5:]
    everything = next(p for p in province if p["figure"].startswith("queue: deep page"))
    assert everything["matching_flags"] == FLAGS, "the province reviewer's 'all' is every flag"
    mine = next(p for p in county if p["figure"].startswith("queue: deep page"))
    assert mine["matching_flags"] == in_county, "the county reviewer's 'all' is their county's flags"
    assert 0 < in_county < FLAGS
    http_tenth, http_all = results["exports"]["http"]
    assert (http_tenth["rows"], http_all["rows"]) == (FLAGS // 10, FLAGS), "reclamation_overdue is a tenth"
    assert http_all["server_rss_peak_mb"] >= http_all["server_rss_before_mb"] > 0
    traced_tenth, traced_all = results["exports"]["traced"]
    assert (traced_tenth["rows"], traced_all["rows"]) == (FLAGS // 10, FLAGS)
    # Streamed in batches of 100: ten times the rows, and the peak grows by less than a quarter of the
    # extra output (it would grow by all of it if the export were built whole).
    more_output = traced_all["mb"] - traced_tenth["mb"]
    assert more_output > 0.3
    assert traced_all["peak_mb"] - traced_tenth["peak_mb"] < 0.25 * more_output, results["exports"]["traced"]


def _traced(store: Store, keep: bool = False) -> list[dict[str, Any]]:
    traced_export(store, {"status": "all", "site_id": "HLJ-B00000"}, batch=100)  # warm-up (compiled queries)
    return [traced_export(store, {"status": "all", "rule": "reclamation_overdue"}, keep=keep, batch=100),
            traced_export(store, {"status": "all"}, keep=keep, batch=100)]


def _check_memory_measure_discriminates(store: Store) -> None:
    """The same trace of exports that keep their output grows by (about) the output: the measure can fail."""
    kept_tenth, kept_all = _traced(store, keep=True)
    assert kept_all["peak_mb"] - kept_tenth["peak_mb"] > 0.75 * (kept_all["mb"] - kept_tenth["mb"])


@pytest.mark.slow
def test_the_queue_bench_in_small_on_sqlite_through_the_command_line(tmp_path: Path) -> None:
    db, out = tmp_path / "bench.db", tmp_path / "results" / "queue.json"
    code, output = run_cli("bench", "queue", "--db", db, "--out", out, "--flags", FLAGS, "--licences", LICENCES,
                           "--runs", 2)
    assert code == 0, output
    results = json.loads(out.read_text())
    assert results["store"]["dialect"] == "sqlite"
    markdown = out.with_suffix(".md").read_text()
    assert "| queue: first page | bench-province (province) |" in markdown
    assert f"bench-county (county:{BUSY_COUNTY})" in markdown
    assert "server RSS growth MB" in markdown
    store = Store(str(db))
    # The command line streams in the app's batches (1,000): check the trace with smaller ones here.
    results["exports"]["traced"] = _traced(store)
    _check_results(results, store)
    _check_memory_measure_discriminates(store)
    again, output = run_cli("bench", "queue", "--db", db, "--out", tmp_path / "again.json", "--flags", FLAGS,
                            "--licences", LICENCES)
    assert again == 2, "a store holding data is refused, not filled twice"
    assert "empty store" in output
    store.engine.dispose()


@pytest.mark.slow
@pytest.mark.postgres
def test_the_queue_bench_in_small_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    results = run_queue_bench(postgres_url, tmp_path / "queue.json", flags=FLAGS, licences=LICENCES, runs=2,
                              export_batch=100)
    assert results["store"]["dialect"] == "postgresql"
    assert (tmp_path / "queue.md").is_file()
    store = Store(postgres_url)
    _check_results(results, store)
    _check_memory_measure_discriminates(store)
    store.engine.dispose()


def test_the_synthetic_province_refuses_bad_sizes_and_a_store_in_use(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "s.db"))
    with pytest.raises(InputError, match="at least 100 flags"):
        fill_store(store, flags=50, licences=20, password="bench-password-1")
    with pytest.raises(InputError, match="fewer licences than flags"):
        fill_store(store, flags=200, licences=300, password="bench-password-1")
    summary = fill_store(store, flags=300, licences=20, password="bench-password-1")
    assert summary.rows["flags"] == 300
    with pytest.raises(InputError, match="empty store"):
        fill_store(store, flags=300, licences=20, password="bench-password-1")
    store.engine.dispose()
