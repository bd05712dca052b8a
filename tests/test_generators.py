"""Per-device generators: bounds, determinism, distributions and formats."""

from __future__ import annotations

import itertools
import math
import re
import statistics
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mockfleet.mock.generators.base import Context
from mockfleet.mock.generators.build import GeneratorError, build_generator
from mockfleet.mock.generators.gps import Route, haversine_km
from mockfleet.mock.seeding import device_seed

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
seeds = st.integers(min_value=0, max_value=2**63)
times = st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False)


def ctx(**kw: Any) -> Context:
    base: dict[str, Any] = {"device_id": "dev-7", "index": 7, "lot": "lot", "vars": {}}
    base.update(kw)
    return Context(**base)


def series(spec: dict[str, Any], n: int, seed: int = 1, node: str = "payload.x") -> list[Any]:
    gen = build_generator(spec, seed, node)
    c = ctx()
    out = []
    for i in range(n):
        c.seq = i
        c.elapsed = c.in_state = float(i)
        c.now = 1_700_000_000.0 + i
        out.append(gen(c))
    return out


def at(spec: dict[str, Any], t: float, seed: int = 1, clock: str = "elapsed") -> Any:
    c = ctx()
    setattr(c, {"elapsed": "elapsed", "absolute": "now", "state": "in_state"}[clock], t)
    return build_generator(spec, seed, "payload.x")(c)


# --------------------------------------------------------------------------- bounds


@given(seeds, finite, st.floats(min_value=0, max_value=1e6))
def test_uniform_within_bounds(seed: int, lo: float, width: float) -> None:
    for v in series({"$gen": "uniform", "min": lo, "max": lo + width}, 30, seed):
        assert lo <= v <= lo + width


@given(seeds, st.integers(-1000, 1000), st.integers(0, 5))
def test_uniform_integer_inclusive(seed: int, lo: int, width: int) -> None:
    vals = series({"$gen": "uniform", "min": lo, "max": lo + width, "integer": True}, 60, seed)
    assert all(type(v) is int and lo <= v <= lo + width for v in vals)
    if width == 0:
        assert set(vals) == {lo}


@given(seeds, finite, st.floats(0, 100), st.floats(0, 10))
def test_normal_is_clipped(seed: int, mean: float, stddev: float, half: float) -> None:
    spec = {
        "$gen": "normal",
        "mean": mean,
        "stddev": stddev,
        "min": mean - half,
        "max": mean + half,
    }
    assert all(mean - half <= v <= mean + half for v in series(spec, 40, seed))


@given(seeds, st.floats(0, 50), st.floats(-5, 5), st.floats(0, 100))
def test_random_walk_stays_in_bounds(seed: int, step: float, drift: float, start: float) -> None:
    spec = {
        "$gen": "randomWalk",
        "start": start,
        "step": step,
        "drift": drift,
        "min": 0,
        "max": 100,
    }
    vals = series(spec, 200, seed)
    assert vals[0] == start
    assert all(0 <= v <= 100 for v in vals)


@given(times, st.floats(-100, 100), st.floats(-100, 100), st.floats(0.001, 1e5))
def test_ramp_sawtooth_range(t: float, start: float, end: float, period: float) -> None:
    spec = {"$gen": "ramp", "start": start, "end": end, "period": period}
    v = at(spec, t)
    assert min(start, end) - 1e-6 <= v <= max(start, end) + 1e-6


def test_ramp_values() -> None:
    saw = {"$gen": "ramp", "start": 10, "end": 20, "period": 10}
    assert [at(saw, t) for t in (0, 5, 9.5, 10, 15)] == [10, 15, 19.5, 10, 15]
    hold = {**saw, "repeat": False}
    assert [at(hold, t) for t in (0, 5, 10, 1000)] == [10, 15, 20, 20]


