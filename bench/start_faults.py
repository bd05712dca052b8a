"""Where a forked mock's start goes: page faults and CPU per step.

A parent preloads as the tower's zygote does (lot validated in a child,
prepared and rehearsed, gc frozen, pymalloc's holes filled before each
fork), then forks N devices of tower_bench's lot, one every 10 ms. Each
child reads its own minor page faults and thread CPU time between the steps
of a mock's start, and reports them; it then exits. Children post to a
``mockfleet receive`` receiver on loopback.

    python bench/start_faults.py [--mocks 200]

Prints the median per step. A page fault here is a page the child wrote
for the first time: a copy of one it shared with the parent, or a fresh
one. Asserts nothing; every process it starts is stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import tower_bench as tb


def _minflt() -> int:
    # os.read of a preallocated path, not a file object: the measurement
    # itself should copy as little as it can
    fd = os.open("/proc/self/stat", os.O_RDONLY)
    try:
        data = os.read(fd, 1024)
    finally:
        os.close(fd)
    return int(data.rsplit(b")", 1)[1].split()[7])


def child(lot: Any, index: int, report: int) -> None:
    """Run a mock's start step by step; write [(step, cpu s, faults), ...]."""
    from mockfleet.mock.counters import SLOT_SIZE, CounterSlot
    from mockfleet.mock.runtime import DeviceRunner

    marks: list[tuple[str, float, int]] = [("fork", time.thread_time(), _minflt())]
    slot = CounterSlot(bytearray(SLOT_SIZE), 0)
    runner = DeviceRunner(lot.compiled, index, stop_file=os.devnull + ".none", counters=slot)
    marks.append(("build the device", time.thread_time(), _minflt()))
    runner.sink.open(runner.wait)
    marks.append(("connect", time.thread_time(), _minflt()))
    for step in ("first message", "second message", "third message"):
        runner._send_all(runner.engine.next_due())
        runner._publish()
        marks.append((step, time.thread_time(), _minflt()))
    os.write(report, (json.dumps(marks) + "\n").encode())


@contextlib.contextmanager
def preloaded_lot(prefix: str) -> Iterator[Any]:
    """tower_bench's lot, prepared in this process as the zygote prepares it
    (validated in a child, runtime preloaded, sink warmed, device rehearsed),
    posting to a receiver on loopback; garbage collected but not yet frozen.
    Everything it started is stopped on the way out."""
    from mockfleet.mock.preload import isolate_validation, preload, prepare_lot
    from mockfleet.tower import forkhooks

    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        work = Path(tmp)
        procs = tb.Processes(work)
        try:
            rx = tb.Receiver(procs, work / "receiver.log")
            isolate_validation()
            preload(())
            lot, _ = prepare_lot(str(tb.write_lot(work / "lot.yaml", rx.port)))
            forkhooks.skip_threading_after_fork_when_alone()
            gc.collect()
            yield lot
        finally:
            procs.cleanup()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mocks", type=int, default=200, help="children to fork (default 200)")
    args = p.parse_args(argv)
    from mockfleet.tower import immortal, prefork

    with preloaded_lot("start-faults-") as lot:
        immortal.immortalize()  # as the zygote does (CPython 3.12+)
        gc.freeze()
        r, w = os.pipe()
        pids = []
        for i in range(args.mocks):
            placeholders = prefork.fill()
            prefork.trim_heap()
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    os.close(r)
                    child(lot, i, w)
                except BaseException:
                    code = 1
                finally:
                    os._exit(code)
            del placeholders
            pids.append(pid)
            time.sleep(0.01)  # the method: one start at a time, as on a quiet machine
        os.close(w)
        data = b""
        while chunk := os.read(r, 1 << 16):
            data += chunk
        os.close(r)
        for pid in pids:
            os.waitpid(pid, 0)
    rows = [json.loads(line) for line in data.decode().splitlines()]
    if not rows:
        print("no child reported (see the receiver log)", file=sys.stderr)
        return 1
    print(f"{len(rows)} forked mocks (medians)")
    print(f"{'step':18s} {'page faults':>12s} {'CPU ms':>8s}")
    print(f"{'until first line':18s} {statistics.median(row[0][2] for row in rows):12.0f} {'':>8s}")
    for k in range(1, len(rows[0])):
        faults = statistics.median(row[k][2] - row[k - 1][2] for row in rows)
        cpu = statistics.median((row[k][1] - row[k - 1][1]) * 1000 for row in rows)
        print(f"{rows[0][k][0]:18s} {faults:12.0f} {cpu:8.2f}")
    total = statistics.median(row[-1][2] for row in rows)
    print(f"{'in all':18s} {total:12.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
