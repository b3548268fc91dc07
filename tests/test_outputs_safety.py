"""Outputs never lie about being written: exports, reports and synthetic scenes refuse targets
that are not regular files, fail with one clear message on read-only or full disks, and leave
nothing half-written behind; CSV cells are not spreadsheet formulas; "$" in names is text.

Full and read-only disks are real where the test runs as root (a tiny tmpfs, mounted read-only
or filled up); elsewhere those tests are skipped and the monkeypatched ENOSPC tests (the final
``os.fsync`` of the written file raises) still run.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import rasterio

from gmsense.config import configs_dir
from gmsense.testutils import run_cli

invoke = run_cli
DANGER = "=cmd|' /C calc'!A0"


@pytest.fixture(scope="module")
def demo_db(demo_folder: Path) -> Path:
    return demo_folder / "gmsense.db"


def _copy(demo_db: Path, tmp_path: Path, **attrs: object) -> Path:
    """A private copy of the demo store, with ``attrs`` set on licence HLJ-EXP-002."""
    db = tmp_path / f"copy-{uuid.uuid4().hex[:6]}.db"
    with sqlite3.connect(demo_db) as source, sqlite3.connect(db) as target:
        source.backup(target)
    if attrs:
        with sqlite3.connect(db) as con:
            (raw,) = con.execute("select attrs from sites where site_id = 'HLJ-EXP-002'").fetchone()
            con.execute("update sites set attrs = ? where site_id = 'HLJ-EXP-002'",
                        (json.dumps({**json.loads(raw), **attrs}),))
    return db


def _mount_tmpfs(path: Path, *options: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(("size=256k", *options)), "tmpfs", str(path)],
                          capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")


@pytest.fixture
def full_dir(tmp_path: Path) -> Iterator[Path]:
    """A real full file system: a 256 kB tmpfs filled up by one file."""
    mount = tmp_path / "full"
    _mount_tmpfs(mount)
    try:
        fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            with pytest.raises(OSError, match="No space left") as raised:  # noqa: PT012
                while True:
                    os.write(fd, b"\0" * 4096)
            assert raised.value.errno == errno.ENOSPC
        finally:
            os.close(fd)
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def readonly_dir(tmp_path: Path) -> Iterator[Path]:
    """A real read-only file system (root can write anywhere else, whatever the mode bits)."""
    mount = tmp_path / "ro"
    _mount_tmpfs(mount, "ro")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != "filler")


# --- exports ------------------------------------------------------------------------------------

def test_export_refuses_a_symlink_and_leaves_it_alone(demo_db: Path, tmp_path: Path) -> None:
    real = tmp_path / "real.geojson"
    real.write_text("keep me")
    link = tmp_path / "link.geojson"
    link.symlink_to(real)
    code, output = invoke("export", "patches", "--out", link, "--db", demo_db)
    assert code == 2, output
    assert "symbolic link" in output
    assert "wrote" not in output
    assert link.is_symlink()
    assert real.read_text() == "keep me"
    assert _leftovers(tmp_path) == ["link.geojson", "real.geojson"]


def test_export_refuses_a_fifo(demo_db: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    code, output = invoke("export", "patches", "--format", "csv", "--out", fifo, "--db", demo_db)
    assert code == 2, output
    assert "FIFO" in output
    assert fifo.is_fifo()
    assert _leftovers(tmp_path) == ["pipe.csv"]


def test_export_refuses_a_device_and_a_directory(demo_db: Path, tmp_path: Path) -> None:
    code, output = invoke("export", "patches", "--out", "/dev/full", "--db", demo_db)
    assert code == 2, output
    assert "device" in output
    assert Path("/dev/full").is_char_device()
    code, output = invoke("export", "patches", "--out", tmp_path, "--db", demo_db)
    assert code == 2, output
    assert "directory" in output


def test_export_into_a_path_whose_folder_is_a_file(demo_db: Path, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    code, output = invoke("export", "patches", "--out", tmp_path / "afile" / "p.geojson", "--db", demo_db)
    assert code == 2, output
    assert "error:" in output
    assert "Traceback" not in output
    assert (tmp_path / "afile").read_text() == "x"


def test_export_to_a_read_only_file_system(demo_db: Path, readonly_dir: Path) -> None:
    code, output = invoke("export", "patches", "--out", readonly_dir / "p.geojson", "--db", demo_db)
    assert code == 2, output
    assert "read-only" in output
    assert _leftovers(readonly_dir) == []


@pytest.mark.parametrize("fmt", ["geojson", "gpkg", "csv"])
def test_export_to_a_full_disk(demo_db: Path, full_dir: Path, fmt: str) -> None:
    code, output = invoke("export", "patches", "--format", fmt, "--out", full_dir / f"p.{fmt}", "--db", demo_db)
    assert code == 1, output
    assert f"disk full at {full_dir / f'p.{fmt}'}" in " ".join(output.split())
    assert "wrote" not in output
    assert _leftovers(full_dir) == [], "no half-written file"


def test_export_full_disk_simulated(demo_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without root: the flush of the written file fails with ENOSPC, as on a full disk."""
    import gmsense.files as outputs_io

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(outputs_io.os, "fsync", no_space)
    target = tmp_path / "p.geojson"
    target.write_text("the previous export")
    code, output = invoke("export", "patches", "--out", target, "--db", demo_db)
    assert code == 1, output
    assert "disk full" in output
    assert target.read_text() == "the previous export", "the old file stays until a new one is whole"
    assert _leftovers(tmp_path) == ["p.geojson"]