@given(st.floats(-1000, 1000), st.floats(-1000, 1000), st.floats(0.1, 1e4), times, times)
def test_decay_moves_monotonically_towards_target(
    start: float, target: float, half: float, t1: float, t2: float
) -> None:
    spec = {"$gen": "decay", "start": start, "target": target, "halfLife": half}
    a, b = sorted((t1, t2))
    va, vb = at(spec, a), at(spec, b)
    assert abs(vb - target) <= abs(va - target) + 1e-9
    assert min(start, target) - 1e-9 <= vb <= max(start, target) + 1e-9


def test_decay_half_life() -> None:
    spec = {"$gen": "decay", "start": 100, "target": 0, "halfLife": "1h"}
    assert at(spec, 0) == 100
    assert at(spec, 3600) == pytest.approx(50)
    assert at(spec, 7200) == pytest.approx(25)


@given(seeds, times, st.floats(-100, 100), st.floats(0, 100), st.floats(0.01, 1e6), st.booleans())
def test_sine_within_amplitude_without_noise(
    seed: int, t: float, offset: float, amp: float, period: float, random_phase: bool
) -> None:
    spec = {
        "$gen": "sine",
        "period": period,
        "amplitude": amp,
        "offset": offset,
        "randomPhase": random_phase,
    }
    v = at(spec, t, seed, clock="absolute")
    assert offset - amp - 1e-6 <= v <= offset + amp + 1e-6


def test_sine_shape_phase_and_clocks() -> None:
    spec = {"$gen": "sine", "period": 100, "amplitude": 2, "offset": 10}
    assert at(spec, 0, clock="absolute") == pytest.approx(10)
    assert at(spec, 25, clock="absolute") == pytest.approx(12)
    assert at(spec, 75, clock="absolute") == pytest.approx(8)
    assert at({**spec, "phase": 25}, 50, clock="absolute") == pytest.approx(12)
    assert at({**spec, "clock": "state"}, 25, clock="state") == pytest.approx(12)
    assert at({**spec, "clock": "elapsed"}, 25, clock="elapsed") == pytest.approx(12)
    # randomPhase: each device its own phase, stable for the device
    rp = {**spec, "randomPhase": True}
    assert at(rp, 10, seed=1) == at(rp, 10, seed=1)
    assert len({at(rp, 10, seed=s) for s in range(20)}) == 20


# distinct times (coinciding times are steps) on a 1/1000 grid, never both 0 and 1
CURVE_POINTS = st.lists(st.integers(0, 999), min_size=2, max_size=8, unique=True).flatmap(
    lambda ts: st.lists(st.floats(-100, 100), min_size=len(ts), max_size=len(ts)).map(
        lambda vs: [(t / 1000, v) for t, v in zip(sorted(ts), vs, strict=True)]
    )
)


@given(CURVE_POINTS, st.floats(1, 1e5))
def test_curve_hits_points_and_interpolates(
    points: list[tuple[float, float]], period: float
) -> None:
    spec = {
        "$gen": "curve",
        "period": period,
        "points": [list(p) for p in points],
        "fractions": True,
        "clock": "elapsed",
    }
    gen = build_generator(spec, 1, "payload.x")
    c = ctx()
    lo, hi = min(p[1] for p in points), max(p[1] for p in points)
    for frac, value in points:
        c.elapsed = frac * period
        assert gen(c) == pytest.approx(value, abs=1e-6)
        c.elapsed = frac * period + 3 * period  # periodic
        assert gen(c) == pytest.approx(value, abs=1e-4)
    for (f0, v0), (f1, v1) in itertools.pairwise(points):
        c.elapsed = (f0 + f1) / 2 * period
        assert gen(c) == pytest.approx((v0 + v1) / 2, abs=1e-6)
    for k in range(50):
        c.elapsed = period * k / 50
        assert lo - 1e-9 <= gen(c) <= hi + 1e-9


