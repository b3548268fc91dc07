"""The synthetic province of ``gmsense bench queue``: a store filled as years of scans and reviews would.

:func:`fill_store` writes, into an empty store, with bulk inserts (one executemany per table and
chunk, never one ORM round-trip per row):

- ``licences`` licences in the counties of eight cities of the shipped Heilongjiang division table
  (:mod:`gmsense.geo.divisions`), unevenly (a few counties hold many licences; 尚志市 230183, the
  county reviewer's, the most), 1 % naming a county the table does not know (province-wide users
  only see those); their attributes as a register holds them (names in Chinese, holder, mineral
  class, licence type);
- eight scans a season apart over two years, each with a scan unit per licence and the per-licence
  summary a scan writes (the dashboard's trend reads it);
- patches (one per 1.6 flags) of mixed class, recovery status and age, with their evidence and metrics;
- ``flags`` flags: rules in fixed shares (``reclamation_overdue`` exactly 10 %, so an export of it is
  a tenth of all), severities from configs/rules.yaml, created with their scan;
- reviewers' decisions, older flags decided more often: confirmed, dismissed, field visits (some
  field visits decided again later), each an audit-log row written before the flag's status changes
  (the database's guard, revision 0003, checks every one);
- escalation stages of confirmed flags (configs/rules.yaml's chains): the first stage signed with the
  confirmation, later stages signed or returned, deadlines from the moment each stage opened.

Random but reproducible (``seed``). Not written: recovery observations, restoration, layers (the
queue, the dashboard's flag figures and the exports do not read them).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Table, func, insert, select, text, update

from gmsense.config import RulesSettings, load_settings
from gmsense.errors import InputError
from gmsense.geo import divisions
from gmsense.review import auth
from gmsense.review.escalation import configured_chain, effective_chain
from gmsense.review.service import DISMISS_REASONS
from gmsense.store import (
    EscalationEventRow,
    FlagRow,
    PatchRow,
    ReviewRow,
    ScanRow,
    ScanUnitRow,
    SiteRow,
    Store,
    UserRow,
    UserScopeRow,
)

#: Cities whose counties hold the licences: Harbin, Qiqihar, Jixi, Hegang, Daqing, Yichun, Mudanjiang, Heihe.
CITIES = ("230100", "230200", "230300", "230400", "230600", "230700", "231000", "231100")
#: The county reviewer's county (the busiest): 尚志市 Shangzhi.
BUSY_COUNTY = "230183"
#: Rules and their share of the flags; ``None`` patch: a licence-level flag.
RULE_SHARES = (("new_disturbance", 0.40), ("outside_work_programme", 0.15), ("outside_licence", 0.12),
               ("reclamation_overdue", 0.10), ("recovery_reversed", 0.05), ("uncertain_label", 0.05),
               ("protected_land", 0.05), ("approved_work_not_observed", 0.05), ("permitted_area_exceeded", 0.03))
LICENCE_LEVEL_RULES = ("approved_work_not_observed", "permitted_area_exceeded")
PROTECTED_KINDS = (("ecological_red_line", "critical"), ("basic_farmland", "critical"),
                   ("public_welfare_forest", "warning"))
CLASSES = (("trench", 0.22), ("pad", 0.18), ("track", 0.22), ("clearing", 0.28), ("uncertain", 0.06),
           ("natural", 0.04))
RECOVERY = ("active", "recovering", "recovered", "not_recovering")
MINERALS = ("metal", "non_metal", "coal", "graphite", "gold")
SCANS = 8
SCAN_DAYS = 90
CHUNK = 5_000
PATCHES_PER_FLAG = 1 / 1.6


@dataclass
class LoadSummary:
    """What :func:`fill_store` wrote (row counts per table), how long it took, and who to log in as."""

    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    busy_county: str = BUSY_COUNTY
    counties: int = 0
    cities: int = 0
    users: dict[str, str] = field(default_factory=dict)  # login name -> scope

    def as_json(self) -> dict[str, Any]:
        return {"rows": self.rows, "seconds": round(self.seconds, 1), "busy_county": self.busy_county,
                "counties": self.counties, "cities": self.cities, "users": self.users}


def _counties() -> list[divisions.Division]:
    table = divisions.table()
    return [d for d in table.values() if d.level == "county" and d.current and d.parent in CITIES]


def _weighted(rng: random.Random, items: list[Any], weights: list[float], k: int) -> list[Any]:
    return rng.choices(items, weights=weights, k=k)


def _exact_shares(rng: random.Random, n: int) -> list[str]:
    """``n`` rules in the shares of RULE_SHARES (rounded so they add up to ``n``), shuffled."""
    counts = [math.floor(share * n) for _, share in RULE_SHARES]
    counts[0] += n - sum(counts)
    rules = [rule for (rule, _), count in zip(RULE_SHARES, counts, strict=True) for _ in range(count)]
    rng.shuffle(rules)
    return rules


def _square(lon: float, lat: float, side: float) -> str:
    return (f"POLYGON (({lon:.6f} {lat:.6f}, {lon + side:.6f} {lat:.6f}, {lon + side:.6f} {lat + side:.6f}, "
            f"{lon:.6f} {lat + side:.6f}, {lon:.6f} {lat:.6f}))")


def _chunks(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """CHUNK rows at a time, without the generator's own keys (those starting with ``_``)."""
    for start in range(0, len(rows), CHUNK):
        yield [{k: v for k, v in row.items() if not k.startswith("_")} for row in rows[start:start + CHUNK]]


