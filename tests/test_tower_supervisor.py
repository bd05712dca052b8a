"""The tower with real processes, signals and inotify: starts, stops, kills,
restarts, rejections, adoption checks, shutdown and the HTTP endpoint."""

from __future__ import annotations

import json
import mmap
import os
import random
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from support import memcg
from support.polling import wait_for
from support.tower_harness import TowerProc, exits, no_leftovers, pids, write_lot

from mockfleet.mock.validator import PARENT_CHECK
from mockfleet.tower import immortal, sibling
from mockfleet.tower.linux import boot_id, proc_stat
from mockfleet.tower.triggers import write_start, write_stop


@pytest.fixture
def base(tmp_path: Path) -> Iterator[Path]:
    with no_leftovers():
        yield tmp_path


def _start_many(root: Path, lot: Path, n: int, prefix: str = "m") -> list[str]:
    ids = [f"{prefix}{i}" for i in range(n)]
    for i, mock_id in enumerate(ids):
        write_start(root, mock_id, lot, i)
    return ids


def _clean_stop(e: dict[str, object]) -> bool:
    """Exit 0, or SIGTERM when the stop arrived before the device had set up
    its handlers (a busy machine can delay that past the PID file)."""
    return e.get("exit_code") == 0 or e.get("signal") == signal.SIGTERM


def _gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _children(tower: TowerProc) -> list[psutil.Process]:
    return psutil.Process(tower.pid).children()


def test_500_mocks_start_and_stop_through_triggers(base: Path) -> None:
    root = base / "root"
    lot = write_lot(base / "lot.yaml", "fleet")  # the real device, stdout sink
    tower = TowerProc(root, device=None)
    tower.wait_ready()
    ids = _start_many(root, lot, 500)
    wait_for(lambda: len(pids(root)) == 500, 120, 0.2)
    # triggers go once the PID files are durable (fsynced off the loop)
    wait_for(lambda: not os.listdir(root / "start"), 60, 0.1)
    live = {p.pid for p in _children(tower)}
    assert set(pids(root).values()) <= live
    for mock_id in ids:
        write_stop(root, mock_id)
    wait_for(lambda: len(exits(tower.events())) == 500, 120, 0.2)
    done = exits(tower.events())
    assert {e["reason"] for e in done} == {"stopped"}, [e for e in done if e["reason"] != "stopped"]
    assert all(_clean_stop(e) for e in done), [e for e in done if not _clean_stop(e)]
    assert sorted(e["mock"] for e in done) == sorted(ids)
    assert not os.listdir(root / "pids") and not os.listdir(root / "stop")
    assert tower.stop() == 0


@pytest.mark.parametrize("forking", ["clone-parent", "double-fork"])
def test_kill_9_is_detected_and_restarted_per_policy(base: Path, forking: str) -> None:
    root = base / "root"
    fast = {"policy": "OnFailure", "backoff": "50ms", "maxBackoff": "100ms", "maxRestarts": 3}
    again = write_lot(base / "again.yaml", "again", {}, restart=fast)
    never = write_lot(base / "never.yaml", "never", {}, restart={"policy": "Never"})
    env = {"MOCKFLEET_CLONE_PARENT": "1" if forking == "clone-parent" else "0"}
    tower = TowerProc(root, env=env)
    tower.wait_ready()
    ready = next(e for e in tower.events() if e["event"] == "zygote-ready")
    if sibling.available():
        assert ready["forking"] == forking
    _start_many(root, again, 20, "a")
    _start_many(root, never, 20, "n")
    wait_for(lambda: len(pids(root)) == 40, 60)
    before = pids(root)
    # either way, every mock is the tower's own child
    assert {psutil.Process(pid).ppid() for pid in before.values()} == {tower.pid}
    rng = random.Random(7)
    victims = rng.sample(sorted(before), 12)
    for mock_id in victims:
        os.kill(before[mock_id], signal.SIGKILL)
    killed = {before[m] for m in victims}

    def all_recorded() -> bool:
        return killed <= {e["pid"] for e in exits(tower.events())}

    wait_for(all_recorded, 30)
    for e in exits(tower.events()):
        assert e["pid"] in killed and e["signal"] == 9 and e["reason"] == "crashed"
        assert e["restart"] == e["mock"].startswith("a"), e
    restarted = [m for m in victims if m.startswith("a")]
    gone = [m for m in victims if m.startswith("n")]
    wait_for(lambda: all(m in pids(root) for m in restarted), 30)
    now = pids(root)
    for m in restarted:
        assert now[m] != before[m]
        assert json.loads((root / "pids" / m).read_text())["restarts"] == 1
    assert not any(m in now for m in gone)
    assert len(now) == 40 - len(gone)
    # Every killed process was reaped: none is left as a zombie.
    wait_for(lambda: not [p for p in _children(tower) if p.status() == psutil.STATUS_ZOMBIE], 10)
    assert tower.stop() == 0