def test_curve_wraps_from_last_to_first_and_durations() -> None:
    spec = {"$gen": "curve", "period": "24h", "points": [["6h", 10], ["18h", 20]]}
    at_ = lambda h: at(spec, h * 3600, clock="absolute")  # noqa: E731
    assert at_(6) == 10 and at_(12) == 15 and at_(18) == 20
    assert at_(0) == pytest.approx(15)  # halfway from 18h to 6h (next day)
    assert at_(24 + 3) == pytest.approx(12.5)
    single = {"$gen": "curve", "period": 10, "points": [[3, 7]]}
    assert {at(single, t, clock="absolute") for t in (0, 3, 8, 123)} == {7}


# --------------------------------------------------------------------------- counters & picks


def test_sequence_wraps_after_end() -> None:
    assert series({"$gen": "sequence", "start": 1, "step": 2, "end": 6}, 7) == [1, 3, 5, 1, 3, 5, 1]
    assert series({"$gen": "sequence", "start": 3, "step": -1, "end": 1}, 5) == [3, 2, 1, 3, 2]
    assert series({"$gen": "sequence", "start": 0, "step": 1, "end": 2}, 4) == [0, 1, 2, 0]
    vals = series({"$gen": "sequence", "start": 0.5, "step": 0.25}, 3)
    assert vals == [0.5, 0.75, 1.0]
    assert all(type(v) is int for v in series({"$gen": "sequence"}, 3))


def test_bucket_cycle_and_random() -> None:
    assert series({"$gen": "bucket", "values": ["a", "b", "c"]}, 7) == list("abcabca")
    rnd = series({"$gen": "bucket", "values": ["a", "b", "c"], "order": "random"}, 300)
    assert set(rnd) == {"a", "b", "c"}


def test_choice_weights_within_five_sigma() -> None:
    spec = {"$gen": "choice", "options": [{"value": "a", "weight": 1}, {"value": "b", "weight": 3}]}
    n = 20000
    counts = Counter(
        series({**spec, "options": spec["options"] + [{"value": "z", "weight": 0}]}, n)
    )
    p = 0.25
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(counts["a"] - n * p) < 5 * sigma
    assert counts["z"] == 0
    assert counts["a"] + counts["b"] == n


def test_uniform_and_normal_distributions() -> None:
    n = 20000
    u = series({"$gen": "uniform", "min": 10, "max": 20}, n, seed=11)
    # mean of U(10,20): 15, sd 10/sqrt(12)
    assert abs(statistics.fmean(u) - 15) < 5 * (10 / math.sqrt(12)) / math.sqrt(n)
    g = series({"$gen": "normal", "mean": 5, "stddev": 2}, n, seed=12)
    assert abs(statistics.fmean(g) - 5) < 5 * 2 / math.sqrt(n)
    assert abs(statistics.stdev(g) - 2) < 5 * 2 / math.sqrt(2 * n)


# --------------------------------------------------------------------------- determinism


@given(st.integers(0, 2**32), st.integers(0, 10**6))
@settings(max_examples=25)
def test_same_seed_index_node_same_series(lot_seed: int, index: int) -> None:
    spec = {"$gen": "normal", "mean": 0, "stddev": 1}
    seed = device_seed(lot_seed, index)
    assert series(spec, 10, seed) == series(spec, 10, seed)
    assert series(spec, 10, seed) != series(spec, 10, device_seed(lot_seed, index + 1))
    assert series(spec, 10, seed, "payload.x") != series(spec, 10, seed, "payload.y")


def test_round_applies_to_numbers() -> None:
    assert all(
        v == round(v, 2) for v in series({"$gen": "uniform", "min": 0, "max": 1, "round": 2}, 50)
    )
    assert series({"$gen": "constant", "value": 1.23456, "round": 1}, 1) == [1.2]
    fix = series({"$gen": "gps", "waypoints": [[0, 0], [1, 1]], "speed": 50, "round": 3}, 3)[2]
    assert fix["lat"] == round(fix["lat"], 3) and fix["lon"] == round(fix["lon"], 3)


