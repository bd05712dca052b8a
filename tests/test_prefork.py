"""The zygote's memory hygiene before a fork (mockfleet.tower.prefork)."""

from __future__ import annotations

import sys

import pytest

from mockfleet.tower import prefork

pytestmark = pytest.mark.skipif(
    not prefork.free_blocks(), reason="pymalloc statistics not available"
)

#: CPython's pool size (16 KiB since 3.10): the blocks one fresh pool holds
POOL = 16 * 1024


def test_free_blocks_reports_holes_by_block_size() -> None:
    junk = [bytes(100) for _ in range(5000)]
    del junk[::2]  # every other block freed: holes in pools still in use
    holes = prefork.free_blocks()
    assert holes, "freeing every other object must leave holes"
    assert all(size % 16 == 0 and 16 <= size <= 512 for size in holes)
    assert holes.get(144, 0) >= 2000  # bytes(100): 133 bytes -> 144-byte blocks


def test_fill_leaves_only_fresh_pools() -> None:
    junk = [bytes(n) for n in range(15, 400) for _ in range(30)]
    del junk[::3]
    before = sum(prefork.free_blocks().values())
    keep = prefork.fill()
    after = prefork.free_blocks()
    assert keep
    # What is left is at most about one freshly carved pool per size class:
    # its untouched blocks cost a child nothing (zero pages, not copies).
    for size, count in after.items():
        assert count <= POOL // size, (size, count)
    assert sum(after.values()) < before


def test_placeholders_are_new_pymalloc_objects() -> None:
    for size in (16, 32, 48, 64, 512):
        obj = prefork._placeholder(size, 7)
        assert (sys.getsizeof(obj) + 15) // 16 * 16 == size


def test_trim_heap_returns_free_pages() -> None:
    import resource

    junk = [bytes(100_000) for _ in range(50)]  # C heap (above pymalloc's 512 bytes)
    del junk[1:-1]  # free chunks in the middle of the heap, not at its top
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    prefork.trim_heap()
    # what was released comes back as fresh zero pages: touching it faults again
    again = [bytearray(100_000) for _ in range(48)]
    # 48 x 25 pages; reusing chunks whose pages were kept faults a few hundred
    assert resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before >= 900
    del again
