"""The fastest a fork-from-a-preloaded-parent design can start and see exits here.

The tower's targets (issue 3) came from the design it is built on: a
preloaded parent that calls ``gc.freeze()`` and forks one child per device.
This script runs that design bare, with none of the tower's work: no
triggers, no PID files or fsync, no zygote protocol, no events, no device
runtime. A parent forks N children in a tight loop; each child POSTs a small
JSON document once a second over a raw keep-alive socket (``http``), or just
sleeps (``idle``). What it reaches on a machine is a ceiling for any
supervisor of that design there, the tower included:

    python bench/fork_ceiling.py [--mocks 1000] [--kills 100]

Parents:

- ``bare``: only the standard library the child uses (json, socket, time);
- ``zygote``: the tower zygote's preload (``mockfleet.mock.preload``, a lot
  validated in a child, prepared and rehearsed, the after-fork hook of
  ``mockfleet.tower.forkhooks``): the same memory as the zygote the tower
  forks its mocks from;
- ``zygote+models``: the same, but with the lot validated in the parent, so
  it also holds pydantic and the lot schema (as the zygote did before).

Measured per parent and child kind:

- fork loop: N forks, parent CPU per fork, starts/s (N / the loop's time);
- http children: until ``mockfleet receive`` (the receiver tower_bench uses)
  has seen every child, and the children's page faults by then;
- exit: kill -9 of K random children ~20 ms apart; kill -> the kernel's exit
  notice (a pidfd turning readable, the moment the kernel would also send the
  parent SIGCHLD). No supervisor can record an exit before that notice.

Then what one page fault costs here (a first write to a fresh page, and a
copy-on-write copy in a forked child): the unit that fork, a child's start
and its exit are all made of; and what a wake-up from a short sleep costs,
with one device message's work done warm and right after such a sleep.
Every process started here is stopped at the end. Asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import mmap
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tower_bench as tb

PY = sys.executable
REPO = Path(__file__).resolve().parent.parent
PARENTS = ("bare", "zygote+models", "zygote")
CHILDREN = ("idle", "http")
#: as the tower's zygote does for every mock
CHILD_NICE = 5


# ----------------------------------------------------------------- the forker (a subprocess)


def _http_child(index: int, port: int, once: bool = False) -> None:
    """A device at its simplest: POST a 4-field JSON document once a second
    (``once``: a single POST, as the parent's warm-up)."""
    sock: socket.socket | None = None
    seq = 0
    while True:
        seq += 1
        body = json.dumps(
            {
                "device_id": f"ceiling-{index:05d}",
                "seq": seq,
                "sent_at": time.time(),
                "temperature": 21.0 + (index % 7) * 0.1,
            }
        ).encode()
        head = (
            f"POST /in/{index} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        try:
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(head + body)
            if not sock.recv(4096):
                raise OSError("closed")
        except OSError:
            if sock is not None:
                sock.close()
            sock = None
        if once:
            if sock is not None:
                sock.close()
            return
        time.sleep(1.0)


def _child(kind: str, index: int, port: int) -> None:
    try:
        os.nice(CHILD_NICE)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if kind == "http":
            _http_child(index, port)
        while True:
            time.sleep(1.0)
    finally:
        os._exit(0)


def forker(parent: str, child: str, n: int, port: int, lot: str) -> None:
    """Preload as ``parent`` says, fork ``n`` children, report, wait for the end."""
    import gc

    if parent in ("zygote", "zygote+models"):
        from mockfleet.mock.preload import isolate_validation, preload, prepare_lot
        from mockfleet.tower import forkhooks

        isolate_validation(parent == "zygote")  # as the tower's zygote does
        preload(())
        prepare_lot(lot)
        forkhooks.skip_threading_after_fork_when_alone()
    if child == "http":
        # Preloaded means warmed up too: lazy imports and caches (getaddrinfo's
        # idna codec, json's encoder) filled once here, not in every child.
        _http_child(n, port, once=True)
    gc.collect()
    gc.freeze()
    with contextlib.suppress(OSError):
        os.setsid()  # as the zygote: the whole fleet in one session (autogroup)
    anon = _anon_kib()
    pids = []
    t0 = time.monotonic()
    c0 = os.times()
    for i in range(n):
        pid = os.fork()
        if pid == 0:
            _child(child, i, port)
        pids.append(pid)
    loop_s = time.monotonic() - t0
    c1 = os.times()
    cpu = (c1.user - c0.user) + (c1.system - c0.system)
    report = {"loop_s": loop_s, "cpu_per_fork_ms": cpu / n * 1000, "anon_kib": anon, "pids": pids}
    print(json.dumps(report), flush=True)
    sys.stdin.read()  # until the bench closes our stdin
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def _anon_kib() -> int:
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith("Anonymous:"):
                return int(line.split()[1])
    return 0


# --------------------------------------------------------------------------- the bench


@dataclass
class Row:
    parent: str
    child: str
    n: int
    anon_mib: float = 0.0
    loop_s: float = 0.0
    cpu_per_fork_ms: float = 0.0
    sending_s: float | None = None
    faults: float | None = None
    child_cpu_ms: float | None = None
    steady_pct: float | None = None  # all children's CPU while sending, % of one core
    kernel_ms: list[float] | None = None

    @property
    def starts_per_s(self) -> float:
        return self.n / self.loop_s if self.loop_s > 0 else 0.0


def run_one(parent: str, child: str, n: int, kills: int, procs: tb.Processes, work: Path) -> Row:
    import tower_bench as tb

    row = Row(parent, child, n)
    rx = tb.Receiver(procs, work / f"receiver-{parent}-{child}.log")
    lot = tb.write_lot(work / "lot.yaml", rx.port)
    argv = [PY, __file__, "--forker", parent, child, str(n), str(rx.port), str(lot)]
    tb.phase(f"{parent} parent, {child} children: forking {n}")
    t0 = time.time()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(str(REPO / d) for d in ("mock", "tower"))},
    )
    procs.popens.append(proc)
    assert proc.stdout is not None and proc.stdin is not None
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"the forker ({parent}/{child}) failed to start")
    report: dict[str, Any] = json.loads(line)
    pids: list[int] = report["pids"]
    procs.note_mocks(pids)
    row.anon_mib = report["anon_kib"] / 1024
    row.loop_s = report["loop_s"]
    row.cpu_per_fork_ms = report["cpu_per_fork_ms"]
    if child == "http":
        if tb.wait_for(lambda: rx.stats()["devices"] >= n, 300, 0.25):
            row.sending_s = time.time() - t0
        row.faults = tb._mean([float(f) for f in tb.minor_faults(pids)])
        row.child_cpu_ms = tb.cpu_of(pids) / len(pids) * 1000
        c0, t0s = tb.cpu_of(pids), time.monotonic()
        time.sleep(5.0)  # the method: a 5 s window of steady sending
        row.steady_pct = (tb.cpu_of(pids) - c0) / (time.monotonic() - t0s) * 100
    else:
        time.sleep(2.0)  # the method: let the children settle into their sleep
    victims = random.Random(1).sample(pids, min(kills, n // 2))
    tb.phase(f"{parent} parent, {child} children: kill -9 of {len(victims)}")
    watch = tb.ExitWatch(victims)
    killed = tb.kill_mocks(victims, 0.02)
    tb.wait_for(lambda: len(watch.notified) >= len(killed), 30)
    watch.close()
    notified = watch.notified
    row.kernel_ms = [(notified[p] - at) * 1000 for p, at in killed.items() if p in notified]
    proc.stdin.close()
    proc.wait(60)
    rx.proc.send_signal(signal.SIGTERM)
    rx.proc.wait(30)
    return row


def fault_costs(rounds: int = 3, pages: int = 4096) -> tuple[float, float]:
    """(µs per first write to a fresh anonymous page, µs per copy-on-write copy
    in a forked child), best of ``rounds``."""
    size = pages * mmap.PAGESIZE
    fresh = []
    for _ in range(rounds):
        buf = mmap.mmap(-1, size)
        t0 = time.perf_counter()
        for off in range(0, size, mmap.PAGESIZE):
            buf[off] = 1
        fresh.append((time.perf_counter() - t0) / pages * 1e6)
        buf.close()
    cow = []
    buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for off in range(0, size, mmap.PAGESIZE):
        buf[off] = 1
    for _ in range(rounds):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            t0 = time.perf_counter()
            for off in range(0, size, mmap.PAGESIZE):
                buf[off] = 2
            os.write(w, str((time.perf_counter() - t0) / pages * 1e6).encode())
            os._exit(0)
        os.close(w)
        cow.append(float(os.read(r, 64)))
        os.close(r)
        os.waitpid(pid, 0)
    buf.close()
    return min(fresh), min(cow)


def wake_costs(work: Path, rounds: int = 200, sleep: float = 0.01) -> tuple[float, float, float]:
    """(CPU µs of one wake-up from a ``sleep``-second sleep, CPU µs of one
    device message built and encoded while the CPU is warm, the same right
    after such a sleep). A mock sleeps between messages; on machines where
    an idle CPU loses its caches (or halts through the hypervisor), the same
    work then costs several times more. The device is tower_bench's."""
    import select

    import tower_bench as tb

    from mockfleet.mock.device import CompiledLot, DeviceEngine
    from mockfleet.mock.lot import load_lot

    compiled = CompiledLot.build(load_lot(tb.write_lot(work / "wake-lot.yaml", 9)))
    engine = DeviceEngine(compiled, 0, 1_800_000_000.0)

    def message() -> None:
        sent = 0
        while not sent:  # (a tick may be a state change with nothing to send)
            now = engine.next_due()
            for msg in engine.tick(now):
                engine.encode(msg, now)
                sent += 1

    for _ in range(500):
        message()
    t0 = time.thread_time()
    for _ in range(rounds * 10):
        message()
    warm = (time.thread_time() - t0) / (rounds * 10) * 1e6
    t0 = time.thread_time()
    for _ in range(rounds):
        select.select([], [], [], sleep)
    wake = (time.thread_time() - t0) / rounds * 1e6
    t0 = time.thread_time()
    for _ in range(rounds):
        select.select([], [], [], sleep)
        message()
    after = (time.thread_time() - t0) / rounds * 1e6 - wake
    return wake, warm, after


def _f(v: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def print_table(rows: list[Row]) -> None:
    import tower_bench as tb

    head = (
        f"{'parent':13s} {'child':5s} {'N':>5s} {'anon MiB':>9s} {'fork loop s':>12s} "
        f"{'starts/s':>9s} {'ms CPU/fork':>12s} {'all sending s':>14s} {'faults':>7s} "
        f"{'child ms':>9s} {'sending %core':>14s} "
        f"{'kill->notice p50/p99 ms':>24s}"
    )
    print()
    print(head)
    print("-" * len(head))
    for r in rows:
        lat = r.kernel_ms or []
        p = f"{tb.percentile(lat, 50):.1f}/{tb.percentile(lat, 99):.1f}" if lat else "-"
        print(
            f"{r.parent:13s} {r.child:5s} {r.n:5d} {r.anon_mib:9.1f} {r.loop_s:12.2f} "
            f"{r.starts_per_s:9.0f} {r.cpu_per_fork_ms:12.2f} {_f(r.sending_s, '{:.2f}'):>14s} "
            f"{_f(r.faults, '{:.0f}'):>7s} {_f(r.child_cpu_ms):>9s} "
            f"{_f(r.steady_pct, '{:.0f}'):>14s} {p:>24s}"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mocks", type=int, default=1000, help="children per run (default 1000)")
    p.add_argument("--kills", type=int, default=100, help="children to kill -9 (default 100)")
    p.add_argument("--parents", default=",".join(PARENTS), help=",".join(PARENTS))
    p.add_argument("--children", default=",".join(CHILDREN), help="idle,http")
    p.add_argument("--forker", nargs=5, help=argparse.SUPPRESS)  # the forker subprocess
    args = p.parse_args(argv)
    if args.forker:
        parent, child, n, port, lot = args.forker
        forker(parent, child, int(n), int(port), lot)
        return 0
    import tower_bench as tb

    print(f"cpus {os.cpu_count()}, load {os.getloadavg()}", flush=True)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="fork-ceiling-") as tmp:
        work = Path(tmp)
        procs = tb.Processes(work)
        try:
            for parent in args.parents.split(","):
                for child in args.children.split(","):
                    rows.append(run_one(parent, child, args.mocks, args.kills, procs, work))
        finally:
            leftovers = procs.cleanup()
    print_table(rows)
    fresh, cow = fault_costs()
    print(f"\none page fault here: {fresh:.2f} us (fresh page), {cow:.2f} us (copy-on-write)")
    with tempfile.TemporaryDirectory(prefix="fork-ceiling-") as tmp:
        wake, warm, after = wake_costs(Path(tmp))
    print(
        f"one wake-up from a 10 ms sleep: {wake:.0f} us of CPU; one device message "
        f"(built and encoded): {warm:.0f} us warm, {after:.0f} us right after such a sleep"
    )
    if leftovers:
        print("had to kill: " + ", ".join(leftovers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