# --------------------------------------------------------------------------- formats


def test_timestamp_formats() -> None:
    c = ctx(now=1_700_000_000.1234, time_offset=-60.0)
    iso = build_generator({"$gen": "timestamp"}, 1, "n")(c)
    assert iso == "2023-11-14T22:12:20.123Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", iso)
    assert build_generator({"$gen": "timestamp", "format": "epoch"}, 1, "n")(c) == pytest.approx(
        1_699_999_940.1234
    )
    ms = build_generator({"$gen": "timestamp", "format": "epochMs", "offset": 1.5}, 1, "n")(c)
    assert ms == 1_699_999_941_623 and type(ms) is int


@given(st.floats(0, 4e9))
def test_timestamp_iso_matches_epoch_ms(t: float) -> None:
    import datetime as dt

    c = ctx(now=t)
    iso = build_generator({"$gen": "timestamp"}, 1, "n")(c)
    ms = build_generator({"$gen": "timestamp", "format": "epochMs"}, 1, "n")(c)
    parsed = dt.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
    assert round(parsed.timestamp() * 1000) == ms


def test_uuid_format_and_determinism() -> None:
    a = series({"$gen": "uuid"}, 50, seed=4)
    pattern = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
    assert all(re.fullmatch(pattern, u) for u in a)
    assert len(set(a)) == 50
    assert a == series({"$gen": "uuid"}, 50, seed=4)
    assert a != series({"$gen": "uuid"}, 50, seed=5)


def test_device_var_and_format() -> None:
    c = ctx(vars={"site": "north", "n": 3}, seq=9, state="error")
    get = lambda spec: build_generator(spec, 1, "n")(c)  # noqa: E731
    assert get({"$gen": "device"}) == "dev-7"
    assert get({"$gen": "device", "field": "index"}) == 7
    assert get({"$gen": "device", "field": "lot"}) == "lot"
    assert get({"$gen": "device", "field": "state"}) == "error"
    assert get({"$gen": "device", "field": "seq"}) == 9
    assert get({"$gen": "var", "name": "site"}) == "north"
    assert get({"$gen": "format", "template": "{site}/{id}/{index:03d}/{seq}/{n}"}) == (
        "north/dev-7/007/9/3"
    )
    with pytest.raises(GeneratorError, match="unknown variable 'nope'; known: n, site"):
        get({"$gen": "var", "name": "nope"})
    with pytest.raises(GeneratorError, match="unknown name 'zz'"):
        get({"$gen": "format", "template": "{zz}"})


def test_expr_generator_alone() -> None:
    c = ctx(vars={"k": 2}, elapsed=5.0)
    c.fields = {"a": 10}
    assert build_generator({"$gen": "expr", "expr": "a * k + t"}, 1, "n")(c) == 25.0


# --------------------------------------------------------------------------- gps


def test_gps_starts_at_first_waypoint_and_moves_at_speed() -> None:
    wps = [[48.0, 11.0], [48.0, 11.5], [48.3, 11.5]]
    spec = {"$gen": "gps", "waypoints": wps, "speed": 60, "loop": False}
    first = at(spec, 0)
    assert (first["lat"], first["lon"]) == (48.0, 11.0)
    assert first["speed"] == 60
    assert 89 < first["heading"] < 91  # due east along the parallel (great circle ~ 90)
    route = Route([tuple(w) for w in wps], loop=False)  # type: ignore[misc]
    # within the first leg the distance from the start is the distance travelled
    for t in (60.0, 600.0, 1200.0):
        fix = at(spec, t)
        assert haversine_km(48.0, 11.0, fix["lat"], fix["lon"]) == pytest.approx(
            60 * t / 3600, rel=1e-6
        )
    # later the distance along the route (first leg + the rest of the second) matches
    leg1 = route.legs[0]
    t = (leg1 + 10) / 60 * 3600
    fix = at(spec, t)
    assert haversine_km(48.0, 11.5, fix["lat"], fix["lon"]) == pytest.approx(10, rel=1e-6)
    assert fix["heading"] == pytest.approx(0, abs=0.5) or fix["heading"] == pytest.approx(
        360, abs=0.5
    )
    # open route: bounces back, after 2 * length it is home again
    back = at(spec, 2 * route.length_km / 60 * 3600)
    assert back["lat"] == pytest.approx(48.0) and back["lon"] == pytest.approx(11.0)


