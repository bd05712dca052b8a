"""The tower against supervisord, running the same mocks on this machine.

Each mock is one device of a lot that POSTs a 4-field JSON document once a
second to a ``mockfleet receive`` HTTP receiver (a subprocess on loopback).
The tower forks mocks from its preloaded zygote on start triggers;
supervisord runs one ``mockfleet mock --lot LOT --index N`` process per mock
(``numprocs``, ``autorestart=false``, ``startsecs=0``) and is driven over
XML-RPC. Both run with restarts off, so a killed mock stays dead.

    python bench/tower_bench.py [--mocks 1000] [--supervisord-mocks N]
                                [--skip-supervisord] [--skip-upgrade]
                                [--rounds N]

Measured, per system:

- start: from the moment the start requests are issued until all N are
  running (tower: the last ``started`` event; supervisord: its last "entered
  RUNNING state" log line), as starts/s; and until the receiver has seen a
  message from every mock ("all sending").
- PSS per mock after ~10 s of sending (sum over the mocks / N), and the
  supervisor's own PSS (tower and zygote separately).
- idle CPU of the supervisor process over 10 s with every mock running.
- exit detection: kill -9 of K random mocks, ~20 ms apart; latency is the
  time the supervisor recorded the exit (tower: ``exited`` event ``ts``;
  supervisord: the millisecond timestamp of its "exited:" log line) minus
  the kill time.
- upgrade (tower only): an in-place upgrade to a local artifact with every
  mock running: how long until it supervises all of them again, that none
  restarted, and that a kill -9 afterwards is still detected.

Tower start triggers are written the documented way (content in ``ROOT/tmp``,
fsync, rename into ``start/``). The content is written and fsynced before the
clock starts, the renames after: the clock measures the tower, not this
script's fsyncs (the ``write_start`` cost per trigger is printed separately).

supervisord runs full Python interpreters (about 20+ MiB each): a memory guard
caps its mock count so the machine keeps headroom; the table then says so and
compares per-mock figures (starts/s, PSS per mock), not totals.

Every phase has a deadline; everything started here is stopped at the end
(process groups killed, children reaped). Loopback only. Prints a table with
the targets marked PASS/FAIL; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import random
import re
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import xmlrpc.client
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil
import yaml
from exit_trace import SchedTrace, anatomy, report
from start_profile import CpuProfile, breakdown, parse
from start_profile import report as profile_report

from mockfleet.tower.priority import MODES

MIB = 1024 * 1024
REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
T = TypeVar("T")


# --------------------------------------------------------------------------- small helpers


def wait_for(cond: Callable[[], T | None], timeout: float, interval: float = 0.05) -> T | None:
    """Poll ``cond`` until it returns something truthy or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


