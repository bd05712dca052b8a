"""The plan watcher: a kubelet-projected plan turned into start/stop/upgrade triggers.

Real files, real inotify, a projector that does the kubelet's ``..data`` swap;
the tower is played by a few lines that turn start triggers into PID files
(the tower's own tests cover the tower).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from support.kubelet_projector import project
from support.polling import wait_for

from mockfleet.mock.lot import MockLot
from mockfleet.operator.builders import build_plan_configmap
from mockfleet.tower.plan import (
    PlanError,
    desired_devices,
    diff,
    from_ranges,
    index_of,
    next_launched,
    parse_plan,
    plan_mock_id,
    settled_devices,
    to_ranges,
)
from mockfleet.tower.planwatch import PlanWatcher, SyncResult, read_projection

LOT = "meters"
NODE = "node-a"
SHA = "ab" * 32

# --------------------------------------------------------------------------- helpers


def lot_doc(name: str = LOT, devices: int = 100, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "mockfleet.dev/v1alpha1",
        "kind": "MockLot",
        "metadata": {"name": name},
        "spec": {"devices": devices, "sink": {"type": "stdout"}, **spec},
    }


def plan_doc(nodes: dict[str, list[list[int]]], devices: int = 100, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "generation": 1,
        "lot": LOT,
        "version": None,
        "paused": False,
        "devices": devices,
        "nodes": nodes,
    }
    doc.update(extra)
    return doc


def publish(
    plan_dir: Path,
    nodes: dict[str, list[list[int]]],
    lot: dict[str, Any] | None = None,
    plan_text: str | None = None,
    **extra: Any,
) -> None:
    project(
        plan_dir,
        {
            "lot.yaml": yaml.safe_dump(lot or lot_doc()),
            "plan.json": plan_text
            if plan_text is not None
            else json.dumps(plan_doc(nodes, **extra), sort_keys=True),
        },
    )


def ids(root: Path, kind: str) -> set[str]:
    names = {n for n in os.listdir(root / kind) if not n.startswith(".")}
    return {n.removesuffix(".json") for n in names} if kind == "start" else names


def mids(*ranges: range) -> set[str]:
    return {plan_mock_id(LOT, i) for r in ranges for i in r}


def play_tower(root: Path) -> None:
    """What the tower does with start and stop triggers, minus the processes."""
    for mock_id in ids(root, "start"):
        start = root / "start" / f"{mock_id}.json"
        req = json.loads(start.read_text())
        (root / "pids" / mock_id).write_text(json.dumps({"lot": req["lot"], "index": 0}))
        start.unlink()
    for mock_id in ids(root, "stop"):
        exit_mock(root, mock_id)


def exit_mock(root: Path, mock_id: str) -> None:
    (root / "pids" / mock_id).unlink(missing_ok=True)
    (root / "stop" / mock_id).unlink(missing_ok=True)


class Recorder:
    """A log sink that keeps the structured records."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def __call__(self, msg: str, **fields: Any) -> None:
        self.records.append({"msg": msg, **fields})

    def messages(self) -> list[str]:
        return [r["msg"] for r in self.records]


def pump(w: PlanWatcher, cond: Callable[[], Any], timeout: float = 10.0) -> list[SyncResult]:
    """Run the watcher's inotify side (no periodic resync) until ``cond`` holds."""
    results: list[SyncResult] = []

    def step() -> Any:
        ready, _, _ = select.select([w.fileno()], [], [], 0.05)
        if ready:
            r = w.on_readable()
            if r is not None:
                results.append(r)
        return cond()

    wait_for(step, timeout, interval=0)
    return results


@pytest.fixture
def env(tmp_path: Path) -> tuple[Path, Path]:
    plan_dir = tmp_path / "plan"
    root = tmp_path / "root"
    plan_dir.mkdir()
    return plan_dir, root


@pytest.fixture
def watcher(env: tuple[Path, Path]) -> Iterator[tuple[PlanWatcher, Path, Path, Recorder]]:
    plan_dir, root = env
    rec = Recorder()
    w = PlanWatcher(plan_dir, root, NODE, resync_interval=3600, log=rec)
    yield w, plan_dir, root, rec
    w.close()


# --------------------------------------------------------------------------- pure