def _bulk(store: Store, table: Table, rows: list[dict[str, Any]]) -> int:
    """Insert ``rows`` into ``table`` in one transaction, CHUNK rows per executemany."""
    with store.engine.begin() as connection:
        for chunk in _chunks(rows):
            connection.execute(insert(table), chunk)
    return len(rows)


def check_empty(store: Store) -> None:
    """The bench fills a store of its own: one that holds licences or flags already is refused."""
    with store.session() as s:
        held = int(s.scalar(select(func.count()).select_from(SiteRow)) or 0)
        held += int(s.scalar(select(func.count()).select_from(FlagRow)) or 0)
        held += int(s.scalar(select(func.count()).select_from(UserRow)) or 0)
    if held:
        raise InputError(f"bench queue fills an empty store, and {store.location} holds licences, flags or users "
                         "already: give a new SQLite file or an empty PostgreSQL database")


def fill_store(store: Store, *, flags: int = 100_000, licences: int = 5_000, seed: int = 20,
               password: str, now: datetime | None = None, rules: RulesSettings | None = None) -> LoadSummary:
    """Write the synthetic province (see the module docstring) into the empty ``store``; the two
    users to log in as, ``bench-province`` (reviewer, province) and ``bench-county`` (reviewer,
    county BUSY_COUNTY), get ``password``. ``now``: the moment the history ends (default: now, naive UTC)."""
    if flags < 100 or licences < 10:
        raise InputError("bench queue needs at least 100 flags and 10 licences")
    if licences > flags:
        raise InputError(f"bench queue: {licences} licences for {flags} flags leaves licences without flags; "
                         "give fewer licences than flags")
    check_empty(store)
    t0 = time.perf_counter()
    rng = random.Random(seed)
    now = now or datetime.now(UTC).replace(tzinfo=None)
    rules = rules or load_settings().rules
    summary = LoadSummary()
    counties = _counties()
    weights = [1.0 / (k + 2) ** 0.8 for k in range(len(counties))]
    rng.shuffle(weights)
    busy = next(i for i, d in enumerate(counties) if d.code == BUSY_COUNTY)
    weights[busy] = max(weights) * 1.5
    summary.counties, summary.cities = len(counties), len(CITIES)

    # A scan a season, the last two days ago: its flags' first stages are not due yet.
    scan_times = [now - timedelta(days=SCAN_DAYS * (SCANS - 1 - k) + 2) for k in range(SCANS)]
    sites = _sites(rng, licences, counties, weights)
    patches = _patches(rng, sites, round(flags * PATCHES_PER_FLAG), scan_times)
    flag_rows = _flags(rng, flags, sites, patches, scan_times, rules)
    summary.rows["sites"] = _bulk(store, SiteRow.__table__, sites)
    summary.rows["scans"] = _bulk(store, ScanRow.__table__, _scans(scan_times, sites, patches, flag_rows))
    summary.rows["scan_units"] = _bulk(store, ScanUnitRow.__table__, list(_units(sites, patches, flag_rows,
                                                                              scan_times)))
    summary.rows["patches"] = _bulk(store, PatchRow.__table__, patches)
    summary.rows["flags"] = _bulk(store, FlagRow.__table__, flag_rows)
    signers = _users(store, password, sites)
    summary.users = {"bench-province": "province", "bench-county": f"county:{BUSY_COUNTY}"}
    reviews, events = _decisions(store, rng, flag_rows, signers, rules, now)
    summary.rows["reviews"], summary.rows["escalation_events"] = reviews, events
    summary.rows["users"] = len(signers) + 2
    _finish(store)
    summary.seconds = time.perf_counter() - t0
    return summary