def phase(msg: str) -> None:
    """A progress line (also what an outside profiler can wait for)."""
    print(f"[{time.strftime('%H:%M:%S')}]   {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load1() -> float:
    return os.getloadavg()[0]


def mem_available() -> int:
    return int(psutil.virtual_memory().available)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def http_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def cpu_seconds(proc: psutil.Process, children: bool = False) -> float:
    """User + system CPU seconds; with ``children``, also its reaped children's."""
    t = proc.cpu_times()
    total = t.user + t.system
    if children:
        total += t.children_user + t.children_system
    return float(total)


def cpu_of(pids: Iterable[int]) -> float:
    """Summed CPU seconds of live processes (gone ones count as 0).

    From the scheduler's nanosecond account of each live thread
    (``/proc/PID/task/TID/schedstat``): the tick-based user/system times
    round a mock's few milliseconds of start-up to 0 or 10.
    """
    total = 0.0
    for pid in pids:
        try:
            threads = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue  # gone
        for tid in threads:
            with (
                contextlib.suppress(OSError, ValueError, IndexError),
                open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f,
            ):
                total += int(f.read().split()[0]) / 1e9
    return total


#: kernel threads that do memory management work (reclaim, compaction, huge
#: pages, DAMON's access monitoring): their CPU competes with the mocks
KERNEL_MM_THREADS = ("kdamond", "kswapd", "khugepaged", "kcompactd")


class MachineLoad:
    """How busy the whole machine was between two marks, and how much of it
    went to the kernel's memory-management threads.

    On a VM whose host runs DAMON-based proactive reclaim (``kdamond``), that
    thread's page sampling walks the reverse mappings of pages that thousands
    of forked mocks share, and holds the locks a mock's exit needs: its CPU
    is part of the picture when a latency figure looks bad.
    """

    def __init__(self) -> None:
        self.marks: dict[str, tuple[float, float, dict[int, float]]] = {}
        self.kthreads = kernel_mm_threads()

    def mark(self, name: str) -> None:
        # Idle time is kept exactly (tickless idle); busy time is sampled at
        # timer ticks and misses most of thousands of sub-millisecond bursts.
        t = psutil.cpu_times()
        idle = t.idle + getattr(t, "iowait", 0.0)
        # Counted per thread, and looked up again only when one has gone (a
        # scan reads every mock's /proc entry): this VM's agent restarts
        # kdamond now and then, under a new pid.
        if not all(psutil.pid_exists(pid) for pid in self.kthreads):
            self.kthreads = kernel_mm_threads()
        kthreads = {pid: cpu_of([pid]) for pid in self.kthreads}
        self.marks[name] = (time.monotonic(), idle, kthreads)

    def between(self, a: str, b: str) -> tuple[float, float] | None:
        """(% of all CPUs busy, % of one core used by the memory threads)."""
        if a not in self.marks or b not in self.marks:
            return None
        (t0, idle0, k0), (t1, idle1, k1) = self.marks[a], self.marks[b]
        span = max(t1 - t0, 1e-6)
        cpus = psutil.cpu_count() or 1
        busy = 1 - (idle1 - idle0) / (span * cpus)
        # a thread started between the marks counts from 0; one that ended is lost
        kernel = sum(cpu - k0.get(pid, 0.0) for pid, cpu in k1.items())
        return max(0.0, busy) * 100, kernel / span * 100


def kernel_mm_threads() -> list[int]:
    return [
        p.pid
        for p in psutil.process_iter(["name"])
        if (p.info["name"] or "").startswith(KERNEL_MM_THREADS)
    ]


DAMON = Path("/sys/kernel/mm/damon/admin/kdamonds")


def damon_snapshot() -> list[tuple[str, int, float]]:
    """Each DAMON monitor of this kernel: (state, kdamond pid, its age in s);
    empty where the kernel has none. A long-running monitor has refined its
    regions around the pages every mock shares, and walks them more often."""
    out = []
    for d in sorted(DAMON.glob("[0-9]*")):
        try:
            state = (d / "state").read_text().strip()
            pid = int((d / "pid").read_text().strip() or 0)
        except (OSError, ValueError):
            continue
        age = -1.0
        if pid > 0:
            with contextlib.suppress(psutil.Error):
                age = time.time() - psutil.Process(pid).create_time()
        out.append((state, pid, age))
    return out


def damon_summary(before: list[tuple[str, int, float]], after: list[tuple[str, int, float]]) -> str:
    """One line on the page monitor over a run, for reading its latency figures."""
    if not before and not after:
        return "no DAMON page monitor in this kernel"
    parts = []
    for state, pid, age in before:
        parts.append(f"{state}" + (f", kdamond {pid} running for {age:.0f} s" if pid > 0 else ""))
    text = "DAMON page monitor at the start: " + "; ".join(parts)
    if [p for _, p, _ in before] != [p for _, p, _ in after]:
        text += "; restarted during the run (" + ", ".join(f"{s} {p}" for s, p, _ in after) + ")"
    return text


def minor_faults(pids: Iterable[int]) -> list[int]:
    """Minor page faults of each live process so far (copy-on-write copies and
    first touches: what a forked child pays for every page it writes)."""
    out = []
    for pid in pids:
        stat = f"/proc/{pid}/stat"
        with contextlib.suppress(OSError, ValueError, IndexError), open(stat, "rb") as f:
            out.append(int(f.read().rsplit(b")", 1)[1].split()[7]))
    return out


def pss_of(pids: Iterable[int]) -> tuple[float, int, float]:
    """(sum of PSS in bytes, how many processes were measured, sum of USS)."""
    total = uss = 0.0
    n = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            info = psutil.Process(pid).memory_full_info()
            total += info.pss
            uss += info.uss
            n += 1
    return total, n, uss


# --------------------------------------------------------------------------- processes


class Processes:
    """Everything this script starts, so that all of it is stopped at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.popens: list[subprocess.Popen[bytes]] = []
        self.mocks: dict[int, float] = {}  # pid -> create_time

    def spawn(self, argv: list[str], log: Path, **kw: Any) -> subprocess.Popen[bytes]:
        out = open(log, "ab")  # noqa: SIM115 - closed with the process below
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=kw.pop("stdout", out),
            stderr=out,
            start_new_session=True,  # its own process group: killpg reaches its helpers
            **kw,
        )
        out.close()
        self.popens.append(proc)
        return proc

    def note_mocks(self, pids: Iterable[int]) -> None:
        for pid in pids:
            if pid not in self.mocks:
                with contextlib.suppress(psutil.Error):
                    self.mocks[pid] = psutil.Process(pid).create_time()

    def stop(self, proc: subprocess.Popen[bytes], timeout: float) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL the process group."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        return None

    def cleanup(self) -> list[str]:
        """Stop everything; returns what had to be killed (for the report)."""
        leftovers: list[str] = []
        for proc in reversed(self.popens):
            if proc.poll() is None:
                self.stop(proc, 30)
        for pid, created in self.mocks.items():
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(pid)
                if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                    leftovers.append(f"mock pid {pid}")
                    p.kill()
        marker = str(self.workdir)
        ours = {os.getpid(), *(a.pid for a in psutil.Process().parents())}  # (--keep DIR)
        for p in psutil.process_iter(["pid", "cmdline"]):
            with contextlib.suppress(psutil.Error, TypeError):
                if p.pid not in ours and any(marker in a for a in p.info["cmdline"] or ()):
                    leftovers.append(f"pid {p.pid} {' '.join(p.info['cmdline'])[:80]}")
                    p.kill()
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                leftovers.append(f"child pid {child.pid}")
                child.kill()
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        return leftovers


class Receiver:
    """``mockfleet receive --http 127.0.0.1:0`` in a subprocess."""

    def __init__(self, procs: Processes, log: Path) -> None:
        self.proc = procs.spawn(
            [PY, "-m", "mockfleet.operator.entry", "receive", "--http", "127.0.0.1:0", "--quiet"],
            log,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if not match:
            raise SystemExit(f"the receiver did not start: {line!r} (see {log})")
        self.port = int(match.group(1))

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = http_json(f"http://127.0.0.1:{self.port}/stats", 30)
        return result


def write_lot(path: Path, port: int) -> Path:
    doc = {
        "apiVersion": "mockfleet.dev/v1alpha1",
        "kind": "MockLot",
        "metadata": {"name": "bench"},
        "spec": {
            "devices": 100000,
            "seed": 1,
            "deviceId": "bench-{index:05d}",
            "timing": {"interval": "1s"},
            "payload": {
                "template": {
                    "ts": {"$gen": "timestamp", "format": "epoch"},
                    "temperature": {"$gen": "sine", "period": "1h", "amplitude": 3, "offset": 21},
                    "humidity": {"$gen": "randomWalk", "start": 45, "step": 0.5},
                    "status": "ok",
                }
            },
            "restart": {"policy": "Never"},  # as supervisord's autorestart=false
            "sink": {"type": "http", "url": f"http://127.0.0.1:{port}/in/{{id}}"},
        },
    }
    path.write_text(yaml.safe_dump(doc))
    return path


# --------------------------------------------------------------------------- results


@dataclass
class Result:
    name: str
    requested: int
    note: str = ""
    running: int = 0
    start_s: float | None = None
    ready_s: float | None = None
    ready_devices: int = 0
    msgs_per_mock_s: float | None = None
    cpu_per_start_ms: float | None = None  # the supervisor side (tower: + zygote)
    mock_boot_cpu_ms: float | None = None  # a mock's own CPU until all were sending
    mocks_cpu: float | None = None  # all mocks together while sending, % of a core
    pss_per_mock: float | None = None  # MiB
    uss_per_mock: float | None = None  # MiB: private, nothing shared
    supervisor_pss: float | None = None  # MiB
    helper_pss: float | None = None  # MiB (the tower's zygote)
    validator_pss: float | None = None  # MiB (the zygote's lot validator, pydantic loaded)
    idle_cpu: float | None = None  # % of one core
    helper_idle_cpu: float | None = None
    kills: int = 0
    detected: int = 0
    exit_ms: list[float] = field(default_factory=list)
    kernel_ms: list[float] = field(default_factory=list)  # kill -> the kernel's exit notice
    own_ms: list[float] = field(default_factory=list)  # that notice -> the supervisor's record
    start_faults: float | None = None  # minor page faults per mock, start-up + first sends
    loads: dict[str, float] = field(default_factory=dict)
    #: phase -> (% of all CPUs busy, % of a core used by kernel memory threads)
    machine: dict[str, tuple[float, float]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def starts_per_s(self) -> float | None:
        if self.start_s is None or self.start_s <= 0:
            return None
        return self.running / self.start_s

    @property
    def machine_ms_per_start(self) -> float | None:
        """CPU time of the whole machine (every process and the kernel) per
        start during the start burst: the budget a start rate has to fit in."""
        if self.start_s is None or not self.running or "start" not in self.machine:
            return None
        busy = self.machine["start"][0] / 100
        return busy * (os.cpu_count() or 1) * self.start_s / self.running * 1000


def measure_ready(
    rx: Receiver, n: int, t0: float, timeout: float, res: Result, mock_pids: list[int]
) -> None:
    """Wait until the receiver has seen every mock (wall time since ``t0``), then
    note the CPU the mocks have used so far (start-up plus their first sends)."""
    seen = wait_for(lambda: rx.stats()["devices"] >= n, timeout, 0.25)
    res.ready_devices = int(rx.stats()["devices"])
    if seen:
        res.ready_s = time.time() - t0
    res.mock_boot_cpu_ms = cpu_of(mock_pids) / max(len(mock_pids), 1) * 1000
    faults = minor_faults(mock_pids)
    res.start_faults = _mean([float(f) for f in faults])


def measure_steady(
    rx: Receiver,
    res: Result,
    mock_pids: list[int],
    supervisor: psutil.Process,
    helper: psutil.Process | None,
    seconds: float,
    machine: MachineLoad | None = None,
) -> None:
    """Sending rate, idle CPU (over ``seconds``) and PSS with all mocks running."""
    res.loads["idle"] = load1()
    before = rx.stats()["received"]
    mocks0 = cpu_of(mock_pids)
    cpu0 = cpu_seconds(supervisor)
    hcpu0 = cpu_seconds(helper) if helper else 0.0
    if machine:
        machine.mark("steady0")
    t0 = time.monotonic()
    time.sleep(seconds)  # the measurement window itself
    elapsed = time.monotonic() - t0
    if machine:
        machine.mark("steady1")
        res.machine["steady"] = machine.between("steady0", "steady1") or (0.0, 0.0)
    res.idle_cpu = (cpu_seconds(supervisor) - cpu0) / elapsed * 100
    res.mocks_cpu = (cpu_of(mock_pids) - mocks0) / elapsed * 100
    if helper:
        res.helper_idle_cpu = (cpu_seconds(helper) - hcpu0) / elapsed * 100
    res.msgs_per_mock_s = (rx.stats()["received"] - before) / elapsed / max(len(mock_pids), 1)
    res.loads["pss"] = load1()
    phase("memory (PSS of every mock)")
    total, measured, uss = pss_of(mock_pids)
    res.pss_per_mock = total / max(measured, 1) / MIB
    res.uss_per_mock = uss / max(measured, 1) / MIB
    res.supervisor_pss = pss_of([supervisor.pid])[0] / MIB
    if helper:
        res.helper_pss = pss_of([helper.pid])[0] / MIB
        # the zygote's one child: its lot validator (the mocks are the tower's)
        with contextlib.suppress(psutil.Error):
            res.validator_pss = pss_of([c.pid for c in helper.children()])[0] / MIB


def renice(pid: int, nice: int | None, res: Result) -> None:
    """Give the supervisor process alone (not its mocks) another nice value:
    shows how much of the exit latency is waiting for a CPU."""
    if nice is None:
        return
    os.setpriority(os.PRIO_PROCESS, pid, nice)
    res.note += f"; supervisor reniced to {nice} before the kills"


class ExitWatch:
    """The kernel's own exit notice for each victim, apart from the supervisor's.

    A pidfd, opened before the kill, becomes readable when the kernel reports
    the exit: the moment it also sends the parent SIGCHLD, after the dying
    process has torn down its address space. A thread here polls them, so
    ``kill -> notified`` is the kernel's part of the latency and ``notified ->
    recorded`` the supervisor's (this thread's own wake-up delay counts on
    the kernel's side, so the supervisor's share can come out a little low).
    """

    def __init__(self, pids: list[int]) -> None:
        self.notified: dict[int, float] = {}
        self._fds: dict[int, int] = {}
        for pid in pids:
            with contextlib.suppress(OSError, AttributeError):
                self._fds[os.pidfd_open(pid)] = pid
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        poller = select.poll()
        for fd in self._fds:
            poller.register(fd, select.POLLIN)
        pending = set(self._fds)
        while pending and not self._done.is_set():
            for fd, _ev in poller.poll(200):
                self.notified[self._fds[fd]] = time.time()
                poller.unregister(fd)
                pending.discard(fd)

    def close(self) -> None:
        self._done.set()
        self._thread.join(5)
        for fd in self._fds:
            os.close(fd)


def split_latencies(
    killed: dict[int, float], notified: dict[int, float], recorded: dict[int, float]
) -> tuple[list[float], list[float]]:
    """(kill -> kernel notice, kernel notice -> recorded) in ms, per victim seen by both."""
    kernel, own = [], []
    for pid, at in killed.items():
        if pid in notified and pid in recorded:
            kernel.append((notified[pid] - at) * 1000)
            own.append((recorded[pid] - notified[pid]) * 1000)
    return kernel, own


Recording = TypeVar("Recording", CpuProfile, SchedTrace)


def perf_recording(kind: type[Recording], flag: str, res: Result) -> Recording | None:
    """A perf recording asked for by ``flag`` (``--profile-start``, ``--trace-exits``),
    or None when this machine cannot make it (and why, in the note)."""
    why = kind.why_not()
    if why:
        res.note += f"; {flag} skipped: {why}"
        return None
    return kind()


def kill_mocks(pids: list[int], spacing: float) -> dict[int, float]:
    """kill -9 each pid, ``spacing`` seconds apart; returns pid -> kill time (epoch)."""
    killed: dict[int, float] = {}
    for pid in pids:
        at = time.time()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            killed[pid] = at
        time.sleep(spacing)  # spacing the kills is the method, not a wait for a condition
    return killed


# --------------------------------------------------------------------------- tower


class Tower:
    def __init__(
        self, procs: Processes, root: Path, log: Path, max_mocks: int, start_priority: str = "auto"
    ) -> None:
        self.root = root
        self.ready_event: dict[str, Any] = {}
        self.port = free_port()
        self.proc = procs.spawn(
            [
                PY,
                "-m",
                "mockfleet.tower",
                "--root",
                str(root),
                "--http",
                f"127.0.0.1:{self.port}",
                "--stop-grace",
                "5s",
                "--max-mocks",
                str(max_mocks),
                "--start-priority",
                start_priority,
            ],
            log,
        )
        self.events_path = root / "events.jsonl"
        self._offset = 0
        self._events: list[dict[str, Any]] = []

    def events(self) -> list[dict[str, Any]]:
        """All events so far (read incrementally)."""
        if not self.events_path.exists():
            return self._events
        with open(self.events_path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self._offset += end
        for line in data[:end].splitlines():
            with contextlib.suppress(ValueError):
                self._events.append(json.loads(line))
        return self._events

    def pids(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for name in os.listdir(self.root / "pids"):
            with contextlib.suppress(ValueError, OSError):
                out[name] = int(json.loads((self.root / "pids" / name).read_bytes())["pid"])
        return out

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = http_json(f"http://127.0.0.1:{self.port}/status")
        return result

    def ready(self, timeout: float) -> int | None:
        """The zygote's pid once it is ready."""
        found = wait_for(
            lambda: (
                [e for e in self.events() if e["event"] == "zygote-ready"]
                or self.proc.poll() is not None
            ),
            timeout,
        )
        if not isinstance(found, list):
            return None
        self.ready_event = found[-1]
        return int(found[-1]["pid"])


