"""`gmsense bench queue`: the review app's queue, dashboard and exports at the size of a province.

1. Fills an empty store (a SQLite file or an empty PostgreSQL database) with a synthetic province
   (:mod:`gmsense.bench.queue_load`: by default 5,000 licences and 100,000 flags with their patches,
   decisions and escalation stages), with bulk inserts.
2. Serves it with the real review app: ``gmsense review serve`` in a subprocess (uvicorn), over HTTP on
   127.0.0.1, logged in as a province reviewer and as a county reviewer (the busiest county's).
3. Times, per user, ``runs`` requests of each page after one warm-up request: the queue's first page,
   a filtered page (severity, status and county), a page of the flags whose escalation stage is overdue
   at the city level, a deep page (the middle page of every flag), and the dashboard. A request's time
   is from sending it to having read the whole answer. Figures: the median and the range.
4. The flags export: the CSV of a tenth of the flags (rule ``reclamation_overdue``) and of all of them,
   streamed over HTTP while the server's resident memory is sampled (every 10 ms: its peak minus its
   level before the request); and the same exports run in this process under ``tracemalloc`` (the peak
   of Python allocations while streaming), which does not depend on the allocator's habits. Streamed
   in batches, the peak is one batch's, whatever the number of rows.

Targets (issue 20): each page under 300 ms; the export's memory not growing with the rows.
"""

from __future__ import annotations

import http.client
import os
import platform
import re
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from gmsense import __version__
from gmsense.bench import write_json_and_markdown
from gmsense.bench.queue_load import BUSY_COUNTY, fill_store
from gmsense.store import Store

