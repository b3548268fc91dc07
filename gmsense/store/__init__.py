"""The results store: the only module that writes the database.

SQLAlchemy 2 over SQLite (default, a file) or PostgreSQL (by URL). The schema is created on first
use by the Alembic migrations, all of them and the version row in ONE transaction (on SQLite too,
whose driver otherwise commits DDL as it goes), so a killed process or a full disk leaves either
the old schema or the new one, never half of it; stores left half-built by older versions are
repaired when that loses nothing (see :meth:`Store.create`). Read-only commands open the store
with ``Store(url, create=False)``: a missing store is an error instead of a new empty file.
Each licence's results are written in one transaction, so a crash never leaves half of a
licence written. Patch identity: a detection that overlaps a stored patch of the same licence
extends it (same ``patch_id``) instead of creating a second one, so re-running a scan over the
same dates changes nothing; but a later disturbance of the same ground (first detected more than
``SAME_DISTURBANCE_SEASONS`` growing seasons from the stored patch's first detection, e.g. a
recovered clearing cleared again: gmsense.records.same_disturbance) is a patch of its own.
"""

from __future__ import annotations

import functools
import json
import os
import time
import warnings
from collections import Counter
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyproj
from shapely import wkt
from shapely.geometry.base import BaseGeometry
from shapely.ops import unary_union
from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    func,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import NullPool, StaticPool

from gmsense.errors import EXIT_BAD_INPUT, StoreError
from gmsense.geo.county_boundaries import CountyBoundary, CountyLocator, DivisionWarning
from gmsense.geo.divisions import divisions_of
from gmsense.geo.layers import LayerSet, ProtectedLayer, area_m2
from gmsense.geo.register import RegisterPolygon, Zone
from gmsense.geo.sites import WGS84, Site, reproject_geometry
from gmsense.records import PatchRecord, RestorationRecord, SiteResult, same_disturbance

DEFAULT_DB_FILE = "gmsense.db"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_MIGRATION_ATTEMPTS = 5
#: Seconds a SQLite connection waits for another process's lock before it reports "database is
#: locked" (pysqlite's ``timeout``; its default of 5 s was too short on a loaded host while four
#: processes created one store: https://docs.python.org/3/library/sqlite3.html#sqlite3.connect).
SQLITE_LOCK_TIMEOUT_S = 30.0
#: For tests only: ``N`` makes a schema migration stop after its N-th DDL statement, say so on
#: stderr and wait forever (to be killed), so a test can kill it at a known point.
PAUSE_MIGRATION_ENV = "GMSENSE_TEST_PAUSE_MIGRATION"
_PG_SCHEMA_LOCK = 72_011_905  # pg_advisory_xact_lock key: one schema migration at a time
#: Two detections overlapping by less than this (m2, in their local projected CRS) only touch: pixel
#: outlines sharing an edge, which reprojection (to WGS84, or between local CRSs) makes overlap by
#: rounding slivers far under a square metre.
MIN_OVERLAP_M2 = 1.0


class NoStoreError(StoreError):
    """A command that only reads was pointed at a store that does not exist."""

    exit_code = EXIT_BAD_INPUT


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
    # Indexed (revision 0013): its maximum is half of the review app's scan stamp (gmsense.review.cache).
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=_now, index=True)
    # Administrative divisions (gmsense.geo.divisions): 6-digit codes from the attributes' province,
    # city and county; NULL where absent or unknown (then only province-wide users see the row).
    province_code: Mapped[str | None] = mapped_column(String(6), nullable=True, index=True)
    city_code: Mapped[str | None] = mapped_column(String(6), nullable=True, index=True)
    county_code: Mapped[str | None] = mapped_column(String(6), nullable=True, index=True)


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
    # Indexed (revision 0013): its maximum is half of the review app's scan stamp (gmsense.review.cache).
    finished_at: Mapped[datetime] = mapped_column(DateTime, default=_now, index=True)


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
    natural_agent: Mapped[str | None] = mapped_column(String(20), nullable=True)
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
    # Revision 0013: ix_flags_queue_order, the review queue's order read one severity at a time;
    # ix_flags_created_at, the oldest flags first (stages pending since the flag was stored) and date filters.
    __table_args__ = (UniqueConstraint("rule", "site_id", "patch_id", "flag_key"),
                      Index("ix_flags_queue_order", "severity", "created_at", "id"),
                      Index("ix_flags_created_at", "created_at", "id"))
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
    # The version of the licence register (licence_versions.version) the flag was last checked
    # against; NULL when the scan read its licences from a --sites file (or before revision 0007).
    licence_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The licence's divisions, copied from its site row (revision 0009), so the queue filters flags alone.
    province_code: Mapped[str | None] = mapped_column(String(6), nullable=True, index=True)
    city_code: Mapped[str | None] = mapped_column(String(6), nullable=True, index=True)
    county_code: Mapped[str | None] = mapped_column(String(6), nullable=True, index=True)
    # Protected land (rule protected_land, revision 0011): the layer, its kind and the version the
    # flag was checked against, and the overlapping area (m2, in the licence's projected CRS).
    layer_name: Mapped[str | None] = mapped_column(String(120), nullable=True)
    layer_kind: Mapped[str | None] = mapped_column(String(60), nullable=True, index=True)
    layer_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    overlap_m2: Mapped[float | None] = mapped_column(Float, nullable=True)


class LicenceFlagCountRow(Base):
    """The flags of a licence counted (gmsense.outputs.summary_report.FLAG_COUNTS), kept by database
    triggers on ``flags`` in the statement that inserts, deletes or re-counts a flag (revision 0015):
    all of them, by status, the reclamation_overdue ones, the severity score of the open and confirmed
    ones (critical 3, warning 2, info 1) and the confirmed violations (other than new_disturbance).
    One row per licence that ever had a flag; never written by the application."""

    __tablename__ = "licence_flag_counts"
    site_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    flags: Mapped[int] = mapped_column(Integer)
    open: Mapped[int] = mapped_column(Integer)
    confirmed: Mapped[int] = mapped_column(Integer)
    dismissed: Mapped[int] = mapped_column(Integer)
    overdue: Mapped[int] = mapped_column(Integer)
    score: Mapped[int] = mapped_column(Integer)
    violations: Mapped[int] = mapped_column(Integer)


