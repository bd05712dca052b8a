"""Which shared pages a forked mock copies as it starts, and what lies on them.

A parent preloads as the tower's zygote does (see ``start_faults.py``),
notes the physical page behind every writable virtual page it has
(``/proc/self/pagemap``, root), and indexes the Python objects it holds by
page. It then forks one child per step of a mock's start, each going one
step further: right after the fork, after building the device, after its
first message. Each child reads its own pagemap: a page present in both whose
physical page differs is one the child copied (copy-on-write). Prints, for
each step, the copies it added by memory region and the types of the
objects on the copied pages.

    python bench/start_pages.py

CPython 3.11 writes an object's reference count whenever code uses it, so a
copied page is one holding an object the child used: a code object it ran, a
string constant it loaded, a type it instantiated. Asserts nothing; every
process it starts is stopped.
"""

from __future__ import annotations

import collections
import gc
import json
import os
import struct
import sys
from typing import Any

from start_faults import preloaded_lot

PAGE = 4096
PFN_MASK = (1 << 55) - 1
STEPS = ("after the fork", "building the device", "the first message")


def writable_regions() -> list[tuple[int, int, str]]:
    """(start, end, name) of every writable mapping of this process."""
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if "w" not in parts[1]:
                continue
            start, end = (int(x, 16) for x in parts[0].split("-"))
            name = os.path.basename(parts[5]) if len(parts) > 5 else "[anonymous]"
            out.append((start, end, name))
    return out


def physical_pages(regions: list[tuple[int, int, str]]) -> dict[int, int]:
    """Virtual page address -> physical frame, for every present page."""
    out: dict[int, int] = {}
    fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    try:
        for start, end, _name in regions:
            count = (end - start) // PAGE
            data = os.pread(fd, count * 8, start // PAGE * 8)
            for i, (entry,) in enumerate(struct.iter_unpack("<Q", data)):
                if entry >> 63:  # present
                    out[start + i * PAGE] = entry & PFN_MASK
    finally:
        os.close(fd)
    return out


def objects_by_page() -> dict[int, collections.Counter[str]]:
    """Page -> types of the objects starting on it (tracked objects and what they refer to)."""
    seen: dict[int, str] = {}
    for obj in gc.get_objects():
        seen.setdefault(id(obj), type(obj).__name__)
        for ref in gc.get_referents(obj):
            seen.setdefault(id(ref), type(ref).__name__)
    pages: dict[int, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for addr, name in seen.items():
        pages[addr - addr % PAGE][name] += 1
    return pages


def run_step(lot: Any, step: int, before: dict[int, int], regions: list[Any]) -> list[int]:
    """Fork a child that goes through ``STEPS[: step + 1]``; its copied pages."""
    from mockfleet.mock.counters import SLOT_SIZE, CounterSlot
    from mockfleet.mock.runtime import DeviceRunner

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            if step >= 1:
                slot = CounterSlot(bytearray(SLOT_SIZE), 0)
                stop = os.devnull + ".none"
                runner = DeviceRunner(lot.compiled, 3, stop_file=stop, counters=slot)
            if step >= 2:
                runner.sink.open(runner.wait)
                runner._send_all(runner.engine.next_due())
                runner._publish()
            now = physical_pages(regions)
            copied = [a for a, pfn in now.items() if a in before and before[a] != pfn]
            os.write(w, json.dumps(copied).encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    data = b""
    while chunk := os.read(r, 1 << 20):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return [int(a) for a in json.loads(data or b"[]")]


def main() -> int:
    if os.geteuid() != 0:
        print("start_pages.py needs root: /proc/self/pagemap hides physical pages", file=sys.stderr)
        return 2
    from mockfleet.tower import immortal, prefork

    with preloaded_lot("start-pages-") as lot:
        index = objects_by_page()  # before the freeze: frozen objects are not listed
        immortal.immortalize()  # as the zygote does (CPython 3.12+)
        gc.freeze()
        regions = writable_regions()
        placeholders = prefork.fill()
        prefork.trim_heap()
        before = physical_pages(regions)
        copies = [run_step(lot, step, before, regions) for step in range(len(STEPS))]
        del placeholders

    def region(addr: int) -> str:
        return next((name for s, e, name in regions if s <= addr < e), "?")

    done: set[int] = set()
    for step, copied in zip(STEPS, copies, strict=True):
        new = [a for a in copied if a not in done]
        done.update(copied)
        print(f"{step}: {len(new)} pages copied ({len(copied)} so far)")
        by_region = collections.Counter(region(a) for a in new)
        print("  by region: " + ", ".join(f"{n} {k}" for k, n in by_region.most_common(6)))
        types: collections.Counter[str] = collections.Counter()
        for a in new:
            for name, _n in index.get(a, collections.Counter()).most_common(2):
                types[name] += 1
        unknown = sum(1 for a in new if a not in index)
        print(
            "  pages holding (the two commonest types on each): "
            + ", ".join(f"{n} {k}" for k, n in types.most_common(10))
            + f"; no indexed object: {unknown}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