TARGET_MS = 300.0
SAMPLE_S = 0.01
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def review_server(url: str, cache_dir: Path, log: Path) -> Iterator[tuple[int, int]]:
    """``gmsense review serve`` over the store ``url`` in a subprocess; yields (port, pid) once it answers."""
    port = free_port()
    command = [sys.executable, "-c", "import sys; from gmsense.cli import app; sys.argv[0] = 'gmsense'; app()",
               "review", "serve", "--db", url, "--port", str(port), "--warm", "0", "--cache-dir", str(cache_dir)]
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the review server stopped ({process.returncode}): {log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the review server did not answer: {log.read_text()[-2000:]}") from None
                time.sleep(0.2)
        yield port, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Browser:
    """One logged-in user over HTTP/1.1 (a kept-alive connection and the session cookie), as a browser."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)

    def _send(self, method: str, path: str, body: str | None = None) -> http.client.HTTPResponse:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        self.connection.request(method, path, body=body, headers=headers)
        response = self.connection.getresponse()
        for name, value in response.getheaders():
            if name.lower() == "set-cookie":
                key, _, rest = value.partition("=")
                self.cookies[key.strip()] = rest.split(";", 1)[0].strip('"')
        return response

    def login(self, username: str, password: str) -> None:
        page = self._send("GET", "/login").read().decode()
        token = _CSRF.search(page)
        if token is None:  # pragma: no cover - the login page always carries it
            raise RuntimeError("the login page has no CSRF token")
        response = self._send("POST", "/login", urlencode({"username": username, "password": password,
                                                          "csrf_token": token.group(1), "next": "/flags"}))
        response.read()
        if response.status != 303:
            raise RuntimeError(f"login as {username} failed ({response.status})")

    def get(self, path: str) -> tuple[float, int, bytes]:
        """Seconds from sending the request to having read the whole answer, the status and the body."""
        t0 = time.perf_counter()
        response = self._send("GET", path)
        body = response.read()
        return time.perf_counter() - t0, response.status, body

    def stream(self, path: str, chunk: int = 1 << 16) -> tuple[float, int, int, int]:
        """Read an answer chunk by chunk, keeping none: (seconds, status, bytes, lines)."""
        t0 = time.perf_counter()
        response = self._send("GET", path)
        size = lines = 0
        while data := response.read(chunk):
            size += len(data)
            lines += data.count(b"\n")
        return time.perf_counter() - t0, response.status, size, lines


def _spread(seconds: list[float]) -> dict[str, Any]:
    ms = [s * 1000 for s in seconds]
    return {"median_ms": round(statistics.median(ms), 1), "min_ms": round(min(ms), 1), "max_ms": round(max(ms), 1),
            "runs_ms": [round(v, 1) for v in ms]}


def _time_page(browser: Browser, path: str, runs: int) -> dict[str, Any]:
    """The first request (``first_ms``: caches cold), then ``runs`` more: their median and range."""
    first, status, body = browser.get(path)
    if status != 200:
        raise RuntimeError(f"GET {path} answered {status}: {body[:300]!r}")
    return {"path": path, "bytes": len(body), "first_ms": round(first * 1000, 1),
            **_spread([browser.get(path)[0] for _ in range(runs)])}


def _matching(browser: Browser, query: dict[str, Any]) -> dict[str, Any]:
    """The queue's total and pages for ``query`` (from the JSON API)."""
    import json

    _, status, body = browser.get("/api/flags?" + urlencode(query))
    if status != 200:
        raise RuntimeError(f"/api/flags answered {status}: {body[:300]!r}")
    return json.loads(body)


def pages_of(browser: Browser, county: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(figure, path, query) of the pages timed for a user: first, filtered, stage overdue, deep, dashboard."""
    everything = _matching(browser, {"status": "all"})
    filtered = {"severity": "critical", "status": "open", "county": county}
    overdue = {"stage": "city", "overdue": "yes"}
    return [("queue: first page", "/flags", {}),
            ("queue: filtered page (critical, open, one county)", "/flags?" + urlencode(filtered), filtered),
            ("queue: overdue at the city stage", "/flags?" + urlencode(overdue), overdue),
            (f"queue: deep page ({max(1, everything['pages'] // 2)} of {everything['pages']}, every status)",
             "/flags?" + urlencode({"status": "all", "page": max(1, everything["pages"] // 2)}), {"status": "all"}),
            ("dashboard", "/dashboard", {})]


def _rss_peak(pid: int, stop: threading.Event, found: dict[str, int]) -> None:
    import psutil

    process = psutil.Process(pid)
    while not stop.is_set():
        try:
            found["peak"] = max(found.get("peak", 0), process.memory_info().rss)
        except psutil.Error:  # pragma: no cover - the server went away
            return
        time.sleep(SAMPLE_S)


def http_export(browser: Browser, pid: int, query: dict[str, str]) -> dict[str, Any]:
    """The flags CSV of ``query`` streamed over HTTP, the server's resident memory sampled meanwhile."""
    import psutil

    before = psutil.Process(pid).memory_info().rss
    found: dict[str, int] = {}
    stop = threading.Event()
    sampler = threading.Thread(target=_rss_peak, args=(pid, stop, found), daemon=True)
    sampler.start()
    try:
        seconds, status, size, lines = browser.stream("/export/flags.csv?" + urlencode(query))
    finally:
        stop.set()
        sampler.join()
    if status != 200:
        raise RuntimeError(f"the flags export answered {status}")
    peak = max(found.get("peak", before), before)
    return {"query": query, "rows": max(0, lines - 1), "mb": round(size / 1e6, 1), "seconds": round(seconds, 2),
            "rows_per_s": round(max(0, lines - 1) / seconds) if seconds else None,
            "server_rss_before_mb": round(before / 1e6, 1), "server_rss_peak_mb": round(peak / 1e6, 1),
            "server_rss_growth_mb": round((peak - before) / 1e6, 1)}


def traced_export(store: Store, query: dict[str, str], *, keep: bool = False, batch: int | None = None
                  ) -> dict[str, Any]:
    """The flags CSV of ``query`` produced in this process as the web app streams it, under tracemalloc:
    the peak of Python allocations while it runs (``keep``: the chunks are kept, as a server that built
    the whole file first would; for comparison)."""
    from gmsense.review import exports, service

    kept: list[bytes] = []
    rows = size = 0
    flt = service.QueueFilter(**query)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        columns, batches = exports.batches(store, "flags", flt, **({"batch": batch} if batch else {}))
        for chunk in exports.stream_csv(columns, batches):
            rows += chunk.count(b"\n")
            size += len(chunk)
            if keep:
                kept.append(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return {"query": query, "rows": max(0, rows - 1), "mb": round(size / 1e6, 2), "kept": keep,
            "peak_mb": round(peak / 1e6, 2)}


def run_queue_bench(db: str, out: Path | None = None, *, flags: int = 100_000, licences: int = 5_000, runs: int = 7,
                    seed: int = 20, export_batch: int | None = None,
                    progress: Any = None) -> dict[str, Any]:
    """Fill the empty store ``db``, serve it and measure (see the module docstring); writes ``out``
    (JSON, and a markdown table beside it) when given. ``export_batch``: the rows per batch of the
    in-process export (default: the web app's, gmsense.review.exports.BATCH)."""
    from gmsense.review import exports

    say = progress or (lambda message: None)
    store = Store(db)
    password = secrets.token_urlsafe(18)
    say(f"filling the store with {licences} licences and {flags} flags")
    load = fill_store(store, flags=flags, licences=licences, seed=seed, password=password)
    results: dict[str, Any] = {
        "store": {"dialect": store.engine.dialect.name, "location": store.location, **load.as_json()},
        "runs": runs, "target_ms": TARGET_MS, "pages": [], "exports": {}}
    tenth = {"status": "all", "rule": "reclamation_overdue"}
    every = {"status": "all"}
    results["load_average_before"] = [round(v, 2) for v in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="gmsense-bench-queue-") as tmp, \
            review_server(db, Path(tmp) / "pictures", Path(tmp) / "server.log") as (port, pid):
        for username, scope in (("bench-province", "province"), ("bench-county", f"county:{BUSY_COUNTY}")):
            browser = Browser(port)
            browser.login(username, password)
            for figure, path, query in pages_of(browser, BUSY_COUNTY):
                say(f"timing {figure} as {username}")
                timed = _time_page(browser, path, runs)
                matching = _matching(browser, query)["total"] if path.startswith("/flags") else None
                results["pages"].append({"figure": figure, "user": username, "scope": scope,
                                         "matching_flags": matching, **timed,
                                         "within_target": timed["median_ms"] < TARGET_MS})
        browser = Browser(port)
        browser.login("bench-province", password)
        say("exporting the flags over HTTP (a tenth, then all)")
        browser.stream("/export/flags.csv?" + urlencode({"status": "all", "site_id": "HLJ-B00000"}))  # warm-up
        results["exports"]["http"] = [http_export(browser, pid, tenth), http_export(browser, pid, every)]
    say("exporting the flags in this process under tracemalloc (a tenth, then all)")
    traced_export(store, {"status": "all", "site_id": "HLJ-B00000"}, batch=export_batch)  # warm-up
    results["exports"]["traced"] = [traced_export(store, tenth, batch=export_batch),
                                    traced_export(store, every, batch=export_batch)]
    results["exports"]["batch"] = export_batch or exports.BATCH
    store.engine.dispose()
    results["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    results["machine"] = {"python": platform.python_version(), "processor": platform.processor() or platform.machine(),
                          "cpus": os.cpu_count(), "system": platform.platform()}
    results["gmsense_version"] = __version__
    if out is not None:
        write_json_and_markdown(results, out, queue_markdown(results))
    return results


def queue_markdown(r: dict[str, Any]) -> str:
    store = r["store"]
    rows = store["rows"]
    lines = [f"Store: {store['dialect']}, {rows['licences'] if 'licences' in rows else rows['sites']} licences in "
             f"{store['counties']} counties of {store['cities']} cities, {rows['flags']} flags, {rows['patches']} "
             f"patches, {rows['reviews']} decisions, {rows['escalation_events']} stage actions (filled in "
             f"{store['seconds']} s). {r['runs']} runs per figure after a warm-up; "
             f"target {r['target_ms']:.0f} ms.", "",
             "| figure | user | flags matching | median ms | range ms | under target |", "|---|---|---|---|---|---|"]
    lines += [f"| {p['figure']} | {p['user']} ({p['scope']}) | "
              f"{'-' if p['matching_flags'] is None else p['matching_flags']} | {p['median_ms']} | "
              f"{p['min_ms']}-{p['max_ms']} | {'yes' if p['within_target'] else 'NO'} |" for p in r["pages"]]
    lines += ["", "| flags export (CSV) | rows | MB | seconds | server RSS growth MB | in-process peak MB "
                  f"(tracemalloc, batches of {r['exports']['batch']}) |", "|---|---|---|---|---|---|"]
    for http_row, traced in zip(r["exports"]["http"], r["exports"]["traced"], strict=True):
        what = "every flag" if "rule" not in http_row["query"] else f"rule {http_row['query']['rule']}"
        lines.append(f"| {what} | {http_row['rows']} | {http_row['mb']} | {http_row['seconds']} | "
                     f"{http_row['server_rss_growth_mb']} | {traced['peak_mb']} |")
    m = r["machine"]
    lines += ["", f"Machine: {m['processor']}, {m['cpus']} CPUs, Python {m['python']}, {m['system']}."]
    return "\n".join(lines) + "\n"
