"""Where a killed mock's exit time goes, from the kernel's scheduler trace.

``tower_bench.py --trace-exits`` records the kill phase with ``perf`` (the
``sched`` and ``signal`` tracepoints, system-wide; needs root and the
linux-perf package) and splits each victim's kill -> exit notice (the
SIGCHLD its death sends the tower) into:

- runnable: woken or preempted, waiting for a CPU;
- on CPU: running, almost all of it tearing down its address space;
- blocked: asleep in the kernel, on a lock another task holds (the tasks
  that woke it are counted, by name).

And while a victim waited for a CPU, what the CPUs ran instead (by kind of
task: other mocks, the page monitor, the receiver, idle...).

The parsing is pure (``anatomy``) so it can be checked on recorded text.
"""

from __future__ import annotations

import bisect
import re
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from perf_record import PerfRecord, why_not

EVENTS = "sched:sched_switch,sched:sched_waking,signal:signal_generate"
_LINE = re.compile(r"^\s*(.+?)\s+(\d+)/(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+(\S+):\s+(.*)$")
_FIELD = re.compile(r"(\w+)=(\S+)")


@dataclass
class Exit:
    pid: int
    total_ms: float = 0.0
    runnable_ms: float = 0.0
    on_cpu_ms: float = 0.0
    blocked_ms: float = 0.0
    wakers: Counter[str] = field(default_factory=Counter)
    #: (from, to) seconds of each wait for a CPU
    waits: list[tuple[float, float]] = field(default_factory=list)
    #: ms of CPU time, all CPUs, by kind of task, while this victim waited
    ran_instead: Counter[str] = field(default_factory=Counter)


def task_kind(comm: str) -> str:
    """Group a task name: every mock (``mf-<id>``) counts as one kind."""
    if comm == "mf-zygote":
        return comm
    if comm.startswith("mf-"):
        return "mocks"
    for prefix, kind in (
        ("swapper", "idle"),
        ("kdamond", "kdamond"),
        ("kworker", "kworker"),
        ("ksoftirqd", "ksoftirqd"),
    ):
        if comm.startswith(prefix):
            return kind
    return comm


def anatomy(lines: list[str]) -> list[Exit]:
    """Per victim of a SIGKILL seen in ``perf script`` output (fields comm,
    pid, tid, cpu, time, event, trace): kill -> its SIGCHLD, split by state."""
    events = []
    for line in lines:
        m = _LINE.match(line)
        if m:
            fields = dict(_FIELD.findall(m[7]))
            events.append((float(m[5]), m[6], int(m[2]), m[1].strip(), fields, int(m[4])))
    killed: dict[int, float] = {}
    for ts, ev, _pid, _comm, f, _cpu in events:
        if ev == "signal:signal_generate" and f.get("sig") == "9":
            killed.setdefault(int(f["pid"]), ts)
    # state per victim: "run" (on a CPU), "wait" (runnable), "blocked"; and since when
    state: dict[int, tuple[str, float]] = {pid: ("wait", ts) for pid, ts in killed.items()}
    out = {pid: Exit(pid) for pid in killed}
    done: set[int] = set()

    def move(pid: int, new: str, ts: float) -> None:
        old, since = state[pid]
        e = out[pid]
        span = (ts - since) * 1000
        if old == "run":
            e.on_cpu_ms += span
        elif old == "wait":
            e.runnable_ms += span
            e.waits.append((since, ts))
        else:
            e.blocked_ms += span
        state[pid] = (new, ts)

    # per CPU: (start, kind) of what ran from then on, from the switches
    ran: dict[int, list[tuple[float, str]]] = defaultdict(list)
    first_ts = events[0][0] if events else 0.0
    for ts, ev, pid, comm, f, cpu in events:
        if ev == "sched:sched_switch":
            if not ran[cpu]:  # what ran before the first switch seen, since the trace began
                ran[cpu].append((first_ts, task_kind(f.get("prev_comm", comm))))
            ran[cpu].append((ts, task_kind(f.get("next_comm", "?"))))
            prev, nxt = int(f.get("prev_pid", -1)), int(f.get("next_pid", -1))
            if prev in state and prev not in done and ts >= killed[prev]:
                move(prev, "wait" if f.get("prev_state", "R").startswith("R") else "blocked", ts)
            if nxt in state and nxt not in done and ts >= killed[nxt]:
                move(nxt, "run", ts)
        elif ev == "sched:sched_waking":
            woken = int(f.get("pid", -1))
            if woken in state and woken not in done and state[woken][0] == "blocked":
                move(woken, "wait", ts)
                out[woken].wakers[comm] += 1
        elif (
            ev == "signal:signal_generate"
            and f.get("sig") == "17"
            and pid in state
            and pid not in done
            and ts >= killed[pid]
        ):
            move(pid, state[pid][0], ts)
            out[pid].total_ms = (ts - killed[pid]) * 1000
            done.add(pid)
    last_ts = events[-1][0] if events else 0.0
    for pid in done:
        for a, b in out[pid].waits:
            for segments in ran.values():
                out[pid].ran_instead.update(_overlap(segments, a, b, last_ts))
    return [out[pid] for pid in sorted(done)]