def test_desired_devices_are_this_nodes_ranges_and_nothing_when_paused() -> None:
    plan = plan_doc({NODE: [[0, 3], [10, 12]], "node-b": [[3, 10]]}, devices=12)
    assert desired_devices(plan, NODE) == {0, 1, 2, 10, 11}
    assert desired_devices(plan, "node-b") == set(range(3, 10))
    assert desired_devices(plan, "node-c") == set()
    assert desired_devices({**plan, "paused": True}, NODE) == set()


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"nodes": {NODE: [[0, 200]]}}, "nodes.node-a[0] end"),
        ({"nodes": {NODE: [[5, 2]]}}, "ends (2) before it starts (5)"),
        ({"nodes": {NODE: [0, 2]}}, "nodes.node-a[0] must be a [start, end] pair"),
        ({"nodes": [[0, 2]]}, "'nodes' must map"),
        ({"paused": "yes"}, "'paused'"),
        ({"devices": -1}, "'devices'"),
        ({"lot": "../etc"}, "'lot' is not a usable name"),
        ({"extra": 1}, "unknown field(s): extra"),
        ({"upgrade": {"version": "2", "source": "rel", "sha256": SHA}}, "upgrade: "),
    ],
)
def test_bad_plans_are_rejected_with_the_field_named(change: dict[str, Any], problem: str) -> None:
    with pytest.raises(PlanError, match=None) as info:
        parse_plan({**plan_doc({}), **change})
    assert problem in str(info.value)


def test_plan_accepts_the_upgrade_object() -> None:
    up = {"version": "0.4.0", "source": "s3://b/k.tar.gz", "sha256": SHA.upper()}
    plan = parse_plan({**plan_doc({}), "upgrade": up})
    assert plan.upgrade is not None and plan.upgrade.sha256 == SHA


lot_names = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)


@given(lot_names, lot_names, st.integers(0, 10**9), st.integers(0, 10**9))
def test_mock_ids_are_stable_safe_and_never_claimed_by_another_lot(
    a: str, b: str, i: int, j: int
) -> None:
    mock_id = plan_mock_id(a, i)
    assert mock_id == plan_mock_id(a, i)
    assert index_of(a, mock_id) == i
    if (a, i) != (b, j):
        assert plan_mock_id(b, j) != mock_id
    if a != b:
        assert index_of(b, mock_id) is None


def test_index_of_ignores_other_spellings() -> None:
    assert index_of("a", "a-07") is None
    assert index_of("a", "a-1-5") is None
    assert index_of("a-1", "a-1-5") == 5
    assert index_of("a", "a-") is None
    assert index_of("a", "b-1") is None


small_sets = st.sets(st.integers(0, 40), max_size=30)


@given(small_sets, small_sets, small_sets)
def test_diff_makes_what_runs_what_is_desired(
    desired: set[int], running: set[int], pending: set[int]
) -> None:
    to_start, to_stop = diff(desired, running, pending)
    assert to_start == sorted(to_start)
    assert to_stop == sorted(to_stop, reverse=True)
    assert not set(to_start) & (running | pending)
    assert set(to_stop) <= running | pending
    assert (running | pending | set(to_start)) - set(to_stop) == desired
    # level-triggered: once applied, nothing is left to do
    assert diff(desired, desired, set()) == ([], [])


@given(small_sets, small_sets, small_sets, small_sets, small_sets)
def test_diff_respects_stopping_and_settled(
    desired: set[int], running: set[int], pending: set[int], stopping: set[int], settled: set[int]
) -> None:
    stopping &= running | pending
    to_start, to_stop = diff(desired, running, pending, stopping=stopping, settled=settled)
    assert not set(to_start) & settled
    assert not set(to_stop) & stopping
    assert not set(to_start) & stopping


@given(small_sets, small_sets, small_sets, small_sets, small_sets)
def test_launched_ledger_only_holds_desired_devices(
    launched: set[int], desired: set[int], running: set[int], pending: set[int], started: set[int]
) -> None:
    started &= desired
    new = next_launched(launched, desired, running, pending, set(), started)
    assert new <= desired
    assert started <= new
    assert settled_devices(new, desired, running | started, pending) == (
        (new - running - pending - started) & desired
    )


@given(st.sets(st.integers(0, 10**6), max_size=200))
def test_ranges_round_trip(indexes: set[int]) -> None:
    assert from_ranges(to_ranges(indexes)) == indexes