def test_csv_export_defuses_formulas_but_not_numbers(demo_db: Path, tmp_path: Path) -> None:
    db = _copy(demo_db, tmp_path, name=DANGER, holder="@SUM(A1:A9)", permitted_disturbance_ha=-1.5)
    target = tmp_path / "sites.csv"
    code, output = invoke("export", "sites", "--format", "csv", "--out", target, "--db", db)
    assert code == 0, output
    assert "wrote 3 licences" in output
    rows = {r["site_id"]: r for r in csv.DictReader(target.open(encoding="utf-8"))}
    assert rows["HLJ-EXP-002"]["name"] == "'" + DANGER
    assert rows["HLJ-EXP-002"]["holder"] == "'@SUM(A1:A9)"
    assert rows["HLJ-EXP-002"]["permitted_disturbance_ha"] == "-1.5", "numbers stay numbers"
    assert rows["HLJ-EXP-001"]["name"] == "Xinqing gold exploration"
    assert not any(v.startswith(("=", "+", "@")) for r in rows.values() for v in r.values())


def test_export_says_one_patch_not_one_patches(demo_db: Path, tmp_path: Path) -> None:
    db = _copy(demo_db, tmp_path)
    with sqlite3.connect(db) as con:
        keep = con.execute("select patch_id from patches order by patch_id limit 1").fetchone()[0]
        con.execute("delete from patches where patch_id != ?", (keep,))
    code, output = invoke("export", "patches", "--out", tmp_path / "one.geojson", "--db", db)
    assert code == 0, output
    assert "wrote 1 patch to" in output


# --- reports --------------------------------------------------------------------------------------

def test_reports_to_a_read_only_file_system(demo_db: Path, readonly_dir: Path) -> None:
    for args in (("site", "HLJ-EXP-002"), ("summary",)):
        code, output = invoke("report", *args, "--out", readonly_dir / "r.pdf", "--db", demo_db)
        assert code == 2, output
        assert "read-only" in output
        assert "Traceback" not in output
    assert _leftovers(readonly_dir) == []


@pytest.mark.parametrize("name", ["s.pdf", "s.html"])
def test_summary_report_to_a_full_disk_leaves_no_partial_file(demo_db: Path, full_dir: Path, name: str) -> None:
    code, output = invoke("report", "summary", "--out", full_dir / name, "--db", demo_db)
    assert code == 1, output
    assert "disk full at" in output
    assert _leftovers(full_dir) == [], "no .partial file"


