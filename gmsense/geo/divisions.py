"""Administrative divisions (province / city / county) and their 6-digit codes.

The shipped table (``data/heilongjiang_divisions.csv``, its header names the source: the Ministry of
Civil Affairs' county-level-and-above division codes) holds Heilongjiang province, its 13
prefecture-level divisions and their counties, county-level cities and districts, with Chinese and
pinyin names. A division is named by its code (``230183``), its Chinese name with or without the
suffix (``尚志市``, ``尚志``) or its pinyin (``Shangzhi``, any case, spaces and apostrophes ignored).
Codes the MCA retired (Yichun's districts before its 2019 reform) are kept, so that older registers
still resolve; a name held by a current and a retired division means the current one.

:func:`resolve` is strict (an unknown name is an :class:`~gmsense.errors.InputError` listing the
closest candidates); :func:`divisions_of` is what the store uses on register attributes: the codes
of a licence's or polygon's ``province``/``city``/``county`` values, None where a value is absent
or does not resolve (such rows are seen by province-wide users only).
"""

from __future__ import annotations

import csv
import difflib
import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gmsense.errors import InputError

TABLE = Path(__file__).resolve().parent / "data" / "heilongjiang_divisions.csv"
LEVELS = ("province", "city", "county")
_ZH_SUFFIXES = ("蒙古族自治县", "达斡尔族区", "自治县", "地区", "省", "市", "区", "县")
_EN_SUFFIXES = ("province", "prefecture", "county", "district", "city", "sheng", "shi", "qu", "xian", "diqu")
#: Further spellings met in registers and maps.
_ALIASES = {"230100": ("Haerbin",), "230200": ("Qiqihaer",), "232700": ("Da Hinggan Ling", "Daxing'anling"),
            "230624": ("Dorbod", "Duerbote Mongol Autonomous County"), "230208": ("Meilisi Daur",)}


@dataclass(frozen=True)
class Division:
    code: str
    level: str
    parent: str | None
    name_zh: str
    name_pinyin: str
    note: str = ""

    @property
    def current(self) -> bool:
        return "abolished" not in self.note

    def label(self) -> str:
        return f"{self.code} {self.name_zh} ({self.name_pinyin})" + ("" if self.current else f", {self.note}")


@functools.cache
def table() -> dict[str, Division]:
    """Every division of the shipped table by code."""
    with TABLE.open(encoding="utf-8") as handle:
        rows = csv.DictReader(line for line in handle if not line.startswith("#"))
        return {r["code"]: Division(r["code"], r["level"], r["parent"] or None, r["name_zh"], r["name_pinyin"],
                                    r["note"] or "") for r in rows}


def _key(text: str) -> str:
    return re.sub(r"[\s'’`\-_.·]", "", str(text)).lower()


def _keys(d: Division) -> set[str]:
    out = {_key(d.name_zh), _key(d.name_pinyin)}
    for suffix in _ZH_SUFFIXES:
        if d.name_zh.endswith(suffix) and len(d.name_zh) > len(suffix):
            out.add(_key(d.name_zh[: -len(suffix)]))
            break
    out.update(_key(a) for a in _ALIASES.get(d.code, ()))
    return out


@functools.cache
def _index() -> dict[str, list[Division]]:
    out: dict[str, list[Division]] = {}
    for d in table().values():
        for k in _keys(d):
            out.setdefault(k, []).append(d)
    return out


def _strip_en(key: str) -> str:
    for suffix in _EN_SUFFIXES:
        if key.endswith(suffix) and len(key) > len(suffix) + 1:
            return key[: -len(suffix)]
    return key


def find(level: str, value: Any, parent: str | None = None) -> list[Division]:
    """The divisions of ``level`` a code or name may mean (under ``parent`` when given), current
    ones only if any is current; empty if none."""
    if level not in LEVELS:
        raise InputError(f"unknown division level {level!r}; choose one of: {', '.join(LEVELS)}")
    text = str(value if value is not None else "").strip()
    if not text:
        return []
    if text.isdigit():
        d = table().get(text)
        return [d] if d is not None and d.level == level else []
    key = _key(text)
    hits = _index().get(key) or _index().get(_strip_en(key)) or []
    hits = [d for d in hits if d.level == level and (parent is None or d.parent == parent)]
    current = [d for d in hits if d.current]
    return current or hits


def candidates(level: str, value: Any, n: int = 5) -> list[Division]:
    """The divisions of ``level`` whose names are closest to ``value``."""
    pool = {k: d for k, ds in _index().items() for d in ds if d.level == level}
    close = difflib.get_close_matches(_key(str(value)), list(pool), n=n * 2, cutoff=0.5)
    out: list[Division] = []
    for k in close:
        if pool[k] not in out:
            out.append(pool[k])
    return out[:n]


def resolve(level: str, value: Any, parent: str | None = None) -> Division:
    """The one division ``value`` names; an InputError naming the candidates otherwise."""
    hits = find(level, value, parent)
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise InputError(f"{level} {value!r} is ambiguous: {'; '.join(d.label() for d in hits)}; give the code")
    near = candidates(level, value)
    hint = f"; closest: {'; '.join(d.label() for d in near)}" if near else ""
    raise InputError(f"unknown {level} {value!r} (not in the shipped table of Heilongjiang's divisions){hint}")


def divisions_of(attrs: dict[str, Any]) -> dict[str, str | None]:
    """``province_code``, ``city_code``, ``county_code`` for register attributes ``province``, ``city``,
    ``county`` (codes or names). A county fills in its city and province, a city its province; a
    name that does not resolve (or resolves ambiguously, or contradicts the level above) gives None.
    """
    out: dict[str, str | None] = {"province_code": None, "city_code": None, "county_code": None}
    province = _one("province", attrs.get("province"))
    city = _one("city", attrs.get("city"), province)
    county = _one("county", attrs.get("county"), city)
    if county is None and city is None and attrs.get("county"):
        county = _one("county", attrs.get("county"))  # the city is absent or unknown: the county alone
    if county is not None:
        city = city or table().get(county.parent or "")
    if city is not None:
        province = province or table().get(city.parent or "")
    if province is not None and city is not None and city.parent != province.code:
        return out
    for level, d in (("province", province), ("city", city), ("county", county)):
        out[f"{level}_code"] = d.code if d else None
    return out


def _one(level: str, value: Any, parent: Division | None = None) -> Division | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    hits = find(level, value, parent.code if parent else None)
    return hits[0] if len(hits) == 1 else None


def describe(code: str | None) -> str:
    d = table().get(code or "")
    return d.label() if d else (code or "")
