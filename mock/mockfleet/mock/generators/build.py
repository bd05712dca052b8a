"""Turn a validated generator spec into a per-device generator.

Thousands of device processes each hold their own generators, so every
generator is a small ``__slots__`` object holding only what it needs between
calls, and a random stream (``seeding.stream(seed, node_id)``) is created only
for the generators that draw random numbers. Everything derived from the spec
alone (cumulative weights, curve tables, gps routes) could be shared, but is
cheap enough to keep per generator; the template compiler shares the specs.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_right
from collections.abc import Callable
from operator import attrgetter
from random import Random
from typing import TYPE_CHECKING, Any

from mockfleet.mock.durations import parse_duration
from mockfleet.mock.generators.base import Context, Generator
from mockfleet.mock.generators.gps import Route
from mockfleet.mock.generators.syntax import ExprError
from mockfleet.mock.plain import Spec
from mockfleet.mock.seeding import stream

if TYPE_CHECKING:
    from mockfleet.mock.generators import specs as s

_CLOCKS: dict[str, Callable[[Context], float]] = {
    "absolute": attrgetter("now"),
    "elapsed": attrgetter("elapsed"),
    "state": attrgetter("in_state"),
}
_DEVICE_FIELDS: dict[str, Callable[[Context], Any]] = {
    "id": attrgetter("device_id"),
    "index": attrgetter("index"),
    "lot": attrgetter("lot"),
    "state": attrgetter("state"),
    "seq": attrgetter("seq"),
}
_TWO_PI = 2 * math.pi


class GeneratorError(ValueError):
    """A generator that cannot produce a value (e.g. an unknown variable)."""


def _num(x: float) -> float | int:
    """Whole floats from the spec (pydantic turns 1 into 1.0) render as ints."""
    return int(x) if float(x).is_integer() else x


# --------------------------------------------------------------------------- plain values


class _Constant:
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __call__(self, ctx: Context) -> Any:
        return self.value


class _Sequence:
    __slots__ = ("end", "next", "start", "step")

    def __init__(self, spec: s.Sequence) -> None:
        self.start = _num(spec.start)
        self.step = _num(spec.step)
        self.end = spec.end
        self.next = self.start

    def __call__(self, ctx: Context) -> Any:
        value = self.next
        end = self.end
        if end is not None and (value > end if self.step > 0 else value < end):
            value = self.start  # passed the end: wrap
        self.next = value + self.step
        return value


class _Device:
    __slots__ = ("get",)

    def __init__(self, field: str) -> None:
        self.get = _DEVICE_FIELDS[field]

    def __call__(self, ctx: Context) -> Any:
        return self.get(ctx)


class _Var:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, ctx: Context) -> Any:
        try:
            return ctx.vars[self.name]
        except KeyError:
            known = ", ".join(sorted(ctx.vars)) or "none"
            raise GeneratorError(f"var: unknown variable {self.name!r}; known: {known}") from None


class _Format:
    __slots__ = ("template",)

    def __init__(self, template: str) -> None:
        self.template = template

    def __call__(self, ctx: Context) -> Any:
        names = {
            **ctx.vars,
            "id": ctx.device_id,
            "index": ctx.index,
            "lot": ctx.lot,
            "seq": ctx.seq,
            "state": ctx.state,
        }
        try:
            return self.template.format_map(names)
        except KeyError as exc:
            raise GeneratorError(
                f"format: {self.template!r} uses unknown name {exc.args[0]!r}"
            ) from None
        except (ValueError, TypeError) as exc:
            raise GeneratorError(f"format: {self.template!r}: {exc}") from None


# --------------------------------------------------------------------------- random


class _Uniform:
    __slots__ = ("hi", "lo", "rng")

    def __init__(self, spec: s.Uniform, rng: Random) -> None:
        self.lo, self.hi, self.rng = spec.min, spec.max, rng

    def __call__(self, ctx: Context) -> Any:
        return self.rng.uniform(self.lo, self.hi)


class _UniformInt:
    __slots__ = ("hi", "lo", "rng")

    def __init__(self, spec: s.Uniform, rng: Random) -> None:
        self.lo = math.ceil(spec.min)
        self.hi = math.floor(spec.max)
        if self.hi < self.lo:
            raise ValueError(f"uniform: no whole number lies in [{spec.min}, {spec.max}]")
        self.rng = rng

    def __call__(self, ctx: Context) -> Any:
        return self.rng.randint(self.lo, self.hi)


class _Normal:
    __slots__ = ("hi", "lo", "mean", "rng", "stddev")

    def __init__(self, spec: s.Normal, rng: Random) -> None:
        self.mean, self.stddev, self.rng = spec.mean, spec.stddev, rng
        self.lo = -math.inf if spec.min is None else spec.min
        self.hi = math.inf if spec.max is None else spec.max

    def __call__(self, ctx: Context) -> Any:
        v = self.rng.gauss(self.mean, self.stddev)
        return self.lo if v < self.lo else self.hi if v > self.hi else v


class _RandomWalk:
    __slots__ = ("drift", "hi", "lo", "rng", "started", "step", "value")

    def __init__(self, spec: s.RandomWalk, rng: Random) -> None:
        self.value = spec.start
        self.step, self.drift, self.rng = spec.step, spec.drift, rng
        self.lo = -math.inf if spec.min is None else spec.min
        self.hi = math.inf if spec.max is None else spec.max
        self.started = False

    def __call__(self, ctx: Context) -> Any:
        if not self.started:  # the first sample is the start value itself
            self.started = True
            return self.value
        v = self.value + self.rng.gauss(self.drift, self.step)
        v = self.lo if v < self.lo else self.hi if v > self.hi else v
        self.value = v
        return v


class _Choice:
    __slots__ = ("cum", "rng", "total", "values")

    def __init__(self, spec: s.Choice, rng: Random) -> None:
        cum: list[float] = []
        acc = 0.0
        for opt in spec.options:
            acc += opt.weight
            cum.append(acc)
        self.cum = tuple(cum)
        self.total = acc
        self.values = tuple(o.value for o in spec.options)
        self.rng = rng

    def __call__(self, ctx: Context) -> Any:
        # bisect_right skips zero-weight options (their cumulative equals the previous)
        i = bisect_right(self.cum, self.rng.random() * self.total)
        return self.values[min(i, len(self.values) - 1)]


class _BucketCycle:
    __slots__ = ("i", "values")

    def __init__(self, values: list[Any]) -> None:
        self.values = tuple(values)
        self.i = 0

    def __call__(self, ctx: Context) -> Any:
        i = self.i
        self.i = i + 1 if i + 1 < len(self.values) else 0
        return self.values[i]


class _BucketRandom:
    __slots__ = ("rng", "values")

    def __init__(self, values: list[Any], rng: Random) -> None:
        self.values = tuple(values)
        self.rng = rng

    def __call__(self, ctx: Context) -> Any:
        return self.values[self.rng.randrange(len(self.values))]


class _Uuid:
    __slots__ = ("rng",)

    def __init__(self, rng: Random) -> None:
        self.rng = rng

    def __call__(self, ctx: Context) -> Any:
        # RFC 4122 version 4 layout, but drawn from the device stream: reproducible.
        n = self.rng.getrandbits(128)
        n = (n & ~(0xF000 << 64)) | (0x4000 << 64)  # version 4
        n = (n & ~(0xC000 << 48)) | (0x8000 << 48)  # variant 10xx
        h = f"{n:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# --------------------------------------------------------------------------- time based


class _Sine:
    __slots__ = ("amp", "clock", "noise", "offset", "period", "phase", "rng")

    def __init__(self, spec: s.Sine, rng: Random | None) -> None:
        self.clock = _CLOCKS[spec.clock]
        self.amp, self.offset, self.period = spec.amplitude, spec.offset, spec.period
        self.noise = spec.noise
        self.rng = rng
        self.phase = spec.phase
        if spec.randomPhase and rng is not None:
            self.phase = rng.uniform(0, spec.period)

    def __call__(self, ctx: Context) -> Any:
        t = self.clock(ctx)
        v = self.offset + self.amp * math.sin(_TWO_PI * (t - self.phase) / self.period)
        if self.noise:
            v += self.rng.gauss(0.0, self.noise)  # type: ignore[union-attr]
        return v


class _Ramp:
    __slots__ = ("clock", "end", "period", "repeat", "start")

    def __init__(self, spec: s.Ramp) -> None:
        self.clock = _CLOCKS[spec.clock]
        self.start, self.end, self.period, self.repeat = (
            spec.start,
            spec.end,
            spec.period,
            spec.repeat,
        )

    def __call__(self, ctx: Context) -> Any:
        t = self.clock(ctx)
        if self.repeat:
            frac = (t % self.period) / self.period
        else:
            frac = 0.0 if t <= 0 else 1.0 if t >= self.period else t / self.period
        return self.start + (self.end - self.start) * frac


class _Decay:
    __slots__ = ("clock", "half", "span", "target")

    def __init__(self, spec: s.Decay) -> None:
        self.clock = _CLOCKS[spec.clock]
        self.target = spec.target
        self.span = spec.start - spec.target
        self.half = spec.halfLife

    def __call__(self, ctx: Context) -> Any:
        t = self.clock(ctx)
        return self.target + self.span * 0.5 ** ((t if t > 0 else 0.0) / self.half)


class _Curve:
    __slots__ = ("clock", "period", "times", "values")

    def __init__(self, spec: s.Curve) -> None:
        self.clock = _CLOCKS[spec.clock]
        self.period = spec.period
        self.times = tuple(
            float(at) * spec.period if spec.fractions else parse_duration(at)
            for at, _v in spec.points
        )
        self.values = tuple(float(v) for _at, v in spec.points)

    def __call__(self, ctx: Context) -> Any:
        times, values, period = self.times, self.values, self.period
        n = len(times)
        if n == 1:
            return values[0]
        u = self.clock(ctx) % period
        i = bisect_right(times, u)
        if i == 0:  # before the first point: coming from the last one, one period back
            t0, v0, t1, v1 = times[-1] - period, values[-1], times[0], values[0]
        elif i == n:  # after the last point: heading for the first one, one period on
            t0, v0, t1, v1 = times[-1], values[-1], times[0] + period, values[0]
        else:
            t0, v0, t1, v1 = times[i - 1], values[i - 1], times[i], values[i]
        span = t1 - t0
        if span <= 0:
            return v0
        return v0 + (v1 - v0) * (u - t0) / span


class _Timestamp:
    __slots__ = ("fmt", "last_prefix", "last_sec", "offset")

    def __init__(self, spec: s.Timestamp) -> None:
        self.fmt = spec.format
        self.offset = spec.offset
        self.last_sec = -(2**63)
        self.last_prefix = ""

    def __call__(self, ctx: Context) -> Any:
        t = ctx.now + ctx.time_offset + self.offset
        fmt = self.fmt
        if fmt == "epoch":
            return t
        ms_total = math.floor(t * 1000 + 0.5)
        if fmt == "epochMs":
            return ms_total
        sec, ms = divmod(ms_total, 1000)
        if sec != self.last_sec:  # strftime is the slow part; bulk samples share seconds
            self.last_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
            self.last_sec = sec
        return f"{self.last_prefix}.{ms:03d}Z"


class _Gps:
    __slots__ = ("clock", "field", "route", "speed_h")

    def __init__(self, spec: s.Gps) -> None:
        self.clock = _CLOCKS[spec.clock]
        self.route = Route(spec.waypoints, spec.loop)
        self.speed_h = spec.speed
        self.field = spec.field

    def __call__(self, ctx: Context) -> Any:
        lat, lon, heading = self.route.at_distance(self.speed_h * self.clock(ctx) / 3600.0)
        f = self.field
        if f == "all":
            return {"lat": lat, "lon": lon, "heading": heading, "speed": self.speed_h}
        if f == "lat":
            return lat
        if f == "lon":
            return lon
        if f == "heading":
            return heading
        return self.speed_h


class _Fake:
    __slots__ = ("faker", "kwargs", "method", "rng")

    def __init__(self, spec: s.Fake, rng: Random) -> None:
        from mockfleet.mock.generators.fake import faker_for, provider_method

        self.faker = faker_for(spec.locale)
        self.method = provider_method(spec.locale, spec.provider)
        self.kwargs = dict(spec.args)
        self.rng = rng
        self._check(spec)

    def _check(self, spec: s.Fake) -> None:
        # Call once on a throwaway seed so bad args fail at build time, not mid-run.
        state = self.rng.getstate()
        try:
            self(None)  # type: ignore[arg-type]
        except GeneratorError as exc:
            raise ValueError(str(exc)) from None
        finally:
            self.rng.setstate(state)

    def __call__(self, ctx: Context) -> Any:
        from mockfleet.mock.generators.fake import to_json

        self.faker.seed_instance(self.rng.getrandbits(64))
        try:
            return to_json(self.method(**self.kwargs))
        except (TypeError, ValueError, AttributeError) as exc:
            raise GeneratorError(f"fake: {self.method.__name__}: {exc}") from None


class _Expr:
    """An expression evaluated on its own (templates order and feed them instead)."""

    __slots__ = ("fn", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        from mockfleet.mock.generators.expr import compile_expr  # imports ast: only when used

        self.fn = compile_expr(source)

    def __call__(self, ctx: Context) -> Any:
        env = expr_env(ctx)
        try:
            return self.fn(env)
        except ExprError:
            raise
        except (ArithmeticError, TypeError, ValueError, IndexError, KeyError) as exc:
            raise ExprError(f"{self.source!r}: {exc}") from None


def expr_env(ctx: Context) -> dict[str, Any]:
    """Names an expression can read: device fields < variables < message fields."""
    return {
        "id": ctx.device_id,
        "index": ctx.index,
        "lot": ctx.lot,
        "seq": ctx.seq,
        "state": ctx.state,
        "t": ctx.elapsed,
        "now": ctx.now,
        "vars": ctx.vars,
        **ctx.vars,
        **ctx.fields,
    }


#: Names every expression may use besides variables and message fields.
EXPR_NAMES = ("id", "index", "lot", "seq", "state", "t", "now", "vars")


# --------------------------------------------------------------------------- rounding


class _Rounded:
    __slots__ = ("inner", "ndigits")

    def __init__(self, inner: Generator, ndigits: int) -> None:
        self.inner, self.ndigits = inner, ndigits

    def __call__(self, ctx: Context) -> Any:
        return round_value(self.inner(ctx), self.ndigits)


def round_value(value: Any, ndigits: int) -> Any:
    """Round numbers (and the numbers of a flat dict, e.g. a gps fix); others pass."""
    if type(value) is float:
        return round(value, ndigits)
    if isinstance(value, dict):
        return {k: round(v, ndigits) if type(v) is float else v for k, v in value.items()}
    return value


# --------------------------------------------------------------------------- build

#: Generators whose ``round`` is applied by the generator itself (or ignored).
_ROUNDS_ITSELF = frozenset({"constant", "uuid", "format"})


def parse_spec(spec: Any) -> Any:
    """A generator spec's plain mirror (see mockfleet.mock.plain), from a
    ``{"$gen": ...}`` dict or a spec model; mirrors pass through. Only dicts
    and models need the pydantic schema, which is then imported here: compiled
    lots hold mirrors, so a device never validates (nor imports pydantic)."""
    if isinstance(spec, Spec):
        return spec
    from mockfleet.mock.plainlot import parse_generator

    return parse_generator(spec)


def build_generator(spec: Any, seed: int, node_id: str) -> Generator:
    """A generator for one device (``seed``) and one template node (``node_id``).

    ``spec`` is a spec mirror, a spec model or a ``{"$gen": ...}`` dict. Random generators draw
    from ``stream(seed, node_id)`` only, so adding or removing other fields
    never changes this one's values.
    """
    spec = parse_spec(spec)
    gen = _build(spec, seed, node_id)
    if spec.round is not None and spec.gen not in _ROUNDS_ITSELF:
        return _Rounded(gen, spec.round)
    return gen


def _build(spec: Any, seed: int, node_id: str) -> Generator:
    def rng() -> Random:
        return stream(seed, node_id)

    kind = spec.gen

    if kind == "constant":
        value = spec.value
        if spec.round is not None:
            value = round_value(value, spec.round)
        return _Constant(value)
    if kind == "sequence":
        return _Sequence(spec)
    if kind == "uniform":
        return _UniformInt(spec, rng()) if spec.integer else _Uniform(spec, rng())
    if kind == "normal":
        return _Normal(spec, rng())
    if kind == "randomWalk":
        return _RandomWalk(spec, rng())
    if kind == "sine":
        needs_rng = spec.noise > 0 or spec.randomPhase
        return _Sine(spec, rng() if needs_rng else None)
    if kind == "ramp":
        return _Ramp(spec)
    if kind == "decay":
        return _Decay(spec)
    if kind == "choice":
        return _Choice(spec, rng())
    if kind == "bucket":
        if spec.order == "cycle":
            return _BucketCycle(spec.values)
        return _BucketRandom(spec.values, rng())
    if kind == "curve":
        return _Curve(spec)
    if kind == "timestamp":
        return _Timestamp(spec)
    if kind == "uuid":
        return _Uuid(rng())
    if kind == "device":
        return _Device(spec.field)
    if kind == "var":
        return _Var(spec.name)
    if kind == "gps":
        return _Gps(spec)
    if kind == "fake":
        return _Fake(spec, rng())
    if kind == "expr":
        return _Expr(spec.expr)
    if kind == "format":
        return _Format(spec.template)
    raise TypeError(f"no generator {kind!r}")  # pragma: no cover
