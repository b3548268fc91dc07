"""An uncertain patch flows through the rules, the store, the export, a reviewer's decision and the
labels that train the next model; a natural patch keeps its agent."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from shapely.geometry import box

from gmsense.config import RulesSettings
from gmsense.errors import InputError
from gmsense.flags import evaluate
from gmsense.geo.sites import WGS84, reproject_geometry
from gmsense.outputs.export import patches_frame
from gmsense.records import PatchRecord, SiteResult
from gmsense.review import auth, service
from gmsense.store import Store
from gmsense.testutils import cube_site, make_cube

SITE = cube_site(make_cube(ny=40, nx=40), "S-1")
REASON = "outside training data: area 96.00 ha > largest trained clearing 2.02 ha"


def _record(geom, klass: str, agent: str | None = None, reason: str | None = None) -> PatchRecord:
    metrics = {"label_reason": reason} if reason else {}
    return PatchRecord(
        site_id="S-1", geometry_wkt=reproject_geometry(geom, SITE.crs, WGS84).wkt, local_wkt=geom.wkt,
        local_crs=SITE.crs.to_string(), disturbance_class=klass, confidence=0.9, first_detected="2021-06-01",
        confirmed_on="2021-06-11", last_seen="2021-09-01", area_m2=geom.area, inside_licence=True,
        area_outside_m2=0.0, recovery_status="active", recovery_ratio=0.0, metrics=metrics, natural_agent=agent)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    minx, miny, _, _ = SITE.geometry.bounds
    uncertain = box(minx + 20, miny + 20, minx + 120, miny + 120)
    burn = box(minx + 200, miny + 200, minx + 330, miny + 330)
    records = [_record(uncertain, "uncertain", reason=REASON), _record(burn, "natural", agent="fire")]
    flags = evaluate(SITE, records, [uncertain, burn], "2021-09-30", RulesSettings())
    assert [(f.rule, f.severity, f.patch_index) for f in flags] == [("uncertain_label", "warning", 0)]
    assert REASON in flags[0].message
    store = Store(str(tmp_path / "store.db"))
    store.upsert_sites([SITE])
    scan = store.begin_scan(source="test", detector="model", config_hash="x", gmsense_version="t", params={})
    store.save_site_result(scan, SiteResult("S-1", records, flags, {}))
    return store


def test_uncertain_and_natural_patches_are_exported_with_reason_and_agent(store: Store) -> None:
    frame = patches_frame(store).set_index("disturbance_class")
    assert frame.loc["uncertain", "label_reason"] == REASON
    assert frame.loc["natural", "natural_agent"] == "fire"
    assert pd.isna(frame.loc["uncertain", "natural_agent"])


def test_a_reviewer_must_name_what_an_uncertain_patch_is_and_that_trains_the_next_model(store: Store) -> None:
    user = auth.add_user(store, "rita", "reviewer-password-1", "reviewer")
    [flag] = service.queue(store, page_size=10).items
    assert flag["rule"] == "uncertain_label"
    with pytest.raises(InputError, match="say what it is"):
        service.decide(store, flag["id"], user, "confirm", "violation", "a pit, fresh spoil")
    assert service.labels(store) == [], "a refused decision leaves nothing behind"
    service.decide(store, flag["id"], user, "confirm", "violation", "a pit, fresh spoil", corrected_class="clearing")
    [label] = service.labels(store)
    assert (label["disturbance_class"], label["detected_class"]) == ("clearing", "uncertain")


def test_an_uncertain_patch_dismissed_as_natural_is_a_natural_label(store: Store) -> None:
    user = auth.add_user(store, "rita", "reviewer-password-1", "reviewer")
    [flag] = service.queue(store, page_size=10).items
    service.decide(store, flag["id"], user, "dismiss", "natural_change", "wind-thrown trees")
    [label] = service.labels(store)
    assert label["disturbance_class"] == "natural"


def test_the_review_app_shows_why_and_asks_for_the_class(store: Store, tmp_path: Path) -> None:
    import re

    from fastapi.testclient import TestClient

    from gmsense.review.app import create_app

    auth.add_user(store, "rita", "reviewer-password-1", "reviewer")
    [flag] = service.queue(store, page_size=10).items
    with TestClient(create_app(store, cache_dir=tmp_path / "pictures")) as client:
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
        client.post("/login", data={"username": "rita", "password": "reviewer-password-1", "csrf_token": token,
                                    "next": "/flags"}, follow_redirects=False)
        page = client.get(f"/flags/{flag['id']}")
        assert page.status_code == 200
        assert "Why the label is uncertain" in page.text
        assert "largest trained clearing 2.02 ha" in page.text

        def decide(**extra: str) -> object:
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', client.get(f"/flags/{flag['id']}").text).group(1)
            return client.post(f"/flags/{flag['id']}/decision", follow_redirects=False,
                               data={"csrf_token": csrf, "decision": "confirm", "reason": "violation",
                                     "comment": "a pit, fresh spoil", **extra})

        refused = decide()
        assert refused.status_code == 303
        assert "error=" in refused.headers["location"]
        assert "say what it is" in client.get(refused.headers["location"]).text
        assert service.labels(store) == []
        accepted = decide(corrected_class="clearing")
        assert accepted.headers["location"] == f"/flags/{flag['id']}"
    assert [label["disturbance_class"] for label in service.labels(store)] == ["clearing"]
