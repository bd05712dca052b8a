"""The exit anatomy of ``bench/exit_trace.py`` on a hand-written scheduler trace."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from exit_trace import anatomy, report

VICTIM = 4242


def _line(comm: str, pid: int, cpu: int, ts: float, event: str, trace: str) -> str:
    """One line as ``perf script -F comm,pid,tid,cpu,time,event,trace`` prints it."""
    return f"{comm:>16} {pid}/{pid} [{cpu:03d}] {ts:.6f}: {event}: {trace}"


def _switch(prev: int, state: str, nxt: int) -> str:
    return (
        f"prev_comm=mf-mock prev_pid={prev} prev_prio=125 prev_state={state} ==> "
        f"next_comm=mf-mock next_pid={nxt} next_prio=125"
    )


def _signal(sig: int, to: int) -> str:
    return f"sig={sig} errno=0 code=0 comm=x pid={to} grp=1 res=0"


TRACE = "\n".join(
    [
        _line("python", 100, 0, 1.000, "signal:signal_generate", _signal(9, VICTIM)),
        _line("mf-mock", 500, 0, 1.001, "sched:sched_switch", _switch(500, "S", VICTIM)),
        _line("mf-mock", VICTIM, 0, 1.002, "sched:sched_switch", _switch(VICTIM, "D", 0)),
        _line("kdamond.0", 77, 1, 1.005, "sched:sched_waking", f"comm=mf-mock pid={VICTIM}"),
        _line("mf-mock", 501, 0, 1.006, "sched:sched_switch", _switch(501, "R", VICTIM)),
        _line("mf-mock", VICTIM, 0, 1.008, "signal:signal_generate", _signal(17, 99)),
        _line("mf-mock", 600, 0, 1.009, "signal:signal_generate", _signal(17, 99)),
    ]
)


def test_a_victims_exit_splits_into_waiting_running_and_blocked() -> None:
    (victim,) = anatomy(TRACE.splitlines())
    assert victim.pid == VICTIM
    assert round(victim.total_ms, 3) == 8.0
    assert round(victim.runnable_ms, 3) == 2.0  # kill -> first run, woken -> run
    assert round(victim.on_cpu_ms, 3) == 3.0  # 1 ms before blocking, 2 ms after
    assert round(victim.blocked_ms, 3) == 3.0
    assert victim.wakers == {"kdamond.0": 1}
    lines = report([victim])
    assert "kdamond.0" in lines[-2]


def test_a_victim_whose_death_is_not_in_the_trace_is_left_out() -> None:
    cut = [line for line in TRACE.splitlines() if "sig=17" not in line]
    assert anatomy(cut) == []
    assert report([]) == ["exit anatomy: no victim's exit was in the trace"]


def test_what_ran_on_every_cpu_while_a_victim_waited_is_named() -> None:
    def switch(prev_comm: str, prev: int, nxt_comm: str, nxt: int) -> str:
        return (
            f"prev_comm={prev_comm} prev_pid={prev} prev_prio=120 prev_state=R ==> "
            f"next_comm={nxt_comm} next_pid={nxt} next_prio=120"
        )

    trace = [
        _line("python", 100, 0, 2.000, "signal:signal_generate", _signal(9, VICTIM)),
        # CPU 1 was idle, then ran the page monitor
        _line(
            "swapper/1", 0, 1, 2.001, "sched:sched_switch", switch("swapper/1", 0, "kdamond.0", 77)
        ),
        # CPU 0 ran another mock until the victim got it
        _line("mf-m1", 500, 0, 2.004, "sched:sched_switch", switch("mf-m1", 500, "mf-m9", VICTIM)),
        _line("mf-m9", VICTIM, 0, 2.006, "signal:signal_generate", _signal(17, 99)),
    ]
    (victim,) = anatomy(trace)
    assert round(victim.runnable_ms, 3) == 4.0
    assert {k: round(v, 3) for k, v in victim.ran_instead.items()} == {
        "mocks": 4.0,
        "idle": 1.0,
        "kdamond": 3.0,
    }
    last = report([victim])[-1]
    assert "mocks 4.0 ms (50%)" in last and "kdamond 3.0 ms (38%)" in last
