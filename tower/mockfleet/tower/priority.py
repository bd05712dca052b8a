"""Mocks start at idle CPU priority while the tower starts others.

A start burst saturates the CPUs: every mock the zygote forks builds its
device and sends its first messages while the zygote forks the next one and
the tower writes PID files. At normal priority the new mocks take turns with
the zygote and the tower, and the more of them are runnable, the longer the
forking pipeline waits (on a 2-core VM the zygote waited 2.06 s for a CPU in
a 3.4 s burst of 1,000 starts: see docs/performance.md). A mock at
``SCHED_IDLE`` runs only when nothing else wants that CPU, so the pipeline
never queues behind the mocks it has just started, and the mocks use every
cycle it leaves.

Only for the start: a mock that stays idle would queue behind every other
process for as long as it runs (its sends, its stop, its exit). The tower
puts each one back to normal scheduling (``SCHED_OTHER`` at its nice value)
once the burst is over, or after ``IDLE_START_MAX`` seconds in a long one.
A paced start (``--max-start-rate``) starts mocks at normal priority: the
pipeline is not what limits it.
Leaving ``SCHED_IDLE`` takes ``CAP_SYS_NICE`` or a ``RLIMIT_NICE`` that
allows the mock's nice value, so the tower starts mocks idle only where it
can bring them back (``resolve``).
"""

from __future__ import annotations

import contextlib
import os

#: niceness added to every mock (see mockfleet.tower.zygote)
MOCK_NICE = 5

#: modes of ``--start-priority``
MODES = ("auto", "idle", "normal")

#: the longest a mock runs at idle priority. Long enough for a burst of
#: thousands (restoring mocks mid-burst puts them back in the pipeline's way:
#: with 1 s, a 1,000-mock burst here gained nothing); short enough that the
#: first mocks of 20,000 do not wait at idle priority for the last one.
IDLE_START_MAX = 10.0

CAP_SYS_NICE = 23


class PriorityError(ValueError):
    """``--start-priority idle`` where mocks could not be brought back."""


def has_capability(status: str, cap: int) -> bool:
    """Is ``cap`` in the effective set of a ``/proc/PID/status`` text?"""
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split(":", 1)[1].strip(), 16) >> cap & 1)
    return False


def can_leave_idle(cap_sys_nice: bool, nice_rlimit: int, mock_nice: int) -> bool:
    """Could a mock at ``mock_nice`` go back from SCHED_IDLE to SCHED_OTHER?

    The kernel treats SCHED_IDLE as nice 20: leaving it is a priority raise,
    allowed with CAP_SYS_NICE or when RLIMIT_NICE admits the nice value
    (a limit of ``20 - nice``).
    """
    return cap_sys_nice or nice_rlimit == -1 or nice_rlimit >= 20 - mock_nice


def resolve(mode: str, can_restore: bool) -> tuple[bool, str]:
    """Whether mocks start idle, and why, for a ``--start-priority`` mode."""
    if mode not in MODES:
        raise PriorityError(f"--start-priority must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "normal":
        return False, "--start-priority normal"
    if can_restore:
        return True, "the tower can bring mocks back to normal priority"
    why = (
        "the tower cannot bring a mock back from idle priority: that needs "
        "CAP_SYS_NICE or a RLIMIT_NICE soft limit of at least 15"
    )
    if mode == "idle":
        raise PriorityError(
            f"--start-priority idle: {why}; run the tower as root, raise its RLIMIT_NICE "
            "(ulimit -e 15), or use --start-priority auto"
        )
    return False, why


def tower_can_restore(mock_nice: int) -> bool:
    """Can this process bring its mocks (which inherit its limits) back?"""
    import resource  # the tower's, not the zygote's: no mock inherits the module

    try:
        with open("/proc/self/status") as f:
            cap = has_capability(f.read(), CAP_SYS_NICE)
    except OSError:
        cap = False
    soft, _hard = resource.getrlimit(resource.RLIMIT_NICE)
    return can_leave_idle(cap, soft, mock_nice)


def is_idle(pid: int) -> bool:
    """Is the process scheduled SCHED_IDLE? False when it is gone."""
    try:
        return os.sched_getscheduler(pid) == os.SCHED_IDLE
    except OSError:
        return False


_NORMAL = os.sched_param(0)


def restore(pid: int) -> None:
    """Back to SCHED_OTHER, keeping the process's nice value. A process that
    is gone needs nothing; refusal (EPERM) is the caller's to report."""
    with contextlib.suppress(ProcessLookupError):
        os.sched_setscheduler(pid, os.SCHED_OTHER, _NORMAL)
