"""Deleting files off the tower's loop (mockfleet.tower.trash)."""

from __future__ import annotations

import os
from pathlib import Path

from support.polling import wait_for

from mockfleet.tower.trash import TRASH_DIR, Trash


def test_a_deleted_file_is_gone_at_once_and_emptied_later(tmp_path: Path) -> None:
    trash = Trash(str(tmp_path))
    try:
        victim = tmp_path / "pids-m1"
        victim.write_text("old")
        assert trash.delete(str(victim)) is True
        assert not victim.exists()
        # a new file under the same name right away is never touched
        victim.write_text("new")
        wait_for(lambda: trash.emptied == 1, timeout=10)
        assert victim.read_text() == "new"
        assert os.listdir(tmp_path / TRASH_DIR) == []
    finally:
        trash.close()


def test_deleting_a_missing_file_says_so(tmp_path: Path) -> None:
    trash = Trash(str(tmp_path))
    try:
        assert trash.delete(str(tmp_path / "nothing")) is False
    finally:
        trash.close()


def test_leftovers_of_an_earlier_tower_are_emptied(tmp_path: Path) -> None:
    (tmp_path / TRASH_DIR).mkdir(mode=0o700)
    for i in range(3):
        (tmp_path / TRASH_DIR / f"old-{i}").write_text("x")
    trash = Trash(str(tmp_path))
    try:
        wait_for(lambda: not os.listdir(tmp_path / TRASH_DIR), timeout=10)
        assert (tmp_path / TRASH_DIR).stat().st_mode & 0o777 == 0o700
    finally:
        trash.close()


def test_close_finishes_the_queue(tmp_path: Path) -> None:
    trash = Trash(str(tmp_path))
    for i in range(200):
        (tmp_path / f"f{i}").write_text("x")
        assert trash.delete(str(tmp_path / f"f{i}"))
    trash.close()
    assert trash.emptied == 200
    assert os.listdir(tmp_path / TRASH_DIR) == []