def _sites(rng: random.Random, n: int, counties: list[divisions.Division], weights: list[float]
           ) -> list[dict[str, Any]]:
    table = divisions.table()
    chosen = _weighted(rng, counties, weights, n)
    rows = []
    for k, county in enumerate(chosen):
        unknown = rng.random() < 0.01
        city = table[county.parent]
        attrs = {"name": f"{county.name_zh}{'勘查' if k % 3 else '采矿'}许可证 {k:05d}", "province": "黑龙江省",
                 "city": city.name_zh, "county": "Atlantis" if unknown else county.name_zh,
                 "holder": f"Holder {k % 700:03d} Mining Co.", "mineral_class": rng.choice(MINERALS),
                 "licence_type": "exploration" if k % 3 else "mining"}
        codes = divisions.divisions_of(attrs)
        lon, lat = 124.0 + rng.random() * 8.0, 44.5 + rng.random() * 5.0
        rows.append({"site_id": f"HLJ-B{k:05d}", "geometry_wkt": _square(lon, lat, 0.012), "attrs": attrs,
                     "updated_at": datetime(2024, 1, 1), **codes, "_lonlat": (lon, lat)})
    return rows


def _patches(rng: random.Random, sites: list[dict[str, Any]], n: int, scan_times: list[datetime]
             ) -> list[dict[str, Any]]:
    per_site = [0] * len(sites)
    owners = list(range(len(sites))) + _weighted(rng, list(range(len(sites))), [1.0 + (k % 7) for k in range(
        len(sites))], max(0, n - len(sites)))
    classes, class_weights = zip(*CLASSES, strict=True)
    rows = []
    for owner in owners:
        site = sites[owner]
        per_site[owner] += 1
        scan = rng.randrange(SCANS)
        klass = rng.choices(classes, weights=class_weights)[0]
        first = (scan_times[scan] - timedelta(days=rng.randrange(5, 80))).date()
        lon, lat = site["_lonlat"]
        side = 0.0004 + rng.random() * 0.0015
        x, y = lon + rng.random() * (0.012 - side), lat + rng.random() * (0.012 - side)
        area = (side * 111_000) ** 2 * 0.7
        recovery = rng.choice(RECOVERY)
        metrics = {"length_m": round(rng.uniform(50, 900), 1) if klass in ("trench", "track") else 0.0,
                   "ndvi_drop": round(rng.uniform(0.1, 0.6), 3), "label_reason": "bench",
                   "evidence": {"before_date": str(first - timedelta(days=16)), "after_date": str(first),
                                "before_image": f"S2_{first - timedelta(days=16):%Y%m%d}_T52TDM",
                                "after_image": f"S2_{first:%Y%m%d}_T52TDM", "confirm_image": None}}
        rows.append({
            "patch_id": f"{site['site_id']}-P{per_site[owner]:04d}", "site_id": site["site_id"],
            "geometry_wkt": _square(x, y, side), "local_wkt": _square(500_000.0, 5_000_000.0, side * 111_000),
            "local_crs": "EPSG:32652", "disturbance_class": klass, "confidence": round(rng.uniform(0.5, 0.99), 3),
            "first_detected": str(first), "confirmed_on": str(first + timedelta(days=10)),
            "last_seen": str(scan_times[-1].date()), "area_m2": round(area, 1), "inside_licence": rng.random() > 0.12,
            "area_outside_m2": 0.0, "recovery_status": recovery,
            "recovery_ratio": None if recovery == "active" else round(rng.uniform(0.2, 1.0), 3),
            "metrics": metrics, "natural_agent": "fire" if klass == "natural" else None,
            "created_scan_id": scan + 1, "updated_scan_id": SCANS, "_scan": scan})
    return rows