def stage_starts(root: Path, lot: Path, n: int) -> list[tuple[str, str]]:
    """Write and fsync N start triggers in ROOT/tmp; returns (tmp, final) pairs."""
    from mockfleet.tower.triggers import ensure_dirs

    ensure_dirs(root)
    pairs = []
    for i in range(n):
        mock_id = f"m{i:05d}"
        tmp = root / "tmp" / f".{mock_id}.json.stage"
        data = json.dumps({"lot": str(lot), "index": i}).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        pairs.append((str(tmp), str(root / "start" / f"{mock_id}.json")))
    return pairs


def write_start_cost(workdir: Path, lot: Path, n: int = 50) -> float:
    """Milliseconds per ``write_start`` call (two fsyncs each) into an unwatched root."""
    from mockfleet.tower.triggers import write_start

    root = workdir / "writer-probe"
    t0 = time.monotonic()
    for i in range(n):
        write_start(root, f"p{i}", lot, i)
    return (time.monotonic() - t0) / n * 1000


def build_artifact(path: Path) -> str:
    """A zip of the current mockfleet.tower and mockfleet.mock sources (as the tests do)."""
    from mockfleet.tower.upgrade import build_artifact as pack

    return pack(path, [str(REPO / "tower"), str(REPO / "mock")])