def test_report_full_disk_simulated(demo_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gmsense.files as outputs_io

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(outputs_io.os, "fsync", no_space)
    code, output = invoke("report", "summary", "--out", tmp_path / "s.pdf", "--db", demo_db)
    assert code == 1, output
    assert "disk full" in output
    assert _leftovers(tmp_path) == []


def test_report_refuses_a_symlink(demo_db: Path, tmp_path: Path) -> None:
    (tmp_path / "real.pdf").write_text("keep")
    (tmp_path / "link.pdf").symlink_to(tmp_path / "real.pdf")
    code, output = invoke("report", "summary", "--out", tmp_path / "link.pdf", "--db", demo_db)
    assert code == 2, output
    assert (tmp_path / "real.pdf").read_text() == "keep"


@pytest.mark.slow
def test_dollar_signs_in_a_licence_name_are_text(demo_db: Path, tmp_path: Path) -> None:
    from pypdf import PdfReader

    db = _copy(demo_db, tmp_path, name="Cost $5 to $10", holder="A $ B $ C")
    code, output = invoke("report", "site", "HLJ-EXP-002", "--out", tmp_path / "r.pdf", "--db", db)
    assert code == 0, output
    text = PdfReader(tmp_path / "r.pdf").pages[0].extract_text()
    assert "Cost $5 to $10" in text
    assert "A $ B $ C" in text
    code, output = invoke("report", "summary", "--by", "county", "--out", tmp_path / "s.pdf", "--db", db)
    assert code == 0, output
    assert "Cost $5 to $10" in PdfReader(tmp_path / "s.pdf").pages[1].extract_text()


# --- synthetic scenes -----------------------------------------------------------------------------

@pytest.fixture
def one_site(tmp_path: Path) -> tuple[Path, Path]:
    """The first demo licence alone, and settings for one short season (a quick scene)."""
    demo = json.loads((configs_dir() / "demo_sites.geojson").read_text())
    sites = tmp_path / "one.geojson"
    sites.write_text(json.dumps({**demo, "features": demo["features"][:1]}))
    config = tmp_path / "short.yaml"
    config.write_text("synthetic:\n  start: '2021-05-01'\n  end: '2021-08-31'\n")
    return sites, config


@pytest.mark.slow
def test_synth_on_a_full_disk_fails_and_leaves_nothing(one_site: tuple[Path, Path], full_dir: Path) -> None:
    sites, config = one_site
    code, output = invoke("synth", "--sites", sites, "--out", full_dir / "scenes", "--config", config)
    assert code == 1, output
    assert "disk full at" in output
    assert "Traceback" not in output
    assert [p for p in full_dir.rglob("*") if p.name != "filler" and p.is_file()] == []


@pytest.mark.slow
def test_synth_failure_keeps_the_previous_scene(one_site: tuple[Path, Path], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulated ENOSPC on a later image: the earlier, complete scene is left as it was."""
    import gmsense.sources.synthetic.io as synthetic_io

    sites, config = one_site
    out = tmp_path / "scenes"
    code, output = invoke("synth", "--sites", sites, "--out", out, "--config", config)
    assert code == 0, output
    before = sorted(p.name for p in (out / "HLJ-EXP-001").iterdir())
    tifs = [p for p in before if p.endswith(".tif")]
    assert len(tifs) > 3
    for name in tifs:
        with rasterio.open(out / "HLJ-EXP-001" / name) as src:
            assert src.read().any()
    real_write, calls = synthetic_io._write, []

    def failing(path: Path, data: bytes) -> None:
        calls.append(path)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(path, data)

    monkeypatch.setattr(synthetic_io, "_write", failing)
    code, output = invoke("synth", "--sites", sites, "--out", out, "--seed", "5", "--config", config)
    assert code == 1, output
    assert "disk full" in output
    assert sorted(p.name for p in (out / "HLJ-EXP-001").iterdir()) == before
    assert sorted(p.name for p in out.iterdir()) == ["HLJ-EXP-001"], "no staging folder left"
