"""Mocks start at idle CPU priority in a burst and go back to normal after it
(mockfleet.tower.priority), with real towers, mocks and scheduler calls."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.polling import wait_for
from support.tower_harness import TowerProc, no_leftovers, pids, write_lot

from mockfleet.tower import priority
from mockfleet.tower.triggers import ensure_dirs, write_start

CAN_RESTORE = priority.tower_can_restore(priority.MOCK_NICE)
needs_restore = pytest.mark.skipif(
    not CAN_RESTORE, reason="needs CAP_SYS_NICE (root) or RLIMIT_NICE >= 15"
)


@pytest.fixture
def base(tmp_path: Path) -> Iterator[Path]:
    with no_leftovers():
        yield tmp_path


# ---------------------------------------------------------------------- pure


def test_the_capability_is_read_from_the_effective_set() -> None:
    with_nice = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t0000000000800000\n"
    without = "CapPrm:\t0000000000800000\nCapEff:\t0000000000000400\n"
    assert priority.has_capability(with_nice, priority.CAP_SYS_NICE)
    assert not priority.has_capability(without, priority.CAP_SYS_NICE)
    assert not priority.has_capability("Name:\tx\n", priority.CAP_SYS_NICE)


def test_leaving_idle_needs_the_capability_or_a_nice_limit() -> None:
    assert priority.can_leave_idle(True, 0, 5)
    assert priority.can_leave_idle(False, 15, 5)  # 20 - 5
    assert not priority.can_leave_idle(False, 14, 5)
    assert priority.can_leave_idle(False, -1, 5)  # RLIM_INFINITY
    assert not priority.can_leave_idle(False, 0, 5)


def test_the_modes_resolve_and_a_bad_one_is_named() -> None:
    assert priority.resolve("auto", True)[0] is True
    assert priority.resolve("idle", True)[0] is True
    assert priority.resolve("normal", True) == (False, "--start-priority normal")
    idle, why = priority.resolve("auto", False)
    assert idle is False and "CAP_SYS_NICE" in why
    with pytest.raises(priority.PriorityError, match="ulimit -e 15"):
        priority.resolve("idle", False)
    with pytest.raises(priority.PriorityError, match="'fast'"):
        priority.resolve("fast", True)


# ---------------------------------------------------------------------- real


def _stage(root: Path, lot: Path, n: int, prefix: str) -> list[str]:
    """n start triggers written first, then renamed into start/ at once: a burst."""
    staging = root.parent / f"staging-{prefix}"
    ids = [f"{prefix}{i}" for i in range(n)]
    for i, mock_id in enumerate(ids):
        write_start(staging, mock_id, lot, i)
    ensure_dirs(root)
    for mock_id in ids:
        os.rename(staging / "start" / f"{mock_id}.json", root / "start" / f"{mock_id}.json")
    return ids


def _seen(policy_dir: Path) -> dict[int, tuple[int, int]]:
    """pid -> (policy, nice) each mock's device saw as it began."""
    out = {}
    for f in policy_dir.iterdir():
        policy, nice = f.read_text().split()
        out[int(f.name)] = (int(policy), int(nice))
    return out


def _now(pid: int) -> tuple[int, int]:
    return os.sched_getscheduler(pid), os.getpriority(os.PRIO_PROCESS, pid)


@needs_restore
def test_a_burst_starts_idle_and_every_mock_ends_normal(base: Path) -> None:
    root = base / "root"
    seen_dir = base / "seen"
    seen_dir.mkdir()
    lot = write_lot(base / "lot.yaml", "burst", {"policy_dir": str(seen_dir)})
    tower = TowerProc(root)
    tower.wait_ready()
    started_event = next(e for e in tower.events() if e["event"] == "tower-started")
    assert started_event["start_priority"] == "idle"
    n = 300
    _stage(root, lot, n, "b")
    # While the burst goes on, the mocks already running are at idle priority.
    watched: dict[int, int] = {}

    def watch() -> bool:
        for pid in pids(root).values():
            if pid not in watched:
                with contextlib.suppress(OSError):
                    watched[pid] = os.sched_getscheduler(pid)
        return len(watched) == n

    wait_for(watch, 120, 0.005)
    wait_for(lambda: len(list(seen_dir.iterdir())) == n, 60, 0.05)
    running = pids(root)
    wait_for(lambda: any(e["event"] == "priority-restored" for e in tower.events()), 30)
    events = tower.events()
    idle_started = {e["pid"] for e in events if e["event"] == "started" and e["idle"]}
    # all but the burst's first few (started before the rest of it had arrived)
    assert len(idle_started) >= n - 10, len(idle_started)
    seen = _seen(seen_dir)
    seen_idle = {pid for pid, (policy, _nice) in seen.items() if policy == os.SCHED_IDLE}
    # 219 of 300 seen idle here, as their PID files appeared
    assert {policy for pid, policy in watched.items() if pid in idle_started} >= {os.SCHED_IDLE}
    # How many mocks began their device still idle depends on the machine: an
    # idle mock gets a CPU only when the pipeline leaves one free, so many
    # begin only after the burst, once brought back (none, at times, here).
    assert seen_idle <= idle_started
    expected_nice = min(19, os.getpriority(os.PRIO_PROCESS, tower.pid) + priority.MOCK_NICE)
    assert {nice for _policy, nice in seen.values()} == {expected_nice}
    # after the burst, every mock is back at normal scheduling, at the mocks' nice
    for pid in running.values():
        assert _now(pid) == (os.SCHED_OTHER, expected_nice), pid
    restored = sum(e["mocks"] for e in events if e["event"] == "priority-restored")
    assert restored == len(idle_started)
    assert tower.stop() == 0


