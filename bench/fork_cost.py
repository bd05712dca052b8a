"""What one fork costs the zygote, by what the forking process holds.

A mock's start and its exit both scale with the zygote's size: fork copies
the page tables and links every mapping (VMA) of the parent, exit tears them
down again. This prints fork + exit + wait of a child that exits at once,
from a fresh interpreter per stage, and (kill->reaped) how long a running
child that dirtied ~2 MiB takes from kill -9 until its parent reaps it;
then what one copy-on-write page costs a forked child on this machine:

    python bench/fork_cost.py [--rounds 200]

stages: ``bare`` (the standard library a device uses), ``pydantic``
(imported), ``lot-models`` (mockfleet's lot schema built), ``zygote+models``
(the zygote's preload with a lot validated, prepared and rehearsed in the
same process, as the zygote did before it validated in a child), ``zygote``
(the tower's zygote as it is: the lot validated in a short-lived child, so
pydantic and the schema never load, and OpenSSL only for a lot that needs
TLS). Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STAGES = ("bare", "pydantic", "lot-models", "zygote+models", "zygote")


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def measure(stage: str, rounds: int) -> str:
    import gc
    import json  # noqa: F401
    import mmap  # noqa: F401
    import select  # noqa: F401
    import socket  # noqa: F401
    import struct  # noqa: F401

    if stage != "zygote":
        # The others as they were measured before: OpenSSL loaded. The zygote
        # now loads it only for a lot that needs TLS (quickstart does not).
        import ssl  # noqa: F401

    if stage == "pydantic":
        import pydantic  # noqa: F401
    elif stage == "lot-models":
        import mockfleet.mock.lot  # noqa: F401
    elif stage in ("zygote", "zygote+models"):
        from mockfleet.mock.preload import isolate_validation, preload, prepare_lot

        # The tower's zygote validates lots in a child, so it never holds the
        # schema; "zygote+models" validates here, as it did before.
        isolate_validation(stage == "zygote")
        preload(())
        prepare_lot(str(REPO / "examples" / "quickstart.yaml"))
    gc.collect()
    if stage == "zygote":
        from mockfleet.tower import immortal

        immortal.immortalize()  # as the zygote does (CPython 3.12+)
    gc.collect()
    gc.freeze()

    def once() -> float:
        t0 = time.perf_counter()
        for _ in range(rounds):
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)
        return (time.perf_counter() - t0) / rounds * 1000

    def teardown() -> float:
        """Median ms from kill -9 to reaped, of a child that dirtied ~2 MiB of
        its own (as a running mock has): the exit a supervisor waits for."""
        took = []
        for _ in range(max(rounds // 4, 10)):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                own = [bytearray(4096) for _ in range(500)]  # noqa: F841 - held until killed
                os.write(w, b"x")
                signal.pause()
                os._exit(0)
            os.close(w)
            os.read(r, 1)
            os.close(r)
            t0 = time.perf_counter()
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            took.append((time.perf_counter() - t0) * 1000)
        return statistics.median(took)

    once()  # warm
    best = min(once() for _ in range(3))
    kill = min(teardown() for _ in range(3))
    with open("/proc/self/maps") as f:
        vmas = sum(1 for _ in f)
    anon = _status("RssAnon") / 1024
    return f"{stage:13s} {anon:8.1f} MiB {vmas:6d} {best:10.2f} ms {kill:13.2f} ms"


def page_copy_cost(pages: int = 4000) -> float:
    """Microseconds a forked child pays for its first write to one page it
    shares with its parent (fault, allocation, copy): the unit price of a
    mock's start, which writes some 800 such pages."""
    import mmap

    buf = mmap.mmap(-1, pages * mmap.PAGESIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    buf.write(b"\1" * len(buf))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        t0 = time.perf_counter()
        for offset in range(0, len(buf), mmap.PAGESIZE):
            buf[offset] = 2
        os.write(w, str(time.perf_counter() - t0).encode())
        os._exit(0)
    os.close(w)
    took = float(os.read(r, 64))
    os.close(r)
    os.waitpid(pid, 0)
    buf.close()
    return took / pages * 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=200, help="forks per measurement")
    p.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)  # one stage, in a child
    args = p.parse_args(argv)
    if args.stage:
        print(measure(args.stage, args.rounds), flush=True)
        return 0
    print(f"cpus {os.cpu_count()}, load {os.getloadavg()[0]:.1f}")
    print(f"{'stage':13s} {'anonymous':>12s} {'VMAs':>6s} {'fork+exit':>13s} {'kill->reaped':>16s}")
    for stage in STAGES:
        out = subprocess.run(
            [sys.executable, __file__, "--stage", stage, "--rounds", str(args.rounds)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        print(out.stdout.strip() or f"{stage}: failed: {out.stderr.strip()[-300:]}", flush=True)
    cost = min(page_copy_cost() for _ in range(3))
    print(f"a child's first write to a shared page (copy-on-write): {cost:.2f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