def _flags(rng: random.Random, n: int, sites: list[dict[str, Any]], patches: list[dict[str, Any]],
           scan_times: list[datetime], rules: RulesSettings) -> list[dict[str, Any]]:
    site_index = {s["site_id"]: s for s in sites}
    wanted = _exact_shares(rng, n)
    by_rule: dict[str, int] = {}
    for rule in wanted:
        by_rule[rule] = by_rule.get(rule, 0) + 1
    # Distinct patches per rule (one flag per rule and patch); licence-level flags numbered per rule.
    patch_pool = {rule: iter(rng.sample(range(len(patches)), count)) for rule, count in by_rule.items()
                  if rule not in LICENCE_LEVEL_RULES}
    site_cycle = {rule: iter(rng.choices(range(len(sites)), k=count)) for rule, count in by_rule.items()
                  if rule in LICENCE_LEVEL_RULES}
    rows = []
    for k, rule in enumerate(wanted, start=1):
        layer: dict[str, Any] = dict.fromkeys(("layer_name", "layer_kind", "layer_version", "overlap_m2"))
        if rule in LICENCE_LEVEL_RULES:
            site = sites[next(site_cycle[rule])]
            patch_id, scan, key = None, rng.randrange(SCANS), f"W{k}"
        else:
            patch = patches[next(patch_pool[rule])]
            site = site_index[patch["site_id"]]
            patch_id, scan, key = patch["patch_id"], patch["_scan"] + rng.randrange(0, 2), ""
            scan = min(scan, SCANS - 1)
        severity = rules.severity(rule, site["attrs"]["mineral_class"])
        if rule == "protected_land":
            kind, severity = rng.choice(PROTECTED_KINDS)
            layer = {"layer_name": f"{kind}-2024", "layer_kind": kind, "layer_version": 1,
                     "overlap_m2": round(rng.uniform(5, 4_000), 1)}
        created = scan_times[scan] + timedelta(seconds=rng.randrange(3_600))
        rows.append({
            "id": k, "site_id": site["site_id"], "patch_id": patch_id, "rule": rule, "flag_key": key,
            "severity": severity, "message": f"{rule.replace('_', ' ')} on {site['site_id']}",
            "evidence": {"patch_id": patch_id, "area_m2": round(rng.uniform(100, 9_000), 1),
                         "date": str(created.date())},
            "status": "open", "created_scan_id": scan + 1, "updated_scan_id": SCANS, "created_at": created,
            "licence_version": 1, "province_code": site["province_code"], "city_code": site["city_code"],
            "county_code": site["county_code"], **layer})
    return rows


