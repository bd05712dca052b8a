"""The zygote's pre-fork filler: pymalloc holes are taken before a fork."""

from __future__ import annotations

import sys

import pytest

from mockfleet.tower import pymalloc_fill

pytestmark = pytest.mark.skipif(
    not pymalloc_fill.free_blocks(), reason="pymalloc statistics not available"
)

#: CPython's pool size (16 KiB since 3.10): the blocks one fresh pool holds
POOL = 16 * 1024


def test_free_blocks_reports_holes_by_block_size() -> None:
    junk = [bytes(100) for _ in range(5000)]
    del junk[::2]  # every other block freed: holes in pools still in use
    holes = pymalloc_fill.free_blocks()
    assert holes, "freeing every other object must leave holes"
    assert all(size % 16 == 0 and 16 <= size <= 512 for size in holes)
    assert holes.get(144, 0) >= 2000  # bytes(100): 133 bytes -> 144-byte blocks


def test_fill_leaves_only_fresh_pools() -> None:
    junk = [bytes(n) for n in range(15, 400) for _ in range(30)]
    del junk[::3]
    before = sum(pymalloc_fill.free_blocks().values())
    keep = pymalloc_fill.fill()
    after = pymalloc_fill.free_blocks()
    assert keep
    # What is left is at most about one freshly carved pool per size class:
    # its untouched blocks cost a child nothing (zero pages, not copies).
    for size, count in after.items():
        assert count <= POOL // size, (size, count)
    assert sum(after.values()) < before


def test_placeholders_are_new_pymalloc_objects() -> None:
    for size in (16, 32, 48, 64, 512):
        obj = pymalloc_fill._placeholder(size, 7)
        assert (sys.getsizeof(obj) + 15) // 16 * 16 == size
