"""In-place upgrade from a local artifact: re-exec with mocks running (none
restarted, all still reaped afterwards); a bad checksum changes nothing."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from importlib.util import cache_from_source
from pathlib import Path

import psutil
import pytest
from support.polling import wait_for
from support.tower_harness import TowerProc, exits, no_leftovers, pids, write_lot

from mockfleet.tower.triggers import write_start, write_stop, write_upgrade
from mockfleet.tower.upgrade import build_artifact as _build_artifact

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def base(tmp_path: Path) -> Iterator[Path]:
    with no_leftovers():
        yield tmp_path


def build_artifact(path: Path) -> str:
    """A zip of the current mockfleet.tower and mockfleet.mock sources."""
    return _build_artifact(path, [str(REPO / "tower"), str(REPO / "mock")])


def test_upgrade_re_execs_in_place_and_keeps_every_mock(base: Path) -> None:
    root = base / "root"
    lot = write_lot(base / "lot.yaml", "up", {})
    artifact = base / "mockfleet-9.9.9.zip"
    sha = build_artifact(artifact)
    tower = TowerProc(root, "--stop-grace", "2s", "--http", "127.0.0.1:0")
    tower.wait_ready()
    for i in range(11):
        write_start(root, f"u{i}", lot, i)
    wait_for(lambda: len(pids(root)) == 11, 30)
    # One ends before the upgrade: its counters and exit live in the old tower's memory.
    write_stop(root, "u10")
    wait_for(lambda: len(exits(tower.events())) == 1, 30)
    old_status = tower.status()
    old_lot = old_status["lots"]["up"]
    assert old_lot["exits"] == {"stopped": 1} and old_lot["sent"] > 0
    before = pids(root)
    write_upgrade(root, "9.9.9", str(artifact), sha)

    def upgraded() -> list[dict[str, object]]:
        return [
            e for e in tower.events() if e["event"] == "tower-started" and e["version"] == "9.9.9"
        ]

    (started,) = wait_for(upgraded, 60)
    assert started["pid"] == tower.pid  # same process: exec, not a new tower
    assert str(started["code"]).startswith(str(root / "versions" / "9.9.9"))
    # byte-compiled before the exec: the new tower loads bytecode, compiles nothing
    sources = list((root / "versions" / "9.9.9").rglob("*.py"))
    assert sources and all(Path(cache_from_source(str(p))).is_file() for p in sources)
    assert tower.proc.poll() is None
    wait_for(lambda: any(e["event"] == "upgrade-complete" for e in tower.events()), 30)
    assert not (root / "upgrade").exists()
    adopted = [e for e in tower.events() if e["event"] == "adopted"]
    assert {e["mock"] for e in adopted} == set(before) and all(e["child"] for e in adopted)
    # taken from the old tower's table, not by reading and checking PID files
    assert {e["source"] for e in adopted} == {"handover"}
    assert pids(root) == before  # none restarted
    assert {p.pid for p in psutil.Process(tower.pid).children()} >= set(before.values())
    # /status stays monotonic: ended mocks' totals and exits survived the exec.
    new_status = tower.status()
    assert new_status["version"] == "9.9.9" and new_status["pid"] == tower.pid
    assert new_status["exits"] == old_status["exits"] == {"stopped": 1}
    new_lot = new_status["lots"]["up"]
    assert new_lot["exits"] == {"stopped": 1}
    for key in ("sent", "bytes"):
        assert new_lot[key] >= old_lot[key], (key, new_lot, old_lot)
    assert not (root / "handover.json").exists()
    # New mocks start on the new version; old ones are still reaped with exit codes.
    write_start(root, "new", lot, 99)
    wait_for(lambda: "new" in pids(root), 30)
    assert json.loads((root / "pids" / "new").read_text())["version"] == "9.9.9"
    for mock_id in ("u0", "u1", "u2"):
        write_stop(root, mock_id)
    wait_for(lambda: len(exits(tower.events())) == 4, 30)
    for e in exits(tower.events()):
        assert e["reason"] == "stopped" and (e.get("exit_code") == 0 or e.get("signal") == 15)
    assert tower.status()["lots"]["up"]["exits"] == {"stopped": 4}
    assert tower.stop() == 0
    assert len(exits(tower.events())) == 12


def test_upgrade_with_a_wrong_checksum_changes_nothing(base: Path) -> None:
    root = base / "root"
    lot = write_lot(base / "lot.yaml", "up", {})
    artifact = base / "a.zip"
    build_artifact(artifact)
    tower = TowerProc(root)
    tower.wait_ready()
    write_start(root, "k", lot, 0)
    wait_for(lambda: "k" in pids(root), 30)
    before = pids(root)
    write_upgrade(root, "6.6.6", str(artifact), "0" * 64)
    wait_for(lambda: any(e["event"] == "upgrade-failed" for e in tower.events()), 30)
    (failed,) = [e for e in tower.events() if e["event"] == "upgrade-failed"]
    assert "sha256 mismatch" in failed["reason"]
    (reason,) = (root / "rejected").glob("upgrade.*.reason")
    assert "sha256 mismatch" in json.loads(reason.read_text())["reason"]
    assert not (root / "upgrade").exists()
    assert not (root / "versions" / "6.6.6").exists()
    assert [e["pid"] for e in tower.events() if e["event"] == "tower-started"] == [tower.pid]
    assert pids(root) == before and tower.proc.poll() is None
    # A missing artifact is refused the same way.
    write_upgrade(root, "6.6.7", str(base / "missing.zip"), "0" * 64)
    wait_for(lambda: sum(e["event"] == "upgrade-failed" for e in tower.events()) == 2, 30)
    assert tower.stop() == 0
    assert os.listdir(root / "pids") == []


def test_a_handover_left_by_another_process_is_not_trusted(tmp_path: Path) -> None:
    """Only the process that wrote a handover (same PID *and* start time, same
    boot) takes its mock table: a container restarted with the same PID
    over the same state directory must check PID files the slow way."""
    from mockfleet.tower.events import EventLog
    from mockfleet.tower.supervisor import HANDOVER, Tower, TowerConfig
    from mockfleet.tower.trash import Trash

    root = tmp_path / "root"
    root.mkdir()
    tower = Tower(TowerConfig(root=str(root)))
    tower.events = EventLog(str(tmp_path / "events.jsonl"))
    tower.trash = Trash(str(root))
    rec = {
        "mock_id": "m0",
        "pid": 4242,
        "start_ticks": 7,
        "boot_id": tower.boot,
        "lot": "/l.yaml",
        "lot_name": "l",
        "index": 0,
        "slot": 0,
        "restarts": 0,
        "started_at": 1.0,
        "version": "1",
        "restart": {},
        "child": True,
    }
    state = {"pid": tower.me, "boot_id": tower.boot, "mocks": [rec], "lot_totals": {}}
    for ticks, trusted in ((tower.me_ticks + 1, False), (tower.me_ticks, True)):
        (root / HANDOVER).write_text(json.dumps({**state, "start_ticks": ticks}))
        tower.handed_over = {}
        tower._take_handover()
        assert not (root / HANDOVER).exists()
        assert (set(tower.handed_over) == {"m0"}) is trusted
    # malformed rows are left to the PID-file path, not trusted
    bad = [{**rec, "pid": "x"}, {**rec, "mock_id": "m1", "child": False}, "junk"]
    (root / HANDOVER).write_text(json.dumps({**state, "start_ticks": tower.me_ticks, "mocks": bad}))
    tower._take_handover()
    assert tower.handed_over == {}
