"""The counter file: a device's slot mapped on its own page, read by the tower."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import pytest

from mockfleet.mock.counters import SLOT_SIZE, CounterFile, map_slot


def test_a_slot_mapped_alone_is_read_through_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "counters.bin"
    tower = CounterFile(path, 100, create=True)  # 100 slots: the last page is partial
    fd = os.open(path, os.O_RDWR)
    size = 100 * SLOT_SIZE
    try:
        for index in (0, 31, 32, 63, 99):
            # the zygote passes the size it looked up once; others let it look
            slot = map_slot(fd, index, size if index % 2 else None)
            slot.reset(1000 + index, 5.0)
            slot.sent = index + 1
            slot.publish(state="on", error="none")
        for index in (0, 31, 32, 63, 99):
            c = tower.read(index)
            assert (c.pid, c.sent, c.started, c.state, c.last_error) == (
                1000 + index,
                index + 1,
                5.0,
                "on",
                "none",
            )
        assert tower.read(1).pid == 0  # neighbours untouched
        with pytest.raises(IndexError, match="beyond the end"):
            map_slot(fd, 100)
        with pytest.raises(IndexError, match="beyond the end"):
            map_slot(fd, 100, size)
        with pytest.raises(IndexError, match="negative"):
            map_slot(fd, -1)
    finally:
        os.close(fd)
        tower.close()
    assert os.path.getsize(path) == 100 * SLOT_SIZE
    assert mmap.PAGESIZE % SLOT_SIZE == 0  # a slot never straddles two pages
