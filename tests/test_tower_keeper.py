"""Each mock's keeper (mockfleet.tower.keeper), with real towers and mocks:
it shares its mock's memory, and ends with its mock however the mock ends."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
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

from mockfleet.tower import keeper
from mockfleet.tower.triggers import write_start, write_stop

pytestmark = pytest.mark.skipif(not keeper.supported(), reason="keepers run on x86-64 Linux")


@pytest.fixture
def base(tmp_path: Path) -> Iterator[Path]:
    with no_leftovers():
        yield tmp_path


def keepers_of(mock_pid: int) -> list[psutil.Process]:
    """Live (not zombie) processes in the mock's process group named as keepers."""
    found = []
    for p in psutil.process_iter(["name", "status"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if (
                p.info["name"] == keeper.KEEPER_NAME
                and p.info["status"] != psutil.STATUS_ZOMBIE
                and os.getpgid(p.pid) == mock_pid
            ):
                found.append(p)
    return found


def _maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def test_a_keeper_shares_its_mocks_memory_and_ends_with_it(base: Path) -> None:
    root = base / "root"
    lot = write_lot(base / "lot.yaml", "kept", restart={"policy": "Never"})
    tower = TowerProc(root)
    tower.wait_ready()
    for i in range(3):
        write_start(root, f"m{i}", lot, i)
    wait_for(lambda: len(pids(root)) == 3, 30, 0.05)
    running = pids(root)
    wait_for(lambda: all(len(keepers_of(pid)) == 1 for pid in running.values()), 30, 0.05)
    for pid in running.values():
        (kept,) = keepers_of(pid)
        assert kept.ppid() == pid
        assert _maps(kept.pid) == _maps(pid)  # one address space, not a copy
        assert psutil.Process(pid).name() == "mf-mock"

    # killed: recorded at once, and its keeper goes when the tower records it
    os.kill(running["m0"], signal.SIGKILL)
    wait_for(lambda: [e["mock"] for e in exits(tower.events())] == ["m0"], 30, 0.05)
    (gone,) = exits(tower.events())
    assert gone["reason"] == "crashed" and gone["signal"] == signal.SIGKILL
    wait_for(lambda: not keepers_of(running["m0"]), 10, 0.05)

    # stopped: the mock ends by itself and takes its keeper with it
    write_stop(root, "m1")
    wait_for(lambda: len(exits(tower.events())) == 2, 30, 0.05)
    assert exits(tower.events())[1]["reason"] == "stopped"
    wait_for(lambda: not keepers_of(running["m1"]), 10, 0.05)
    assert keepers_of(running["m2"])

    assert tower.stop() == 0
    assert not keepers_of(running["m2"])


def test_no_keepers_when_asked(base: Path) -> None:
    root = base / "root"
    lot = write_lot(base / "lot.yaml", "bare")
    tower = TowerProc(root, "--no-exit-keepers")
    tower.wait_ready()
    write_start(root, "m0", lot, 0)
    wait_for(lambda: "m0" in pids(root), 30, 0.05)
    pid = pids(root)["m0"]
    assert wait_for(lambda: psutil.Process(pid).name() == "mf-mock", 10, 0.05)
    assert not keepers_of(pid)
    assert tower.stop() == 0


def test_a_new_tower_ends_the_keeper_of_a_mock_that_died_while_none_ran(base: Path) -> None:
    """The first tower is killed; then its mock is killed, so the keeper
    outlives both. The next tower finds the mock lost and ends the keeper."""
    root = base / "root"
    lot = write_lot(base / "lot.yaml", "orphan")
    cmd = [sys.executable, "-m", "mockfleet.tower", "--root", str(root), "--device", DEVICE]
    log = open(base / "tower1.log", "wb")  # noqa: SIM115
    # orphans go to this subreaper, which reaps them, not to the machine's init
    reaper = subprocess.Popen([sys.executable, SUBREAPER, *cmd], stderr=log)
    tower2: TowerProc | None = None
    try:
        write_start(root, "m0", lot, 0)
        wait_for(lambda: (root / "pids").is_dir() and "m0" in pids(root), 60, 0.05)
        mock_pid = pids(root)["m0"]
        wait_for(lambda: len(keepers_of(mock_pid)) == 1, 30, 0.05)
        (kept,) = keepers_of(mock_pid)
        for child in psutil.Process(reaper.pid).children():
            if "mockfleet.tower" in " ".join(child.cmdline()):
                child.kill()  # the tower, and with it its zygote
        os.kill(mock_pid, signal.SIGKILL)
        wait_for(lambda: not psutil.pid_exists(mock_pid), 10, 0.05)
        assert kept.is_running() and kept.status() != psutil.STATUS_ZOMBIE  # left behind
        tower2 = TowerProc(root)
        tower2.wait_ready()
        wait_for(lambda: exits(tower2.events()), 30, 0.05)
        assert exits(tower2.events())[0]["reason"] == "lost"
        wait_for(lambda: not keepers_of(mock_pid), 10, 0.05)
        assert tower2.stop() == 0
        assert reaper.wait(timeout=60) == 0  # every orphan ended and was reaped
    finally:
        if tower2 is not None and tower2.proc.poll() is None:
            tower2.stop(timeout=60)  # SIGTERM: its mocks are not ours to find
        kill_reaper(reaper)
        log.close()
