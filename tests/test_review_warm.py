"""The review app renders the pictures of the top of the queue at start, so a reviewer's first
look at a flag does not wait for the imagery to be re-made."""

from __future__ import annotations

from pathlib import Path

import pytest

from gmsense.outputs import report
from gmsense.review import service
from gmsense.review.app import create_app
from gmsense.store import Store


@pytest.fixture(scope="module")
def demo_db(demo_folder: Path) -> Path:
    return demo_folder / "gmsense.db"


def test_warming_renders_the_top_flags_and_the_first_look_is_served_from_the_cache(
        demo_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(str(demo_db), create=False)
    top = [item["id"] for item in service.queue(store, page_size=3).items[:3]]
    assert top, "the demo must leave open flags"
    app = create_app(store, cache_dir=tmp_path / "cache", warm_pictures=3)
    app.state.warming.join(timeout=600)
    assert not app.state.warming.is_alive()
    assert len(list((tmp_path / "cache").glob("*.png"))) >= 2 * len(top)  # chips + trajectory, en and zh

    remade = []
    real_scene_for = report.scene_for
    monkeypatch.setattr("gmsense.review.figures.scene_for",
                        lambda *a, **k: remade.append(a) or real_scene_for(*a, **k))
    for flag_id in top:
        assert app.state.pictures.chips(flag_id, "en")[:8] == b"\x89PNG\r\n\x1a\n"
        assert app.state.pictures.chips(flag_id, "zh")[:8] == b"\x89PNG\r\n\x1a\n"
    assert remade == [], "a warmed flag's pictures must come from the cache, not re-made imagery"


def test_without_warming_nothing_is_rendered_at_start(demo_db: Path, tmp_path: Path) -> None:
    app = create_app(Store(str(demo_db), create=False), cache_dir=tmp_path / "cache")
    assert app.state.warming is None
    assert not list((tmp_path / "cache").glob("*.png"))
