"""The receiver's pure verification logic: sequences, latency, counts."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mockfleet.tower.receiver.latency import GROWTH, bucket_of, upper_edge
from mockfleet.tower.receiver.sequence import SeqTracker
from mockfleet.tower.receiver.stats import EnvelopeFields, Stats

NOW = 1_700_000_000.0


def msg(device: str, seq: int, sent_at: float = NOW, **extra: Any) -> bytes:
    return json.dumps({"device_id": device, "seq": seq, "sent_at": sent_at, **extra}).encode()


def feed(stats: Stats, device: str, seqs: list[int], at: float = NOW) -> None:
    for seq in seqs:
        stats.observe(msg(device, seq, at), at)


def counts(stats: Stats) -> dict[str, int]:
    snap = stats.snapshot(now=NOW)
    return {k: snap[k] for k in ("received", "unique", "lost", "duplicates", "reordered")}


def test_in_order_stream_has_nothing_lost_or_duplicated() -> None:
    stats = Stats()
    feed(stats, "a", list(range(100)))
    assert counts(stats) == dict(received=100, unique=100, lost=0, duplicates=0, reordered=0)
    dev = stats.snapshot(per_device=True, now=NOW)["per_device"]["a"]
    assert (dev["first_seq"], dev["last_seq"], dev["lost"]) == (0, 99, 0)


def test_start_at_one_is_not_a_loss() -> None:
    stats = Stats()
    feed(stats, "a", [1, 2, 3])
    assert counts(stats)["lost"] == 0


def test_gaps_are_losses() -> None:
    stats = Stats()
    feed(stats, "a", [0, 1, 4, 5, 9])
    assert counts(stats) == dict(received=5, unique=5, lost=5, duplicates=0, reordered=0)


def test_duplicates_are_counted_and_not_unique() -> None:
    stats = Stats()
    feed(stats, "a", [0, 1, 1, 2, 2, 2, 0])
    assert counts(stats) == dict(received=7, unique=3, lost=0, duplicates=4, reordered=0)


def test_reordering_without_loss() -> None:
    stats = Stats()
    feed(stats, "a", [0, 2, 1, 3, 5, 4])
    assert counts(stats) == dict(received=6, unique=6, lost=0, duplicates=0, reordered=2)


def test_late_arrival_of_a_missing_seq_reduces_loss() -> None:
    stats = Stats()
    feed(stats, "a", [0, 1, 3, 4])
    assert counts(stats)["lost"] == 1
    feed(stats, "a", [2])
    assert counts(stats) == dict(received=5, unique=5, lost=0, duplicates=0, reordered=1)


def test_seq_below_the_first_seen_extends_the_span() -> None:
    stats = Stats()
    feed(stats, "a", [5, 6, 2])
    snap = stats.snapshot(per_device=True, now=NOW)
    assert snap["lost"] == 2  # 3 and 4
    assert snap["reordered"] == 1
    assert snap["per_device"]["a"]["first_seq"] == 2


def test_seqs_behind_the_window_count_as_late_and_unchecked() -> None:
    tracker = SeqTracker(window=8)
    for seq in [*range(20), 3, 3]:
        tracker.observe(seq)
    # 3 is 16 behind the top: too old to check, both copies assumed new.
    assert (tracker.late, tracker.reordered, tracker.duplicates) == (2, 2, 0)
    assert tracker.lost == 0  # clamped: the unchecked duplicate cannot make it negative


def test_window_slides_and_still_detects_recent_duplicates() -> None:
    tracker = SeqTracker(window=8)
    for seq in range(1000):
        tracker.observe(seq)
    tracker.observe(995)
    tracker.observe(990)  # just behind the window (992..999)
    assert tracker.duplicates == 1
    assert tracker.late == 1


def test_window_boundary_is_exact() -> None:
    tracker = SeqTracker(window=8)
    for seq in range(1000):
        tracker.observe(seq)
    tracker.observe(992)  # the oldest number still inside (992..999)
    assert (tracker.duplicates, tracker.late) == (1, 0)
    tracker.observe(991)  # the newest number outside
    assert (tracker.duplicates, tracker.late) == (1, 1)


def test_a_big_jump_clears_the_window() -> None:
    tracker = SeqTracker(window=8)
    for seq in range(8):
        tracker.observe(seq)
    tracker.observe(100)
    tracker.observe(96)  # its slot held seq 0's bit before the jump
    assert tracker.duplicates == 0
    assert tracker.unique == 10
    assert tracker.lost == 101 - 10


@pytest.mark.parametrize("window", [0, 7, 100])
def test_window_must_be_a_power_of_two(window: int) -> None:
    with pytest.raises(ValueError, match="power of two"):
        Stats(window=window)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe\x00", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"seq": 1, "sent_at": 1}', "no string 'device_id'"),
        (b'{"device_id": 7, "seq": 1, "sent_at": 1}', "no string 'device_id'"),
    ],
)
def test_unattributable_malformed_bodies(body: bytes, reason: str) -> None:
    stats = Stats()
    assert stats.observe(body, NOW) is None
    snap = stats.snapshot(per_device=True, now=NOW)
    assert snap["received"] == 1
    assert snap["malformed"] == 1
    assert snap["malformed_reasons"] == {reason: 1}
    assert snap["per_device"] == {}
    assert snap["bytes"] == len(body)


@pytest.mark.parametrize(
    "doc",
    [
        {"device_id": "a", "sent_at": NOW},
        {"device_id": "a", "seq": "3", "sent_at": NOW},
        {"device_id": "a", "seq": True, "sent_at": NOW},
        {"device_id": "a", "seq": 1.0, "sent_at": NOW},
        {"device_id": "a", "seq": 3},
        {"device_id": "a", "seq": 3, "sent_at": "yesterday"},
        {"device_id": "a", "seq": 3, "sent_at": math.nan},
    ],
)
def test_malformed_bodies_are_charged_to_their_device(doc: dict[str, Any]) -> None:
    stats = Stats()
    assert stats.observe(json.dumps(doc).encode(), NOW) == "a"
    snap = stats.snapshot(per_device=True, now=NOW)
    assert (snap["received"], snap["malformed"], snap["unique"]) == (1, 1, 0)
    device = snap["per_device"]["a"]
    assert (device["received"], device["malformed"], device["unique"]) == (1, 1, 0)
    assert device["first_seq"] is None
    assert snap["lost"] == 0


def test_devices_are_independent() -> None:
    stats = Stats()
    feed(stats, "a", [0, 1, 2])
    feed(stats, "b", [10, 12])
    feed(stats, "a", [1])
    snap = stats.snapshot(per_device=True, now=NOW)
    assert snap["devices"] == 2
    assert (snap["lost"], snap["duplicates"]) == (1, 1)
    assert snap["per_device"]["a"]["duplicates"] == 1
    assert snap["per_device"]["a"]["lost"] == 0
    assert snap["per_device"]["b"]["lost"] == 1


def test_configurable_field_names_and_bulk_messages() -> None:
    stats = Stats(EnvelopeFields(device="id", seq="n", sent_at="ts"))
    body = json.dumps({"id": "x", "n": 0, "ts": NOW, "samples": [{"t": 1}, {"t": 2}]}).encode()
    assert stats.observe(body, NOW) == "x"
    assert stats.observe(msg("x", 1), NOW) is None  # default names are now malformed
    snap = stats.snapshot(now=NOW)
    assert (snap["unique"], snap["malformed"]) == (1, 1)


def test_latency_percentiles_match_known_values() -> None:
    stats = Stats()
    for i in range(1, 1001):  # latencies of 1..1000 ms
        stats.observe(msg("a", i, NOW - i / 1000), NOW)
    lat = stats.snapshot(now=NOW)["latency_ms"]
    assert lat["count"] == 1000
    for name, expected in (("p50", 500), ("p90", 900), ("p99", 990)):
        assert expected <= lat[name] <= expected * GROWTH * 1.001, (name, lat[name])
    assert lat["max"] == pytest.approx(1000, rel=1e-6)
    assert lat["min"] == pytest.approx(1, rel=1e-6)


def test_latency_of_one_device_and_clock_skew() -> None:
    stats = Stats()
    stats.observe(msg("a", 0, NOW - 0.010), NOW)
    stats.observe(msg("a", 1, NOW + 5), NOW)  # sent "in the future": clocks out of step
    snap = stats.snapshot(per_device=True, now=NOW)
    assert snap["clock_skewed"] == 1
    device_lat = snap["per_device"]["a"]["latency_ms"]
    assert device_lat["count"] == 2
    assert device_lat["min"] == 0
    assert device_lat["max"] == pytest.approx(10, rel=1e-6)


def test_empty_latency_summary() -> None:
    lat = Stats().snapshot(now=NOW)["latency_ms"]
    assert lat == {"count": 0, "p50": None, "p90": None, "p99": None, "max": None, "min": None}


def test_buckets_bound_the_relative_error() -> None:
    for ms in (0.02, 0.5, 3.3, 42.0, 999.0, 123456.0):
        edge = upper_edge(bucket_of(ms))
        assert ms <= edge <= ms * GROWTH * 1.0001
    assert bucket_of(-5) == 0
    assert bucket_of(1e12) == bucket_of(1e13)  # the overflow bucket


def test_rate_over_the_last_seconds() -> None:
    stats = Stats(clock=lambda: NOW)
    for second in range(10):
        for _ in range(100 * (second + 1)):
            stats.observe(msg("a", 0), NOW + second + 0.5)
    # Seconds 5..9 are the last five complete seconds before NOW + 10.
    assert stats.snapshot(now=NOW + 10)["rate"] == pytest.approx((600 + 1000) * 5 / 2 / 5)
    assert stats.snapshot(now=NOW + 0.7)["rate"] == 0.0  # no complete second yet
    assert stats.snapshot(now=NOW + 100)["rate"] == 0.0  # quiet for a long time


def test_expected_sent_is_compared_with_unique_arrivals() -> None:
    stats = Stats()
    snap = stats.snapshot(now=NOW)
    assert (snap["sent"], snap["lost_vs_sent"]) == (None, None)
    feed(stats, "a", [0, 1, 2, 2, 4])
    stats.expected_sent = 6  # seq 5 was sent and never arrived: `lost` cannot see it
    snap = stats.snapshot(now=NOW)
    assert (snap["sent"], snap["lost_vs_sent"], snap["lost"]) == (6, 2, 1)


# --------------------------------------------------------------------------- property


@st.composite
def mangled_streams(draw: st.DrawFn) -> tuple[int, list[int]]:
    """A device's seqs 0..n-1 (or from 1), with drops, duplicates and reordering."""
    n = draw(st.integers(1, 200))
    start = draw(st.sampled_from([0, 1]))
    seqs = list(range(start, start + n))
    dropped = draw(st.frozensets(st.sampled_from(seqs), max_size=n // 2))
    kept = [s for s in seqs if s not in dropped]
    dups = draw(st.lists(st.sampled_from(kept), max_size=50)) if kept else []
    stream = draw(st.permutations(kept + dups))
    return start, stream


@settings(max_examples=200, deadline=None)
@given(streams=st.lists(mangled_streams(), min_size=1, max_size=4))
def test_counts_match_ground_truth(streams: list[tuple[int, list[int]]]) -> None:
    stats = Stats()
    expected = dict(received=0, unique=0, lost=0, duplicates=0, reordered=0)
    for index, (_start, stream) in enumerate(streams):
        feed(stats, f"dev-{index}", stream)
        seen: set[int] = set()
        top = None
        for seq in stream:
            expected["received"] += 1
            if seq in seen:
                expected["duplicates"] += 1
                continue
            if top is not None and seq < top:
                expected["reordered"] += 1
            seen.add(seq)
            top = seq if top is None else max(top, seq)
        if seen:
            expected["unique"] += len(seen)
            expected["lost"] += max(seen) - min(seen) + 1 - len(seen)
    assert counts(stats) == expected
    snap = stats.snapshot(per_device=True, now=NOW)
    assert sum(d["lost"] for d in snap["per_device"].values()) == expected["lost"]
    assert snap["late"] == 0


@settings(max_examples=200, deadline=None)
@given(stream=st.lists(st.integers(0, 60), min_size=1, max_size=150))
def test_small_window_matches_the_documented_model(stream: list[int]) -> None:
    """Beyond the window: late numbers are counted, assumed new, never duplicates."""
    window = 8
    tracker = SeqTracker(window)
    seen: set[int] = set()
    top: int | None = None
    unique = duplicates = reordered = late = 0
    for seq in stream:
        tracker.observe(seq)
        if top is None or seq > top:
            top = seq
            unique += 1
        elif seq > top - window and seq in seen:
            duplicates += 1
        else:
            unique += 1
            reordered += 1
            late += seq <= top - window
        seen.add(seq)
    assert (tracker.unique, tracker.duplicates, tracker.reordered, tracker.late) == (
        unique,
        duplicates,
        reordered,
        late,
    )
    assert tracker.lost == max(0, max(stream) - min(stream) + 1 - unique)


def test_schedule_lag_is_measured_when_the_field_is_named() -> None:
    import json as _json

    from mockfleet.tower.receiver.stats import EnvelopeFields as _F
    from mockfleet.tower.receiver.stats import Stats as _S

    stats = _S(_F(scheduled_at="due_at"))
    for i in range(100):
        body = {"device_id": "d", "seq": i, "sent_at": 1000.0 + i + 0.010, "due_at": 1000.0 + i}
        stats.observe(_json.dumps(body).encode(), 1000.0 + i + 0.02)
    lag = stats.snapshot()["schedule_lag_ms"]
    assert lag["count"] == 100
    assert 9.5 <= lag["p50"] <= 10.5
    assert _S().snapshot()["schedule_lag_ms"] is None