# --------------------------------------------------------------------------- projection


def test_projector_lays_out_files_like_the_kubelet(tmp_path: Path) -> None:
    d = tmp_path / "vol"
    first = project(d, {"a.txt": "1", "b.txt": "x"})
    assert os.readlink(d / "..data") == first
    assert os.readlink(d / "a.txt") == "..data/a.txt"
    second = project(d, {"a.txt": "2"})
    assert os.readlink(d / "..data") == second
    assert not (d / first).exists()
    assert (d / "a.txt").read_text() == "2"
    assert not (d / "b.txt").is_symlink()
    assert sorted(os.listdir(d)) == sorted([second, "..data", "a.txt"])


def test_reads_never_mix_two_versions_during_swaps(tmp_path: Path) -> None:
    d = tmp_path / "vol"
    project(d, {"lot.yaml": "v0", "plan.json": "v0"})
    stop = threading.Event()

    def swapper() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            project(d, {"lot.yaml": f"v{n}", "plan.json": f"v{n}"})

    t = threading.Thread(target=swapper)
    t.start()
    try:
        versions = set()
        for _ in range(300):
            p = read_projection(str(d), attempts=50)
            assert p.lot_bytes == p.plan_bytes
            versions.add(p.plan_bytes)
    finally:
        stop.set()
        t.join()
    assert len(versions) > 1  # the reader really raced the swaps


# --------------------------------------------------------------------------- watcher


def test_starts_exactly_this_nodes_ranges_from_a_lot_copy(watcher: Any) -> None:
    w, plan_dir, root, rec = watcher
    publish(plan_dir, {NODE: [[0, 4], [10, 16]], "node-b": [[4, 10]]})
    pump(w, lambda: ids(root, "start") == mids(range(4), range(10, 16)))
    lots = list((root / "lots").iterdir())
    assert len(lots) == 1 and lots[0].read_text() == (plan_dir / "lot.yaml").read_text()
    req = json.loads((root / "start" / f"{LOT}-12.json").read_text())
    assert req == {"lot": str(lots[0]), "index": 12}
    assert ids(root, "stop") == set()
    assert "plan applied" in rec.messages()
    applied = next(r for r in rec.records if r["msg"] == "plan applied")
    assert applied["lot"] == LOT and applied["node"] == NODE
    assert applied["started"] == [[0, 4], [10, 16]]


def test_scale_up_starts_only_the_new_devices(watcher: Any) -> None:
    w, plan_dir, root, _ = watcher
    publish(plan_dir, {NODE: [[0, 10]]})
    pump(w, lambda: len(ids(root, "start")) == 10)
    play_tower(root)
    publish(plan_dir, {NODE: [[0, 15]]}, generation=2)
    results = pump(w, lambda: ids(root, "start") == mids(range(10, 15)))
    assert [r.started for r in results if r.started] == [[10, 11, 12, 13, 14]]
    assert ids(root, "pids") == mids(range(10))
    assert ids(root, "stop") == set()


def test_scale_down_stops_the_highest_indexes(watcher: Any) -> None:
    w, plan_dir, root, _ = watcher
    publish(plan_dir, {NODE: [[0, 15]]})
    pump(w, lambda: len(ids(root, "start")) == 15)
    play_tower(root)
    publish(plan_dir, {NODE: [[0, 10]]}, generation=2)
    results = pump(w, lambda: ids(root, "stop") == mids(range(10, 15)))
    assert [r.stopped for r in results if r.stopped] == [[14, 13, 12, 11, 10]]
    assert ids(root, "start") == set()


@pytest.mark.parametrize(
    "change",
    [
        {"nodes": {NODE: [[0, 6]]}, "paused": True},
        {"nodes": {"node-b": [[0, 6]]}},
    ],
    ids=["paused", "node-removed"],
)
def test_pause_or_losing_the_node_stops_everything(watcher: Any, change: dict[str, Any]) -> None:
    w, plan_dir, root, _ = watcher
    publish(plan_dir, {NODE: [[0, 6]]})
    pump(w, lambda: len(ids(root, "start")) == 6)
    play_tower(root)
    (root / "start" / f"{LOT}-7.json").write_text('{"lot": "/x", "index": 7}')  # a pending one
    (root / "pids" / "other-lot-1").write_text("{}")  # not ours: untouched
    nodes = change.pop("nodes")
    publish(plan_dir, nodes, generation=2, **change)
    pump(w, lambda: ids(root, "stop") == mids(range(6), range(7, 8)))
    assert ids(root, "start") == mids(range(7, 8))  # the tower cancels it on the stop


