"""The results store: the only module that writes the database.

SQLAlchemy 2 over SQLite (default, a file) or PostgreSQL (by URL). The schema is created on first
use. Each licence's results are written in one transaction, so a crash never leaves half of a
licence written. Patch identity: a detection that overlaps a stored patch of the same licence
extends it (same ``patch_id``) instead of creating a second one, so re-running a scan over the
same dates changes nothing.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyproj
from shapely import wkt
from shapely.ops import unary_union
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    select,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from gmsense.errors import StoreError
from gmsense.records import PatchRecord, SiteResult
from gmsense.sites import WGS84, Site, reproject_geometry

DEFAULT_DB_FILE = "gmsense.db"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_MIGRATION_ATTEMPTS = 5


def resolve_db_url(db: str | None) -> str:
    """``--db`` if given, else ``GMSENSE_DB``, else a SQLite file ``gmsense.db`` here.

    A plain path is turned into a SQLite URL.
    """
    value = db or os.environ.get("GMSENSE_DB") or DEFAULT_DB_FILE
    if "://" in value:
        return value
    return f"sqlite:///{Path(value).expanduser().resolve()}"


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class SiteRow(Base):
    __tablename__ = "sites"
    site_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    geometry_wkt: Mapped[str] = mapped_column(Text)  # EPSG:4326
    attrs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=_now)


class ScanRow(Base):
    __tablename__ = "scans"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=_now)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    status: Mapped[str] = mapped_column(String(20), default="running")  # running|completed|partial|failed
    source: Mapped[str] = mapped_column(String(50))
    detector: Mapped[str] = mapped_column(String(50), default="rules")
    model_version: Mapped[str | None] = mapped_column(String(100), nullable=True)
    config_hash: Mapped[str] = mapped_column(String(32))
    gmsense_version: Mapped[str] = mapped_column(String(50))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class ScanUnitRow(Base):
    __tablename__ = "scan_units"
    __table_args__ = (UniqueConstraint("scan_id", "site_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id"))
    site_id: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))  # done|failed
    unit_key: Mapped[str] = mapped_column(String(64), default="", index=True)
    last_date: Mapped[str | None] = mapped_column(String(10), nullable=True)  # newest acquisition analysed
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    n_patches: Mapped[int] = mapped_column(Integer, default=0)
    n_flags: Mapped[int] = mapped_column(Integer, default=0)
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    finished_at: Mapped[datetime] = mapped_column(DateTime, default=_now)


class PatchRow(Base):
    __tablename__ = "patches"
    patch_id: Mapped[str] = mapped_column(String(220), primary_key=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.site_id"), index=True)
    geometry_wkt: Mapped[str] = mapped_column(Text)  # EPSG:4326
    local_wkt: Mapped[str] = mapped_column(Text)
    local_crs: Mapped[str] = mapped_column(Text)
    disturbance_class: Mapped[str] = mapped_column(String(20))
    confidence: Mapped[float] = mapped_column(Float)
    first_detected: Mapped[str] = mapped_column(String(10))
    confirmed_on: Mapped[str] = mapped_column(String(10))
    last_seen: Mapped[str] = mapped_column(String(10))
    area_m2: Mapped[float] = mapped_column(Float)
    inside_licence: Mapped[bool] = mapped_column(Boolean)
    area_outside_m2: Mapped[float] = mapped_column(Float)
    recovery_status: Mapped[str] = mapped_column(String(20))
    recovery_ratio: Mapped[float | None] = mapped_column(Float, nullable=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id"))
    updated_scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id"))


class RecoveryRow(Base):
    __tablename__ = "recovery"
    __table_args__ = (UniqueConstraint("patch_id", "season", "index_name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    patch_id: Mapped[str] = mapped_column(ForeignKey("patches.patch_id"), index=True)
    season: Mapped[int] = mapped_column(Integer)
    index_name: Mapped[str] = mapped_column(String(20))
    n_obs: Mapped[int] = mapped_column(Integer)
    patch_value: Mapped[float] = mapped_column(Float)
    ring_value: Mapped[float] = mapped_column(Float)
    relative: Mapped[float] = mapped_column(Float)


class FlagRow(Base):
    __tablename__ = "flags"
    __table_args__ = (UniqueConstraint("rule", "site_id", "patch_id", "flag_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.site_id"), index=True)
    patch_id: Mapped[str | None] = mapped_column(ForeignKey("patches.patch_id"), nullable=True)
    rule: Mapped[str] = mapped_column(String(60))
    flag_key: Mapped[str] = mapped_column(String(200), default="")
    severity: Mapped[str] = mapped_column(String(20))
    message: Mapped[str] = mapped_column(Text)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(20), default="open")  # open|confirmed|dismissed|field_visit
    created_scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id"))
    updated_scan_id: Mapped[int] = mapped_column(ForeignKey("scans.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=_now)


class UserRow(Base):
    """A person who may use the review app; ``role`` is viewer < reviewer < admin."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(80), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    lang: Mapped[str | None] = mapped_column(String(5), nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=_now)