def _overlap(segments: list[tuple[float, str]], a: float, b: float, end: float) -> Counter[str]:
    """ms of each kind of task that ran within [a, b] on one CPU, from its
    switches ``segments`` (each runs until the next, the last until ``end``)."""
    got: Counter[str] = Counter()
    i = max(0, bisect.bisect_right(segments, (a, "\uffff")) - 1)
    while i < len(segments) and segments[i][0] < b:
        start, kind = segments[i]
        stop = segments[i + 1][0] if i + 1 < len(segments) else end
        span = min(stop, b) - max(start, a)
        if span > 0:
            got[kind] += span * 1000
        i += 1
    return got


def report(exits: list[Exit]) -> list[str]:
    """Lines for the bench's notes: percentiles of each part, and who woke
    the blocked victims."""
    if not exits:
        return ["exit anatomy: no victim's exit was in the trace"]

    def pct(values: list[float], q: int) -> float:
        values = sorted(values)
        return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]

    rows = []
    for name, pick in (
        ("kill -> exit notice", lambda e: e.total_ms),
        ("  runnable, waiting for a CPU", lambda e: e.runnable_ms),
        ("  on a CPU (tearing down)", lambda e: e.on_cpu_ms),
        ("  blocked in the kernel", lambda e: e.blocked_ms),
    ):
        values = [pick(e) for e in exits]
        rows.append(
            f"exit anatomy: {name:30} p50 {pct(values, 50):6.2f}  p90 {pct(values, 90):6.2f}  "
            f"p99 {pct(values, 99):6.2f}  mean {statistics.fmean(values):6.2f} ms"
        )
    slow = sorted(exits, key=lambda e: e.total_ms)[-max(1, len(exits) // 10) :]
    wakers: Counter[str] = Counter()
    for e in exits:
        wakers.update(e.wakers)
    rows.append(
        f"exit anatomy: {len(exits)} victims; slowest tenth: runnable "
        f"{statistics.fmean(e.runnable_ms for e in slow):.1f}, on CPU "
        f"{statistics.fmean(e.on_cpu_ms for e in slow):.1f}, blocked "
        f"{statistics.fmean(e.blocked_ms for e in slow):.1f} ms on average; blocked victims "
        f"woken by {dict(wakers.most_common(4)) or 'none'}"
    )
    instead: Counter[str] = Counter()
    for e in slow:
        instead.update(e.ran_instead)
    if instead:
        total = sum(instead.values())
        parts = ", ".join(
            f"{kind} {ms / len(slow):.1f} ms ({ms / total * 100:.0f}%)"
            for kind, ms in instead.most_common(5)
        )
        rows.append(
            f"exit anatomy: while one of the slowest tenth waited for a CPU, the CPUs ran: {parts}"
        )
    return rows


class SchedTrace(PerfRecord):
    """``perf record`` of the scheduler and signal tracepoints, system-wide,
    for the duration of a ``with`` block. ``why_not()`` says when it cannot run."""

    def __init__(self) -> None:
        super().__init__(["-e", EVENTS], "comm,pid,tid,cpu,time,event,trace")

    @staticmethod
    def why_not() -> str | None:
        return why_not("sched:sched_switch")
