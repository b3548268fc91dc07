"""Messages in Simplified Chinese and English, and areas in hectares or mu.

Catalogs are YAML files in ``gmsense/locale/`` (``en.yaml`` is the reference; every language
has the same keys). Flag sentences are stored in English with their parameters, so any report
or page can render them again in the reader's language.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

from gmsense.errors import InputError

LANGUAGES = ("en", "zh")
M2_PER_HA = 10_000.0
M2_PER_MU = 10_000.0 / 15  # 1 mu = 666.67 m2
LOCALE_DIR = Path(__file__).resolve().parent / "locale"


@cache
def catalog(lang: str) -> dict[str, str]:
    """The message catalog of ``lang``."""
    if lang not in LANGUAGES:
        raise InputError(f"unknown language {lang!r}; choose one of: {', '.join(LANGUAGES)}")
    return yaml.safe_load((LOCALE_DIR / f"{lang}.yaml").read_text(encoding="utf-8"))


def t(key: str, lang: str = "en", **params: Any) -> str:
    """The message ``key`` in ``lang`` with ``params`` filled in (English if the key is missing)."""
    text = catalog(lang).get(key) or catalog("en")[key]
    return text.format(**params) if params else text


def area(m2: float, lang: str = "en", unit: str = "ha") -> str:
    """An area in ``unit`` (ha or mu) with its unit name in ``lang``."""
    if unit not in ("ha", "mu"):
        raise InputError(f"unknown area unit {unit!r}; choose ha or mu")
    value = m2 / (M2_PER_HA if unit == "ha" else M2_PER_MU)
    sep = " " if lang == "en" else ""
    return f"{value:.2f}{sep}{t('unit.' + unit, lang)}"


def rule_message(rule: str, params: dict[str, Any], lang: str = "en", unit: str = "ha") -> str:
    """A flag's sentence from its rule and parameters (see gmsense.flags)."""
    p = dict(params)
    for key in ("area", "area_outside", "disturbed", "permitted", "overlap"):
        if f"{key}_m2" in p:
            p[key] = area(float(p[f"{key}_m2"]), lang, unit)
    if "klass" in p:
        p["klass"] = t(f"class.{p['klass']}", lang)
    if "status" in p:
        p["status"] = t(f"status.{p['status']}", lang)
    if "work_type" in p:
        p["work_type"] = t(f"class.{p['work_type']}", lang)
    p["work_year"] = f" ({p['year_planned']})" if p.get("year_planned") else ""
    p["since"] = t("rule.while_suspended.since", lang, **p) if p.get("suspended_since") else ""
    if "deadline_kind" in p:
        p["deadline"] = t(f"rule.reclamation_overdue.{p['deadline_kind']}", lang, **p)
    if "layer_kind" in p:
        p["layer_kind_name"] = layer_kind_name(p["layer_kind"], lang)
    if {"klass", "area", "first_detected"} <= p.keys():
        p["what"] = t("what", lang, **p)
    if rule == "protected_land" and "register_id" in p:  # a register polygon, not a patch
        return t("rule.protected_land.register", lang, **p)
    return t(f"rule.{rule}", lang, **p)


def layer_kind_name(kind: str, lang: str = "en") -> str:
    """A protected-land kind (gmsense.geo.layers) in ``lang``; another kind by its own name."""
    key = f"layer_kind.{kind}"
    return t(key, lang) if key in catalog("en") else str(kind).replace("_", " ")


def flag_sentence(flag: Any, lang: str = "en", unit: str = "ha") -> str:
    """A stored flag's sentence in ``lang``: re-rendered from the parameters kept in its evidence
    (``message_params``), else the stored English sentence."""
    params = (getattr(flag, "evidence", None) or {}).get("message_params")
    return rule_message(flag.rule, params, lang, unit) if params else flag.message


def coverage_sentences(stats: dict[str, Any] | None, scan_id: int, lang: str = "en") -> list[str]:
    """What the imagery of a licence's analysis (``stats`` of scan ``scan_id``) observed, in ``lang``:
    the shares of the licence and of its monitoring area, then a warning when either is below the
    threshold it was scanned with (gmsense.geo.coverage); [] for results that did not count it."""
    stats = stats or {}
    if "coverage_licence" not in stats:
        return []
    out = [t("coverage.line", lang, scan=scan_id, licence=f"{stats['coverage_licence']:.1%}",
             area=f"{stats['coverage_area']:.1%}")]
    if stats.get("coverage_warning"):
        out.append(t("coverage.low", lang, min=f"{stats.get('coverage_min', 0.95):.0%}"))
    return out


#: Fields whose values are codes named elsewhere in the catalog (evidence of flags, table columns).
VALUE_PREFIX = {"disturbance_class": "class", "klass": "class", "work_type": "class", "corrected_class": "class",
                "label_before_trust": "class", "recovery_status": "status", "natural_agent": "agent",
                "rule": "rule_name", "severity": "severity", "flag_status": "flag_status"}


def attr_value(key: str, value: Any, lang: str = "en") -> Any:
    """A licence attribute's (or a flag's evidence) value in ``lang``: ``value.<key>.<value>`` in
    the catalog (e.g. ``licence_type`` ``exploration`` -> 勘查), or the catalog's name of a code
    (``disturbance_class`` ``trench`` -> 探槽, ``recovery_status`` ``not_recovering`` -> 未恢复),
    else ``value`` unchanged (names, dates, numbers)."""
    if not isinstance(value, str):
        return value
    code = value.strip().lower()
    name = f"value.{key}.{code}"
    if name in catalog("en"):
        return t(name, lang)
    if key in VALUE_PREFIX and f"{VALUE_PREFIX[key]}.{code}" in catalog("en"):
        return t(f"{VALUE_PREFIX[key]}.{code}", lang)
    return value


def is_internal(key: str) -> bool:
    """Whether a licence attribute is gmsense's own (``synthetic_*`` scene settings, ``_*``), not
    the licence's: never shown to readers."""
    return key.startswith(("synthetic_", "_"))


def public_attrs(attrs: dict[str, Any] | None) -> dict[str, Any]:
    """A licence's attributes without the internal ones (:func:`is_internal`)."""
    return {k: v for k, v in (attrs or {}).items() if not is_internal(str(k))}