def test_garbage_plan_changes_nothing_and_is_logged(watcher: Any) -> None:
    w, plan_dir, root, rec = watcher
    publish(plan_dir, {NODE: [[0, 5]]})
    pump(w, lambda: len(ids(root, "start")) == 5)
    play_tower(root)
    publish(plan_dir, {}, plan_text='{"lot": "meters", "nodes": ')
    pump(w, lambda: "plan unusable" in rec.messages())
    err = next(r for r in rec.records if r["msg"] == "plan unusable")
    assert err["file"].endswith("plan.json") and "..data" not in err["file"]
    assert ids(root, "start") == set() and ids(root, "stop") == set()
    assert ids(root, "pids") == mids(range(5))
    # logged once per problem, not once per sync
    assert w.sync().error is not None
    assert rec.messages().count("plan unusable") == 1
    # a lot that is not a lot is as bad
    publish(plan_dir, {NODE: [[0, 9]]}, lot={"kind": "MockLot", "spec": {}})
    pump(w, lambda: rec.messages().count("plan unusable") == 2)
    assert rec.records[-1]["file"].endswith("lot.yaml")
    assert ids(root, "start") == set()
    publish(plan_dir, {NODE: [[0, 6]]})
    pump(w, lambda: ids(root, "start") == mids(range(5, 6)))
    assert "plan usable again" in rec.messages()


def test_missing_plan_is_an_error_not_a_crash(watcher: Any) -> None:
    w, _plan_dir, root, rec = watcher
    result = w.sync()
    assert result.error is not None and "plan.json" in result.error
    assert rec.records[-1]["msg"] == "plan unusable"
    assert ids(root, "start") == set()


def test_lot_and_plan_must_name_the_same_lot(watcher: Any) -> None:
    w, plan_dir, root, _ = watcher
    publish(plan_dir, {NODE: [[0, 2]]}, lot=lot_doc("other"))
    result = w.sync()
    assert result.error is not None and "is lot 'other'" in result.error
    assert ids(root, "start") == set()


def test_a_missed_event_is_repaired_by_the_resync(env: tuple[Path, Path]) -> None:
    plan_dir, root = env
    publish(plan_dir, {NODE: [[0, 3]]})
    w = PlanWatcher(plan_dir, root, NODE, resync_interval=0.3, log=Recorder())
    try:
        w.sync()
        assert ids(root, "start") == mids(range(3))
        publish(plan_dir, {NODE: [[0, 7]]}, generation=2)
        wait_for(lambda: select.select([w.fileno()], [], [], 0.05)[0])
        w.inotify.read()  # the events are lost
        assert ids(root, "start") == mids(range(3))
        assert w.seconds_until_resync() <= 0.3
        wait_for(lambda: w.poll() is not None, timeout=10, interval=0.02)
        assert ids(root, "start") == mids(range(7))
    finally:
        w.close()


def test_an_upgrade_object_writes_exactly_one_upgrade_trigger(watcher: Any) -> None:
    w, plan_dir, root, _ = watcher
    up = {"version": "0.9.0", "source": "s3://bucket/mockfleet-0.9.0.tar.gz", "sha256": SHA}
    publish(plan_dir, {NODE: [[0, 2]]}, upgrade=up)
    results = pump(w, lambda: (root / "upgrade").exists())
    assert [r.upgrade for r in results] == ["0.9.0"]
    assert json.loads((root / "upgrade").read_text()) == up
    first = os.stat(root / "upgrade")
    publish(plan_dir, {NODE: [[0, 3]]}, upgrade=up, generation=2)
    more = pump(w, lambda: ids(root, "start") == mids(range(3)))
    assert all(r.upgrade is None for r in [*more, w.sync()])
    assert os.stat(root / "upgrade").st_ino == first.st_ino  # not rewritten either
    # the tower consumed it (and failed, or succeeded): never asked again for 0.9.0
    (root / "upgrade").unlink()
    assert w.sync().upgrade is None and not (root / "upgrade").exists()
    # a restarted watcher reads the same ledger
    w2 = PlanWatcher(plan_dir, root, NODE, resync_interval=3600, log=Recorder())
    try:
        assert w2.sync().upgrade is None
    finally:
        w2.close()


