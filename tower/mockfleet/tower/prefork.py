"""Memory hygiene in the zygote just before it forks mocks.

``fill``: take the free blocks of pymalloc's partly used pools.

A forked child that allocates a small object takes a free block from a pool
its parent partly used: it writes that block and the pool header, and the
kernel copies both pages (copy-on-write), although the child never needed the
parent's data there. Filling those holes with placeholder objects just before
forking sends the children's allocations to fresh pools instead, whose pages
are zero-filled rather than copied. The parent drops the placeholders after
the fork; the children never touch them.

``trim_heap``: the same for the C heap. glibc's ``malloc_trim`` hands the
whole free pages inside free chunks back to the kernel, so a child that
allocates there gets zero pages instead of copies of the parent's stale ones.
"""

from __future__ import annotations

import ctypes
import os
import re
import sys

_ROW = re.compile(rb"^\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*$", re.M)


def free_blocks() -> dict[int, int]:
    """Free blocks in partly used pools, by block size (CPython's pymalloc stats)."""
    if not hasattr(sys, "_debugmallocstats"):
        return {}
    r, w = os.pipe()
    saved = os.dup(2)
    try:
        sys.stderr.flush()
        os.dup2(w, 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
        os.close(w)
        w = -1
        chunks = []
        while True:
            chunk = os.read(r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(saved)
        os.close(r)
        if w >= 0:
            os.close(w)
    out: dict[int, int] = {}
    for m in _ROW.finditer(b"".join(chunks)):
        _cls, size, _pools, _used, avail = (int(x) for x in m.groups())
        if avail:
            out[size] = avail
    return out


def fill(rounds: int = 2) -> list[object]:
    """Placeholders occupying every free block of a partly used pool.

    Reading the statistics itself allocates and frees a little, so a couple
    of rounds get the count to (nearly) nothing.
    """
    keep: list[object] = []
    for _ in range(rounds):
        holes = free_blocks()
        if not holes:
            break
        # Sized up front: a list growing by realloc would itself leave holes.
        batch: list[object] = [None] * sum(holes.values())
        i = 0
        for size, count in holes.items():
            for _ in range(count):
                batch[i] = _placeholder(size, i)
                i += 1
        keep.append(batch)
    return keep


def _placeholder(size: int, i: int) -> object:
    """A new object of ``size`` bytes from pymalloc (no free list or cache)."""
    if size == 16:
        return object()
    if size == 32:
        return 1_000_000 + i  # a one-digit int: 28 bytes, never cached
    return bytes(size - 33)  # bytes of length >= 15: header 33 + n


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None)  # the process's own symbols (see linux._libc)
    except OSError:
        return None


_LIBC = _libc()


def trim_heap() -> None:
    """Release the free pages of the C heap (glibc only; a no-op elsewhere)."""
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)
