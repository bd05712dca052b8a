"""The syncer thread: tickets complete in order, a readable fd says so, missing
files are fine, and both the fsync-each and the syncfs path report back."""

from __future__ import annotations

import selectors
from pathlib import Path

import pytest

from mockfleet.tower.durable import Syncer


def _wait_done(syncer: Syncer, ticket: int) -> list[str]:
    sel = selectors.DefaultSelector()
    sel.register(syncer.fileno(), selectors.EVENT_READ)
    errors: list[str] = []
    try:
        while True:
            assert sel.select(timeout=30), "the syncer never reported"
            done, errs = syncer.done()
            errors += errs
            if done >= ticket:
                return errors
    finally:
        sel.close()


@pytest.mark.parametrize("sync_from", [1000, 1], ids=["fsync-each", "syncfs"])
def test_tickets_complete_and_missing_files_are_fine(tmp_path: Path, sync_from: int) -> None:
    files = []
    for i in range(20):
        f = tmp_path / f"f{i}"
        f.write_bytes(b"x")
        files.append(str(f))
    syncer = Syncer(sync_from=sync_from, gather=0.0)
    try:
        first = syncer.submit(files[:10], str(tmp_path))
        second = syncer.submit([*files[10:], str(tmp_path / "gone")], str(tmp_path))
        assert second > first
        assert _wait_done(syncer, second) == []
        assert syncer.done()[0] == second
    finally:
        syncer.close()