def test_no_upgrade_trigger_when_the_tower_runs_that_version(env: tuple[Path, Path]) -> None:
    plan_dir, root = env
    up = {"version": "0.9.0", "source": "/opt/mockfleet-0.9.0.tar.gz", "sha256": SHA}
    publish(plan_dir, {NODE: [[0, 1]]}, upgrade=up)
    w = PlanWatcher(plan_dir, root, NODE, tower_version=lambda: "0.9.0", log=Recorder())
    try:
        assert w.sync().upgrade is None
        assert not (root / "upgrade").exists()
    finally:
        w.close()


def test_a_restarted_tower_still_on_the_old_version_asks_again(env: tuple[Path, Path]) -> None:
    """The state directory outlives a tower container; the version it runs does not."""
    plan_dir, root = env
    up = {"version": "0.9.0", "source": "/opt/mockfleet-0.9.0.tar.gz", "sha256": SHA}
    publish(plan_dir, {NODE: [[0, 1]]}, upgrade=up)
    w = PlanWatcher(plan_dir, root, NODE, tower_version=lambda: "0.8.0", log=Recorder())
    try:
        assert w.sync().upgrade == "0.9.0"
        (root / "upgrade").unlink()  # consumed; the upgrade failed: still on 0.8.0
        assert w.sync().upgrade is None  # not retried in a loop by the same tower
        assert not (root / "upgrade").exists()
    finally:
        w.close()
    # the container restarts on the image's 0.8.0 with the same state directory
    w2 = PlanWatcher(plan_dir, root, NODE, tower_version=lambda: "0.8.0", log=Recorder())
    try:
        assert w2.sync().upgrade == "0.9.0"
        assert json.loads((root / "upgrade").read_text()) == up
    finally:
        w2.close()


def test_a_device_that_ended_on_its_own_is_not_restarted(watcher: Any) -> None:
    w, plan_dir, root, _ = watcher
    publish(plan_dir, {NODE: [[0, 4]]})
    pump(w, lambda: len(ids(root, "start")) == 4)
    play_tower(root)
    exit_mock(root, plan_mock_id(LOT, 2))  # finished, or out of restarts
    assert w.sync().started == []
    # scaled away and back: a new desire, a new start
    publish(plan_dir, {NODE: [[0, 2]]}, generation=2)
    pump(w, lambda: ids(root, "stop") == mids(range(3, 4)))
    play_tower(root)
    publish(plan_dir, {NODE: [[0, 4]]}, generation=3)
    pump(w, lambda: ids(root, "start") == mids(range(2, 4)))


def test_a_device_wanted_back_while_stopping_starts_once_it_exited(watcher: Any) -> None:
    w, plan_dir, root, _ = watcher
    publish(plan_dir, {NODE: [[0, 4]]})
    pump(w, lambda: len(ids(root, "start")) == 4)
    play_tower(root)
    publish(plan_dir, {NODE: [[0, 2]]}, generation=2)
    pump(w, lambda: ids(root, "stop") == mids(range(2, 4)))
    publish(plan_dir, {NODE: [[0, 4]]}, generation=3)
    result = w.on_readable()  # project() returned: all of the swap's events are queued
    assert result is not None and result.started == []  # still running: no duplicate start
    assert ids(root, "start") == set()
    exit_mock(root, plan_mock_id(LOT, 3))  # its exit wakes the watcher (inotify on pids/)
    pump(w, lambda: ids(root, "start") == mids(range(3, 4)))


def test_old_lot_copies_live_while_a_mock_uses_them(watcher: Any) -> None:
    w, plan_dir, root, _ = watcher
    publish(plan_dir, {NODE: [[0, 2]]})
    pump(w, lambda: len(ids(root, "start")) == 2)
    play_tower(root)
    (first,) = (root / "lots").iterdir()
    publish(plan_dir, {NODE: [[0, 3]]}, lot=lot_doc(seed=7), generation=2)
    pump(w, lambda: len(list((root / "lots").iterdir())) == 2 and ids(root, "start"))
    assert first.exists()  # mocks 0 and 1 run from it
    play_tower(root)
    for i in range(2):
        exit_mock(root, plan_mock_id(LOT, i))
    publish(plan_dir, {NODE: [[0, 3]]}, lot=lot_doc(seed=8), generation=3)
    pump(w, lambda: not first.exists())


