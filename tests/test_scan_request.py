"""`ScanRequest`: what a scan does travels to dask workers intact, keeps the resume key of the scans
already in stores, and a scan reports its progress to a callback, every licence once."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import cloudpickle
import pyproj
import pytest
from shapely.geometry import LineString, box
from shapely.geometry.base import BaseGeometry

from gmsense.batch.request import ScanRequest
from gmsense.batch.scan import ScanProgress, run_scan
from gmsense.classify.model import load_model, resolve_model
from gmsense.config import Settings, configs_dir
from gmsense.geo.sites import ApprovedWork, Site, read_sites
from gmsense.sources import SyntheticSource
from gmsense.store import Store

DEMO_SITES = configs_dir() / "demo_sites.geojson"
# Licences in EPSG:4326 so their digests need no reprojection (PROJ versions may differ in the last bit).
WGS84 = pyproj.CRS.from_epsg(4326)
SITE_A = Site("A-1", box(126.5, 47.75, 126.504, 47.753), WGS84, {"licence_type": "exploration"})
SITE_B = Site("B-1", box(126.52, 47.77, 126.524, 47.773), WGS84, {})
WORKS = {"A-1": [ApprovedWork("w1", "A-1", "trench", 2021, LineString([(126.5001, 47.7501), (126.503, 47.7502)]),
                              WGS84)]}
SHORT = {"synthetic.start": "2020-04-01", "synthetic.end": "2021-10-31"}


class _NamedModel:
    """Stands in for a classifier where only its version enters the request's key."""

    version = "m-3"


def test_a_request_round_trips_through_pickle_and_cloudpickle() -> None:
    settings = Settings().with_overrides({"sites.buffer_m": 250.0})
    request = ScanRequest([SITE_A, SITE_B], SyntheticSource(settings), settings, start="2020-04-01",
                          end="2021-10-31", works=WORKS, classifier=load_model(resolve_model("default")),
                          imagery="/data/imagery")
    features = [{"area_px_m2": 400.0, "length_m": 120.0, "width_m": 4.0, "elongation": 30.0, "magnitude": 0.3}]
    for dumps, loads in ((pickle.dumps, pickle.loads), (cloudpickle.dumps, cloudpickle.loads)):
        restored = loads(dumps(request))
        assert restored.describe() == request.describe()
        assert [restored.unit_key(s) for s in restored.sites] == [request.unit_key(s) for s in request.sites]
        assert restored.sites == request.sites
        assert restored.works == request.works
        assert restored.settings == request.settings
        assert restored.source == request.source
        assert (restored.start, restored.end, restored.imagery) == (request.start, request.end, request.imagery)
        assert restored.classifier.version == request.classifier.version
        assert restored.classifier.predict(features) == request.classifier.predict(features)


def test_a_narrowed_request_carries_only_its_licences_and_their_works() -> None:
    request = ScanRequest([SITE_A, SITE_B], SyntheticSource(Settings()), Settings(), works=WORKS)
    assert request.only([SITE_B]).sites == (SITE_B,)
    assert request.only([SITE_B]).works == {}
    assert request.only([SITE_B]).works_of("B-1") is None
    assert request.only([SITE_A]).works_of("A-1") == WORKS["A-1"]
    assert request.works_of("B-1") is None
    assert ScanRequest([SITE_A], SyntheticSource(Settings()), Settings()).only([SITE_A]).works is None