@pytest.mark.parametrize(
    ("args", "why"),
    [(("--start-priority", "normal"), "normal"), (("--max-start-rate", "400"), "paced")],
)
def test_normal_or_paced_starts_are_never_idle(base: Path, args: tuple[str, str], why: str) -> None:
    root = base / "root"
    seen_dir = base / "seen"
    seen_dir.mkdir()
    lot = write_lot(base / "lot.yaml", "calm", {"policy_dir": str(seen_dir)})
    tower = TowerProc(root, *args)
    tower.wait_ready()
    n = 30
    _stage(root, lot, n, "c")
    wait_for(lambda: len(pids(root)) == n and len(list(seen_dir.iterdir())) == n, 60, 0.05)
    events = tower.events()
    assert not [e for e in events if e["event"] == "started" and e["idle"]], why
    assert {policy for policy, _ in _seen(seen_dir).values()} == {os.SCHED_OTHER}
    assert not [e for e in events if e["event"] == "priority-restored"]
    assert tower.stop() == 0


@needs_restore
def test_a_new_tower_restores_mocks_a_dead_one_left_idle(tmp_path: Path) -> None:
    """A tower killed mid-burst leaves idle mocks; the next one adopts them
    from their PID files and brings them back."""
    with no_leftovers() as orphans:  # the first tower's mocks outlive it
        _restore_after_a_dead_tower(tmp_path, orphans)


def _restore_after_a_dead_tower(base: Path, orphans: set[int]) -> None:
    root = base / "root"
    lot = write_lot(base / "lot.yaml", "left", {})
    tower1 = TowerProc(root, "--start-priority", "normal")
    tower1.wait_ready()
    _stage(root, lot, 5, "l")
    wait_for(lambda: len(pids(root)) == 5 and not os.listdir(root / "start"), 30)
    running = pids(root)
    orphans.update(running.values())
    # as a burst leaves them: idle, and not brought back by a tower that died
    for pid in running.values():
        os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
    tower1.proc.kill()
    tower1.proc.wait(10)
    tower1.stderr.close()
    tower2 = TowerProc(root)
    tower2.wait_ready()
    wait_for(lambda: len([e for e in tower2.events() if e["event"] == "adopted"]) == 5, 30)
    wait_for(
        lambda: all(os.sched_getscheduler(pid) == os.SCHED_OTHER for pid in running.values()), 30
    )
    assert pids(root) == running  # adopted, not restarted
    assert tower2.stop() == 0


def _without_sys_nice(cmd: list[str]) -> list[str]:
    """cmd without CAP_SYS_NICE, if this process has it (util-linux's setpriv)."""
    with open("/proc/self/status") as f:
        if not priority.has_capability(f.read(), priority.CAP_SYS_NICE):
            return cmd
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("this process has CAP_SYS_NICE, and setpriv is missing to drop it")
    return [setpriv, "--bounding-set", "-sys_nice", "--inh-caps", "-sys_nice", "--", *cmd]


def test_idle_is_refused_by_name_where_mocks_could_not_come_back(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "mockfleet.tower", "--root", str(tmp_path / "r")]
    cmd += ["--start-priority", "idle"]

    def no_nice_limit() -> None:
        # with no CAP_SYS_NICE either, a mock could not leave idle priority
        resource.setrlimit(resource.RLIMIT_NICE, (0, 0))

    result = subprocess.run(
        _without_sys_nice(cmd),
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=no_nice_limit,
    )
    assert result.returncode == 1, result.stderr
    message = result.stderr.strip()
    assert message.startswith("mockfleet tower: --start-priority idle:"), message
    assert "CAP_SYS_NICE" in message and "--start-priority auto" in message
    assert not (tmp_path / "r").exists()  # refused before anything was made
