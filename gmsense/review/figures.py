"""PNG pictures for the review app, rendered by matplotlib and cached on disk.

Before/after chips need the imagery: the cube is re-made from the source and settings recorded
with the licence's last scan (``gmsense.outputs.report.scene_for``), kept in memory for the last few
licences, and each picture is cached under ``cache_dir`` keyed by what it shows (patch, the scan
that last updated it, language), so a new scan renders fresh pictures and nothing stale is served.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pyproj
from shapely import wkt

from gmsense.config import RecoverySettings
from gmsense.geo.sites import WGS84, reproject_geometry, utm_crs_for
from gmsense.outputs.i18n import t
from gmsense.outputs.report import chips_figure, scene_for, site_map_figure, trajectory_figure
from gmsense.outputs.site_report import report_style
from gmsense.records import RecoveryObservation
from gmsense.review import service
from gmsense.store import RecoveryRow, Store
from gmsense.store.scope import PROVINCE, Scope

#: Licences whose cube stays in memory (a cube of a 1 km2 licence with its buffer over three
#: seasons is ~100-300 MB).
SCENES_IN_MEMORY = 2
_render_lock = threading.Lock()  # pyplot keeps global state: one figure at a time


class Pictures:
    """Renders and caches the app's pictures for one store."""

    def __init__(self, store: Store, cache_dir: Path, recovery: RecoverySettings | None = None) -> None:
        self.store = store
        self.recovery = recovery  # how the recovery ratio is measured (the trajectory's levels); None: defaults
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._scenes: OrderedDict[tuple[str, int], Any] = OrderedDict()
        self._scene_lock = threading.Lock()

    # --- caching -------------------------------------------------------------------------------
    def _cached(self, key: str, render: Callable[[], Any], lang: str = "en") -> bytes:
        name = hashlib.sha256(key.encode()).hexdigest()[:32] + ".png"
        path = self.cache_dir / name
        if path.exists():
            return path.read_bytes()
        with _render_lock, report_style(lang):
            fig = render()
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png")
            plt.close(fig)
        data = buffer.getvalue()
        fd, tmp = tempfile.mkstemp(dir=self.cache_dir, suffix=".partial")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        Path(tmp).replace(path)
        return data

    def _scene(self, site_id: str) -> Any:
        last_scan = max((s.id for s in self.store.scans()), default=0)
        key = (site_id, last_scan)
        with self._scene_lock:
            if key in self._scenes:
                self._scenes.move_to_end(key)
                return self._scenes[key]
        scene = scene_for(self.store, site_id)
        if scene is not None:
            scene = (scene[0].load(), scene[1])
        with self._scene_lock:
            self._scenes[key] = scene
            while len(self._scenes) > SCENES_IN_MEMORY:
                self._scenes.popitem(last=False)
        return scene

    def warm(self, limit: int, langs: tuple[str, ...] = ("en", "zh")) -> int:
        """Render (into the disk cache) the chips and trajectories of the first ``limit`` flags
        of the queue, licence by licence, so a reviewer's first look is not spent re-making the
        imagery; returns how many flags were warmed. A flag that cannot be drawn is skipped (its
        page will say why when it is opened)."""
        items = service.queue(self.store, page_size=max(limit, 1)).items[:limit]
        warmed = 0
        for item in sorted(items, key=lambda i: i["site_id"]):  # one scene in memory at a time
            try:
                for lang in langs:
                    self.chips(item["id"], lang)
                    self.trajectory(item["id"], lang)
            except Exception:  # warming is best effort; the flag page shows the error when opened
                continue
            warmed += 1
        return warmed

    # --- pictures ------------------------------------------------------------------------------
    def chips(self, flag_id: int, lang: str = "en", scope: Scope = PROVINCE) -> bytes:
        """Before/after true colour and NDVI around the flag's patch (or the licence); a flag
        outside ``scope`` is not found (before any cached picture is looked at)."""
        flag, _site, patch = service.get_flag(self.store, flag_id, scope)
        key = f"chips|{flag.site_id}|{patch.patch_id if patch else '-'}|{flag.updated_scan_id}|{lang}"

        def render() -> Any:
            scene = self._scene(flag.site_id)
            if scene is None:
                return _message_figure(t("ui.no_imagery", lang))
            cube, licence = scene
            crs = pyproj.CRS.from_user_input(cube.rio.crs)
            if patch is not None:
                geom = reproject_geometry(wkt.loads(patch.geometry_wkt), WGS84, crs)
                when = patch.first_detected
            else:
                geom, when = licence.geometry, str(cube.time.values[len(cube.time) // 2])[:10]
            return chips_figure(cube, licence.geometry, geom, when, title=t("ui.before_after", lang), lang=lang)

        return self._cached(key, render, lang)

    def trajectory(self, flag_id: int, lang: str = "en", scope: Scope = PROVINCE) -> bytes | None:
        """The patch's index per season against its reference ring; None without a patch."""
        _flag, _, patch = service.get_flag(self.store, flag_id, scope)
        if patch is None:
            return None
        with self.store.session() as s:
            rows = list(s.query(RecoveryRow).filter(RecoveryRow.patch_id == patch.patch_id)
                        .order_by(RecoveryRow.index_name, RecoveryRow.season))
        key = f"trajectory|{patch.patch_id}|{patch.updated_scan_id}|{len(rows)}|{lang}"

        def render() -> Any:
            if not rows:
                return _message_figure(t("ui.no_trajectory", lang))
            index = "ndvi" if any(r.index_name == "ndvi" for r in rows) else rows[0].index_name
            obs = [RecoveryObservation(r.season, r.index_name, r.n_obs, r.patch_value, r.ring_value, r.relative)
                   for r in rows if r.index_name == index]
            return trajectory_figure(obs, title=t("ui.trajectory", lang),
                                     disturbance_season=int(patch.first_detected[:4]),
                                     status=t(f"status.{patch.recovery_status}", lang), lang=lang,
                                     recovery=self.recovery)

        return self._cached(key, render, lang)

    def site_map(self, site_id: str, lang: str = "en", scope: Scope = PROVINCE) -> bytes:
        site, patches, _ = service.get_site(self.store, site_id, scope)
        stamp = max((p.updated_scan_id for p in patches), default=0)
        key = f"map|{site_id}|{stamp}|{len(patches)}|{lang}"

        def render() -> Any:
            scene = self._scene(site_id)
            geom = wkt.loads(site.geometry_wkt)
            if scene is not None:
                cube, licence = scene
                crs, licence_geom = pyproj.CRS.from_user_input(cube.rio.crs), licence.geometry
            else:
                cube, crs = None, utm_crs_for(geom.centroid.x, geom.centroid.y)
                licence_geom = reproject_geometry(geom, WGS84, crs)
            local = [(reproject_geometry(wkt.loads(p.geometry_wkt), WGS84, crs), p.disturbance_class) for p in patches]
            return site_map_figure(cube, licence_geom, 500.0, local, title=f"{site_id} ({crs.to_string()})", lang=lang)

        return self._cached(key, render, lang)

    def dashboard(self, by: str, lang: str = "en", unit: str | None = None, scope: Scope = PROVINCE,
                  tables: dict[str, Any] | None = None) -> bytes:
        """The programme charts by ``by`` of the licences in ``scope``, in ``lang``, areas in ``unit``
        (default: mu in Chinese, else ha); cached by the figures themselves (``tables``: the summary
        tables of ``by`` and ``scope`` when read already)."""
        from gmsense.outputs.summary_report import summary_charts, summary_tables

        unit = unit or ("mu" if lang == "zh" else "ha")
        tables = tables if tables is not None else summary_tables(self.store, by, scope)
        key = f"dashboard|{by}|{lang}|{unit}|{hashlib.sha256(repr(tables).encode()).hexdigest()}"
        return self._cached(key, lambda: summary_charts(tables, lang, unit), lang)


def _message_figure(text: str) -> Any:
    fig, ax = plt.subplots(figsize=(6.4, 2.0), dpi=100)
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=11, wrap=True)
    return fig
