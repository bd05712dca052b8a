"""What ``bench/tower_bench.py`` says beside its figures: the interpreter and
its immortal objects, and what the kernel's page monitor was doing."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from tower_bench import (
    Result,
    damon_summary,
    median_round,
    pipeline_waits,
    rounds_summary,
    start_priority_summary,
    zygote_summary,
)


def test_the_page_monitor_note_says_its_state_age_and_restarts() -> None:
    assert damon_summary([], []) == "no DAMON page monitor in this kernel"
    steady = [("on", 42, 3600.4)]
    assert damon_summary(steady, steady) == (
        "DAMON page monitor at the start: on, kdamond 42 running for 3600 s"
    )
    assert damon_summary(steady, [("on", 77, 2.0)]).endswith("; restarted during the run (on 77)")
    assert damon_summary([("off", 0, -1.0)], [("off", 0, -1.0)]) == (
        "DAMON page monitor at the start: off"
    )


def test_the_zygote_note_says_whether_objects_were_made_immortal() -> None:
    made = zygote_summary({"immortal_objects": 24000, "immortal_ms": 68.6})
    assert made.endswith(": the zygote made 24000 preloaded objects immortal in 69 ms")
    off = zygote_summary({"immortal_objects": 0, "immortal_off": "CPython 3.11: no"})
    assert off.endswith(": preloaded objects not immortal (CPython 3.11: no)")


def test_the_zygote_note_says_how_mocks_are_forked() -> None:
    ready = {"immortal_objects": 24000, "immortal_ms": 68.6, "forking": "clone-parent"}
    assert zygote_summary(ready).endswith(" in 69 ms; mocks forked with clone(CLONE_PARENT)")
    off = {"immortal_objects": 0, "immortal_off": "no", "forking": "double-fork"}
    assert zygote_summary(off).endswith("not immortal (no); mocks double-forked")


def _round(rate: float | None, p99: float) -> Result:
    r = Result("tower", 1000, running=1000, start_s=1000 / rate if rate else None)
    r.exit_ms = [1.0] * 90 + [p99] * 10
    r.pss_per_mock = 0.82
    return r


def test_rounds_report_the_median_round_and_the_spread() -> None:
    """--rounds: this VM's speed drifts, so the table shows the median round."""
    rounds = [_round(350, 9.0), _round(518, 4.0), _round(412, 7.0)]
    assert median_round(rounds) is rounds[2]
    assert median_round(rounds[:2]) is rounds[0]  # an even count: the lower middle
    lines = rounds_summary(rounds)
    assert lines[0].startswith("round 1: 350 starts/s, ")
    assert "exit p99 9.00 ms" in lines[0] and "PSS per mock 0.82 MiB" in lines[0]
    assert lines[-1].startswith("rounds: starts/s 350-518, median 412;")
    failed = [_round(None, 1.0), _round(400, 2.0)]
    assert median_round(failed) is failed[0]  # a round that measured nothing counts low
    assert rounds_summary(failed)[-1].startswith("rounds: starts/s 400-400, median -")


def test_the_priority_note_says_how_mocks_start_and_why() -> None:
    idle = [{"event": "tower-started", "start_priority": "idle", "start_priority_why": "x"}]
    assert start_priority_summary(idle).startswith("mocks start at idle CPU priority")
    normal = [
        {"event": "tower-started", "start_priority": "normal", "start_priority_why": "no cap"}
    ]
    assert start_priority_summary(normal) == "mocks start at normal CPU priority (no cap)"
    assert "not reported" in start_priority_summary([{"event": "tower-started"}])


def test_the_pipeline_note_gives_run_and_wait_of_each_process() -> None:
    before = {"tower": (1.0, 2.0), "zygote": (0.5, 0.25), "gone": None}
    after = {"tower": (1.61, 2.68), "zygote": (1.28, 2.31), "gone": (9.0, 9.0)}
    assert pipeline_waits(before, after) == (
        "during the start, the tower ran 0.61 s and waited 0.68 s; "
        "the zygote ran 0.78 s and waited 2.06 s"
    )
    assert pipeline_waits({"tower": None}, {"tower": None}) == ""
