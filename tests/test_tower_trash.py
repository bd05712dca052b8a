"""Deleting files off the tower's loop, and reusing them (mockfleet.tower.trash)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.polling import wait_for

from mockfleet.tower import trash as trash_mod
from mockfleet.tower.trash import TRASH_DIR, Trash


@pytest.fixture
def trash(tmp_path: Path) -> Iterator[Trash]:
    t = Trash(str(tmp_path))
    try:
        yield t
    finally:
        t.close()


def test_a_deleted_file_is_gone_at_once_and_kept_as_a_spare(tmp_path: Path, trash: Trash) -> None:
    victim = tmp_path / "pids-m1"
    victim.write_text("old")
    assert trash.delete(str(victim)) is True
    assert not victim.exists()
    # a new file under the same name right away is never touched
    victim.write_text("new")
    assert trash.spares == 1
    assert victim.read_text() == "new"
    assert len(os.listdir(tmp_path / TRASH_DIR)) == 1


def test_deleting_a_missing_file_says_so(tmp_path: Path, trash: Trash) -> None:
    assert trash.delete(str(tmp_path / "nothing")) is False
    assert trash.spares == 0


def test_a_spare_is_rewritten_with_exactly_the_new_content_and_mode(
    tmp_path: Path, trash: Trash
) -> None:
    old = tmp_path / "start-m1.json"
    old.write_bytes(b"x" * 1000)  # longer than what replaces it
    old.chmod(0o644)
    inode = old.stat().st_ino
    trash.delete(str(old))
    spare = trash.refill(b'{"pid": 42}\n')
    assert spare is not None
    dest = tmp_path / "m2"
    os.rename(spare, dest)
    st = dest.stat()
    assert st.st_ino == inode  # the same file: no new inode allocated
    assert dest.read_bytes() == b'{"pid": 42}\n'
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert trash.recycled == 1 and trash.spares == 0
    assert trash.refill(b"more") is None  # none left: the caller creates a file


def test_a_short_spare_grows_to_the_new_content(tmp_path: Path, trash: Trash) -> None:
    old = tmp_path / "stop-m1"
    old.write_bytes(b"")  # a stop trigger is often empty
    trash.delete(str(old))
    spare = trash.refill(b"y" * 3000)
    assert spare is not None
    assert Path(spare).read_bytes() == b"y" * 3000


def test_content_larger_than_a_block_is_not_recycled(tmp_path: Path, trash: Trash) -> None:
    old = tmp_path / "f"
    old.write_text("x")
    trash.delete(str(old))
    assert trash.refill(b"z" * (trash_mod.SPARE_BYTES + 1)) is None
    assert trash.spares == 1  # kept for content that fits


def test_unsafe_spares_are_emptied_never_written(tmp_path: Path, trash: Trash) -> None:
    """A spare that another name links to, a symlink, a FIFO, a directory or
    a file larger than a block is never written: each is emptied instead."""
    precious = tmp_path / "precious"
    precious.write_text("keep me")
    linked = tmp_path / "linked"
    os.link(precious, linked)  # a trigger hard-linked to a file someone cares about
    symlink = tmp_path / "symlink"
    symlink.symlink_to(precious)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    big = tmp_path / "big"
    big.write_bytes(b"b" * 10000)
    directory = tmp_path / "dir"
    directory.mkdir()
    for path in (linked, symlink, fifo, big, directory):
        assert trash.delete(str(path))
    assert trash.spares == 5
    assert trash.refill(b"overwritten") is None
    assert trash.spares == 0 and trash.recycled == 0
    assert precious.read_text() == "keep me"
    # all but the directory (unlink refuses it, as before) are gone
    wait_for(lambda: trash.emptied == 5, timeout=10)
    left = list((tmp_path / TRASH_DIR).iterdir())
    assert len(left) == 1 and left[0].is_dir()


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_another_users_file_is_not_recycled(tmp_path: Path, trash: Trash) -> None:
    theirs = tmp_path / "theirs"
    theirs.write_text("x")
    os.chown(theirs, 65534, 65534)
    trash.delete(str(theirs))
    assert trash.refill(b"mine") is None
    wait_for(lambda: trash.emptied == 1, timeout=10)


def test_beyond_the_spares_files_are_emptied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trash_mod, "MAX_SPARES", 3)
    trash = Trash(str(tmp_path))
    for i in range(200):
        (tmp_path / f"f{i}").write_text("x")
        assert trash.delete(str(tmp_path / f"f{i}"))
    trash.close()
    assert trash.spares == 3
    assert trash.emptied == 197
    assert len(os.listdir(tmp_path / TRASH_DIR)) == 3


def test_an_earlier_towers_trash_becomes_spares_and_the_rest_is_emptied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trash_mod, "MAX_SPARES", 2)
    (tmp_path / TRASH_DIR).mkdir(mode=0o700)
    for i in range(5):
        (tmp_path / TRASH_DIR / f"old-{i}").write_text("x")
    trash = Trash(str(tmp_path))
    try:
        assert trash.spares == 2
        wait_for(lambda: trash.emptied == 3, timeout=10)
        assert len(os.listdir(tmp_path / TRASH_DIR)) == 2
        assert (tmp_path / TRASH_DIR).stat().st_mode & 0o777 == 0o700
        spare = trash.refill(b"new")
        assert spare is not None and Path(spare).read_bytes() == b"new"
    finally:
        trash.close()


def test_the_tower_writes_a_pid_file_into_a_consumed_trigger(tmp_path: Path) -> None:
    """A real tower: the second mock's PID file is the first mock's start
    trigger, recycled, and holds the second mock's record."""
    from support.tower_harness import TowerProc, no_leftovers, pids, write_lot

    from mockfleet.tower.triggers import write_start

    with no_leftovers():
        root = tmp_path / "root"
        lot = write_lot(tmp_path / "lot.yaml", "fleet")
        tower = TowerProc(root)
        try:
            tower.wait_ready()
            first = write_start(root, "m1", lot, 1)
            first_inode = first.stat().st_ino
            wait_for(lambda: "m1" in pids(root) and not first.exists(), 30, 0.05)
            write_start(root, "m2", lot, 2)
            wait_for(lambda: "m2" in pids(root), 30, 0.05)
            rec = (root / "pids" / "m2").read_text()
            assert (root / "pids" / "m2").stat().st_ino == first_inode
            assert f'"pid":{pids(root)["m2"]},' in rec and '"index":2,' in rec
            assert stat.S_IMODE((root / "pids" / "m2").stat().st_mode) == 0o600
        finally:
            assert tower.stop() == 0