def test_the_operators_configmap_is_understood(watcher: Any) -> None:
    w, plan_dir, root, _ = watcher
    lot = MockLot.model_validate(lot_doc(devices=12))
    cm = build_plan_configmap(lot, {NODE: [(0, 5)], "node-b": [(5, 12)]}, generation=3)
    project(plan_dir, cm["data"])
    pump(w, lambda: ids(root, "start") == mids(range(5)))


# --------------------------------------------------------------------------- standalone


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "mockfleet.tower.planwatch_cli", *args]


def test_standalone_watcher_follows_updates_and_stops_on_sigterm(env: tuple[Path, Path]) -> None:
    plan_dir, root = env
    publish(plan_dir, {NODE: [[0, 3]]})
    proc = subprocess.Popen(
        _cli("--plan", str(plan_dir), "--root", str(root), "--node", NODE),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: (root / "start").is_dir() and ids(root, "start") == mids(range(3)))
        play_tower(root)
        publish(plan_dir, {NODE: [[0, 5]]}, generation=2)
        wait_for(lambda: ids(root, "start") == mids(range(3, 5)))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        lines = [json.loads(line) for line in proc.stderr.read().splitlines()]
        proc.stderr.close()
    assert [line["msg"] for line in lines].count("plan applied") == 2
    assert all(line["component"] == "planwatch" for line in lines)


def test_standalone_once_reports_a_bad_plan(env: tuple[Path, Path]) -> None:
    plan_dir, root = env
    publish(plan_dir, {}, plan_text="[1, 2]")
    done = subprocess.run(
        _cli("--plan", str(plan_dir), "--root", str(root), "--node", NODE, "--once"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    record = json.loads(done.stderr.splitlines()[-1])
    assert record["msg"] == "plan unusable" and record["file"].endswith("plan.json")
    assert "must be a JSON object" in record["reason"]


def test_standalone_needs_a_node(env: tuple[Path, Path]) -> None:
    plan_dir, root = env
    environ = {k: v for k, v in os.environ.items() if k != "NODE_NAME"}
    done = subprocess.run(
        _cli("--plan", str(plan_dir), "--root", str(root)),
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
    )
    assert done.returncode == 2 and "--node is required" in done.stderr
    assert "Traceback" not in done.stderr


# --------------------------------------------------------------------------- with a real tower


def test_a_real_tower_follows_the_plan_through_the_sidecar(env: tuple[Path, Path]) -> None:
    from support.tower_harness import TowerProc, exits, no_leftovers, pids

    plan_dir, root = env
    lot = lot_doc(constants={"towertest": {}})  # the stand-in device: runs until stopped
    with no_leftovers():
        tower = TowerProc(root)
        sidecar = subprocess.Popen(
            _cli("--plan", str(plan_dir), "--root", str(root), "--node", NODE),
            stderr=subprocess.DEVNULL,
        )
        try:
            tower.wait_ready()
            publish(plan_dir, {NODE: [[0, 6]], "node-b": [[6, 9]]}, lot=lot)
            wait_for(lambda: set(pids(root)) == mids(range(6)), 60, 0.05)
            publish(plan_dir, {NODE: [[0, 4]], "node-b": [[4, 9]]}, lot=lot, generation=2)
            wait_for(lambda: set(pids(root)) == mids(range(4)), 60, 0.05)
            stopped = exits(tower.events())
            assert sorted(e["mock"] for e in stopped) == sorted(mids(range(4, 6)))
            assert {e["reason"] for e in stopped} == {"stopped"}
            publish(plan_dir, {NODE: [[0, 4]]}, lot=lot, paused=True, generation=3)
            wait_for(lambda: not pids(root), 60, 0.05)
            assert not ids(root, "start") and not ids(root, "stop")
        finally:
            sidecar.send_signal(signal.SIGTERM)
            try:
                assert sidecar.wait(timeout=10) == 0
            finally:
                if sidecar.poll() is None:
                    sidecar.kill()
                    sidecar.wait()
                assert tower.stop() == 0