def test_mock_ignoring_sigterm_is_force_killed_after_grace(base: Path) -> None:
    root = base / "root"
    stubborn = write_lot(base / "stubborn.yaml", "stubborn", {"ignore_term": True})
    tower = TowerProc(root, "--stop-grace", "1s")
    tower.wait_ready()
    write_start(root, "s1", stubborn, 0)
    wait_for(lambda: "s1" in pids(root), 30)
    wait_for(lambda: _ignores_sigterm(pids(root)["s1"]), 30)  # the device runs
    write_stop(root, "s1")
    wait_for(lambda: exits(tower.events()), 15)
    (e,) = exits(tower.events())
    assert (e["reason"], e["signal"], e["restart"]) == ("force-killed", 9, False)
    assert any(ev["event"] == "force-kill" for ev in tower.events())
    assert not (root / "stop" / "s1").exists() and not (root / "pids" / "s1").exists()
    assert tower.stop() == 0


def test_sigterm_to_the_tower_stops_everything(base: Path) -> None:
    root = base / "root"
    normal = write_lot(base / "normal.yaml", "normal", {})
    stubborn = write_lot(base / "stubborn.yaml", "stubborn", {"ignore_term": True})
    tower = TowerProc(root, "--stop-grace", "2s")
    tower.wait_ready()
    _start_many(root, normal, 30, "n")
    _start_many(root, stubborn, 3, "s")
    wait_for(lambda: len(pids(root)) == 33, 60)
    # A PID file is written before the device runs: wait until the stubborn
    # ones really ignore SIGTERM, or an early SIGTERM would find them not yet
    # stubborn (and they would be "stopped", not force-killed).
    stubborn_pids = [pids(root)[f"s{i}"] for i in range(3)]
    wait_for(lambda: all(_ignores_sigterm(pid) for pid in stubborn_pids), 60)
    mocks = {p.pid for p in _children(tower)}
    assert tower.stop(timeout=30) == 0
    reasons = {e["mock"]: e["reason"] for e in exits(tower.events())}
    assert len(reasons) == 33
    assert {reasons[f"n{i}"] for i in range(30)} == {"stopped"}
    assert {reasons[f"s{i}"] for i in range(3)} == {"force-killed"}
    assert not [pid for pid in mocks if psutil.pid_exists(pid) and _is_alive(pid)]
    assert not os.listdir(root / "pids")
    assert tower.events()[-1]["event"] == "tower-stopped"


