"""Telling the OOM killer's SIGKILLs from others (mockfleet.tower.oomkills)."""

from __future__ import annotations

from pathlib import Path

from mockfleet.tower.oomkills import OomKills, counter_file, read_count

V1 = "12:pids:/x\n4:memory:/pod/abc\n0::/\n"
V2 = "0::/kubepods/pod1/ctr\n"


def _file(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_the_counter_file_of_cgroup_v1_and_v2(tmp_path: Path) -> None:
    v1 = _file(tmp_path / "memory/pod/abc/memory.oom_control", "oom_kill_disable 0\noom_kill 3\n")
    assert counter_file(V1, tmp_path) == v1
    v2 = _file(tmp_path / "kubepods/pod1/ctr/memory.events", "low 0\noom 2\noom_kill 2\n")
    assert counter_file(V2, tmp_path) == v2
    assert counter_file("0::/nowhere\n", tmp_path) is None
    assert counter_file("garbage", tmp_path) is None
    assert (read_count(v1), read_count(v2)) == (3, 2)
    assert read_count(tmp_path / "missing") is None
    assert read_count(_file(tmp_path / "other", "oom 1\n")) is None


def test_each_oom_kill_is_claimed_once(tmp_path: Path) -> None:
    events = _file(tmp_path / "memory.events", "oom_kill 5\n")
    kills = OomKills(events)  # kills before the tower started are not ours
    assert not kills.claim()
    events.write_text("oom_kill 7\n")
    assert kills.claim() and kills.claim()
    assert not kills.claim()  # a third SIGKILL at the same time was someone else's
    assert not OomKills(None).claim()
    assert not OomKills(tmp_path / "missing").claim()