def _scans(scan_times: list[datetime], sites: list[dict[str, Any]], patches: list[dict[str, Any]],
           flag_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per scan with the per-licence summary a scan writes (gmsense.batch.scan: what the store
    holds for the licence after it, what was new, and the coverage figures)."""
    news: list[dict[str, dict[str, int]]] = [{} for _ in scan_times]
    for p in patches:
        entry = news[p["created_scan_id"] - 1].setdefault(p["site_id"], {"new_patches": 0, "new_flags": 0})
        entry["new_patches"] += 1
    for f in flag_rows:
        entry = news[f["created_scan_id"] - 1].setdefault(f["site_id"], {"new_patches": 0, "new_flags": 0})
        entry["new_flags"] += 1
    rows = []
    held = {s["site_id"]: {"patches": 0, "flags": 0, "area_m2": 0.0} for s in sites}
    for k, at in enumerate(scan_times):
        per_site = {}
        for s in sites:
            new = news[k].get(s["site_id"], {"new_patches": 0, "new_flags": 0})
            mine = held[s["site_id"]]
            mine["patches"] += new["new_patches"]
            mine["flags"] += new["new_flags"]
            mine["area_m2"] += 1_500.0 * new["new_patches"]
            per_site[s["site_id"]] = {**new, "updated_patches": 0, "patches": mine["patches"],
                                      "by_class": {"clearing": mine["patches"]}, "area_m2": mine["area_m2"],
                                      "flags": mine["flags"], "acquisitions": 31, "clear_share": 0.82,
                                      "last_acquisition": str(at.date())}
        rows.append({"id": k + 1, "started_at": at - timedelta(hours=6), "finished_at": at, "status": "completed",
                     "source": "local", "detector": "model", "model_version": "default", "config_hash": "bench",
                     "gmsense_version": "bench", "params": {"licences": "register"}, "summary": {"sites": per_site}})
    return rows


def _units(sites: list[dict[str, Any]], patches: list[dict[str, Any]], flag_rows: list[dict[str, Any]],
           scan_times: list[datetime]) -> Iterable[dict[str, Any]]:
    n_patches: dict[str, int] = {}
    n_flags: dict[str, int] = {}
    for p in patches:
        n_patches[p["site_id"]] = n_patches.get(p["site_id"], 0) + 1
    for f in flag_rows:
        n_flags[f["site_id"]] = n_flags.get(f["site_id"], 0) + 1
    unit_id = 0
    for k, at in enumerate(scan_times):
        for site in sites:
            unit_id += 1
            sid = site["site_id"]
            yield {"id": unit_id, "scan_id": k + 1, "site_id": sid, "status": "done", "unit_key": f"bench-{k}",
                   "last_date": str(at.date()), "error": None, "n_patches": n_patches.get(sid, 0),
                   "n_flags": n_flags.get(sid, 0), "finished_at": at,
                   "stats": {"first_date": "2019-04-01", "last_date": str(at.date()),
                             "last_acquisition": str(at.date()), "clear_share": 0.82}}


def _users(store: Store, password: str, sites: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The two users to log in as (real password hashes), and the reviewers whose decisions and
    signatures fill the logs: one per county, city and the province (no usable password)."""
    auth.add_user(store, "bench-province", password, "reviewer", scope="province")
    auth.add_user(store, "bench-county", password, "reviewer", scope=f"county:{BUSY_COUNTY}")
    codes = {("county", s["county_code"]) for s in sites if s["county_code"]}
    codes |= {("city", s["city_code"]) for s in sites if s["city_code"]}
    signers: dict[str, dict[str, Any]] = {}
    users, scopes = [], []
    first_id = 1_000
    for k, (level, code) in enumerate([*sorted(codes), ("province", "")]):
        user_id = first_id + k
        name = f"signer-{level}-{code}" if code else "signer-province"
        users.append({"id": user_id, "username": name, "password_hash": "no password: bench signer",
                      "role": "reviewer", "lang": None, "active": True, "created_at": datetime(2024, 1, 1),
                      "scope_kind": level, "email": None})
        if code:
            scopes.append({"user_id": user_id, "code": code})
        signers[f"{level}:{code}"] = {"id": user_id, "username": name}
    _bulk(store, UserRow.__table__, users)
    _bulk(store, UserScopeRow.__table__, scopes)
    return signers


def _signer(signers: dict[str, dict[str, Any]], level: str, flag: dict[str, Any]) -> dict[str, Any]:
    if level == "province":
        return signers["province:"]
    return signers[f"{level}:{flag[f'{level}_code']}"]


def _decisions(store: Store, rng: random.Random, flag_rows: list[dict[str, Any]], signers: dict[str, dict[str, Any]],
               rules: RulesSettings, now: datetime) -> tuple[int, int]:
    """Reviews (the audit log) and the flags' new statuses, in two rounds (a field visit decided again
    later), then the escalation events of the confirmed flags. Returns the numbers of reviews and events."""
    first: list[dict[str, Any]] = []
    second: list[dict[str, Any]] = []
    for f in flag_rows:
        age = (now - f["created_at"]).days
        if rng.random() > min(0.8, age / 900):
            continue
        decision = rng.choices(("confirmed", "dismissed", "field_visit"), weights=(0.55, 0.35, 0.10))[0]
        level = "county" if f["county_code"] else "city" if f["city_code"] else "province"
        who = _signer(signers, level, f)
        at = f["created_at"] + timedelta(days=rng.uniform(0.5, max(1.0, min(age - 0.5, 120.0))))
        revisit = decision != "field_visit" and rng.random() < 0.1
        steps = (("field_visit", at - timedelta(days=0.4)), (decision, at)) if revisit else ((decision, at),)
        previous = "open"
        for step, (what, when) in enumerate(steps):
            reason = {"confirmed": "violation", "field_visit": "needs_field_visit"}.get(what) or rng.choice(
                DISMISS_REASONS)
            (first if step == 0 else second).append({
                "flag_id": f["id"], "user_id": who["id"], "username": who["username"], "at": when,
                "decision": what, "reason": reason, "comment": f"bench: {what.replace('_', ' ')} on the images",
                "corrected_class": None, "previous_status": previous})
            previous = what
        f["status"], f["_decided_at"] = decision, at
    for review_id, row in enumerate(first + second, start=1):
        row["id"] = review_id
    for rows in (first, second):  # each review row first: the database checks every status change
        if not rows:
            continue
        _bulk(store, ReviewRow.__table__, rows)
        _analyze(store, "reviews")  # the guard's max(id) per flag must use the flag_id index, not scan
        with store.engine.begin() as connection:
            for status in ("field_visit", "confirmed", "dismissed"):
                ids = select(ReviewRow.flag_id).where(ReviewRow.decision == status,
                                                      ReviewRow.id.between(rows[0]["id"], rows[-1]["id"]))
                connection.execute(update(FlagRow).where(FlagRow.id.in_(ids)).values(status=status))
    events = list(_events(rng, flag_rows, signers, rules, now))
    _bulk(store, EscalationEventRow.__table__, events)
    return len(first) + len(second), len(events)


def _events(rng: random.Random, flag_rows: list[dict[str, Any]], signers: dict[str, dict[str, Any]],
            rules: RulesSettings, now: datetime) -> Iterable[dict[str, Any]]:
    """Stage actions of confirmed flags: the first stage signed with the confirmation; each later
    stage reached, half the time, signed (or returned, one time in seven) within its deadline and a half."""
    event_id = 0
    for f in flag_rows:
        if f["status"] != "confirmed":
            continue
        chain = effective_chain(configured_chain(rules, f["severity"]),
                                SimpleNamespace(county_code=f["county_code"], city_code=f["city_code"]))
        if not chain:
            continue
        spec = [{k: stage[k] for k in ("level", "role", "action", "days")} for stage in chain]
        at, stage, seq = f["_decided_at"], 0, 0
        while stage is not None and at < now:
            action = "sign" if stage == 0 or rng.random() > 1 / 7 else "return"
            nxt = stage - 1 if action == "return" else (stage + 1 if stage + 1 < len(spec) else None)
            who = _signer(signers, spec[stage]["level"], f)
            seq += 1
            event_id += 1
            yield {"id": event_id, "flag_id": f["id"], "seq": seq, "stage": stage, "level": spec[stage]["level"],
                   "action": action, "user_id": who["id"], "username": who["username"], "at": at,
                   "reason": "the county's evidence is incomplete" if action == "return" else "",
                   "comment": f"bench: {action}", "chain": spec, "next_stage": nxt,
                   "next_level": spec[nxt]["level"] if nxt is not None else None,
                   "next_role": spec[nxt]["role"] if nxt is not None else None,
                   "next_due_at": at + timedelta(days=spec[nxt]["days"]) if nxt is not None else None}
            if nxt is None or action == "return" or rng.random() < 0.5:
                break
            at += timedelta(days=rng.uniform(0.5, spec[nxt]["days"] * 1.5))
            stage = nxt


def _finish(store: Store) -> None:
    """PostgreSQL: move the id sequences past the ids written; both: ANALYZE (as autovacuum would after
    a load this size on PostgreSQL; SQLite's planner statistics)."""
    with store.engine.begin() as connection:
        if store.engine.dialect.name == "postgresql":
            for table in ("flags", "reviews", "escalation_events", "scans", "scan_units", "users"):
                connection.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                        f"(SELECT max(id) FROM {table}))"))
    _analyze(store)


def _analyze(store: Store, table: str = "") -> None:
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text(f"ANALYZE {table}".strip()))