@given(
    st.lists(st.tuples(st.floats(-60, 60), st.floats(-170, 170)), min_size=2, max_size=5),
    st.floats(1, 300),
    st.floats(0, 1),
)
@settings(max_examples=50)
def test_gps_loop_returns_to_start_and_stays_on_route(
    wps: list[tuple[float, float]], speed: float, frac: float
) -> None:
    spec = {"$gen": "gps", "waypoints": [list(w) for w in wps], "speed": speed}
    route = Route(wps, loop=True)
    period = route.length_km / speed * 3600
    if period <= 0:
        return
    home = at(spec, period)
    assert haversine_km(*wps[0], home["lat"], home["lon"]) < 1e-3
    fix = at(spec, frac * period)
    assert -90 <= fix["lat"] <= 90 and -180 <= fix["lon"] <= 180
    assert 0 <= fix["heading"] < 360
    assert at({**spec, "field": "lat"}, frac * period) == fix["lat"]


# --------------------------------------------------------------------------- fake


def test_fake_is_deterministic_per_device_and_node() -> None:
    spec = {"$gen": "fake", "provider": "name"}
    a = series(spec, 5, seed=1)
    assert a == series(spec, 5, seed=1)
    assert a != series(spec, 5, seed=2)
    assert a != series(spec, 5, seed=1, node="payload.other")
    assert all(isinstance(n, str) and n for n in a)
    nums = series(
        {"$gen": "fake", "provider": "pyint", "args": {"min_value": 3, "max_value": 5}}, 20
    )
    assert set(nums) <= {3, 4, 5}
    assert isinstance(series({"$gen": "fake", "provider": "date_of_birth"}, 1)[0], str)


def test_fake_rejects_unknown_provider_and_bad_args() -> None:
    with pytest.raises(ValueError, match="unknown provider 'no_such_thing'"):
        build_generator({"$gen": "fake", "provider": "no_such_thing"}, 1, "n")
    with pytest.raises(ValueError, match="not a data provider"):
        build_generator({"$gen": "fake", "provider": "seed_instance"}, 1, "n")
    with pytest.raises(ValueError, match="pyint"):
        build_generator({"$gen": "fake", "provider": "pyint", "args": {"bogus": 1}}, 1, "n")


# --------------------------------------------------------------------------- speed


def test_render_speed_is_microseconds_per_field() -> None:
    import time

    from mockfleet.mock.template import compile_template

    tpl = {
        "ts": {"$gen": "timestamp"},
        "a": {"$gen": "uniform", "round": 2},
        "b": {"$gen": "normal"},
        "c": {"$gen": "randomWalk"},
        "d": {"$gen": "sine", "period": 60},
        "e": {"$gen": "sequence"},
        "f": {"$gen": "choice", "options": [1, 2, 3]},
        "g": {"$gen": "device"},
        "h": {"$gen": "ramp", "period": 10},
        "k": "literal",
    }
    inst = compile_template(tpl).instantiate(1, {})
    c = ctx(now=1e9)
    inst.render(c)
    n = 2000
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        for i in range(n):
            c.now = 1e9 + i
            inst.render(c)
        best = min(best, (time.perf_counter() - start) / n)
    # a generous ceiling for a shared CI machine; typically ~1-2 us per field
    assert best < 10 * 50e-6
