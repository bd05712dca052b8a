"""Where the whole machine's CPU goes while the tower starts a burst of mocks.

``tower_bench.py --profile-start`` samples every CPU with ``perf record -a -g``
(root, and the linux-perf package) from the moment the start triggers land
until the last ``started`` event, then sorts each sample by who ran (a
role: the mocks, the processes that fork them, the tower, its zygote, the
receiver, this bench, kernel threads, idle) and by what it was doing (page
faults by kind, forking, exiting, system calls by name, or running its own
code). A sample is 1/FREQ s of one CPU, so a role's samples per start are its
CPU cost per start.

A forked mock keeps its parent's name until it names itself: "mf-zygote"
(the zygote clones each mock as the tower's child), or "mf-intermediate"
where the zygote double-forks. Samples under the zygote's name and another
PID are new mocks; under "mf-intermediate" they belong to the forking
process only in the processes that forked (those with samples inside
``dup_mmap``), and the rest are the new mocks' first steps.

The sorting is pure (``breakdown``, ``report``) so it can be checked on
recorded text.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from perf_record import PerfRecord, why_not

FREQ = 999  # Hz: not a multiple of the timer tick, so samples do not beat with it
_HEADER = re.compile(r"^\s*(\S.*?)\s+(\d+)/(\d+)\s*$")
KERNEL_MEMORY_THREADS = ("kdamond", "kswapd", "khugepaged", "kcompactd")
MOCK = "mocks"
FORKER = "forking processes"


@dataclass
class Sample:
    comm: str
    pid: int
    frames: list[str]  # function names, innermost first


@dataclass
class Breakdown:
    samples: int = 0
    by_role: Counter[str] = field(default_factory=Counter)
    by_activity: dict[str, Counter[str]] = field(default_factory=dict)


def parse(lines: list[str]) -> list[Sample]:
    """Samples from ``perf script -F comm,pid,tid,ip,sym`` of a ``-g`` recording."""
    out: list[Sample] = []
    cur: Sample | None = None
    for line in lines:
        if not line.strip():
            cur = None
            continue
        if not line.startswith("\t"):  # a sample's first line (perf may pad the name)
            m = _HEADER.match(line)
            cur = Sample(m[1].strip(), int(m[2]), []) if m else None
            if cur is not None:
                out.append(cur)
            continue
        if cur is not None:
            parts = line.split(None, 1)
            if len(parts) == 2:
                cur.frames.append(parts[1].split("+")[0].split(" (")[0].strip())
    return out


def activity(frames: list[str]) -> str:
    """What a sample's call chain was doing, from the kernel functions in it."""
    chain = set(frames)
    if "dup_mmap" in chain or "copy_process" in chain:
        return "fork"
    if "exit_mmap" in chain or "do_exit" in chain:
        return "exit"
    if "asm_exc_page_fault" in chain or "exc_page_fault" in chain:
        if "do_wp_page" in chain:
            return "page fault: copy-on-write"
        if "filemap_map_pages" in chain or "do_read_fault" in chain:
            return "page fault: file"
        if "do_anonymous_page" in chain:
            return "page fault: fresh page"
        return "page fault: other"
    if {"pv_native_safe_halt", "default_idle", "do_idle", "cpuidle_enter"} & chain:
        return "idle"
    if "entry_SYSCALL_64_after_hwframe" in chain or "do_syscall_64" in chain:
        for name in frames:
            if name.startswith("__x64_sys_"):
                return "syscall: " + name[len("__x64_sys_") :]
        return "syscall: other"
    if frames and frames[-1].startswith(("ret_from_fork", "kthread")):
        return "kernel"
    if {"asm_sysvec_apic_timer_interrupt", "asm_common_interrupt", "irq_exit_rcu"} & chain:
        return "interrupts"
    return "own code"


def role(sample: Sample, roles: dict[int, str], forkers: set[int]) -> str:
    if sample.pid in roles:
        return roles[sample.pid]
    if sample.comm == "mf-mock":
        return MOCK
    if sample.comm == "mf-intermediate":
        return FORKER if sample.pid in forkers else MOCK
    if sample.comm == "mf-zygote":  # not the zygote itself (in roles): a new clone
        return MOCK
    if sample.comm.startswith("swapper"):
        return "idle"
    if sample.comm.startswith(KERNEL_MEMORY_THREADS):
        return "kernel memory threads"
    if sample.pid == 0 or sample.comm.startswith(("kworker", "ksoftirqd", "rcu_", "migration")):
        return "other kernel threads"
    return "other"


def breakdown(samples: list[Sample], roles: dict[int, str]) -> Breakdown:
    """Count samples by role and, within each role, by activity."""
    forkers = {
        s.pid
        for s in samples
        if s.comm == "mf-intermediate" and ("dup_mmap" in s.frames or "copy_process" in s.frames)
    }
    out = Breakdown()
    for s in samples:
        who = role(s, roles, forkers)
        out.samples += 1
        out.by_role[who] += 1
        out.by_activity.setdefault(who, Counter())[activity(s.frames)] += 1
    return out


def report(b: Breakdown, starts: int, seconds: float, cpus: int, freq: int = FREQ) -> list[str]:
    """One line per role: % of the machine, ms of CPU per start, and its top activities."""
    if not b.samples:
        return ["start profile: no samples were recorded"]
    possible = max(seconds * cpus * freq, b.samples)
    rows = [
        f"start profile: {starts} starts in {seconds:.2f} s on {cpus} CPUs, "
        f"{b.samples} samples at {freq} Hz (% of all CPUs; ms of CPU per start)"
    ]
    for who, n in b.by_role.most_common():
        acts = b.by_activity[who]
        top = ", ".join(f"{what} {100 * k / possible:.1f}%" for what, k in acts.most_common(4))
        per_start = n / freq / max(starts, 1) * 1000
        rows.append(
            f"start profile: {who:24} {100 * n / possible:5.1f}%  {per_start:5.2f} ms  ({top})"
        )
    faults = sum(
        k for acts in b.by_activity.values() for what, k in acts.items() if "page fault" in what
    )
    forks = sum(acts["fork"] + acts["exit"] for acts in b.by_activity.values())
    rows.append(
        f"start profile: page faults, all roles: {100 * faults / possible:.1f}% of all CPUs; "
        f"fork and exit: {100 * forks / possible:.1f}%"
    )
    return rows


class CpuProfile(PerfRecord):
    """CPU samples with call chains on every CPU while the block runs."""

    def __init__(self) -> None:
        super().__init__(["-g", "-F", str(FREQ)], "comm,pid,tid,ip,sym")

    @staticmethod
    def why_not() -> str | None:
        return why_not()