class SessionRow(Base):
    """A logged-in browser: the cookie holds a random token, the table only its SHA-256."""

    __tablename__ = "user_sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=_now)
    expires_at: Mapped[datetime] = mapped_column(DateTime)


class LoginAttemptRow(Base):
    """Every login attempt, for rate limiting (per user name and per client address)."""

    __tablename__ = "login_attempts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(80), index=True)
    client: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=_now, index=True)
    success: Mapped[bool] = mapped_column(Boolean)


class ReviewRow(Base):
    """The audit log of decisions on flags: append-only (database triggers refuse UPDATE and
    DELETE); a changed decision is a new row whose ``previous_status`` is the flag's status then."""

    __tablename__ = "reviews"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    flag_id: Mapped[int] = mapped_column(ForeignKey("flags.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    username: Mapped[str] = mapped_column(String(80))
    at: Mapped[datetime] = mapped_column(DateTime, default=_now)
    decision: Mapped[str] = mapped_column(String(20))  # confirmed|dismissed|field_visit
    reason: Mapped[str] = mapped_column(String(40))  # a code of gmsense.review.service.REASONS
    comment: Mapped[str] = mapped_column(Text)
    corrected_class: Mapped[str | None] = mapped_column(String(20), nullable=True)
    previous_status: Mapped[str] = mapped_column(String(20))


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def _merge_dates(a: str, b: str, pick: Any) -> str:
    return pick(d for d in (a, b) if d) if (a or b) else ""


class Store:
    """A connection to the results database. Create the schema with :meth:`create`."""

    def __init__(self, url: str | None = None) -> None:
        self.url = resolve_db_url(url)
        try:
            self.engine = create_engine(self.url)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise StoreError(f"cannot open the store {self.url}: {exc}") from None
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
            db_path = self.engine.url.database
            if db_path and db_path != ":memory:":
                Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.create()

    def create(self) -> None:
        """Create or upgrade the schema to the newest migration (idempotent, never drops data)."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        for attempt in range(_MIGRATION_ATTEMPTS):
            try:
                with self.engine.begin() as connection:
                    config.attributes["connection"] = connection
                    command.upgrade(config, "head")
                return
            except SQLAlchemyError as exc:
                # Another process may be creating the same schema right now: wait for it.
                if self._at_head(config):
                    return
                if attempt == _MIGRATION_ATTEMPTS - 1:
                    reason = exc.orig if getattr(exc, "orig", None) is not None else exc
                    raise StoreError(
                        f"cannot create or upgrade the schema in {self._safe_url()}: {reason}") from None
                time.sleep(0.5 * (attempt + 1))

    def _at_head(self, config: Any) -> bool:
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        try:
            with self.engine.connect() as connection:
                current = MigrationContext.configure(connection).get_current_revision()
        except SQLAlchemyError:
            return False
        return current == ScriptDirectory.from_config(config).get_current_head()

    def _safe_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def session(self) -> Session:
        return self._sessions()

    # --- scans -------------------------------------------------------------------------------
    def begin_scan(self, *, source: str, detector: str, config_hash: str, gmsense_version: str,
                   params: dict[str, Any], model_version: str | None = None) -> int:
        with self.session() as s, s.begin():
            row = ScanRow(source=source, detector=detector, config_hash=config_hash,
                          gmsense_version=gmsense_version, params=params, model_version=model_version)
            s.add(row)
            s.flush()
            return row.id

    def finish_scan(self, scan_id: int, status: str, summary: dict[str, Any]) -> None:
        with self.session() as s, s.begin():
            row = s.get(ScanRow, scan_id)
            row.status, row.summary, row.finished_at = status, summary, _now()

    def record_failure(self, scan_id: int, site_id: str, error: str, unit_key: str = "") -> None:
        with self.session() as s, s.begin():
            unit = s.scalar(select(ScanUnitRow).where(ScanUnitRow.scan_id == scan_id, ScanUnitRow.site_id == site_id))
            unit = unit or ScanUnitRow(scan_id=scan_id, site_id=site_id)
            unit.status, unit.error, unit.unit_key, unit.finished_at = "failed", error, unit_key, _now()
            s.add(unit)

    def resumable_scan(self) -> ScanRow | None:
        """The newest scan that did not complete (killed, failed or partial), if any."""
        with self.session() as s:
            return s.scalar(select(ScanRow).where(ScanRow.status.in_(("running", "failed", "partial")))
                            .order_by(ScanRow.id.desc()).limit(1))

    def reopen_scan(self, scan_id: int) -> ScanRow:
        with self.session() as s, s.begin():
            row = s.get(ScanRow, scan_id)
            row.status, row.finished_at = "running", None
            return row

    def done_sites(self, scan_id: int) -> set[str]:
        """Licences whose results this scan has already stored."""
        with self.session() as s:
            return set(s.scalars(select(ScanUnitRow.site_id).where(ScanUnitRow.scan_id == scan_id,
                                                                   ScanUnitRow.status == "done")))

    def last_analysed(self, unit_keys: dict[str, str]) -> dict[str, str]:
        """Per licence, the newest acquisition date analysed by any done unit with its key."""
        if not unit_keys:
            return {}
        with self.session() as s:
            rows = s.execute(select(ScanUnitRow.site_id, ScanUnitRow.unit_key, ScanUnitRow.last_date).where(
                ScanUnitRow.status == "done", ScanUnitRow.unit_key.in_(set(unit_keys.values()))))
            out: dict[str, str] = {}
            for site_id, key, last in rows:
                if last and unit_keys.get(site_id) == key and last > out.get(site_id, ""):
                    out[site_id] = last
            return out

    def scans(self) -> list[ScanRow]:
        with self.session() as s:
            return list(s.scalars(select(ScanRow).order_by(ScanRow.id)))

    def scan(self, scan_id: int) -> tuple[ScanRow | None, list[ScanUnitRow]]:
        with self.session() as s:
            units = list(s.scalars(select(ScanUnitRow).where(ScanUnitRow.scan_id == scan_id).order_by(ScanUnitRow.site_id)))
            return s.get(ScanRow, scan_id), units

    # --- sites -------------------------------------------------------------------------------
    def upsert_sites(self, sites: list[Site]) -> None:
        with self.session() as s, s.begin():
            for site in sites:
                row = s.get(SiteRow, site.site_id) or SiteRow(site_id=site.site_id)
                row.geometry_wkt = site.geometry_wgs84.wkt
                row.attrs = json.loads(json.dumps(site.attrs, default=str))
                row.updated_at = _now()
                s.add(row)

    def site_rows(self) -> list[SiteRow]:
        with self.session() as s:
            return list(s.scalars(select(SiteRow).order_by(SiteRow.site_id)))

    # --- results -----------------------------------------------------------------------------
    def save_site_result(self, scan_id: int, result: SiteResult, unit_key: str = "") -> dict[str, int]:
        """Write one licence's patches, recovery and flags in one transaction.

        Returns counts of ``new_patches``, ``updated_patches`` and ``new_flags``.
        """
        counts = {"new_patches": 0, "updated_patches": 0, "new_flags": 0}
        with self.session() as s, s.begin():
            stored = list(s.scalars(select(PatchRow).where(PatchRow.site_id == result.site_id)))
            next_number = len(stored) + 1
            patch_ids: list[str] = []
            for record in result.patches:
                row = self._match(stored, record)
                if row is None:
                    row = PatchRow(patch_id=f"{result.site_id}-P{next_number:04d}", site_id=result.site_id,
                                   created_scan_id=scan_id)
                    next_number += 1
                    self._fill(row, record)
                    s.add(row)
                    stored.append(row)
                    counts["new_patches"] += 1
                else:
                    if self._extend(row, record):
                        counts["updated_patches"] += 1
                row.updated_scan_id = scan_id
                patch_ids.append(row.patch_id)
                s.flush()
                for obs in record.recovery:
                    existing = s.scalar(select(RecoveryRow).where(
                        RecoveryRow.patch_id == row.patch_id, RecoveryRow.season == obs.season,
                        RecoveryRow.index_name == obs.index))
                    values = asdict(obs)
                    values["index_name"] = values.pop("index")
                    if existing is None:
                        s.add(RecoveryRow(patch_id=row.patch_id, **values))
                    else:
                        for key, value in values.items():
                            setattr(existing, key, value)
            for flag in result.flags:
                patch_id = patch_ids[flag.patch_index] if flag.patch_index is not None else None
                existing = s.scalar(select(FlagRow).where(
                    FlagRow.rule == flag.rule, FlagRow.site_id == result.site_id, FlagRow.flag_key == flag.key,
                    FlagRow.patch_id.is_(None) if patch_id is None else FlagRow.patch_id == patch_id))
                if existing is None:
                    s.add(FlagRow(site_id=result.site_id, patch_id=patch_id, rule=flag.rule, flag_key=flag.key,
                                  severity=flag.severity, message=flag.message, evidence=flag.evidence,
                                  created_scan_id=scan_id, updated_scan_id=scan_id))
                    counts["new_flags"] += 1
                else:
                    existing.severity, existing.message = flag.severity, flag.message
                    existing.evidence, existing.updated_scan_id = flag.evidence, scan_id
            unit = s.scalar(select(ScanUnitRow).where(ScanUnitRow.scan_id == scan_id,
                                                      ScanUnitRow.site_id == result.site_id))
            unit = unit or ScanUnitRow(scan_id=scan_id, site_id=result.site_id)
            unit.status, unit.error, unit.unit_key = "done", None, unit_key
            unit.last_date = result.stats.get("last_acquisition")
            unit.n_patches, unit.n_flags = len(result.patches), len(result.flags)
            unit.stats, unit.finished_at = result.stats, _now()
            s.add(unit)
        return counts

    @staticmethod
    def _match(stored: list[PatchRow], record: PatchRecord) -> PatchRow | None:
        geom = wkt.loads(record.geometry_wkt)
        # Overlap, not mere touching: patches sharing only an edge stay separate.
        hits = [row for row in stored
                if (other := wkt.loads(row.geometry_wkt)).intersects(geom) and other.intersection(geom).area > 0]
        return min(hits, key=lambda r: r.first_detected) if hits else None

    @staticmethod
    def _fill(row: PatchRow, r: PatchRecord) -> None:
        for key in ("geometry_wkt", "local_wkt", "local_crs", "disturbance_class", "confidence",
                    "first_detected", "confirmed_on", "last_seen", "area_m2", "inside_licence",
                    "area_outside_m2", "recovery_status", "recovery_ratio", "metrics"):
            setattr(row, key, getattr(r, key))

    @staticmethod
    def _extend(row: PatchRow, r: PatchRecord) -> bool:
        """Grow a stored patch by a new detection; True if anything changed."""
        before = {c.key: getattr(row, c.key) for c in PatchRow.__table__.columns}
        old_local = wkt.loads(row.local_wkt)
        new_local = wkt.loads(r.local_wkt)
        if row.local_crs != r.local_crs:
            new_local = reproject_geometry(new_local, pyproj.CRS.from_user_input(r.local_crs),
                                           pyproj.CRS.from_user_input(row.local_crs))
        grows = new_local.difference(old_local).area > 1e-6
        merged = unary_union([old_local, new_local]) if grows else old_local
        row.local_wkt = merged.wkt
        row.geometry_wkt = reproject_geometry(merged, pyproj.CRS.from_user_input(row.local_crs), WGS84).wkt
        row.first_detected = _merge_dates(row.first_detected, r.first_detected, min)
        row.confirmed_on = _merge_dates(row.confirmed_on, r.confirmed_on, min)
        row.last_seen = _merge_dates(row.last_seen, r.last_seen, max)
        row.area_m2 = float(merged.area)
        row.area_outside_m2 = max(row.area_outside_m2, r.area_outside_m2)
        row.inside_licence = row.inside_licence and r.inside_licence
        row.disturbance_class, row.confidence = r.disturbance_class, r.confidence
        # The evidence (before/after images) belongs to the first detection, whichever record that was.
        earliest = r if r.first_detected and r.first_detected < before["first_detected"] else None
        evidence = (earliest.metrics if earliest else (row.metrics or {})).get("evidence")
        row.recovery_status, row.recovery_ratio = r.recovery_status, r.recovery_ratio
        row.metrics = {**r.metrics, **({"evidence": evidence} if evidence is not None else {})}
        return any(getattr(row, k) != v for k, v in before.items())

    # --- reading -----------------------------------------------------------------------------
    def patch_rows(self) -> list[PatchRow]:
        with self.session() as s:
            return list(s.scalars(select(PatchRow).order_by(PatchRow.patch_id)))

    def flag_rows(self) -> list[FlagRow]:
        with self.session() as s:
            return list(s.scalars(select(FlagRow).order_by(FlagRow.id)))

    def recovery_rows(self) -> list[RecoveryRow]:
        with self.session() as s:
            return list(s.scalars(select(RecoveryRow).order_by(RecoveryRow.patch_id, RecoveryRow.season)))