def exit_latencies(events: list[dict[str, Any]], killed: dict[int, float]) -> list[float]:
    return [(at - killed[pid]) * 1000 for pid, at in exit_times(events, killed).items()]


def exit_times(events: list[dict[str, Any]], killed: dict[int, float]) -> dict[int, float]:
    """pid -> when the tower recorded its exit (epoch), for the killed pids."""
    return {
        int(e["pid"]): float(e["ts"])
        for e in events
        if e["event"] == "exited" and e.get("pid") in killed
    }


def run_tower(args: argparse.Namespace, procs: Processes, workdir: Path, n: int) -> Result:
    res = Result("tower", n)
    base = workdir / f"tower-{n}"
    base.mkdir()
    rx = Receiver(procs, base / "receiver.log")
    lot = write_lot(base / "lot.yaml", rx.port)
    res.extra["write_start_ms"] = write_start_cost(base, lot)
    tower = Tower(
        procs,
        base / "root",
        base / "tower.log",
        max_mocks=max(2 * n, 1024),
        start_priority=args.start_priority,
    )
    zygote_pid = tower.ready(60)
    if zygote_pid is None:
        res.note = f"tower did not become ready (see {base / 'tower.log'})"
        return res
    res.extra["zygote"] = zygote_summary(tower.ready_event)
    res.extra["start_priority"] = start_priority_summary(tower.events())
    damon_before = damon_snapshot()
    pairs = stage_starts(tower.root, lot, n)
    supervisor = psutil.Process(tower.proc.pid)
    helper = psutil.Process(zygote_pid)

    # --- start
    phase(f"starting {n} mocks")
    cpu0 = cpu_seconds(supervisor) + cpu_seconds(helper, children=True)
    res.loads["start"] = load1()
    machine = MachineLoad()
    profile = perf_recording(CpuProfile, "--profile-start", res) if args.profile_start else None
    pipeline = {"tower": tower.proc.pid, "zygote": zygote_pid}
    waits0 = {who: schedstat(pid) for who, pid in pipeline.items()}
    with profile or contextlib.nullcontext():
        machine.mark("start0")
        t0 = time.time()
        for tmp, final in pairs:
            os.rename(tmp, final)
        from mockfleet.tower.triggers import fsync_dir

        fsync_dir(tower.root / "start")
        res.extra["rename_s"] = time.time() - t0

        def all_started() -> list[dict[str, Any]] | None:
            started = [e for e in tower.events() if e["event"] == "started"]
            return started if len(started) >= n else None

        # The start time is the tower's last "started" event, not when this
        # loop sees it: a slower poll only takes less CPU from the machine.
        started = wait_for(all_started, args.start_timeout, 0.1)
        machine.mark("start1")
    res.extra["pipeline_waits"] = pipeline_waits(
        waits0, {who: schedstat(pid) for who, pid in pipeline.items()}
    )
    if profile is not None:
        roles = {
            tower.proc.pid: "tower",
            zygote_pid: "zygote",
            rx.proc.pid: "receiver",
            os.getpid(): "this bench",
        }
        roles.update({c.pid: "zygote's lot validator" for c in helper.children()})
        if profile.pid is not None:
            roles[profile.pid] = "perf itself"
        res.extra["start_profile"] = profile_report(
            breakdown(parse(profile.lines), roles),
            len([e for e in tower.events() if e["event"] == "started"]),
            profile.seconds,
            os.cpu_count() or 1,
        )
    res.machine["start"] = machine.between("start0", "start1") or (0.0, 0.0)
    if started is None:
        started = [e for e in tower.events() if e["event"] == "started"]
        res.note = f"only {len(started)} started within {args.start_timeout:.0f}s"
    res.running = len(started)
    cpu1 = cpu_seconds(supervisor) + cpu_seconds(helper, children=True)
    res.cpu_per_start_ms = (cpu1 - cpu0) / max(res.running, 1) * 1000
    if started:
        res.start_s = max(float(e["ts"]) for e in started) - t0
    pids = tower.pids()
    procs.note_mocks(pids.values())
    measure_ready(rx, n, t0, args.ready_timeout, res, list(pids.values()))

    # --- steady state
    phase(f"{res.running} running; sending for {args.settle:.0f}s, then idle CPU")
    time.sleep(args.settle)  # let them send for a while before measuring memory
    measure_steady(rx, res, list(pids.values()), supervisor, helper, args.idle_seconds, machine)

    # --- exit detection
    renice(supervisor.pid, args.renice_supervisor, res)
    res.loads["kill"] = load1()
    victims = random.Random(1).sample(sorted(pids.values()), min(args.kills, n // 2))
    phase(f"exit detection: kill -9 of {len(victims)} mocks")
    watch = ExitWatch(victims)
    trace = perf_recording(SchedTrace, "--trace-exits", res) if args.trace_exits else None
    with trace or contextlib.nullcontext():
        machine.mark("kill0")
        killed = kill_mocks(victims, args.kill_spacing)
        machine.mark("kill1")
        res.machine["kill"] = machine.between("kill0", "kill1") or (0.0, 0.0)
        res.extra["damon"] = damon_summary(damon_before, damon_snapshot())
        res.kills = len(killed)
        lat = wait_for(
            lambda: x if len(x := exit_latencies(tower.events(), killed)) >= len(killed) else None,
            30,
        )
    if trace is not None:
        res.extra["exit_anatomy"] = report(anatomy(trace.lines))
    watch.close()
    res.exit_ms = lat or exit_latencies(tower.events(), killed)
    res.detected = len(res.exit_ms)
    res.kernel_ms, res.own_ms = split_latencies(
        killed, watch.notified, exit_times(tower.events(), killed)
    )
    crashed = [e for e in tower.events() if e["event"] == "exited" and e.get("pid") in killed]
    res.extra["kill_reasons"] = sorted({f"{e.get('reason')}/sig{e.get('signal')}" for e in crashed})

    if not args.skip_upgrade:
        upgrade_phase(args, tower, base, res)
    res.extra["tower_exit"] = procs.stop(tower.proc, 60)
    procs.stop(rx.proc, 10)  # a later round starts its own
    return res


def run_rounds(args: argparse.Namespace, procs: Processes, workdir: Path) -> Result:
    """The tower's phase ``--rounds`` times; the median round, the others listed."""
    if args.rounds == 1:
        return run_tower(args, procs, workdir, args.mocks)
    results = []
    for k in range(1, args.rounds + 1):
        phase(f"round {k} of {args.rounds}")
        sub = workdir / f"round-{k}"
        sub.mkdir()
        results.append(run_tower(args, procs, sub, args.mocks))
    for line in rounds_summary(results):
        print(line, flush=True)
    return median_round(results)


def median_round(results: list[Result]) -> Result:
    """The round whose start rate is the median (the lower middle one of an
    even count); rounds that measured none sort first."""
    ranked = sorted(results, key=lambda r: r.starts_per_s or 0.0)
    return ranked[(len(ranked) - 1) // 2]


def rounds_summary(results: list[Result]) -> list[str]:
    """One line per round, then the spread of the start rate."""
    lines = []
    for k, r in enumerate(results, 1):
        lines.append(
            f"round {k}: {_f(r.starts_per_s, '{:.0f}')} starts/s, "
            f"{_f(r.machine_ms_per_start, '{:.2f}')} ms of machine CPU per start, "
            f"exit p99 {_f(_lat(r, 99), '{:.2f}')} ms, "
            f"PSS per mock {_f(r.pss_per_mock, '{:.2f}')} MiB"
        )
    rates = sorted(r.starts_per_s for r in results if r.starts_per_s)
    if rates:
        median = median_round(results).starts_per_s
        lines.append(
            f"rounds: starts/s {rates[0]:.0f}-{rates[-1]:.0f}, median {_f(median, '{:.0f}')}; "
            "the table below is the median round"
        )
    return lines


def upgrade_phase(args: argparse.Namespace, tower: Tower, base: Path, res: Result) -> None:
    from mockfleet.tower.triggers import write_upgrade

    phase("in-place upgrade")
    version = "99.0.0-bench"
    artifact = base / f"mockfleet-{version}.zip"
    sha = build_artifact(artifact)
    before = tower.pids()
    n_events = len(tower.events())
    res.loads["upgrade"] = load1()
    t0 = time.time()
    write_upgrade(tower.root, version, str(artifact), sha)

    def new_events() -> list[dict[str, Any]]:
        return tower.events()[n_events:]

    def adopted_all() -> list[dict[str, Any]] | None:
        evs = new_events()
        adopted = [e for e in evs if e["event"] == "adopted"]
        done = any(e["event"] == "upgrade-complete" for e in evs)
        return evs if done and len(adopted) >= len(before) else None

    evs = wait_for(adopted_all, args.upgrade_timeout, 0.02) or new_events()
    up: dict[str, Any] = {"mocks": len(before)}

    def first_ts(name: str) -> float | None:
        for e in evs:
            if e["event"] == name and (name != "tower-started" or e.get("version") == version):
                return float(e["ts"])
        return None

    exec_ts = first_ts("upgrade-exec")
    started_ts = first_ts("tower-started")
    complete_ts = first_ts("upgrade-complete")
    adopted = [e for e in evs if e["event"] == "adopted"]
    failed = [e for e in evs if e["event"] == "upgrade-failed"]
    up["failed"] = failed[0].get("reason") if failed else None
    if exec_ts is not None:
        up["trigger_to_exec_s"] = exec_ts - t0
    if exec_ts is not None and started_ts is not None:
        up["exec_to_started_s"] = started_ts - exec_ts
    if exec_ts is not None and adopted and len(adopted) >= len(before):
        up["exec_to_all_adopted_s"] = max(float(e["ts"]) for e in adopted) - exec_ts
    if complete_ts is not None:
        up["trigger_to_complete_s"] = complete_ts - t0
    up["adopted"] = len(adopted)
    up["adopted_as_children"] = sum(1 for e in adopted if e.get("child"))
    after = tower.pids()
    up["same_pid_tower"] = any(
        e["event"] == "tower-started" and e.get("pid") == tower.proc.pid for e in evs
    )
    up["restarted"] = sum(1 for k, pid in before.items() if after.get(k) not in (None, pid))
    up["missing"] = sum(1 for k in before if k not in after)
    up["exits_during_upgrade"] = sum(1 for e in evs if e["event"] == "exited")
    with contextlib.suppress(OSError, ValueError, http.client.HTTPException):
        up["status_version"] = wait_for(
            lambda: _quiet(lambda: tower.status()["version"] == version and version), 10, 0.1
        )
    # A kill -9 after the upgrade is still seen, with its signal.
    victims = random.Random(2).sample(sorted(after.values()), min(10, len(after)))
    killed = kill_mocks(victims, args.kill_spacing)
    lat = wait_for(
        lambda: x if len(x := exit_latencies(tower.events(), killed)) >= len(killed) else None,
        30,
    )
    up["post_kills"] = len(killed)
    up["post_detected"] = len(lat or [])
    up["post_exit_ms_max"] = max(lat) if lat else None
    res.extra["upgrade"] = up


def _quiet(fn: Callable[[], T]) -> T | None:
    try:
        return fn()
    except (OSError, ValueError, http.client.HTTPException):
        return None


# --------------------------------------------------------------------------- supervisord

_LOG_TS = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) \w+ "
_RUNNING_RE = re.compile(_LOG_TS + r"success: (\S+) entered RUNNING state")
_EXITED_RE = re.compile(_LOG_TS + r"exited: (\S+) \(terminated by SIGKILL")


def _log_time(stamp: str, millis: str) -> float:
    """supervisord's local-time log stamp -> epoch seconds (ms resolution)."""
    return time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) + int(millis) / 1000


def supervisord_conf(base: Path, lot: Path, n: int, port: int) -> Path:
    hard = __import__("resource").getrlimit(__import__("resource").RLIMIT_NOFILE)[1]
    minfds = min(max(1024, 4 * n + 256), hard if hard > 0 else 4 * n + 256)
    conf = f"""\
[inet_http_server]
port=127.0.0.1:{port}

[supervisord]
logfile={base / "supervisord.log"}
logfile_maxbytes=0
loglevel=info
pidfile={base / "supervisord.pid"}
nodaemon=true
minfds={minfds}
minprocs={n + 256}
childlogdir={base}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[program:mock]
command={PY} -m mockfleet.operator.entry mock --lot {lot} --index %(process_num)d
process_name=%(program_name)s_%(process_num)d
numprocs={n}
autostart=false
autorestart=false
startsecs=0
stopsignal=TERM
stopwaitsecs=5
stdout_logfile=NONE
stderr_logfile=NONE
"""
    path = base / "supervisord.conf"
    path.write_text(conf)
    return path


class _TimeoutTransport(xmlrpc.client.Transport):
    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        conn = super().make_connection(host)
        conn.timeout = self._timeout
        return conn


def probe_mock_memory(lot: Path, rx: Receiver, procs: Processes, log: Path) -> float:
    """USS in bytes of one standalone ``mockfleet mock`` once it has sent."""
    proc = procs.spawn([PY, "-m", "mockfleet.operator.entry", "mock", "--lot", str(lot),
                        "--index", "99999"], log)  # fmt: skip
    try:
        wait_for(lambda: rx.stats()["devices"] >= 1, 30, 0.1)
        return float(psutil.Process(proc.pid).memory_full_info().uss)
    finally:
        procs.stop(proc, 10)


def run_supervisord(args: argparse.Namespace, procs: Processes, workdir: Path) -> Result:
    base = workdir / "supervisord"
    base.mkdir()
    rx = Receiver(procs, base / "receiver.log")
    lot = write_lot(base / "lot.yaml", rx.port)
    want = args.supervisord_mocks or args.mocks
    per_mock = probe_mock_memory(lot, rx, procs, base / "probe.log")
    budget = mem_available() - args.mem_reserve_gib * 1024 * MIB
    cap = max(0, int(budget / (per_mock * 1.15)))
    n = min(want, cap)
    res = Result("supervisord", want)
    res.extra["probe_uss_mib"] = per_mock / MIB
    if n < want:
        res.note = (
            f"memory guard: {n} of {want} mocks (one mock ~{per_mock / MIB:.0f} MiB USS, "
            f"{mem_available() / 2**30:.1f} GiB available, {args.mem_reserve_gib} GiB kept free)"
        )
    if n < 2:
        return res
    res.requested = n
    port = free_port()
    conf = supervisord_conf(base, lot, n, port)
    sv = procs.spawn([PY, "-m", "supervisor.supervisord", "-n", "-c", str(conf)], base / "sd.out")
    rpc: Any = xmlrpc.client.ServerProxy(
        f"http://127.0.0.1:{port}/RPC2", transport=_TimeoutTransport(args.start_timeout)
    )
    if not wait_for(
        lambda: _quiet(lambda: rpc.supervisor.getState()["statename"] == "RUNNING"), 60
    ):
        res.note = "supervisord did not come up (see sd.out)"
        return res
    log_path = base / "supervisord.log"

    # --- start
    # startAllProcesses forks every process inside the one RPC call (supervisord
    # is single-threaded and answers nothing else meanwhile), so it runs in a
    # thread and progress is read from the log.
    supervisor = psutil.Process(sv.pid)
    cpu0 = cpu_seconds(supervisor)
    res.loads["start"] = load1()
    t0 = time.time()
    returned: list[float] = []

    def start_all() -> None:
        starter: Any = xmlrpc.client.ServerProxy(
            f"http://127.0.0.1:{port}/RPC2", transport=_TimeoutTransport(args.start_timeout)
        )
        with contextlib.suppress(OSError, xmlrpc.client.Error, http.client.HTTPException):
            starter.supervisor.startAllProcesses(False)
            returned.append(time.time() - t0)

    thread = threading.Thread(target=start_all, daemon=True)
    thread.start()
    low_memory = False

    def running_stamps() -> list[float]:
        return [_log_time(m[1], m[2]) for m in _RUNNING_RE.finditer(log_path.read_text())]

    def all_running() -> bool:
        nonlocal low_memory
        if mem_available() < 2 * 1024 * MIB:  # a watchdog for the shared machine
            low_memory = True
            return True
        return len(running_stamps()) >= n

    wait_for(all_running, args.start_timeout, 0.25)
    stamps = running_stamps()
    res.cpu_per_start_ms = (cpu_seconds(supervisor) - cpu0) / max(len(stamps), 1) * 1000
    if returned:
        res.extra["rpc_returned_s"] = returned[0]
    if low_memory or len(stamps) < n:
        res.note += (
            "; stopped early: under 2 GiB of memory left"
            if low_memory
            else f"; only {len(stamps)} RUNNING within {args.start_timeout:.0f}s"
        )
        res.running = len(stamps)
        if stamps:
            res.start_s = max(stamps) - t0
        procs.stop(sv, 60)
        return res
    thread.join(30)
    if returned:
        res.extra["rpc_returned_s"] = returned[0]
    infos = rpc.supervisor.getAllProcessInfo()
    pids = [int(i["pid"]) for i in infos if i["statename"] == "RUNNING"]
    procs.note_mocks(pids)
    res.running = len(pids)
    res.start_s = max(stamps) - t0
    measure_ready(rx, n, t0, args.ready_timeout, res, pids)

    # --- steady state
    phase(f"{res.running} running; sending for {args.settle:.0f}s, then idle CPU")
    time.sleep(args.settle)  # let them send for a while before measuring memory
    machine = MachineLoad()
    measure_steady(rx, res, pids, supervisor, None, args.idle_seconds, machine)

    # --- exit detection
    renice(supervisor.pid, args.renice_supervisor, res)
    res.loads["kill"] = load1()
    by_pid = {int(i["pid"]): str(i["name"]) for i in infos if i["statename"] == "RUNNING"}
    victims = random.Random(1).sample(sorted(pids), min(args.kills, len(pids) // 2))
    watch = ExitWatch(victims)
    machine.mark("kill0")
    killed = kill_mocks(victims, args.kill_spacing)
    machine.mark("kill1")
    res.machine["kill"] = machine.between("kill0", "kill1") or (0.0, 0.0)
    res.kills = len(killed)
    name_to_pid = {by_pid[pid]: pid for pid in killed}

    def recorded() -> dict[int, float]:
        out = {}
        for m in _EXITED_RE.finditer(log_path.read_text()):
            if m[3] in name_to_pid:
                out[name_to_pid[m[3]]] = _log_time(m[1], m[2])
        return out

    def latencies() -> list[float]:
        return [(at - killed[pid]) * 1000 for pid, at in recorded().items()]

    lat = wait_for(lambda: x if len(x := latencies()) >= len(killed) else None, 30)
    watch.close()
    res.exit_ms = lat or latencies()
    res.detected = len(res.exit_ms)
    res.kernel_ms, res.own_ms = split_latencies(killed, watch.notified, recorded())
    with contextlib.suppress(Exception):
        rpc.supervisor.stopAllProcesses(False)
    procs.stop(sv, 60)
    return res


# --------------------------------------------------------------------------- report


def _f(value: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def _lat(res: Result | None, q: float | None) -> float | None:
    """Exit-detection latency percentile ``q`` (None: the maximum) in ms."""
    if res is None or not res.exit_ms:
        return None
    return max(res.exit_ms) if q is None else percentile(res.exit_ms, q)


def _mean(values: list[float]) -> float | None:
    return statistics.mean(values) if values else None


def _pair(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{percentile(values, 50):.2f}/{percentile(values, 99):.2f}"


def _loads(r: Result) -> str:
    return "/".join(_f(r.loads.get(k)) for k in ("start", "idle", "kill"))


#: (label, cell) rows of the side-by-side table
TABLE: list[tuple[str, Callable[[Result], str]]] = [
    ("mocks running", lambda r: f"{r.running}/{r.requested}"),
    ("time to start all (s)", lambda r: _f(r.start_s, "{:.2f}")),
    ("starts/s", lambda r: _f(r.starts_per_s, "{:.0f}")),
    ("supervisor CPU per start (ms)", lambda r: _f(r.cpu_per_start_ms, "{:.2f}")),
    ("machine CPU per start (ms, all processes)", lambda r: _f(r.machine_ms_per_start, "{:.2f}")),
    ("time until all sending (s)", lambda r: _f(r.ready_s, "{:.1f}")),
    ("mock CPU until all sending (ms)", lambda r: _f(r.mock_boot_cpu_ms, "{:.1f}")),
    ("  page faults per mock by then", lambda r: _f(r.start_faults, "{:.0f}")),
    ("msgs per mock per s", lambda r: _f(r.msgs_per_mock_s, "{:.2f}")),
    ("all mocks' CPU sending (% core)", lambda r: _f(r.mocks_cpu, "{:.0f}")),
    ("PSS per mock (MiB)", lambda r: _f(r.pss_per_mock, "{:.2f}")),
    ("  of which USS (MiB)", lambda r: _f(r.uss_per_mock, "{:.2f}")),
    ("supervisor PSS (MiB)", lambda r: _f(r.supervisor_pss)),
    ("  zygote PSS (MiB)", lambda r: _f(r.helper_pss)),
    ("  its lot validator PSS (MiB)", lambda r: _f(r.validator_pss)),
    ("supervisor idle CPU (% core)", lambda r: _f(r.idle_cpu, "{:.2f}")),
    ("  zygote idle CPU (% core)", lambda r: _f(r.helper_idle_cpu, "{:.2f}")),
    ("kill -9 detected", lambda r: f"{r.detected}/{r.kills}"),
    ("exit detection p50 (ms)", lambda r: _f(_lat(r, 50), "{:.2f}")),
    ("exit detection p99 (ms)", lambda r: _f(_lat(r, 99), "{:.2f}")),
    ("exit detection max (ms)", lambda r: _f(_lat(r, None), "{:.2f}")),
    ("exit detection mean (ms)", lambda r: _f(_mean(r.exit_ms), "{:.2f}")),
    ("  kill -> kernel notice p50/p99 (ms)", lambda r: _pair(r.kernel_ms)),
    ("  notice -> recorded p50/p99 (ms)", lambda r: _pair(r.own_ms)),
    ("load avg 1m @start/idle/kill", _loads),
    ("machine busy (% of all CPUs) start/steady/kill", lambda r: _machine(r, 0)),
    ("  kernel memory threads (% core) same phases", lambda r: _machine(r, 1)),
]


def _machine(r: Result, i: int) -> str:
    if not r.machine:
        return "-"
    return "/".join(
        f"{r.machine[p][i]:.0f}" if p in r.machine else "-" for p in ("start", "steady", "kill")
    )


def _round(value: Any) -> Any:
    return round(value, 3) if isinstance(value, float) else str(value)


def zygote_summary(ready: dict[str, Any]) -> str:
    """What the zygote-ready event says of its preloaded objects (CPython 3.12+
    makes them immortal: see mockfleet.tower.immortal) and how it forks mocks."""
    python = f"CPython {sys.version_info[0]}.{sys.version_info[1]}"
    forking = {
        "clone-parent": "; mocks forked with clone(CLONE_PARENT)",
        "double-fork": "; mocks double-forked",
    }.get(ready.get("forking") or "", "")
    if ready.get("immortal_objects"):
        return (
            f"{python}: the zygote made {ready['immortal_objects']} preloaded objects "
            f"immortal in {ready.get('immortal_ms', 0):.0f} ms{forking}"
        )
    off = ready.get("immortal_off", "unknown")
    return f"{python}: preloaded objects not immortal ({off}){forking}"


def schedstat(pid: int) -> tuple[float, float] | None:
    """Seconds a process has run and waited for a CPU (/proc/PID/schedstat)."""
    try:
        ran, waited, _slices = Path(f"/proc/{pid}/schedstat").read_text().split()
    except (OSError, ValueError):
        return None
    return int(ran) / 1e9, int(waited) / 1e9


def pipeline_waits(
    before: dict[str, tuple[float, float] | None], after: dict[str, tuple[float, float] | None]
) -> str:
    """How long each process of the start pipeline ran, and waited for a CPU,
    during the start: the zygote forks every mock, so its waits add up."""
    parts = []
    for who, b in before.items():
        a = after.get(who)
        if a is None or b is None:
            continue
        parts.append(f"the {who} ran {a[0] - b[0]:.2f} s and waited {a[1] - b[1]:.2f} s")
    return "during the start, " + "; ".join(parts) if parts else ""


def start_priority_summary(events: list[dict[str, Any]]) -> str:
    """What the tower-started event says of the priority mocks start at."""
    started = [e for e in events if e.get("event") == "tower-started"]
    if not started or "start_priority" not in started[-1]:
        return "start priority: not reported by this tower"
    e = started[-1]
    if e["start_priority"] == "idle":
        return "mocks start at idle CPU priority during a burst, normal once it is over"
    return f"mocks start at normal CPU priority ({e.get('start_priority_why', '')})"


def notes(r: Result) -> list[str]:
    who = f"{r.name} N={r.requested}"
    out = [f"note ({who}): {r.note.lstrip('; ')}"] if r.note else []
    if "write_start_ms" in r.extra:
        out.append(
            f"note ({who}): write_start costs {r.extra['write_start_ms']:.2f} ms a trigger "
            f"(two fsyncs); the start clock covers renaming pre-written triggers "
            f"({r.extra['rename_s'] * 1000:.0f} ms for all) and the tower's work"
        )
    if "probe_uss_mib" in r.extra:
        rpc = r.extra.get("rpc_returned_s")
        out.append(
            f"note ({who}): startAllProcesses returned after {_f(rpc, '{:.2f}')}s; "
            f"a standalone mock is ~{r.extra['probe_uss_mib']:.0f} MiB USS; RUNNING means "
            "forked and exec'd (startsecs=0), not yet imported"
        )
    out.extend(f"{line} ({who})" for line in r.extra.get("start_profile", []))
    out.extend(f"{line} ({who})" for line in r.extra.get("exit_anatomy", []))
    if "zygote" in r.extra:
        out.append(f"note ({who}): {r.extra['zygote']}")
    if "start_priority" in r.extra:
        out.append(f"note ({who}): {r.extra['start_priority']}")
    if r.extra.get("pipeline_waits"):
        out.append(f"note ({who}): {r.extra['pipeline_waits']} for a CPU")
    if "damon" in r.extra:
        out.append(f"note ({who}): {r.extra['damon']}")
    if r.extra.get("kill_reasons"):
        out.append(f"note ({who}): killed mocks recorded as {r.extra['kill_reasons']}")
    if "upgrade" in r.extra:
        out.append(f"upgrade ({who}): {json.dumps(r.extra['upgrade'], default=_round)}")
    return out


def print_table(tower: Result | None, sd: Result | None) -> None:
    cols = [r for r in (tower, sd) if r is not None]
    header = ["metric", *(f"{r.name} (N={r.requested})" for r in cols)]
    rows = [[label, *(cell(r) for r in cols)] for label, cell in TABLE]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    line = "  ".join(h.ljust(widths[i]) for i, h in enumerate(header))
    print("\n" + line)
    print("-" * len(line))
    for row in rows:
        cells = [c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row)]
        print("  ".join(cells))
    for r in cols:
        for text in notes(r):
            print(text)


Verdict = tuple[str, str, bool | None]


def verdicts(t: Result | None, sd: Result | None, big: Result | None) -> list[Verdict]:
    """(target, measured, pass) rows; pass is None when not measured.

    ``big`` is the tower run with at least 2,000 mocks, if this was one: the
    exit-detection, idle-CPU and upgrade targets are stated for 2,000 mocks.
    """
    out: list[Verdict] = []
    if t is not None:
        rate = t.starts_per_s
        ok = None if rate is None else rate >= 500 and t.running == t.requested
        budget = (os.cpu_count() or 1) * 1000 / 500  # ms of machine CPU per start at 500/s
        spent = t.machine_ms_per_start
        out.append(
            (
                ">= 500 starts/s unthrottled",
                f"{_f(rate, '{:.0f}')}/s (N={t.requested}; the machine spent "
                f"{_f(spent, '{:.1f}')} ms of CPU per start, 500/s allows {budget:.1f})",
                ok,
            )
        )
        pss = t.pss_per_mock
        out.append(
            (
                f"<= 3 MiB PSS per HTTP mock (N={t.requested})",
                f"{_f(pss, '{:.2f}')} MiB",
                None if pss is None else pss <= 3.0,
            )
        )
    if big is not None:
        ok = (
            big.running == big.requested
            and big.ready_devices >= big.requested
            and (big.msgs_per_mock_s or 0) >= 0.9
        )
        out.append(
            (
                f"{big.requested} mocks at once, all sending",
                f"{big.running} running, {big.ready_devices} sending, "
                f"{_f(big.msgs_per_mock_s, '{:.2f}')} msg/mock/s",
                ok,
            )
        )
    if t is not None:
        p99 = _lat(t, 99)
        out.append(
            (
                f"exit detection p99 < 10 ms (N={t.requested})",
                f"{_f(p99, '{:.2f}')} ms, {t.detected}/{t.kills} seen",
                None if p99 is None else p99 < 10 and t.detected == t.kills,
            )
        )
        cpu = t.idle_cpu
        out.append(
            (
                f"tower idle CPU < 1% of a core (N={t.requested})",
                f"{_f(cpu, '{:.2f}')}% (zygote {_f(t.helper_idle_cpu, '{:.2f}')}%)",
                None if cpu is None else cpu < 1.0,
            )
        )
    if t is not None and "upgrade" in t.extra:
        up = t.extra["upgrade"]
        back = up.get("exec_to_all_adopted_s")
        ok = (
            back is not None
            and back < 1.0
            and up["restarted"] == 0
            and up["missing"] == 0
            and up["post_detected"] == up["post_kills"]
        )
        out.append(
            (
                f"upgrade: none restarted, all supervised < 1 s (N={t.requested})",
                f"exec->all adopted {_f(back, '{:.3f}')} s, restarted {up['restarted']}, "
                f"missing {up['missing']}, post-upgrade kills seen "
                f"{up['post_detected']}/{up['post_kills']}",
                ok,
            )
        )
    if t is not None and sd is not None:
        a, b = t.starts_per_s, sd.starts_per_s
        ratio = a / b if a and b else None
        out.append(
            (
                "starts >= 5x faster than supervisord",
                f"{_f(ratio, '{:.1f}')}x ({_f(a, '{:.0f}')} vs {_f(b, '{:.0f}')} starts/s)",
                None if ratio is None else ratio >= 5,
            )
        )
        if t.ready_s and sd.ready_s:
            per_t, per_sd = t.ready_s / t.requested, sd.ready_s / sd.requested
            out.append(
                (
                    "  (info) until all sending, per mock",
                    f"{per_sd / per_t:.1f}x ({per_t * 1000:.2f} vs {per_sd * 1000:.2f} ms/mock)",
                    None,
                )
            )
        pa, pb = t.pss_per_mock, sd.pss_per_mock
        ratio = pb / pa if pa and pb else None
        out.append(
            (
                "memory per mock >= 5x less than supervisord",
                f"{_f(ratio, '{:.1f}')}x ({_f(pa, '{:.2f}')} vs {_f(pb, '{:.2f}')} MiB PSS)",
                None if ratio is None else ratio >= 5,
            )
        )
    return out


def print_verdicts(rows: list[Verdict]) -> None:
    print("\ntargets")
    width = max((len(r[0]) for r in rows), default=0)
    for target, measured, ok in rows:
        mark = "n/a " if ok is None else ("PASS" if ok else "FAIL")
        print(f"  [{mark}] {target.ljust(width)}  {measured}")


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mocks", type=int, default=1000, help="mocks for the tower (default 1000)")
    p.add_argument(
        "--supervisord-mocks",
        type=int,
        default=None,
        help="mocks for supervisord (default: --mocks, capped by the memory guard)",
    )
    p.add_argument("--skip-supervisord", action="store_true")
    p.add_argument("--skip-upgrade", action="store_true")
    p.add_argument(
        "--keep", type=Path, help="work in this new directory and keep it (logs, events)"
    )
    p.add_argument("--kills", type=int, default=100, help="mocks to kill -9 (default 100)")
    p.add_argument("--kill-spacing", type=float, default=0.02, help="seconds between kills")
    p.add_argument("--settle", type=float, default=10.0, help="seconds of sending before PSS")
    p.add_argument("--idle-seconds", type=float, default=10.0, help="idle CPU window")
    p.add_argument("--start-timeout", type=float, default=300.0, help="deadline for all running")
    p.add_argument("--ready-timeout", type=float, default=300.0, help="deadline for all sending")
    p.add_argument("--upgrade-timeout", type=float, default=60.0)
    p.add_argument(
        "--mem-reserve-gib",
        type=float,
        default=8.0,
        help="memory to leave free when sizing the supervisord run (default 8 GiB)",
    )
    p.add_argument(
        "--renice-supervisor",
        type=int,
        default=None,
        metavar="NICE",
        help="experiment: set the supervisor process's nice value before the kills",
    )
    p.add_argument(
        "--trace-exits",
        action="store_true",
        help="record the kills with perf's scheduler tracepoints (root) and split each "
        "victim's kill -> exit notice into waiting for a CPU, running, and blocked "
        "(see exit_trace.py); the tracing itself adds load",
    )
    p.add_argument(
        "--profile-start",
        action="store_true",
        help="sample every CPU with perf (root) while the mocks start and split the "
        "machine's time by process role and activity (see start_profile.py); the "
        "sampling itself adds a little load",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the tower's phase this many times, each with a fresh tower, receiver "
        "and mocks, and report the round with the median start rate (every round's "
        "figures are listed): a VM's speed can drift from minute to minute",
    )
    p.add_argument(
        "--start-priority",
        choices=MODES,
        default="auto",
        help="the tower's --start-priority (see mockfleet.tower.priority)",
    )
    p.add_argument("--order", choices=("tower-first", "supervisord-first"), default="tower-first")
    args = p.parse_args(argv)
    if args.mocks < 2:
        p.error("--mocks must be at least 2")
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    return args


@contextlib.contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into SystemExit so the cleanup in ``finally`` runs."""

    def handler(_sig: int, _frame: Any) -> None:
        raise SystemExit(143)

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(
        f"cpus {os.cpu_count()}, load {os.getloadavg()}, "
        f"memory available {mem_available() / 2**30:.1f} GiB",
        flush=True,
    )
    tower_res: Result | None = None
    sd_res: Result | None = None
    with tempfile.TemporaryDirectory(prefix="tower-bench-") as tmp, terminate_on_sigterm():
        workdir = Path(tmp)
        if args.keep is not None:  # logs, events and trigger roots kept for a look afterwards
            workdir = args.keep
            workdir.mkdir(parents=True, exist_ok=False)
        procs = Processes(workdir)
        try:
            phases: list[str] = ["tower"]
            if not args.skip_supervisord:
                phases.insert(0 if args.order == "supervisord-first" else 1, "supervisord")
            for phase in phases:
                print(f"[{time.strftime('%H:%M:%S')}] {phase} ...", flush=True)
                try:
                    if phase == "tower":
                        tower_res = run_rounds(args, procs, workdir)
                    else:
                        sd_res = run_supervisord(args, procs, workdir)
                except Exception as exc:  # report the other phase's figures anyway
                    print(f"{phase} phase failed: {exc!r}", flush=True)
        finally:
            leftovers = procs.cleanup()
            if leftovers:
                print(f"cleanup had to kill {len(leftovers)}: {leftovers[:5]}")
    big = tower_res if tower_res is not None and tower_res.requested >= 2000 else None
    print_table(tower_res, sd_res)
    print_verdicts(verdicts(tower_res, sd_res, big))
    return 0


if __name__ == "__main__":
    sys.exit(main())
