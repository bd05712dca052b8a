"""Riding out a tower's brief silence (mockfleet.operator.reportcache)."""

from __future__ import annotations

from mockfleet.operator.reportcache import ReportCache
from mockfleet.operator.status import TowerReport

GOOD = {"running": 5}


def test_a_brief_silence_is_covered_by_the_last_good_report() -> None:
    cache = ReportCache(grace=30)
    first = [TowerReport("n1", "p1", GOOD), TowerReport("n2", "p2", {"running": 3})]
    assert cache.settle("ns/lot", first, now=100.0) == first
    silent = [TowerReport("n1", "p1", None, "connection refused"), first[1]]
    out = cache.settle("ns/lot", silent, now=110.0)
    assert out[0] == TowerReport("n1", "p1", GOOD)
    assert out[1] == first[1]


def test_a_long_silence_is_reported() -> None:
    cache = ReportCache(grace=30)
    cache.settle("ns/lot", [TowerReport("n1", "p1", GOOD)], now=100.0)
    silent = [TowerReport("n1", "p1", None, "timeout")]
    assert cache.settle("ns/lot", silent, now=120.0)[0].stats == GOOD
    # the grace counts from the last good answer, not from the last cover-up
    assert cache.settle("ns/lot", silent, now=131.0) == silent


def test_pods_never_heard_from_and_other_lots_are_not_covered() -> None:
    cache = ReportCache(grace=30)
    cache.settle("ns/a", [TowerReport("n1", "p1", GOOD)], now=100.0)
    silent = [TowerReport("n1", "p1", None, "refused")]
    assert cache.settle("ns/b", silent, now=101.0) == silent
    new_pod = [TowerReport("n1", "p9", None, "no pod IP yet")]
    assert cache.settle("ns/a", new_pod, now=101.0) == new_pod
    # p1 was not listed for ns/a this time: forgotten
    assert cache.settle("ns/a", silent, now=102.0) == silent
