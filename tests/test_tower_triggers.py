"""Trigger parsing, writers, PID-file identity and the supervisor's pure policies."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mockfleet.tower import policy
from mockfleet.tower.linux import boot_id, parse_proc_stat, proc_stat
from mockfleet.tower.pidfiles import (
    PidRecord,
    check_identity,
    parse_pid_record,
    reaped_after_start,
)
from mockfleet.tower.triggers import (
    MAX_TRIGGER_BYTES,
    TriggerError,
    atomic_write_many,
    check_mock_id,
    parse_start,
    parse_upgrade,
    read_trigger_bytes,
    sanitize_name,
    start_name_to_id,
    write_start,
    write_starts,
    write_stop,
    write_upgrade,
)

SHA = "a" * 64


@pytest.mark.parametrize(
    "name",
    ["", ".hidden", "a/b", "..", "a b", "x" * 201, "é", "a\nb", "a;rm -rf", "-" + "\x00"],
)
def test_bad_mock_ids_are_refused(name: str) -> None:
    with pytest.raises(TriggerError):
        check_mock_id(name)


@pytest.mark.parametrize("name", ["a", "dev-0001", "lot.a_b-9", "x" * 200, "A.json.b"])
def test_good_mock_ids(name: str) -> None:
    assert check_mock_id(name) == name


def test_start_names_need_the_json_suffix() -> None:
    assert start_name_to_id("dev-1.json") == "dev-1"
    with pytest.raises(TriggerError, match=r"named <mock-id>\.json"):
        start_name_to_id("dev-1")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{", "not valid JSON"),
        (b"[]", "must be an object"),
        (b"\xff\xfe", "not UTF-8"),
        (b'{"index": 1}', "missing field 'lot'"),
        (b'{"lot": "/l.yaml"}', "missing field 'index'"),
        (b'{"lot": "/l.yaml", "index": -1}', "'index' must be an integer"),
        (b'{"lot": "/l.yaml", "index": true}', "'index' must be an integer"),
        (b'{"lot": "/l.yaml", "index": 1.5}', "'index' must be an integer"),
        (b'{"lot": 3, "index": 1}', "'lot' must be a non-empty string"),
        (b'{"lot": "../../etc/x", "index": 1}', "must not contain '..'"),
        (b'{"lot": "/l.yaml", "index": 1, "evil": 1}', "unknown field"),
        (b'{"lot": "/l.yaml", "index": 1, "not_before": "soon"}', "'not_before'"),
        (b"[" * 100000 + b"]" * 100000, "JSON"),
    ],
)
def test_start_parse_errors_name_the_problem(data: bytes, reason: str) -> None:
    with pytest.raises(TriggerError, match=reason):
        parse_start("m", data, "/root")


def test_start_parse_resolves_relative_lots_under_root() -> None:
    req = parse_start("m", b'{"lot": "lots/a.yaml", "index": 3, "restarts": 2}', "/r")
    assert (req.lot, req.index, req.restarts) == ("/r/lots/a.yaml", 3, 2)


def test_read_trigger_refuses_symlinks_fifos_and_big_files(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b" " * (MAX_TRIGGER_BYTES + 1))
    with pytest.raises(TriggerError, match="larger than"):
        read_trigger_bytes(str(big))
    link = tmp_path / "link"
    link.symlink_to("/etc/passwd")
    with pytest.raises(TriggerError, match="symbolic link"):
        read_trigger_bytes(str(link))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(TriggerError, match="not a regular file"):
        read_trigger_bytes(str(fifo))
    with pytest.raises(TriggerError, match="unreadable"):
        read_trigger_bytes(str(tmp_path / "missing"))


def test_writers_are_atomic_and_parse_back(tmp_path: Path) -> None:
    path = write_start(tmp_path, "dev-1", "lots/a.yaml", 7)
    assert path == tmp_path / "start" / "dev-1.json"
    req = parse_start("dev-1", path.read_bytes(), str(tmp_path))
    assert req.lot == os.path.abspath("lots/a.yaml") and req.index == 7
    assert write_stop(tmp_path, "dev-1").read_bytes() == b""
    up = write_upgrade(tmp_path, "1.2.3", "s3://b/k.whl", SHA, "http://127.0.0.1:9")
    assert parse_upgrade(up.read_bytes()).endpoint_url == "http://127.0.0.1:9"
    assert os.listdir(tmp_path / "tmp") == []  # no temporaries left
    assert oct((tmp_path / "start").stat().st_mode & 0o777) == "0o700"
    with pytest.raises(TriggerError):
        write_start(tmp_path, "../evil", "a.yaml", 1)
    with pytest.raises(TriggerError, match="sha256"):
        write_upgrade(tmp_path, "1", "/x.whl", "nope")


@pytest.mark.parametrize("n", [3, 40])  # an fsync each, and one syncfs for all
def test_a_batch_of_starts_is_what_one_start_at_a_time_writes(tmp_path: Path, n: int) -> None:
    one = write_start(tmp_path / "one", "dev-0", "lots/a.yaml", 0)
    paths = write_starts(tmp_path / "batch", [(f"dev-{i}", "lots/a.yaml", i) for i in range(n)])
    assert paths == [tmp_path / "batch" / "start" / f"dev-{i}.json" for i in range(n)]
    assert paths[0].read_bytes() == one.read_bytes()
    for i, path in enumerate(paths):
        req = parse_start(f"dev-{i}", path.read_bytes(), str(tmp_path))
        assert req.lot == os.path.abspath("lots/a.yaml") and req.index == i
        assert path.stat().st_mode & 0o777 == 0o600
    assert os.listdir(tmp_path / "batch" / "tmp") == []
    assert write_starts(tmp_path / "batch", []) == []


@pytest.mark.parametrize(
    ("bad", "reason"),
    [(("../evil", "a.yaml", 1), "starts with a dot"), (("dev-9", "a.yaml", -1), "index")],
)
def test_a_batch_with_one_bad_start_queues_none_of_it(
    tmp_path: Path, bad: tuple[str, str, int], reason: str
) -> None:
    with pytest.raises(TriggerError, match=reason):
        write_starts(tmp_path, [("dev-1", "a.yaml", 1), bad, ("dev-2", "a.yaml", 2)])
    assert not (tmp_path / "start").exists() or os.listdir(tmp_path / "start") == []
    assert not (tmp_path / "tmp").exists() or os.listdir(tmp_path / "tmp") == []


def test_many_files_in_several_directories_are_published_together(tmp_path: Path) -> None:
    (tmp_path / "tmp").mkdir()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    items = [(tmp_path / "a" / f"f{i}", f"a{i}".encode()) for i in range(20)]
    items += [(tmp_path / "b" / "g", b"")]
    atomic_write_many(items, tmp_path / "tmp")
    for path, data in items:
        assert path.read_bytes() == data
    assert os.listdir(tmp_path / "tmp") == []
    atomic_write_many([], tmp_path / "tmp")  # nothing to do


def test_a_batch_that_fails_midway_leaves_no_temporaries(tmp_path: Path) -> None:
    """A file size limit (RLIMIT_FSIZE, in a child) lets the first trigger of
    the batch be written and fails the second, whose lot path is long."""
    script = (
        "import resource, signal, sys\n"
        "from mockfleet.tower.triggers import write_starts\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100))\n"
        "try:\n"
        "    write_starts(sys.argv[1], [('dev-1', '/a.yaml', 1), ('dev-2', '/' + 'b' * 200, 2)])\n"
        "except OSError as exc:\n"
        "    print(exc.errno)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "27", out  # EFBIG
    assert os.listdir(tmp_path / "start") == []
    assert os.listdir(tmp_path / "tmp") == []


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        ({"version": "1", "source": "/a.whl"}, "sha256"),
        ({"version": "../x", "source": "/a.whl", "sha256": SHA}, "not a safe name"),
        ({"version": "1", "source": "rel.whl", "sha256": SHA}, "absolute"),
        ({"version": "1", "source": "s3://bucket", "sha256": SHA}, "s3://bucket/key"),
        ({"version": "1", "source": "/a", "sha256": SHA, "endpoint_url": "ftp://x"}, "http"),
    ],
)
def test_upgrade_parse_errors(obj: dict[str, str], reason: str) -> None:
    with pytest.raises(TriggerError, match=reason):
        parse_upgrade(json.dumps(obj).encode())


def test_sanitize_name_is_harmless() -> None:
    assert sanitize_name("../../x y\n") == "_.._x_y_"
    assert sanitize_name("...") == "unnamed"
    assert "/" not in sanitize_name("a/b")


def test_proc_stat_parses_names_with_spaces_and_parens() -> None:
    raw = b"42 (a) b (c)) S 7 42 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 12345 0 0"
    st = parse_proc_stat(42, raw)
    assert st is not None and (st.state, st.ppid, st.start_ticks) == ("S", 7, 12345)
    me = proc_stat(os.getpid())
    assert me is not None and me.ppid == os.getppid()


def test_identity_check_refuses_a_stranger_with_the_same_pid() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        st = proc_stat(proc.pid)
        assert st is not None
        rec = PidRecord("m", proc.pid, st.start_ticks, boot_id(), "/l", "l", 0, 0, 0, 0.0, "v")
        assert check_identity(rec, boot_id()) is not None
        wrong_time = dataclasses.replace(rec, start_ticks=st.start_ticks - 1)
        assert check_identity(wrong_time, boot_id()) is None
        assert check_identity(dataclasses.replace(rec, boot_id="other"), boot_id()) is None
    finally:
        proc.kill()
        proc.wait()
    assert check_identity(rec, boot_id()) is None  # dead


def test_an_exit_reaped_before_a_process_started_was_an_earlier_owner_of_its_pid() -> None:
    # started at tick 1000 (10.00 s after boot at 100 ticks a second)
    assert reaped_after_start(10.5, 1000, 100)  # died after it started: its own
    assert reaped_after_start(10.0, 1000, 100)
    assert not reaped_after_start(9.99, 1000, 100)  # reaped before: a stale entry
    # a real process: its start is not after now, on the same clock
    stat = proc_stat(os.getpid())
    assert stat is not None
    now = time.clock_gettime(time.CLOCK_BOOTTIME)
    assert reaped_after_start(now, stat.start_ticks, os.sysconf("SC_CLK_TCK"))


def test_pid_records_are_validated() -> None:
    with pytest.raises((ValueError, TypeError)):
        parse_pid_record(b'{"pid": 1}')
    with pytest.raises(ValueError):
        parse_pid_record(b"[]")


def test_exit_reasons() -> None:
    assert policy.exit_reason(0, None, False, False) == "finished"
    assert policy.exit_reason(1, None, False, False) == "crashed"
    assert policy.exit_reason(None, 9, False, False) == "crashed"
    assert policy.exit_reason(0, None, True, False) == "stopped"
    assert policy.exit_reason(None, 9, True, True) == "force-killed"
    assert policy.exit_reason(None, None, False, False) == "lost"


def test_restart_policy() -> None:
    rng = random.Random(1)
    spec = {
        "policy": "OnFailure",
        "maxRestarts": 3,
        "backoff": 1,
        "maxBackoff": 5,
        "resetAfter": 60,
    }
    d = policy.decide_restart(spec, "crashed", 1, 0, 1.0, rng)
    assert d.restart and 0.8 <= d.delay <= 1.2 and d.restarts == 1
    d = policy.decide_restart(spec, "crashed", 1, 2, 1.0, rng)
    assert d.restart and 3.2 <= d.delay <= 4.8
    d = policy.decide_restart({**spec, "maxRestarts": 10}, "crashed", None, 8, 1.0, rng)
    assert d.delay <= 5  # capped
    assert not policy.decide_restart(spec, "crashed", 1, 3, 1.0, rng).restart  # budget spent
    assert policy.decide_restart(spec, "crashed", 1, 3, 61.0, rng).restarts == 1  # stable run
    assert not policy.decide_restart(spec, "finished", 0, 0, 1.0, rng).restart
    assert policy.decide_restart({**spec, "policy": "Always"}, "finished", 0, 0, 1, rng).restart
    assert not policy.decide_restart({**spec, "policy": "Never"}, "crashed", 1, 0, 1, rng).restart
    for code in (2, 3, 4):
        assert "permanent" in policy.decide_restart(spec, "crashed", code, 0, 1, rng).why
    for reason in ("stopped", "force-killed"):
        assert not policy.decide_restart({**spec, "policy": "Always"}, reason, 0, 0, 1, rng).restart


def test_token_bucket() -> None:
    b = policy.TokenBucket(10, burst=2, now=0.0)
    assert b.take(0.0) and b.take(0.0) and not b.take(0.0)
    assert 0.09 <= b.wait_time() <= 0.11
    assert b.take(0.1)
    assert policy.TokenBucket(None).take(0.0)