def _ignores_sigterm(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("SigIgn:"):
                return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


def _is_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_hostile_triggers_are_rejected_and_the_tower_keeps_running(base: Path) -> None:
    root = base / "root"
    lot = write_lot(base / "lot.yaml", "fine", {})
    bad_lot = base / "bad.yaml"
    bad_lot.write_text("apiVersion: mockfleet.dev/v1alpha1\nkind: MockLot\nmetadata: {name: x}\n")
    for sub in ("start", "stop", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    # One hostile file waits from before the tower starts (found by the start-up scan).
    (root / "start" / "early bad.json").write_text("{}")
    tower = TowerProc(root)
    tower.wait_ready()
    tmp = root / "tmp"
    hostile: dict[str, str] = {
        "bad name.json": "outside [A-Za-z0-9._-]",
        "x" * 210 + ".json": "longer than 200",
        "noext": "named <mock-id>.json",
        "garbage.json": "not valid JSON",
        "big.json": "larger than",
        "link.json": "symbolic link",
        "fifo.json": "not a regular file",
        "dir.json": "not a regular file",
        "nolot.json": "cannot read the lot",
        "invalid.json": "invalid lot",
        "extra.json": "unknown field",
    }
    contents = {
        "garbage.json": b"{nope",
        "big.json": b"{" + b" " * 70000 + b"}",
        "nolot.json": json.dumps({"lot": str(base / "missing.yaml"), "index": 0}).encode(),
        "invalid.json": json.dumps({"lot": str(bad_lot), "index": 0}).encode(),
        "extra.json": json.dumps({"lot": str(lot), "index": 0, "rm": "-rf"}).encode(),
    }
    for name in hostile:
        src = tmp / "x"
        if name == "link.json":
            src.symlink_to("/etc/passwd")
        elif name == "fifo.json":
            os.mkfifo(src)
        elif name == "dir.json":
            src.mkdir()
        else:
            src.write_bytes(contents.get(name, b'{"lot": "/l.yaml", "index": 0}'))
        os.rename(src, root / "start" / name)
    (tmp / "x").write_bytes(b"")
    os.rename(tmp / "x", root / "stop" / "bad stop")
    (tmp / "x").write_bytes(b"not json")
    os.rename(tmp / "x", root / "upgrade")
    write_stop(root, "nobody")
    write_start(root, "good", lot, 0)
    wait_for(lambda: "good" in pids(root), 30)

    def reasons() -> dict[str, str]:
        out = {}
        for p in (root / "rejected").glob("*.reason"):
            info = json.loads(p.read_text())
            out[info["trigger"]] = info["reason"]
        return out

    wait_for(lambda: len(reasons()) == len(hostile) + 3, 30)
    got = reasons()
    for name, why in hostile.items():
        assert why in got[f"start/{name}"], (name, got[f"start/{name}"])
    assert "outside" in got["start/early bad.json"]
    assert "outside" in got["stop/bad stop"]
    assert "not valid JSON" in got["upgrade/upgrade"]
    wait_for(lambda: os.listdir(root / "start") == [], 30)
    assert not (root / "stop" / "nobody").exists()
    assert any(e["event"] == "stop-unknown" and e["mock"] == "nobody" for e in tower.events())
    for p in (root / "rejected").iterdir():
        assert "/" not in p.name and not p.name.startswith(".")
    assert tower.proc.poll() is None
    assert tower.stop() == 0


def test_pid_file_of_an_unrelated_process_is_not_adopted(base: Path) -> None:
    root = base / "root"
    (root / "pids").mkdir(parents=True)
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        st = proc_stat(stranger.pid)
        assert st is not None
        record = {
            "mock_id": "ghost",
            "pid": stranger.pid,
            "start_ticks": st.start_ticks + 1,  # a different process once had this pid
            "boot_id": boot_id(),
            "lot": str(base / "lot.yaml"),
            "lot_name": "l",
            "index": 0,
            "slot": 0,
            "restarts": 0,
            "started_at": 0.0,
            "version": "old",
            "restart": {"policy": "Never"},
        }
        (root / "pids" / "ghost").write_text(json.dumps(record))
        tower = TowerProc(root, "--stop-grace", "1s")
        tower.wait_ready()
        wait_for(lambda: exits(tower.events()), 10)
        (e,) = exits(tower.events())
        assert (e["mock"], e["reason"], e["pid"]) == ("ghost", "lost", stranger.pid)
        assert not any(ev["event"] == "adopted" for ev in tower.events())
        assert not (root / "pids" / "ghost").exists()
        assert tower.stop() == 0
        assert stranger.poll() is None  # untouched
    finally:
        stranger.kill()
        stranger.wait()


def test_zygote_death_is_survived(base: Path) -> None:
    root = base / "root"
    lot = write_lot(base / "lot.yaml", "z", {})
    tower = TowerProc(root)
    tower.wait_ready()
    _start_many(root, lot, 5, "a")
    wait_for(lambda: len(pids(root)) == 5, 30)
    ready = next(e for e in tower.events() if e["event"] == "zygote-ready")
    zygote = ready["pid"]
    # it says whether it made its preloaded objects immortal (CPython 3.12+), or why not
    if immortal.why_not() is None:
        assert ready["immortal_objects"] > 10_000 and ready.get("immortal_off") is None
    else:
        assert ready["immortal_objects"] == 0 and ready["immortal_off"] == immortal.why_not()
    # and how it forks mocks: as the tower's own children where the system allows
    assert ready["forking"] == ("clone-parent" if sibling.available() else "double-fork")
    assert psutil.Process(zygote).name() == "mf-zygote"  # as ps and top show it
    # its lot validator: the one child of the zygote (the mocks are the tower's)
    (validator,) = psutil.Process(zygote).children()
    os.kill(zygote, signal.SIGKILL)
    wait_for(lambda: sum(e["event"] == "zygote-ready" for e in tower.events()) == 2, 30)
    # The validator reads end-of-file at once, so no mock kept the zygote's end
    # of its socket (else it would only notice its new parent, PARENT_CHECK later).
    assert wait_for(lambda: _gone(validator), PARENT_CHECK - 1)
    _start_many(root, lot, 5, "b")
    wait_for(lambda: len(pids(root)) == 10, 30)
    assert not exits(tower.events())
    assert tower.stop() == 0


def test_http_status_and_metrics(base: Path) -> None:
    root = base / "root"
    lot = write_lot(base / "lot.yaml", "web", {})
    tower = TowerProc(root, "--http", "127.0.0.1:0", "--max-start-rate", "200")
    tower.wait_ready()
    addr = next(e["http"] for e in tower.events() if e["event"] == "tower-started")
    assert addr.startswith("127.0.0.1:")
    _start_many(root, lot, 4)
    wait_for(lambda: len(pids(root)) == 4, 30)

    def get(path: str) -> tuple[int, bytes]:
        with urllib.request.urlopen(f"http://{addr}{path}", timeout=10) as r:
            return r.status, r.read()

    assert get("/healthz") == (200, b"ok\n")

    def counted() -> dict[str, object] | None:
        status = json.loads(get("/status")[1])
        lot_status = status["lots"].get("web", {})
        return status if lot_status.get("sent", 0) >= 4 else None

    status = wait_for(counted, 15)
    assert status["mocks"]["running"] == 4 and status["pending_triggers"] == 0
    assert status["version"]
    metrics = get("/metrics")[1].decode()
    assert 'mockfleet_tower_mocks{state="running"} 4.0' in metrics
    assert 'mockfleet_lot_messages_sent_total{lot="web"}' in metrics
    assert 'mockfleet_lot_mocks_oom_killed_total{lot="web"} 0.0' in metrics
    assert status["oom_killed"] == 0 and status["lots"]["web"]["oom_killed"] == 0
    with pytest.raises(urllib.error.HTTPError):
        get("/nope")
    assert tower.stop() == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="--run-as needs root")
def test_run_as_drops_privileges_of_the_mocks(base: Path) -> None:
    import pwd
    import shutil
    import tempfile

    nobody = pwd.getpwnam("nobody")
    # Outside pytest's 0700 temp tree: the mocks must be able to reach stop/.
    top = Path(tempfile.mkdtemp(prefix="tower-run-as-"))
    try:
        os.chmod(top, 0o711)
        root = top / "root"
        lot = write_lot(base / "lot.yaml", "low", {})
        tower = TowerProc(root, "--run-as", "nobody", "--rlimit-nofile", "64")
        tower.wait_ready()
        write_start(root, "low0", lot, 0)
        wait_for(lambda: "low0" in pids(root), 30)
        proc = psutil.Process(pids(root)["low0"])
        assert proc.uids().real == nobody.pw_uid and proc.gids().real == nobody.pw_gid
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        assert [line.split()[3:5] for line in limits.splitlines() if "open files" in line] == [
            ["64", "64"]
        ]
        assert os.stat(root / "stop").st_uid == nobody.pw_uid
        write_stop(root, "low0")
        wait_for(lambda: exits(tower.events()), 15)
        (e,) = exits(tower.events())
        assert e["reason"] == "stopped" and _clean_stop(e)
        assert not (root / "stop" / "low0").exists()
        assert tower.stop() == 0
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_a_zygote_that_cannot_start_is_retried_with_backoff(base: Path) -> None:
    root = base / "root"
    tower = TowerProc(root, device="no.such.module:run")

    def failures() -> list[dict[str, object]]:
        return [e for e in tower.events() if e["event"] == "zygote-exited"]

    wait_for(lambda: len(failures()) >= 2, 30)
    assert "before it was ready" in str(failures()[-1]["reason"])
    assert tower.proc.poll() is None
    assert tower.stop() == 0


def test_each_mock_maps_only_its_own_counter_page(base: Path) -> None:
    """A mock never maps the whole counter file: a kernel walk over a page's
    mappings (writeback, reclaim) then visits only the mocks sharing that
    page, and exits do not queue behind walks over the whole fleet."""
    root = base / "root"
    lot = write_lot(base / "lot.yaml", "pages", {})
    tower = TowerProc(root, "--http", "127.0.0.1:0")
    tower.wait_ready()
    n = 40  # 32 slots a page: slots 32.. lie on the second page
    _start_many(root, lot, n)
    wait_for(lambda: len(pids(root)) == n, 30)
    records = {
        name: json.loads((root / "pids" / name).read_text()) for name in os.listdir(root / "pids")
    }
    assert max(r["slot"] for r in records.values()) >= 32

    def counter_maps(pid: int) -> list[str]:
        maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
        return [line for line in maps if line.endswith("/counters.bin")]

    # A mock maps its slot once its gate opens, just after its PID file is written.
    wait_for(lambda: all(counter_maps(r["pid"]) for r in records.values()), 30)
    for rec in records.values():
        mapped = counter_maps(rec["pid"])
        assert len(mapped) == 1, mapped
        lo, hi = (int(x, 16) for x in mapped[0].split()[0].split("-"))
        offset = int(mapped[0].split()[2], 16)
        assert hi - lo == mmap.PAGESIZE  # max-mocks 32768: no partial page
        assert offset == rec["slot"] * 128 // mmap.PAGESIZE * mmap.PAGESIZE
    # and the counters still reach the tower: every mock's slot names it
    from mockfleet.mock.counters import CounterFile

    counters = CounterFile.open_existing(root / "counters.bin")
    wait_for(lambda: all(counters.read(r["slot"]).sent >= 1 for r in records.values()), 30)
    for rec in records.values():
        assert counters.read(rec["slot"]).pid == rec["pid"]
    counters.close()
    assert tower.stop() == 0


def _oom_adj(pid: int) -> int:
    return int(Path(f"/proc/{pid}/oom_score_adj").read_text())


@pytest.mark.parametrize(("extra", "offset"), [((), 500), (("--mock-oom-score-adj", "0"), 0)])
def test_mocks_are_the_kernels_first_oom_victims(
    base: Path, extra: tuple[str, ...], offset: int
) -> None:
    """Under memory pressure the kernel kills the process with the highest
    score: mocks score above the tower and its zygote, so a mock dies (and is
    recorded) rather than the supervisor."""
    root = base / "root"
    lot = write_lot(base / "lot.yaml", "oom", {})
    tower = TowerProc(root, *extra)
    tower.wait_ready()
    write_start(root, "oom0", lot, 0)
    wait_for(lambda: "oom0" in pids(root), 30)
    own = _oom_adj(tower.proc.pid)
    zygote = [e["pid"] for e in tower.events() if e["event"] == "zygote-ready"][-1]
    assert _oom_adj(zygote) == own, tower.log()
    assert _oom_adj(pids(root)["oom0"]) == min(1000, own + offset), tower.log()
    assert tower.stop() == 0, tower.log()


def test_the_mock_oom_adjustment_is_capped_and_only_ever_raises() -> None:
    from mockfleet.tower.supervisor import mock_oom_score_adj

    assert mock_oom_score_adj(500, own=0) == 500
    assert mock_oom_score_adj(500, own=-997) == -497  # a Guaranteed pod
    assert mock_oom_score_adj(500, own=900) == 1000
    assert mock_oom_score_adj(500, own=1000) is None  # BestEffort: already the maximum
    assert mock_oom_score_adj(0, own=0) is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1001", "between 0 and 1000, got '1001'"),
        ("-5", "between 0 and 1000, got '-5'"),
        ("lots", "expected a whole number, got 'lots'"),
    ],
)
def test_a_bad_oom_adjustment_is_refused_by_name(value: str, message: str) -> None:
    argv = [sys.executable, "-m", "mockfleet.tower", "--root", "/nonexistent"]
    result = subprocess.run(
        [*argv, "--mock-oom-score-adj", value],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--mock-oom-score-adj" in result.stderr and message in result.stderr


def test_a_config_survives_its_own_command_line() -> None:
    """An in-place upgrade re-executes the tower with ``to_argv()``: every
    setting, the mocks' OOM preference included, must come back the same."""
    import argparse

    from mockfleet.tower.cli import add_tower_arguments, config_from_args
    from mockfleet.tower.supervisor import TowerConfig

    cfg = TowerConfig(
        root="/srv/tower",
        max_start_rate=50.0,
        stop_grace=3.5,
        http=("127.0.0.1", 9100),
        rlimit_as=512 * 2**20,
        rlimit_nofile=64,
        mock_oom_score_adj=250,
        max_mocks=4096,
        start_priority="normal",
        restart_overrides={"policy": "Always", "maxRestarts": 3},
        events_stderr=True,
    )
    parser = argparse.ArgumentParser()
    add_tower_arguments(parser)
    assert config_from_args(parser.parse_args(cfg.to_argv())) == cfg


@pytest.mark.skipif(memcg.why_not() is not None, reason=str(memcg.why_not()))
def test_out_of_memory_kills_mocks_and_spares_the_tower(base: Path) -> None:
    """A real out-of-memory kill: the tower runs in a memory cgroup of its
    own, whose limit 24 mocks holding 16 MiB each overrun. Each mock maps
    less memory than the lot validator, and while they fill theirs, less
    than the tower: with ``--mock-oom-score-adj 0`` the kernel killed the
    validator and then the tower first (seen). By default it kills mocks
    only, and the tower records each one as crashed by SIGKILL."""
    root = base / "root"
    lot = write_lot(base / "lot.yaml", "hog", {"hold_mib": 16}, restart={"policy": "Never"})
    with memcg.memory_cgroup("mockfleet-test-oom") as cg:
        tower = TowerProc(root, "--http", "127.0.0.1:0", cgroup_procs=cg.procs)
        tower.wait_ready()
        zygote = [e["pid"] for e in tower.events() if e["event"] == "zygote-ready"][-1]
        (validator,) = psutil.Process(zygote).children()
        assert {tower.proc.pid, zygote, validator.pid} <= set(cg.pids())
        cg.set_limit(cg.usage() + 160 * 2**20)  # room for about ten of them
        n = 24
        _start_many(root, lot, n)

        def filled(pid: int) -> bool:
            try:
                return bool(psutil.Process(pid).memory_info().rss >= 16 * 2**20)
            except psutil.NoSuchProcess:
                return False

        def sigkilled() -> list[dict[str, object]]:
            return [e for e in exits(tower.events()) if e.get("signal") == signal.SIGKILL]

        def settled() -> bool:
            """Every survivor holds its memory: nothing allocates any more."""
            running = pids(root).values()
            return len(running) + len(sigkilled()) == n and all(filled(p) for p in running)

        wait_for(settled, 60)
        # Room again, so that nothing below (a status page, an event) makes the
        # kernel kill once more; then every kill it made is recorded.
        cg.set_limit(cg.usage() + 256 * 2**20)
        killed = wait_for(lambda: k if len(k := sigkilled()) == cg.oom_kills() else None, 15)
        assert killed and all(e["reason"] == "crashed" and e["oom_killed"] for e in killed)
        # a kill -9 by hand is not taken for the OOM killer's
        by_hand = pids(root)[sorted(pids(root))[0]]
        os.kill(by_hand, signal.SIGKILL)
        (e,) = wait_for(lambda: [x for x in exits(tower.events()) if x["pid"] == by_hand], 15)
        assert e["reason"] == "crashed" and "oom_killed" not in e
        status = tower.status()
        assert status["oom_killed"] == status["lots"]["hog"]["oom_killed"] == len(killed)
        assert status["lots"]["hog"]["exits"]["crashed"] == len(killed) + 1
        assert cg.oom_kills() == len(killed)
        # the supervisor, its zygote and its lot validator all survived
        assert tower.proc.poll() is None, tower.log()
        assert not [e for e in tower.events() if e["event"] == "zygote-exited"], tower.log()
        assert psutil.pid_exists(zygote) and psutil.Process(zygote).children() == [validator]
        assert tower.stop() == 0, tower.log()