def test_the_resume_key_is_that_of_the_scans_already_in_stores(monkeypatch: pytest.MonkeyPatch) -> None:
    """The digests stored with every scan, as gmsense computed them before ScanRequest existed
    (written out here): another key would leave every interrupted scan in a store unresumable."""
    monkeypatch.setattr(Settings, "config_hash", lambda self: "cfg-fixed")
    source = SyntheticSource(Settings())
    plain = ScanRequest([SITE_A, SITE_B], source, Settings(), start="2020-04-01", end="2021-10-31")
    assert plain.describe() == {
        "licences": "8b8fe3069d3540e11ba5b730420809be", "n_sites": 2, "source": "synthetic", "imagery": None,
        "start": "2020-04-01", "end": "2021-10-31", "config_hash": "cfg-fixed", "detector": "rules",
        "model_version": None, "works": None, "key": "fe07838fad0c20080527cf76af7ee3e0"}
    full = ScanRequest([SITE_B, SITE_A], source, Settings(), end="2022-01-01", works=WORKS,
                       classifier=_NamedModel(), imagery="/data/imagery")
    assert full.describe() == {
        "licences": "8b8fe3069d3540e11ba5b730420809be", "n_sites": 2, "source": "synthetic",
        "imagery": "/data/imagery", "start": None, "end": "2022-01-01", "config_hash": "cfg-fixed",
        "detector": "model", "model_version": "m-3", "works": "7889fc5383e43026a4e8e4ad9ab5844e",
        "key": "e0624bf2c36f877e40544b51b1293d24"}
    with_model = ScanRequest([SITE_A], source, Settings(), start="2020-04-01", classifier=_NamedModel())
    assert with_model.unit_key(SITE_A) == "3adc7d02ac6fa08351641a874a786379"
    assert ScanRequest([SITE_B], source, Settings()).unit_key(SITE_B) == "09f4083319dc7fcef5834ff181ea74c8"


@dataclass(frozen=True)
class _StaleSource:
    """The synthetic world, saying its newest acquisition is older than anything analysed."""

    settings: Settings
    name: str = "synthetic"

    def load(self, site: Site, region: BaseGeometry, start: str | None, end: str | None) -> object:
        return SyntheticSource(self.settings).load(site, region, start, end)

    def latest_date(self, site: Site, start: str | None, end: str | None) -> str | None:
        return "2000-01-01"


@pytest.mark.slow
def test_a_scan_reports_every_licence_once_to_its_progress_callback(tmp_path: Path) -> None:
    settings = Settings().with_overrides(SHORT)
    sites = read_sites(DEMO_SITES)
    ids = sorted(s.site_id for s in sites)
    store = Store(str(tmp_path / "s.db"))
    events: list[ScanProgress] = []
    summary = run_scan(ScanRequest(sites, SyntheticSource(settings), settings), store, progress=events.append)
    assert summary.status == "completed"

    first, last = events[0], events[-1]
    assert (first.scan_id, first.total, first.done, first.failed, first.units_done, first.site_id) == (
        summary.scan_id, 3, 0, 0, 0, None)
    assert first.units >= 1
    reported = [e.site_id for e in events if e.site_id is not None]
    assert sorted(reported) == ids, "every licence once"
    assert {e.outcome for e in events if e.site_id is not None} == {"stored"}
    assert [e.done for e in events] == sorted(e.done for e in events)
    assert (last.done, last.failed, last.units_done) == (3, 0, first.units)

    # A rescan with nothing new skips every licence, and says so once for each.
    events.clear()
    rescan = run_scan(ScanRequest(sites, _StaleSource(settings), settings), store, progress=events.append)
    assert all("skipped" in row for row in rescan.sites.values())
    assert [e.site_id for e in events] == [None, *[s.site_id for s in sites]]
    assert [e.outcome for e in events[1:]] == ["skipped"] * 3
    assert [e.done for e in events] == [0, 1, 2, 3]
    assert events[0].units == 0


@pytest.mark.slow
def test_a_failing_progress_callback_ends_the_scan_failed(tmp_path: Path) -> None:
    settings = Settings().with_overrides(SHORT)
    site = [s for s in read_sites(DEMO_SITES) if s.site_id == "HLJ-MIN-003"]
    store = Store(str(tmp_path / "s.db"))

    def broken(event: ScanProgress) -> None:
        if event.site_id is not None:
            raise RuntimeError("the screen went away")

    with pytest.raises(RuntimeError, match="screen went away"):
        run_scan(ScanRequest(site, SyntheticSource(settings), settings), store, progress=broken)
    [scan] = store.scans()
    assert scan.status == "failed"
    assert scan.summary["error"] == "RuntimeError: the screen went away"
    assert "error" not in scan.summary["sites"]["HLJ-MIN-003"], "stored before the callback heard of it"
