"""Crash safety and scale: kill -9 of the tower in the middle of starting
1,000 mocks, and 20,000 start triggers at once (inotify overflow)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from support.polling import wait_for
from support.tower_harness import (
    DEVICE,
    SUBREAPER,
    TowerProc,
    exits,
    kill_reaper,
    no_leftovers,
    pids,
    write_lot,
)

from mockfleet.tower.triggers import ensure_dirs


@pytest.fixture
def base(tmp_path: Path) -> Iterator[Path]:
    with no_leftovers():
        yield tmp_path


def _drop_triggers(root: Path, lot: Path, n: int, prefix: str) -> list[str]:
    """Write n start triggers atomically (tmp + rename), as fast as possible."""
    ensure_dirs(root)
    ids = [f"{prefix}{i}" for i in range(n)]
    for i, mock_id in enumerate(ids):
        (root / "tmp" / mock_id).write_text(json.dumps({"lot": str(lot), "index": i}))
    for mock_id in ids:
        os.rename(root / "tmp" / mock_id, root / "start" / f"{mock_id}.json")
    return ids


def _mock_processes(parents: list[int]) -> dict[int, psutil.Process]:
    out = {}
    for parent in parents:
        with contextlib.suppress(psutil.Error):
            for p in psutil.Process(parent).children():
                with contextlib.suppress(psutil.Error):
                    if p.status() != psutil.STATUS_ZOMBIE and p.ppid() == parent:
                        out[p.pid] = p
    return out


def test_kill_9_of_the_tower_while_starting_1000(base: Path) -> None:
    root = base / "root"
    lot = write_lot(base / "lot.yaml", "crash", {})
    ensure_dirs(root)
    cmd = [sys.executable, "-m", "mockfleet.tower", "--root", str(root), "--device", DEVICE]
    log = open(base / "tower1.log", "wb")  # noqa: SIM115
    reaper = subprocess.Popen(
        [sys.executable, SUBREAPER, *cmd],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    tracked: set[int] = set()
    tower2: TowerProc | None = None
    try:

        def the_tower() -> psutil.Process | None:
            # the reaper's child running the tower (not a helper it may also have)
            for child in psutil.Process(reaper.pid).children():
                with contextlib.suppress(psutil.Error):
                    if "mockfleet.tower" in child.cmdline():
                        return child
            return None

        tower1 = wait_for(the_tower, 10)
        ids = _drop_triggers(root, lot, 1000, "c")
        wait_for(lambda: len(pids(root)) >= 300, 120, 0.01)
        tower1.kill()  # mid-flight: some started, some forked but not committed
        wait_for(
            lambda: not psutil.pid_exists(tower1.pid) or tower1.status() == psutil.STATUS_ZOMBIE, 10
        )
        before = pids(root)
        assert 300 <= len(before) < 1000, len(before)
        tracked.update(before.values())
        tower2 = TowerProc(root)
        tower2.wait_ready()
        wait_for(lambda: len(pids(root)) == 1000 and not os.listdir(root / "start"), 120, 0.1)
        after = pids(root)
        assert sorted(after) == sorted(ids)
        for mock_id, pid in before.items():
            assert after[mock_id] == pid, f"{mock_id} was restarted"  # adopted, not restarted
        events = tower2.events()
        adopted = {e["mock"] for e in events if e["event"] == "adopted"}
        started = {e["mock"] for e in events if e["event"] == "started"}
        assert adopted == set(before)
        assert adopted | started == set(ids) and not adopted & started
        assert not exits(events)

        # None twice: exactly one live mock process per id (uncommitted forks of
        # the dead tower have exited by now).
        def live() -> dict[int, psutil.Process]:
            return _mock_processes([reaper.pid, tower2.pid])

        wait_for(lambda: len(live()) == 1000 + 1, 60)  # + tower2's zygote
        assert set(after.values()) <= set(live())
        tracked.update(after.values())
        assert tower2.stop(timeout=60) == 0
        reasons = {e["reason"] for e in exits(tower2.events())}
        assert reasons == {"stopped"}
        assert reaper.wait(timeout=60) == 0  # every orphan ended and was reaped
    finally:
        if tower2 is not None and tower2.proc.poll() is None:
            tower2.proc.kill()
            tower2.proc.wait()
        for pid in tracked:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        kill_reaper(reaper)
        log.close()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_20000_start_triggers_at_once(base: Path) -> None:
    root = base / "root"
    lot = write_lot(base / "lot.yaml", "burst", {"seconds": 0}, restart={"policy": "Never"})
    tower = TowerProc(root)
    tower.wait_ready()
    os.kill(tower.pid, signal.SIGSTOP)  # let the inotify queue (16384) overflow for sure
    try:
        ids = _drop_triggers(root, lot, 20000, "b")
    finally:
        os.kill(tower.pid, signal.SIGCONT)
    t0 = time.monotonic()
    wait_for(lambda: len(exits(tower.events())) >= 20000, 800, 0.5)
    elapsed = time.monotonic() - t0
    events = tower.events()
    assert any(e["event"] == "inotify-overflow" for e in events)
    done = exits(events)
    assert sorted(e["mock"] for e in done) == sorted(ids)  # each exactly once
    assert {e["reason"] for e in done} == {"finished"}
    assert not os.listdir(root / "start") and not os.listdir(root / "pids")
    assert tower.stop() == 0
    print(f"20000 starts+exits in {elapsed:.1f}s ({20000 / elapsed:.0f}/s)")
