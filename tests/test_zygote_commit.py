"""A new mock runs only when its PID file names it (zygote._committed)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mockfleet.tower.pidfiles import PidRecord
from mockfleet.tower.zygote import _committed


def record(pid: int) -> PidRecord:
    return PidRecord(
        mock_id="m1",
        pid=pid,
        start_ticks=1,
        boot_id="b",
        lot='/lots/x"pid":1,.yaml',  # quotes in a value are escaped: never a match
        lot_name="x",
        index=0,
        slot=0,
        restarts=0,
        started_at=0.0,
        version="1",
    )


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    (tmp_path / "pids").mkdir()
    return tmp_path


def test_the_tower_s_own_record_of_this_process_commits(root: Path) -> None:
    (root / "pids" / "m1").write_bytes(record(os.getpid()).to_bytes())
    assert _committed(str(root), "m1")


def test_another_process_s_record_does_not(root: Path) -> None:
    me = os.getpid()
    for other in (me + 1, me * 10, me * 10 + 1, int(str(me)[:-1] or "2")):
        (root / "pids" / "m1").write_bytes(record(other).to_bytes())
        assert not _committed(str(root), "m1"), other


def test_any_other_json_layout_is_parsed(root: Path) -> None:
    doc = record(os.getpid()).to_dict()
    (root / "pids" / "m1").write_text(json.dumps(doc, indent=2))
    assert _committed(str(root), "m1")
    doc["pid"] = os.getpid() + 1
    (root / "pids" / "m1").write_text(json.dumps(doc, indent=2))
    assert not _committed(str(root), "m1")


def test_no_file_or_garbage_does_not_commit(root: Path) -> None:
    assert not _committed(str(root), "m1")
    (root / "pids" / "m1").write_bytes(b"\x00not json")
    assert not _committed(str(root), "m1")
    (root / "pids" / "m1").write_bytes(b"[1, 2]")
    assert not _committed(str(root), "m1")