class LicenceVersionRow(Base):
    """One version of a licence of the register (gmsense.geo.licences): its boundary and attributes from
    ``valid_from`` (the import that brought them) to ``valid_to`` (the import that changed them;
    NULL for the latest version). ``change``: new | changed | retired."""

    __tablename__ = "licence_versions"
    __table_args__ = (UniqueConstraint("licence_id", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    licence_id: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[int] = mapped_column(Integer)
    geometry_wkt: Mapped[str] = mapped_column(Text)  # EPSG:4326
    local_wkt: Mapped[str] = mapped_column(Text)
    local_crs: Mapped[str] = mapped_column(Text)
    area_m2: Mapped[float] = mapped_column(Float)
    attrs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    digest: Mapped[str] = mapped_column(String(64))
    change: Mapped[str] = mapped_column(String(20))
    source_file: Mapped[str | None] = mapped_column(Text, nullable=True)
    valid_from: Mapped[datetime] = mapped_column(DateTime)
    valid_to: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # Administrative divisions (gmsense.geo.divisions): 6-digit codes from the attributes' province,
    # city and county; NULL where absent or unknown (then only province-wide users see the row).
    province_code: Mapped[str | None] = mapped_column(String(6), nullable=True, index=True)
    city_code: Mapped[str | None] = mapped_column(String(6), nullable=True, index=True)
    county_code: Mapped[str | None] = mapped_column(String(6), nullable=True, index=True)


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
    # What the user sees (gmsense.store.scope): province (everything), city, county or licence, the
    # codes (or licence ids) in user_scope_codes.
    scope_kind: Mapped[str] = mapped_column(String(10), default="province", server_default="province")
    # Where the user's digest goes (gmsense notify digest); NULL: no e-mail (revision 0010).
    email: Mapped[str | None] = mapped_column(String(254), nullable=True)


class UserScopeRow(Base):
    """One division code (city or county scope) or licence id (licence scope) of a user's scope."""

    __tablename__ = "user_scope_codes"
    __table_args__ = (UniqueConstraint("user_id", "code"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    code: Mapped[str] = mapped_column(String(200))


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


class EscalationEventRow(Base):
    """An action on a stage of a flag's escalation chain (gmsense.review.escalation): ``action``
    sign or return (with ``reason``) of stage ``stage`` (0-based) at ``level``, by whom and when;
    ``chain`` is the chain the flag travels (a list of {level, role, action, days}) and ``next_*``
    the stage pending after this action (NULL once the last stage is signed), its level, role and
    deadline. ``seq`` numbers a flag's events from 1 (unique per flag: of two people acting on the
    same state only one is recorded). Append-only, as ``reviews`` (database triggers)."""

    __tablename__ = "escalation_events"
    __table_args__ = (UniqueConstraint("flag_id", "seq"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    flag_id: Mapped[int] = mapped_column(ForeignKey("flags.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    stage: Mapped[int] = mapped_column(Integer)
    level: Mapped[str] = mapped_column(String(10))
    action: Mapped[str] = mapped_column(String(10))  # sign|return
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    username: Mapped[str] = mapped_column(String(80))
    at: Mapped[datetime] = mapped_column(DateTime, default=_now)
    reason: Mapped[str] = mapped_column(Text, default="")
    comment: Mapped[str] = mapped_column(Text, default="")
    chain: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    next_stage: Mapped[int | None] = mapped_column(Integer, nullable=True)
    next_level: Mapped[str | None] = mapped_column(String(10), nullable=True)
    next_role: Mapped[str | None] = mapped_column(String(20), nullable=True)
    next_due_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class DigestRow(Base):
    """A digest sent to a user (gmsense notify digest): when, from when it counted, and its counts.
    Append-only; the newest row of a user is where their next digest starts."""

    __tablename__ = "digests"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    sent_at: Mapped[datetime] = mapped_column(DateTime, default=_now)
    since: Mapped[datetime] = mapped_column(DateTime)
    new_flags: Mapped[int] = mapped_column(Integer)
    awaiting: Mapped[int] = mapped_column(Integer)
    overdue: Mapped[int] = mapped_column(Integer)
    channels: Mapped[str] = mapped_column(String(40))  # email, webhook or both


class RegisterRow(Base):
    """A polygon of the register of mine land (gmsense.geo.register); ``area_m2`` in its local UTM zone."""

    __tablename__ = "register_polygons"
    register_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    kind: Mapped[str] = mapped_column(String(30))
    geometry_wkt: Mapped[str] = mapped_column(Text)  # EPSG:4326
    local_wkt: Mapped[str] = mapped_column(Text)
    local_crs: Mapped[str] = mapped_column(Text)
    area_m2: Mapped[float] = mapped_column(Float)
    attrs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=_now)
    # Administrative divisions (gmsense.geo.divisions): 6-digit codes from the attributes' province,
    # city and county; NULL where absent or unknown (then only province-wide users see the row).
    province_code: Mapped[str | None] = mapped_column(String(6), nullable=True, index=True)
    city_code: Mapped[str | None] = mapped_column(String(6), nullable=True, index=True)
    county_code: Mapped[str | None] = mapped_column(String(6), nullable=True, index=True)


class ZoneRow(Base):
    """A green-mine demonstration zone; ``target_rate`` (0-1) overrides the configured target."""

    __tablename__ = "demonstration_zones"
    zone_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    target_rate: Mapped[float | None] = mapped_column(Float, nullable=True)
    geometry_wkt: Mapped[str] = mapped_column(Text)  # EPSG:4326
    attrs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=_now)


class RestorationRunRow(Base):
    """One ``gmsense restoration run``: the imagery and thresholds behind the status rows it wrote."""

    __tablename__ = "restoration_runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=_now)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    imagery: Mapped[str] = mapped_column(Text)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    gmsense_version: Mapped[str] = mapped_column(String(50))
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class RestorationStatusRow(Base):
    """A register polygon in one year: see gmsense.records.RestorationRecord."""

    __tablename__ = "restoration_status"
    __table_args__ = (UniqueConstraint("register_id", "year"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    register_id: Mapped[str] = mapped_column(ForeignKey("register_polygons.register_id"), index=True)
    year: Mapped[int] = mapped_column(Integer)
    status: Mapped[str | None] = mapped_column(String(20), nullable=True)
    events: Mapped[str] = mapped_column(String(40), default="")
    polygon_ndvi: Mapped[float | None] = mapped_column(Float, nullable=True)
    reference_ndvi: Mapped[float | None] = mapped_column(Float, nullable=True)
    ratio: Mapped[float | None] = mapped_column(Float, nullable=True)
    restored_share: Mapped[float | None] = mapped_column(Float, nullable=True)
    n_pixels: Mapped[int] = mapped_column(Integer)
    n_reference: Mapped[int] = mapped_column(Integer)
    image_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("restoration_runs.id"))
    observed_share: Mapped[float | None] = mapped_column(Float, nullable=True)
    reference_source: Mapped[str | None] = mapped_column(String(40), nullable=True)
    soil_ndvi: Mapped[float | None] = mapped_column(Float, nullable=True)


class RestorationDecisionRow(Base):
    """A reviewer's decision on a register polygon's status change (``change`` in ``year``: restored,
    reverted, deadline_passed): the audit log of restoration decisions, append-only as ``reviews``
    is (database triggers refuse UPDATE and DELETE); a changed decision is a new row whose
    ``previous_status`` (pending, confirmed, rejected) is the change's status then."""

    __tablename__ = "restoration_decisions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    register_id: Mapped[str] = mapped_column(ForeignKey("register_polygons.register_id"), index=True)
    year: Mapped[int] = mapped_column(Integer)
    change: Mapped[str] = mapped_column(String(20))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    username: Mapped[str] = mapped_column(String(80))
    at: Mapped[datetime] = mapped_column(DateTime, default=_now)
    decision: Mapped[str] = mapped_column(String(20))  # confirmed|rejected
    reason: Mapped[str] = mapped_column(String(40))  # a code of gmsense.review.restoration.REASONS
    comment: Mapped[str] = mapped_column(Text)
    previous_status: Mapped[str] = mapped_column(String(20))


class LayerVersionRow(Base):
    """One version of a protected-land layer (gmsense.geo.layers): ``valid_from`` the ``layers add``
    that brought it, ``valid_to`` the one that replaced it or the ``layers remove`` that ended it (NULL:
    the layer's current version). ``change``: new | changed | re-added. ``area_m2``: geodesic, of its
    features (overlaps between features counted once)."""

    __tablename__ = "layer_versions"
    __table_args__ = (UniqueConstraint("name", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(120), index=True)
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(60))
    digest: Mapped[str] = mapped_column(String(64))
    n_features: Mapped[int] = mapped_column(Integer)
    area_m2: Mapped[float] = mapped_column(Float)
    change: Mapped[str] = mapped_column(String(20))
    source_file: Mapped[str | None] = mapped_column(Text, nullable=True)
    valid_from: Mapped[datetime] = mapped_column(DateTime)
    valid_to: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class LayerFeatureRow(Base):
    """One polygon of a layer version, in EPSG:4326, with the file's properties."""

    __tablename__ = "layer_features"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("layer_versions.id"), index=True)
    feature_index: Mapped[int] = mapped_column(Integer)
    geometry_wkt: Mapped[str] = mapped_column(Text)  # EPSG:4326
    attrs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class RegisterLayerFlagRow(Base):
    """A register polygon (mine land) overlapping a protected-land layer: rule ``protected_land`` for
    the register, recomputed whenever the register or a layer changes (gmsense.restoration.protected);
    its divisions copied from the polygon, so scopes filter it alone."""

    __tablename__ = "register_layer_flags"
    __table_args__ = (UniqueConstraint("register_id", "layer_name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    register_id: Mapped[str] = mapped_column(ForeignKey("register_polygons.register_id"), index=True)
    layer_name: Mapped[str] = mapped_column(String(120))
    layer_kind: Mapped[str] = mapped_column(String(60), index=True)
    layer_version: Mapped[int] = mapped_column(Integer)
    severity: Mapped[str] = mapped_column(String(20))
    overlap_m2: Mapped[float] = mapped_column(Float)
    message: Mapped[str] = mapped_column(Text)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    checked_at: Mapped[datetime] = mapped_column(DateTime, default=_now)
    province_code: Mapped[str | None] = mapped_column(String(6), nullable=True, index=True)
    city_code: Mapped[str | None] = mapped_column(String(6), nullable=True, index=True)
    county_code: Mapped[str | None] = mapped_column(String(6), nullable=True, index=True)


class AssessmentRow(Base):
    """A third-party assessor's signed assessment of a licence or of one of its flags
    (gmsense.review.assessments): ``target_kind`` licence or flag, the licence always (a flag's own
    licence), the flag for a flag; the author, the time (UTC), the ``verdict`` and the ``text``.
    ``seq`` numbers the assessments from 1 without gaps (a deleted row shows as a gap); ``digest`` is
    the SHA-256 of the canonical serialisation (gmsense.review.signing: author, target, time, verdict,
    text, the attachments' hashes in order) and ``signature`` its HMAC-SHA256 with the deployment's
    key, ``key_id`` naming which key. Append-only (revision 0012's triggers): only the division codes,
    copied from the target so scopes filter in SQL, follow the licence into a new jurisdiction."""

    __tablename__ = "assessments"
    __table_args__ = (
        UniqueConstraint("seq"),
        CheckConstraint("(target_kind = 'licence' AND flag_id IS NULL) OR "
                        "(target_kind = 'flag' AND flag_id IS NOT NULL)", name="ck_assessments_target"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    seq: Mapped[int] = mapped_column(Integer)
    target_kind: Mapped[str] = mapped_column(String(10))  # licence|flag
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.site_id"), index=True)
    flag_id: Mapped[int | None] = mapped_column(ForeignKey("flags.id"), nullable=True, index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    username: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    verdict: Mapped[str] = mapped_column(String(20))  # a code of gmsense.review.assessments.VERDICTS
    text: Mapped[str] = mapped_column(Text)
    digest: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str] = mapped_column(String(16))
    province_code: Mapped[str | None] = mapped_column(String(6), nullable=True, index=True)
    city_code: Mapped[str | None] = mapped_column(String(6), nullable=True, index=True)
    county_code: Mapped[str | None] = mapped_column(String(6), nullable=True, index=True)


class AssessmentAttachmentRow(Base):
    """A file attached to an assessment, in the order given (``position`` from 1): its sanitised
    name, the media type its content proved to be (gmsense.review.uploads), its size and SHA-256, and
    the bytes themselves (loaded only when asked for). Append-only, as ``assessments``."""

    __tablename__ = "assessment_attachments"
    __table_args__ = (UniqueConstraint("assessment_id", "position"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    assessment_id: Mapped[int] = mapped_column(ForeignKey("assessments.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    filename: Mapped[str] = mapped_column(String(255))
    media_type: Mapped[str] = mapped_column(String(100))
    size_bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    content: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)


class DivisionBoundaryRow(Base):
    """A county's boundary (gmsense.geo.county_boundaries, ``gmsense divisions import``), in EPSG:4326:
    the divisions of licences and register polygons whose attributes name none come from these.
    ``area_m2``: geodesic. One row per county; importing a county again replaces its row."""

    __tablename__ = "division_boundaries"
    county_code: Mapped[str] = mapped_column(String(6), primary_key=True)
    city_code: Mapped[str | None] = mapped_column(String(6), nullable=True, index=True)
    province_code: Mapped[str | None] = mapped_column(String(6), nullable=True)
    geometry_wkt: Mapped[str] = mapped_column(Text)
    area_m2: Mapped[float] = mapped_column(Float)
    n_features: Mapped[int] = mapped_column(Integer)
    attrs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    source_file: Mapped[str | None] = mapped_column(Text, nullable=True)
    imported_at: Mapped[datetime] = mapped_column(DateTime, default=_now)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    # REPLACE conflict resolution deletes rows; only with recursive triggers does that fire the
    # DELETE triggers that keep the audit log (reviews) append-only.
    cursor.execute("PRAGMA recursive_triggers=ON")
    cursor.close()


def _sqlite_busy(engine: Engine, reason: object) -> bool:
    """Whether ``reason`` is SQLite's transient "database is locked" / "busy" refusal."""
    text = str(reason).lower()
    return engine.dialect.name == "sqlite" and ("database is locked" in text or "busy" in text)


def _connect_args(url: str) -> dict[str, Any]:
    """PostgreSQL: the JIT compiler off for the store's sessions (``-c jit=off``, beside any ``options``
    the URL gives). Its compilation (on by default since PostgreSQL 12, for queries the planner thinks
    costly) took 1.3 s for a 0.3 s queue query with 100,000 flags (gmsense bench queue); the store's
    queries are short, and none gained from it. SQLite: wait :data:`SQLITE_LOCK_TIMEOUT_S` for locks."""
    if url.startswith("sqlite"):
        return {"timeout": SQLITE_LOCK_TIMEOUT_S}
    if not url.startswith("postgresql"):
        return {}
    from sqlalchemy.engine import make_url

    given = make_url(url).query.get("options", "")
    given = " ".join(given) if isinstance(given, tuple) else given
    return {"options": f"{given} -c jit=off".strip()}


def migration_engine(url: str, *, timeout: float = SQLITE_LOCK_TIMEOUT_S) -> Engine:
    """An engine whose transactions really contain DDL, for schema migrations.

    pysqlite (before Python 3.12) neither begins a transaction before CREATE TABLE nor lets SQLite
    roll it back: each statement is committed as it runs. Here the driver's own transaction handling
    is switched off and every transaction starts with ``BEGIN IMMEDIATE`` (which also makes
    concurrent migrations of one file wait for each other). PostgreSQL DDL is transactional anyway;
    an advisory lock, taken by :meth:`Store.create`, serialises concurrent migrations there.
    """
    if not url.startswith("sqlite"):
        return create_engine(url, poolclass=NullPool)
    engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": timeout})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, record: Any) -> None:
        _sqlite_pragmas(dbapi_connection, record)
        dbapi_connection.isolation_level = None  # no implicit BEGIN/COMMIT by the driver

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _install_pause_hook(engine: Engine) -> None:
    """The test hook of :data:`PAUSE_MIGRATION_ENV` (does nothing unless it is set)."""
    value = os.environ.get(PAUSE_MIGRATION_ENV, "")
    if not value.isdigit():
        return
    limit, seen = int(value), [0]

    @event.listens_for(engine, "after_cursor_execute")
    def _pause(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().split(None, 1)[0].upper() in ("CREATE", "ALTER", "DROP"):
            seen[0] += 1
            if seen[0] == limit:
                import sys
                import threading

                print(f"gmsense: migration paused after DDL statement {limit}", file=sys.stderr, flush=True)
                threading.Event().wait()  # until killed


def _migration_config() -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


@functools.cache
def _revision_chain() -> list[str | None]:
    """Revisions from the empty schema (None) to the head, oldest first."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_migration_config())
    return [None, *reversed([rev.revision for rev in script.walk_revisions()])]


def _schema_objects(connection: Connection, *, tables_only: bool = False) -> dict[str, tuple[Any, ...]]:
    """The schema as ``{name: (kind, table, columns)}`` in creation order, without alembic_version.

    On SQLite: tables (with their column names), indexes and triggers; elsewhere tables only.
    """
    out: dict[str, tuple[Any, ...]] = {}
    if connection.dialect.name == "sqlite":
        rows = connection.exec_driver_sql(
            "SELECT type, name, tbl_name FROM sqlite_master WHERE type IN ('table', 'index', 'trigger') "
            "AND name NOT LIKE 'sqlite_%' AND tbl_name != 'alembic_version' ORDER BY rowid").all()
        for kind, name, table in rows:
            if kind == "table":
                columns = frozenset(r[1] for r in connection.exec_driver_sql(f'PRAGMA table_info("{name}")'))
                out[name] = ("table", table, columns)
            elif not tables_only:
                out[name] = (kind, table, None)
        return out
    from sqlalchemy import inspect

    inspector = inspect(connection)
    for name in inspector.get_table_names():
        if name != "alembic_version":
            out[name] = ("table", name, frozenset(c["name"] for c in inspector.get_columns(name)))
    return out


_KNOWN_SCHEMAS: dict[str | None, dict[str, tuple[Any, ...]]] = {}


def _known_schemas() -> dict[str | None, dict[str, tuple[Any, ...]]]:
    """The schema at each revision, built by the migrations in a scratch in-memory SQLite."""
    if not _KNOWN_SCHEMAS:
        from alembic import command

        config = _migration_config()
        scratch = create_engine("sqlite://", poolclass=StaticPool)
        try:
            for revision in _revision_chain():
                with scratch.begin() as connection:
                    if revision is not None:
                        config.attributes["connection"] = connection
                        command.upgrade(config, revision)
                    _KNOWN_SCHEMAS[revision] = _schema_objects(connection)
        finally:
            scratch.dispose()
    return _KNOWN_SCHEMAS


def _division_codes(locator: CountyLocator | None, label: str, attrs: dict[str, Any], geometry_wgs84: Any, *,
                    warn: bool) -> tuple[dict[str, str | None], str]:
    """The division codes of a polygon and where they came from (``attributes``, ``geometry``,
    ``none``): its attributes, and its geometry where they name none and the store holds county
    boundaries (gmsense.geo.county_boundaries); ``warn``: emit its DivisionWarning if any."""
    if locator is None:
        return divisions_of(attrs), "attributes"
    located = locator.locate(label, attrs, geometry_wgs84)
    if warn and located.warning:
        warnings.warn(located.warning, DivisionWarning, stacklevel=3)
    return located.codes, located.source


def _merge_dates(a: str, b: str, pick: Any) -> str:
    return pick(d for d in (a, b) if d) if (a or b) else ""


class Store:
    """A connection to the results database.

    ``Store(url)`` creates the store (a SQLite file and its folder) if there is none, and brings
    its schema to the newest migration. ``Store(url, create=False)``, for commands that only read,
    never creates one: a missing SQLite file, or a database without gmsense's tables, raises
    :class:`NoStoreError` (exit code 2) naming the store. An existing store at an older schema is
    upgraded by both (one transaction: it never loses data), with a warning saying so.
    """

    def __init__(self, url: str | None = None, *, create: bool = True) -> None:
        self.url = resolve_db_url(url)
        try:
            self.engine = create_engine(self.url, connect_args=_connect_args(self.url))
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise StoreError(f"cannot open the store {self.url}: {exc}") from None
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
            db_path = self.engine.url.database
            if db_path and db_path != ":memory:" and not db_path.startswith("file:"):
                if not create and not Path(db_path).is_file():
                    raise NoStoreError(f"no store at {Path(db_path).resolve()}: run a scan first, or pass --db / "
                                       f"set GMSENSE_DB to an existing store")
                if create:
                    Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        if not create:
            revision, has_tables = self._peek()
            if revision is None and not has_tables:
                raise NoStoreError(f"{self.location} holds no gmsense store: run a scan first, or pass --db / "
                                   f"set GMSENSE_DB to an existing store")
        self.create()

    @property
    def location(self) -> str:
        """The store for messages: a SQLite file's absolute path, else the URL with the password masked."""
        database = self.engine.url.database
        if self.engine.dialect.name == "sqlite" and database and database != ":memory:" \
                and not database.startswith("file:"):
            return str(Path(database).resolve())
        return self._safe_url()

    def create(self) -> None:
        """Create or upgrade the schema to the newest migration (idempotent, never drops data).

        The whole upgrade, with the version row, is one transaction. A store that an older
        gmsense left half-built (tables but no version row, or some tables of a newer revision)
        is repaired when that loses nothing: its tables match a known revision exactly, and
        any tables beyond it are empty. Otherwise a :class:`StoreError` says what is wrong.
        """
        head = _revision_chain()[-1]
        revision, _ = self._peek()
        if revision == head:
            return
        self._check_known(revision)
        database = self.engine.url.database
        if self.engine.dialect.name == "sqlite" and (not database or database == ":memory:"):
            engine = self.engine  # an in-memory database lives in this engine's one connection only
        else:
            engine = migration_engine(self.url)
            _install_pause_hook(engine)
        try:
            for attempt in range(_MIGRATION_ATTEMPTS):
                try:
                    self._migrate(engine)
                    return
                except SQLAlchemyError as exc:
                    # Another process may be migrating the same store right now: wait for it.
                    if self._peek()[0] == head:
                        return
                    if attempt == _MIGRATION_ATTEMPTS - 1:
                        reason = exc.orig if getattr(exc, "orig", None) is not None else exc
                        raise StoreError(f"cannot create or upgrade the schema in {self.location}: {reason}") from None
                    time.sleep(0.5 * (attempt + 1))
        finally:
            if engine is not self.engine:
                engine.dispose()

    def _migrate(self, engine: Engine) -> None:
        import warnings

        from alembic import command
        from alembic.runtime.migration import MigrationContext

        config = _migration_config()
        head = _revision_chain()[-1]
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_SCHEMA_LOCK})")
            current = MigrationContext.configure(connection).get_current_revision()
            if current == head:
                return  # another process did it while this one waited for the lock
            self._check_known(current)
            notes = self._repair(connection, current)
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
        if notes:
            warnings.warn(f"repaired the store {self.location}: {notes}", UserWarning, stacklevel=3)
        elif current is not None:
            warnings.warn(f"upgraded the store {self.location} from schema revision {current} to {head}",
                          UserWarning, stacklevel=3)

    def _check_known(self, revision: str | None) -> None:
        if revision not in _revision_chain():
            raise StoreError(f"the store {self.location} has schema revision {revision!r}, which this gmsense does "
                             f"not know: it was written by a newer gmsense; upgrade gmsense to use it")

    def _repair(self, connection: Connection, current: str | None) -> str:
        """Make a half-migrated store consistent at a known revision (in the migration's
        transaction), so that the upgrade can run; returns what was done ("" if nothing)."""
        chain = _revision_chain()
        sqlite = connection.dialect.name == "sqlite"
        found = _schema_objects(connection, tables_only=not sqlite)
        if current is None and not set(found) & set(Base.metadata.tables):
            return ""  # a new store
        known = {rev: {n: d for n, d in objs.items() if sqlite or d[0] == "table"}
                 for rev, objs in _known_schemas().items()}
        ours = {name for objs in known.values() for name in objs}
        existing = {n: d for n, d in found.items() if n in ours}
        later = chain[chain.index(current):]
        matching = [rev for rev in later if all(existing.get(n) == d for n, d in known[rev].items())]
        damaged = (f"the store {self.location} is damaged (perhaps an older gmsense was interrupted while "
                   f"creating or upgrading it)")
        advice = ("nothing was changed; keep a copy of it, then restore a backup, or move it away and run the "
                  "scans again into a new store")
        if not matching:
            missing = sorted(n for n, d in known[current].items() if existing.get(n) != d)
            raise StoreError(f"{damaged}: at schema revision {current or 'none'} it should have, but has not "
                             f"(or not as expected): {', '.join(missing)}; {advice}")
        # The earliest revision showing what the latest match shows: revisions that change nothing visible
        # here (an index, seen as tables only on PostgreSQL) do not make the store look half-built.
        base = next(rev for rev in matching if known[rev] == known[matching[-1]])
        extra = {n: d for n, d in existing.items() if n not in known[base]}
        if not extra and base == current:
            return ""
        if not sqlite:  # only SQLite stores were left half-built (by older versions); tables alone prove too little
            raise StoreError(f"{damaged}: its tables ({', '.join(existing)}) do not match its schema version "
                             f"({current or 'none'}); {advice}")
        target = known[chain[-1]]
        # Each unfinished object must be as some later revision defines it (an older version creating
        # its own head, or this one creating ours).
        newer = chain[chain.index(base) + 1:]
        odd = sorted(n for n, d in extra.items() if not any(known[rev].get(n) == d for rev in newer))
        if odd:
            raise StoreError(f"{damaged}: {', '.join(odd)} do not match any schema revision; {advice}")
        tables = [n for n, d in extra.items() if d[0] == "table"]
        full = [n for n in tables if connection.exec_driver_sql(f'SELECT 1 FROM "{n}" LIMIT 1').first()]
        if full:
            raise StoreError(f"{damaged}: it has part of a schema newer than its version ({base or 'none'}), and "
                             f"those unfinished tables already hold rows: {', '.join(full)}; {advice}")
        for name in reversed([n for n in target if n in extra]):  # dependants first
            connection.exec_driver_sql(f'DROP {extra[name][0].upper()} IF EXISTS "{name}"')
        if base != current:
            from alembic.runtime.migration import MigrationContext
            from alembic.script import ScriptDirectory

            MigrationContext.configure(connection).stamp(ScriptDirectory.from_config(_migration_config()), base)
        parts = []
        if base != current:
            parts.append(f"its tables are exactly those of schema revision {base}, but the version row said "
                         f"{current or 'none'}")
        if extra:
            parts.append(f"removed the empty, unfinished {', '.join(tables) or 'objects'} of an interrupted "
                         f"migration")
        return "; ".join(parts) + f"; then upgraded it to {chain[-1]}"

    def _peek(self) -> tuple[str | None, bool]:
        """(schema revision or None, whether any gmsense table exists), read without writing.

        SQLite can refuse even a reader for a moment while another process switches a new file to
        WAL or checkpoints it on close, sometimes without waiting out the lock timeout (SQLITE_BUSY
        during WAL recovery); such a refusal is retried for :data:`SQLITE_LOCK_TIMEOUT_S`.
        """
        from sqlalchemy import inspect

        deadline = time.monotonic() + SQLITE_LOCK_TIMEOUT_S
        while True:
            try:
                with self.engine.connect() as connection:
                    names = set(inspect(connection).get_table_names())
                    revision = None
                    if "alembic_version" in names:
                        revision = connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
                return revision, bool(names & set(Base.metadata.tables))
            except SQLAlchemyError as exc:
                reason = exc.orig if getattr(exc, "orig", None) is not None else exc
                if _sqlite_busy(self.engine, reason) and time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                raise StoreError(f"cannot open the store {self.location}: {reason}") from None

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
            units = list(s.scalars(select(ScanUnitRow).where(ScanUnitRow.scan_id == scan_id)
                                   .order_by(ScanUnitRow.site_id)))
            return s.get(ScanRow, scan_id), units

    def last_unit(self, site_id: str) -> ScanUnitRow | None:
        """The licence's newest stored analysis (its done scan unit, ``stats`` as the analysis left
        them: coverage, dates, ...); None if no scan stored it."""
        with self.session() as s:
            return s.scalars(select(ScanUnitRow).where(ScanUnitRow.site_id == site_id, ScanUnitRow.status == "done")
                             .order_by(ScanUnitRow.scan_id.desc()).limit(1)).first()

    # --- sites -------------------------------------------------------------------------------
    def upsert_sites(self, sites: list[Site]) -> None:
        """Store the licences a scan reads; their divisions from their attributes or, where these name
        none, from the store's county boundaries (no warnings: the imports give them)."""
        locator = self.county_locator()
        with self.session() as s, s.begin():
            for site in sites:
                row = s.get(SiteRow, site.site_id) or SiteRow(site_id=site.site_id)
                wgs84 = site.geometry_wgs84
                row.geometry_wkt = wgs84.wkt
                row.attrs = json.loads(json.dumps(site.attrs, default=str))
                row.updated_at = _now()
                codes, _ = _division_codes(locator, f"licence {site.site_id}", row.attrs, wgs84, warn=False)
                if any(getattr(row, k) != v for k, v in codes.items()):
                    for key, value in codes.items():
                        setattr(row, key, value)
                    # The licence's flags and assessments follow it into its (new) jurisdiction.
                    s.execute(update(FlagRow).where(FlagRow.site_id == site.site_id).values(**codes))
                    s.execute(update(AssessmentRow).where(AssessmentRow.site_id == site.site_id).values(**codes))
                s.add(row)

    def site_rows(self) -> list[SiteRow]:
        with self.session() as s:
            return list(s.scalars(select(SiteRow).order_by(SiteRow.site_id)))

    # --- the licence register (issue 21: gmsense.geo.licences) ----------------------------------------
    def import_licences(self, sites: list[Site], *, source_file: str | None = None,
                        retire_missing: bool = False) -> dict[str, list[str]]:
        """Store a licence file's licences as versions, in one transaction (see gmsense.geo.licences).

        A licence new to the store gets version 1; one whose boundary or attributes differ from its
        latest version a new version (``valid_from`` now, the previous version's ``valid_to`` now);
        an identical one nothing. Licences of the store absent from ``sites`` are never deleted:
        they are listed as ``missing``, and with ``retire_missing`` those not already ended or
        revoked get a new version with status ``ended`` (``retired``). Returns the licence ids per
        outcome: ``new``, ``changed``, ``unchanged``, ``missing``, ``retired``.

        Division codes come from the attributes or, where these name none and the store holds county
        boundaries, from the boundary (``located``: those; ``unlocated``: those in no boundary, left
        without codes; each with a :class:`~gmsense.geo.county_boundaries.DivisionWarning` when split,
        in no boundary or at odds with the attributes). The codes of an unchanged licence's latest
        version are brought up to date (``relocated``): they derive from the boundaries loaded since.
        """
        from gmsense.geo.licences import RETIRED_STATUS, is_inactive_status, json_attrs, licence_digest, same_licence

        outcome: dict[str, list[str]] = {"new": [], "changed": [], "unchanged": [], "missing": [], "retired": [],
                                         "located": [], "unlocated": [], "relocated": []}
        now = _now()
        locator = self.county_locator()

        def codes_of(licence_id: str, attrs: dict[str, Any], wgs84: Any, warn: bool = True) -> dict[str, str | None]:
            codes, source = _division_codes(locator, f"licence {licence_id}", attrs, wgs84, warn=warn)
            if source == "geometry":
                outcome["located"].append(licence_id)
            elif source == "none":
                outcome["unlocated"].append(licence_id)
            return codes

        try:
            with self.session() as s, s.begin():
                latest = {row.licence_id: row for row in s.scalars(
                    select(LicenceVersionRow).where(LicenceVersionRow.valid_to.is_(None)))}

                def add(licence_id: str, version: int, change: str, wgs84: Any, local_wkt: str, local_crs: str,
                        area_m2: float, attrs: dict[str, Any], digest: str, previous: LicenceVersionRow | None,
                        codes: dict[str, str | None]) -> None:
                    if previous is not None:
                        previous.valid_to = now
                        s.flush()  # one open version per licence at any time
                    s.add(LicenceVersionRow(licence_id=licence_id, version=version, geometry_wkt=wgs84.wkt,
                                            local_wkt=local_wkt, local_crs=local_crs, area_m2=area_m2, attrs=attrs,
                                            digest=digest, change=change, source_file=source_file,
                                            valid_from=now, valid_to=None, **codes))

                for site in sites:
                    wgs84, attrs = site.geometry_wgs84, json_attrs(site.attrs)
                    digest = licence_digest(wgs84, attrs)
                    previous = latest.get(site.site_id)
                    codes = codes_of(site.site_id, attrs, wgs84)
                    if previous is not None and same_licence(previous, wgs84, attrs, digest):
                        outcome["unchanged"].append(site.site_id)
                        if any(getattr(previous, key) != value for key, value in codes.items()):
                            for key, value in codes.items():
                                setattr(previous, key, value)
                            outcome["relocated"].append(site.site_id)
                        continue
                    outcome["new" if previous is None else "changed"].append(site.site_id)
                    add(site.site_id, previous.version + 1 if previous else 1, "changed" if previous else "new",
                        wgs84, site.geometry.wkt, site.crs.to_string(), float(site.geometry.area), attrs, digest,
                        previous, codes)
                seen = {site.site_id for site in sites}
                for licence_id in sorted(set(latest) - seen):
                    outcome["missing"].append(licence_id)
                    row = latest[licence_id]
                    if not retire_missing or is_inactive_status((row.attrs or {}).get("status")):
                        continue
                    attrs = {**(row.attrs or {}), "status": RETIRED_STATUS}
                    wgs84 = wkt.loads(row.geometry_wkt)
                    codes = {key: getattr(row, key) for key in ("province_code", "city_code", "county_code")}
                    add(licence_id, row.version + 1, "retired", wgs84, row.local_wkt, row.local_crs, row.area_m2,
                        attrs, licence_digest(wgs84, attrs), row, codes)
                    outcome["retired"].append(licence_id)
        except SQLAlchemyError as exc:
            reason = exc.orig if getattr(exc, "orig", None) is not None else exc
            raise StoreError(f"cannot import the licences into {self.location} (nothing was imported; another import "
                             f"running at the same time?): {reason}") from None
        return outcome

    def latest_licence_versions(self) -> list[LicenceVersionRow]:
        """The latest version of every licence of the register, by licence id."""
        with self.session() as s:
            return list(s.scalars(select(LicenceVersionRow).where(LicenceVersionRow.valid_to.is_(None))
                                  .order_by(LicenceVersionRow.licence_id)))

    def licence_history(self, licence_id: str) -> list[LicenceVersionRow]:
        """Every version of one licence, oldest first (empty if the register does not hold it)."""
        with self.session() as s:
            return list(s.scalars(select(LicenceVersionRow).where(LicenceVersionRow.licence_id == licence_id)
                                  .order_by(LicenceVersionRow.version)))

    def licence_version_counts(self) -> dict[str, int]:
        with self.session() as s:
            return dict(s.execute(select(LicenceVersionRow.licence_id, func.count())
                                  .group_by(LicenceVersionRow.licence_id)).all())

    # --- protected land and zoning layers (issue 20, item 4: gmsense.geo.layers) ----------------------
    def add_layer(self, layer: ProtectedLayer, *, source_file: str | None = None) -> tuple[LayerVersionRow, str]:
        """Store a layer as a version, in one transaction: a new name gets version 1, a layer whose
        content (:func:`gmsense.geo.layers.layer_digest`) differs from its current version, or that was
        removed, a new version (the previous one's ``valid_to`` now); an identical one nothing.
        Returns the current version and what happened: ``new``, ``changed``, ``re-added`` or ``unchanged``."""
        now = _now()
        try:
            with self.session() as s, s.begin():
                latest = s.scalar(select(LayerVersionRow).where(LayerVersionRow.name == layer.name)
                                  .order_by(LayerVersionRow.version.desc()).limit(1))
                if latest is not None and latest.valid_to is None and latest.digest == layer.digest:
                    return latest, "unchanged"
                if latest is None:
                    change = "new"
                elif latest.valid_to is None:
                    change = "changed"
                    latest.valid_to = now
                    s.flush()
                else:
                    change = "re-added"
                row = LayerVersionRow(name=layer.name, version=latest.version + 1 if latest else 1, kind=layer.kind,
                                      digest=layer.digest, n_features=len(layer.features),
                                      area_m2=round(area_m2(unary_union(list(layer.features))), 1), change=change,
                                      source_file=source_file, valid_from=now, valid_to=None)
                s.add(row)
                s.flush()
                attrs = layer.attrs or tuple({} for _ in layer.features)
                s.add_all(LayerFeatureRow(version_id=row.id, feature_index=i, geometry_wkt=geom.wkt, attrs=a)
                          for i, (geom, a) in enumerate(zip(layer.features, attrs, strict=True)))
                return row, change
        except SQLAlchemyError as exc:
            reason = exc.orig if getattr(exc, "orig", None) is not None else exc
            raise StoreError(f"cannot add the layer {layer.name} to {self.location} (nothing was added): "
                             f"{reason}") from None

    def remove_layer(self, name: str) -> LayerVersionRow | None:
        """End a layer's current version (kept, with its features: flags name it); None when the
        store has no current layer of that name. Scans check it no more."""
        with self.session() as s, s.begin():
            row = s.scalar(select(LayerVersionRow).where(LayerVersionRow.name == name,
                                                         LayerVersionRow.valid_to.is_(None)))
            if row is not None:
                row.valid_to = _now()
            return row

    def current_layers(self) -> list[LayerVersionRow]:
        """The current version of every layer not removed, by name."""
        with self.session() as s:
            return list(s.scalars(select(LayerVersionRow).where(LayerVersionRow.valid_to.is_(None))
                                  .order_by(LayerVersionRow.name)))

    def layer_history(self, name: str) -> list[LayerVersionRow]:
        """Every version of one layer, oldest first (empty if the store never held it)."""
        with self.session() as s:
            return list(s.scalars(select(LayerVersionRow).where(LayerVersionRow.name == name)
                                  .order_by(LayerVersionRow.version)))

    def layer_version_counts(self) -> dict[str, int]:
        with self.session() as s:
            return dict(s.execute(select(LayerVersionRow.name, func.count()).group_by(LayerVersionRow.name)).all())

    def layer_set(self) -> LayerSet:
        """The current version of every layer with its features: what a scan checks (read once, in
        the scanning process)."""
        layers = []
        with self.session() as s:
            for row in s.scalars(select(LayerVersionRow).where(LayerVersionRow.valid_to.is_(None))
                                 .order_by(LayerVersionRow.name)):
                features = list(s.scalars(select(LayerFeatureRow).where(LayerFeatureRow.version_id == row.id)
                                          .order_by(LayerFeatureRow.feature_index)))
                layers.append(ProtectedLayer(row.name, row.kind, tuple(wkt.loads(f.geometry_wkt) for f in features),
                                             tuple(dict(f.attrs or {}) for f in features), row.version, row.digest))
        return LayerSet(tuple(layers))

    def save_register_layer_flags(self, flags: dict[str, list[Any]]) -> int:
        """Replace every register polygon's protected-land flags (register id -> FlagRecords of
        gmsense.flags.evaluate_register), in one transaction; returns how many are stored."""
        n = 0
        with self.session() as s, s.begin():
            s.execute(delete(RegisterLayerFlagRow))
            for register_id, records in flags.items():
                polygon = s.get(RegisterRow, register_id)
                codes = {k: getattr(polygon, k) if polygon else None
                         for k in ("province_code", "city_code", "county_code")}
                for f in records:
                    e = f.evidence
                    s.add(RegisterLayerFlagRow(register_id=register_id, layer_name=e["layer_name"],
                                               layer_kind=e["layer_kind"], layer_version=e["layer_version"],
                                               severity=f.severity, overlap_m2=e["overlap_m2"], message=f.message,
                                               evidence=e, checked_at=_now(), **codes))
                    n += 1
        return n

    def register_layer_flags(self) -> list[RegisterLayerFlagRow]:
        with self.session() as s:
            return list(s.scalars(select(RegisterLayerFlagRow)
                                  .order_by(RegisterLayerFlagRow.register_id, RegisterLayerFlagRow.layer_name)))

    # --- county boundaries: divisions from geometry (gmsense.geo.county_boundaries) -------------------
    def import_boundaries(self, boundaries: list[CountyBoundary], *,
                          source_file: str | None = None) -> dict[str, list[str]]:
        """Store county boundaries in one transaction: a county already stored is replaced, the
        others are kept. Returns the county codes ``new`` and ``replaced``."""
        outcome: dict[str, list[str]] = {"new": [], "replaced": []}
        now = _now()
        try:
            with self.session() as s, s.begin():
                for boundary in boundaries:
                    row = s.get(DivisionBoundaryRow, boundary.code)
                    outcome["new" if row is None else "replaced"].append(boundary.code)
                    row = row or DivisionBoundaryRow(county_code=boundary.code)
                    codes = divisions_of({"county": boundary.code})
                    row.city_code, row.province_code = codes["city_code"], codes["province_code"]
                    row.geometry_wkt, row.area_m2 = boundary.geometry.wkt, round(area_m2(boundary.geometry), 1)
                    row.n_features, row.attrs = boundary.n_features, boundary.attrs
                    row.source_file, row.imported_at = source_file, now
                    s.add(row)
        except SQLAlchemyError as exc:
            reason = exc.orig if getattr(exc, "orig", None) is not None else exc
            raise StoreError(f"cannot import the county boundaries into {self.location} (nothing was imported): "
                             f"{reason}") from None
        return outcome

    def boundary_rows(self) -> list[DivisionBoundaryRow]:
        with self.session() as s:
            return list(s.scalars(select(DivisionBoundaryRow).order_by(DivisionBoundaryRow.county_code)))

    def has_boundaries(self) -> bool:
        with self.session() as s:
            return s.scalar(select(DivisionBoundaryRow.county_code).limit(1)) is not None

    def county_locator(self) -> CountyLocator | None:
        """The store's county boundaries, indexed to find divisions from geometry; None when it has none."""
        rows = self.boundary_rows()
        if not rows:
            return None
        return CountyLocator([CountyBoundary(r.county_code, wkt.loads(r.geometry_wkt)) for r in rows])

    # --- register of mine land, demonstration zones, restoration (issue 19) ----------------------
    def upsert_register(self, polygons: list[RegisterPolygon]) -> dict[str, int]:
        """Store register polygons in one transaction; a ``register_id`` already stored is replaced
        (and its status rows dropped when its boundary changed: they no longer describe it).
        Returns counts ``new``, ``replaced``, ``reset`` (replaced with a new boundary), ``located``
        (divisions from the county boundaries: the attributes name none) and ``unlocated`` (in no
        boundary either: no divisions); see gmsense.geo.county_boundaries."""
        counts = {"new": 0, "replaced": 0, "reset": 0, "located": 0, "unlocated": 0}
        locator = self.county_locator()
        with self.session() as s, s.begin():
            for polygon in polygons:
                row = s.get(RegisterRow, polygon.register_id)
                local_wkt = polygon.geometry.wkt
                if row is None:
                    row = RegisterRow(register_id=polygon.register_id)
                    counts["new"] += 1
                else:
                    counts["replaced"] += 1
                    if row.local_wkt != local_wkt or row.local_crs != polygon.crs.to_string():
                        counts["reset"] += 1
                        s.execute(delete(RestorationStatusRow)
                                  .where(RestorationStatusRow.register_id == polygon.register_id))
                row.kind, row.local_wkt, row.local_crs = polygon.kind, local_wkt, polygon.crs.to_string()
                row.geometry_wkt, row.area_m2 = polygon.geometry_wgs84.wkt, polygon.area_m2
                row.attrs = json.loads(json.dumps(polygon.attrs, default=str))
                row.updated_at = _now()
                codes, source = _division_codes(locator, f"register polygon {polygon.register_id}", row.attrs,
                                                polygon.geometry_wgs84, warn=True)
                counts["located"] += source == "geometry"
                counts["unlocated"] += source == "none"
                for key, value in codes.items():
                    setattr(row, key, value)
                s.add(row)
        return counts

    def upsert_zones(self, zones: list[Zone]) -> dict[str, int]:
        """Store demonstration zones in one transaction (an id already stored is replaced)."""
        counts = {"new": 0, "replaced": 0}
        with self.session() as s, s.begin():
            for zone in zones:
                row = s.get(ZoneRow, zone.zone_id)
                counts["replaced" if row is not None else "new"] += 1
                row = row or ZoneRow(zone_id=zone.zone_id)
                row.name, row.target_rate, row.geometry_wkt = zone.name, zone.target_rate, zone.geometry_wgs84.wkt
                row.attrs = json.loads(json.dumps(zone.attrs, default=str))
                row.updated_at = _now()
                s.add(row)
        return counts

    def register_rows(self) -> list[RegisterRow]:
        with self.session() as s:
            return list(s.scalars(select(RegisterRow).order_by(RegisterRow.register_id)))

    def zone_rows(self) -> list[ZoneRow]:
        with self.session() as s:
            return list(s.scalars(select(ZoneRow).order_by(ZoneRow.zone_id)))

    def begin_restoration_run(self, imagery: str, settings: dict[str, Any], gmsense_version: str) -> int:
        with self.session() as s, s.begin():
            row = RestorationRunRow(imagery=imagery, settings=settings, gmsense_version=gmsense_version, summary={})
            s.add(row)
            s.flush()
            return row.id

    def finish_restoration_run(self, run_id: int, summary: dict[str, Any]) -> None:
        with self.session() as s, s.begin():
            row = s.get(RestorationRunRow, run_id)
            row.summary, row.finished_at = summary, _now()

    def save_restoration(self, run_id: int, register_id: str, records: list[RestorationRecord]) -> None:
        """Replace the status rows of one register polygon by ``records``, in one transaction."""
        with self.session() as s, s.begin():
            s.execute(delete(RestorationStatusRow).where(RestorationStatusRow.register_id == register_id))
            for record in records:
                values = {k: (None if isinstance(v, float) and v != v else v) for k, v in asdict(record).items()}
                s.add(RestorationStatusRow(run_id=run_id, **values))

    def restoration_rows(self) -> list[RestorationStatusRow]:
        with self.session() as s:
            return list(s.scalars(select(RestorationStatusRow)
                                  .order_by(RestorationStatusRow.register_id, RestorationStatusRow.year)))

    def restoration_runs(self) -> list[RestorationRunRow]:
        with self.session() as s:
            return list(s.scalars(select(RestorationRunRow).order_by(RestorationRunRow.id)))

    # --- results -----------------------------------------------------------------------------
    def save_site_result(self, scan_id: int, result: SiteResult, unit_key: str = "",
                         licence_version: int | None = None) -> dict[str, Any]:
        """Write one licence's patches, recovery and flags in one transaction.

        ``licence_version``: the register version of the licence the scan analysed (None for a
        licence from a --sites file), recorded on every flag the result holds, new or re-checked.

        Returns counts of ``new_patches``, ``updated_patches`` and ``new_flags``, and what the store
        holds for the licence once they are written: ``patches`` (several detections that extend one
        stored patch count once), ``by_class`` (patches per class), ``area_m2`` (their total area,
        m2) and ``flags``. The scan unit's ``n_patches``/``n_flags`` are these stored numbers too.
        """
        counts: dict[str, Any] = {"new_patches": 0, "updated_patches": 0, "new_flags": 0}
        with self.session() as s, s.begin():
            site = s.get(SiteRow, result.site_id)
            codes = {k: getattr(site, k) if site else None for k in ("province_code", "city_code", "county_code")}
            stored = list(s.scalars(select(PatchRow).where(PatchRow.site_id == result.site_id)))
            shapes = {row.patch_id: wkt.loads(row.local_wkt) for row in stored}  # parsed once, not per record
            next_number = len(stored) + 1
            rows: list[PatchRow] = []
            for record in result.patches:
                row = self._match(stored, shapes, record)
                if row is None:
                    row = PatchRow(patch_id=f"{result.site_id}-P{next_number:04d}", site_id=result.site_id,
                                   created_scan_id=scan_id)
                    next_number += 1
                    self._fill(row, record)
                    s.add(row)
                    stored.append(row)
                    counts["new_patches"] += 1
                elif self._extend(row, record):
                    counts["updated_patches"] += 1
                shapes[row.patch_id] = wkt.loads(row.local_wkt)
                row.updated_scan_id = scan_id
                rows.append(row)
            s.flush()  # the patches exist before their recovery rows and flags refer to them
            patch_ids = [row.patch_id for row in rows]
            recoveries = {(r.patch_id, r.season, r.index_name): r for r in s.scalars(
                select(RecoveryRow).where(RecoveryRow.patch_id.in_(
                    select(PatchRow.patch_id).where(PatchRow.site_id == result.site_id))))}
            for row, record in zip(rows, result.patches, strict=True):
                for obs in record.recovery:
                    values = asdict(obs)
                    values["index_name"] = values.pop("index")
                    key = (row.patch_id, obs.season, values["index_name"])
                    existing = recoveries.get(key)
                    if existing is None:
                        recoveries[key] = RecoveryRow(patch_id=row.patch_id, **values)
                        s.add(recoveries[key])
                    else:
                        for name, value in values.items():
                            setattr(existing, name, value)
            flags = {(f.rule, f.flag_key, f.patch_id): f
                     for f in s.scalars(select(FlagRow).where(FlagRow.site_id == result.site_id))}
            for flag in result.flags:
                patch_id = patch_ids[flag.patch_index] if flag.patch_index is not None else None
                existing = flags.get((flag.rule, flag.key, patch_id))
                layer = {key: flag.evidence.get(key) for key in ("layer_name", "layer_kind", "layer_version",
                                                                   "overlap_m2")}
                if existing is None:
                    flags[(flag.rule, flag.key, patch_id)] = FlagRow(
                        site_id=result.site_id, patch_id=patch_id, rule=flag.rule, flag_key=flag.key,
                        severity=flag.severity, message=flag.message, evidence=flag.evidence,
                        created_scan_id=scan_id, updated_scan_id=scan_id,
                        licence_version=licence_version, **codes, **layer)
                    s.add(flags[(flag.rule, flag.key, patch_id)])
                    counts["new_flags"] += 1
                else:
                    existing.severity, existing.message = flag.severity, flag.message
                    existing.evidence, existing.updated_scan_id = flag.evidence, scan_id
                    existing.licence_version = licence_version
                    for key, value in layer.items():
                        setattr(existing, key, value)
            unit = s.scalar(select(ScanUnitRow).where(ScanUnitRow.scan_id == scan_id,
                                                      ScanUnitRow.site_id == result.site_id))
            unit = unit or ScanUnitRow(scan_id=scan_id, site_id=result.site_id)
            unit.status, unit.error, unit.unit_key = "done", None, unit_key
            unit.last_date = result.stats.get("last_acquisition")
            s.flush()
            n_flags = s.scalar(select(func.count()).select_from(FlagRow).where(FlagRow.site_id == result.site_id))
            classes = Counter(row.disturbance_class for row in stored)
            counts |= {"patches": len(stored), "by_class": dict(sorted(classes.items())),
                       "area_m2": round(sum(row.area_m2 for row in stored), 1), "flags": int(n_flags or 0)}
            unit.n_patches, unit.n_flags = len(stored), counts["flags"]
            unit.stats, unit.finished_at = result.stats, _now()
            s.add(unit)
        return counts

    @staticmethod
    def _match(stored: list[PatchRow], shapes: dict[str, BaseGeometry], record: PatchRecord) -> PatchRow | None:
        """The stored patch ``record`` is a detection of: one it overlaps (by at least
        :data:`MIN_OVERLAP_M2` in the local CRS: patches sharing only an edge stay separate) whose
        disturbance it can be (first detected within a season of it:
        :func:`gmsense.records.same_disturbance`); the earliest of several. A later disturbance of
        ground that broke before (``metrics["earlier_disturbance"]``, the earlier one's date) is never
        a detection of a patch first detected on or before that date: it is a second disturbance, and
        merged into the first its class would overwrite the first's (a harvest the season after a
        trench dug in the field would have made the trench's patch natural). ``shapes``: the stored
        patches' local geometries (each in its row's ``local_crs``) by patch id."""
        geom = wkt.loads(record.local_wkt)
        in_crs: dict[str, BaseGeometry] = {record.local_crs: geom}
        follows = (record.metrics or {}).get("earlier_disturbance")

        def overlaps(row: PatchRow) -> bool:
            if row.local_crs not in in_crs:
                in_crs[row.local_crs] = reproject_geometry(geom, pyproj.CRS.from_user_input(record.local_crs),
                                                           pyproj.CRS.from_user_input(row.local_crs))
            mine, other = in_crs[row.local_crs], shapes[row.patch_id]
            return other.intersects(mine) and other.intersection(mine).area >= MIN_OVERLAP_M2

        hits = [row for row in stored
                if same_disturbance(row.first_detected, record.first_detected)
                and not (follows and row.first_detected and row.first_detected <= follows)
                and overlaps(row)]
        return min(hits, key=lambda r: r.first_detected) if hits else None

    @staticmethod
    def _fill(row: PatchRow, r: PatchRecord) -> None:
        for key in ("geometry_wkt", "local_wkt", "local_crs", "disturbance_class", "confidence",
                    "first_detected", "confirmed_on", "last_seen", "area_m2", "inside_licence",
                    "area_outside_m2", "recovery_status", "recovery_ratio", "metrics", "natural_agent"):
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
        row.disturbance_class, row.confidence, row.natural_agent = r.disturbance_class, r.confidence, r.natural_agent
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

    # --- resume: unfinished scans and the process that runs one (gmsense.batch.scan) -------------------
    # Added for the hardening issue (resume only the same request; never run one scan twice).
    def unfinished_scans(self) -> list[ScanRow]:
        """Scans that did not complete (running, failed or partial), newest first."""
        with self.session() as s:
            return list(s.scalars(select(ScanRow).where(ScanRow.status.in_(("running", "failed", "partial")))
                                  .order_by(ScanRow.id.desc())))

    def claim_scan(self, scan_id: int, owner: dict[str, Any], expected_token: str | None) -> ScanRow | None:
        """Reopen a scan (status ``running``) as ``owner``'s, recorded in ``params["owner"]``, but only
        if the owner recorded now is still the one with ``expected_token``; else None (someone else
        claimed it first). The first statement takes the row's write lock, so two claims serialise."""
        with self.session() as s, s.begin():
            s.execute(update(ScanRow).where(ScanRow.id == scan_id).values(status=ScanRow.status))
            row = s.scalar(select(ScanRow).where(ScanRow.id == scan_id).execution_options(populate_existing=True))
            if row is None or ((row.params or {}).get("owner") or {}).get("token") != expected_token:
                return None
            row.params = {**(row.params or {}), "owner": owner}
            row.status, row.finished_at = "running", None
            return row

    def touch_scan(self, scan_id: int, token: str, at: float) -> None:
        """The heartbeat of a running scan: ``params["owner"]["heartbeat"] = at`` (seconds since
        1970) if the scan's owner is still the one with ``token``."""
        with self.session() as s, s.begin():
            row = s.get(ScanRow, scan_id)
            owner = ((row.params or {}).get("owner") or {}) if row is not None else {}
            if row is not None and owner.get("token") == token:
                row.params = {**row.params, "owner": {**owner, "heartbeat": at}}
