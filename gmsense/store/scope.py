"""Scopes: what part of the province a user sees, as SQL conditions on the store's tables.

A scope is the whole province (``province``: every row, those without a division too), a list of
cities (``city:230100,230200``), a list of counties (``county:230183``) or, for third-party
assessors, a list of licences (``licence:ID,ID``). Cities and counties may be named as the register
names them (``county:尚志市``, ``county:Shangzhi``): :func:`parse_scope` resolves names to codes by
the shipped table (gmsense.geo.divisions) and refuses unknown ones, listing the closest.

Every read of the review app, its exports, dashboard and pictures adds one of the ``*_clause``
conditions to its query, so the database returns only the rows in scope; a row without a division
(its attributes name none the table knows) is seen by province-wide users only.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, false, select, true

from gmsense.errors import InputError
from gmsense.geo import divisions
from gmsense.store import (
    AssessmentRow,
    FlagRow,
    PatchRow,
    RegisterLayerFlagRow,
    RegisterRow,
    ReviewRow,
    SiteRow,
)

KINDS = ("province", "city", "county", "licence")
PROVINCE_CODE = "230000"


@dataclass(frozen=True)
class Scope:
    """``kind`` (one of KINDS) and its ``codes``: division codes, or licence ids; none for the province."""

    kind: str = "province"
    codes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"unknown scope {self.kind!r}; choose one of: {', '.join(KINDS)}")
        if self.kind != "province" and not self.codes:
            raise InputError(f"a {self.kind} scope needs at least one {self.kind}: {self.kind}:CODE[,CODE...]")

    @property
    def everything(self) -> bool:
        return self.kind == "province"

    def __str__(self) -> str:
        return self.kind if self.everything else f"{self.kind}:{','.join(self.codes)}"

    def describe(self) -> str:
        """For people: codes with their names."""
        if self.everything:
            return "province (everything)"
        if self.kind == "licence":
            return f"licences {', '.join(self.codes)}"
        return f"{self.kind}: " + "; ".join(divisions.describe(c) for c in self.codes)


PROVINCE = Scope()


def parse_scope(text: str) -> Scope:
    """``province`` | ``province:230000`` | ``city:CODE_OR_NAME,...`` | ``county:CODE_OR_NAME,...`` |
    ``licence:ID,...``; names resolve to codes (an unknown or ambiguous name is an InputError)."""
    text = (text or "").strip()
    if not text:
        raise InputError("a user needs a scope: province, city:CODE, county:CODE or licence:ID[,ID...]")
    kind, _, rest = text.partition(":")
    kind = kind.strip().lower()
    kind = {"licences": "licence", "counties": "county", "cities": "city"}.get(kind, kind)
    if kind not in KINDS:
        raise InputError(f"unknown scope {text!r}: write province, city:CODE, county:CODE or licence:ID[,ID...]")
    values = [v.strip() for v in rest.replace("，", ",").split(",") if v.strip()]
    if kind == "province":
        for value in values:  # the shipped table is one province's: only it is a valid province scope
            if divisions.resolve("province", value).code != PROVINCE_CODE:  # pragma: no cover - one province
                raise InputError(f"this deployment serves province {PROVINCE_CODE} only")
        return PROVINCE
    if kind == "licence":
        return Scope("licence", tuple(dict.fromkeys(values)))
    return Scope(kind, tuple(dict.fromkeys(divisions.resolve(kind, v).code for v in values)))


def _divisions(scope: Scope, province: ColumnElement, city: ColumnElement, county: ColumnElement,
               licence: ColumnElement | None) -> ColumnElement[bool]:
    del province  # one province: a province scope is everything
    if scope.everything:
        return true()
    if scope.kind == "city":
        return city.in_(scope.codes)
    if scope.kind == "county":
        return county.in_(scope.codes)
    return licence.in_(scope.codes) if licence is not None else false()


def site_clause(scope: Scope) -> ColumnElement[bool]:
    """Licences (``sites``) in scope."""
    return _divisions(scope, SiteRow.province_code, SiteRow.city_code, SiteRow.county_code, SiteRow.site_id)


def flag_clause(scope: Scope) -> ColumnElement[bool]:
    """Flags in scope (by the divisions copied onto them, or their licence)."""
    return _divisions(scope, FlagRow.province_code, FlagRow.city_code, FlagRow.county_code, FlagRow.site_id)


def patch_clause(scope: Scope) -> ColumnElement[bool]:
    """Patches of licences in scope."""
    if scope.everything:
        return true()
    if scope.kind == "licence":
        return PatchRow.site_id.in_(scope.codes)
    return PatchRow.site_id.in_(select(SiteRow.site_id).where(site_clause(scope)))


def register_clause(scope: Scope) -> ColumnElement[bool]:
    """Register polygons (mine land) in scope; none for a licence scope."""
    return _divisions(scope, RegisterRow.province_code, RegisterRow.city_code, RegisterRow.county_code, None)


def register_layer_clause(scope: Scope) -> ColumnElement[bool]:
    """Register polygons' protected-land overlaps in scope (by the polygon's divisions); none for a licence scope."""
    return _divisions(scope, RegisterLayerFlagRow.province_code, RegisterLayerFlagRow.city_code,
                      RegisterLayerFlagRow.county_code, None)


def review_clause(scope: Scope) -> ColumnElement[bool]:
    """Decisions (the audit log) on flags in scope."""
    if scope.everything:
        return true()
    return ReviewRow.flag_id.in_(select(FlagRow.id).where(flag_clause(scope)))


def assessment_clause(scope: Scope) -> ColumnElement[bool]:
    """Third-party assessments (of a licence or a flag) in scope, by the divisions copied onto them,
    or their licence."""
    return _divisions(scope, AssessmentRow.province_code, AssessmentRow.city_code, AssessmentRow.county_code,
                      AssessmentRow.site_id)
