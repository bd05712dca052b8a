"""The generator vocabulary of payload templates, as pydantic models.

A generator is any JSON object in a template that has a ``$gen`` key::

    {"$gen": "sine", "period": "24h", "amplitude": 4, "offset": 21, "noise": 0.2}

These models only describe and validate; ``mockfleet.mock.generators.build``
turns a validated spec into a per-device generator.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    field_validator,
    model_validator,
)

from mockfleet.mock.fieldtypes import Duration
from mockfleet.mock.generators.syntax import check_format_template

#: Which clock a time-based generator reads: wall (simulated) time, time since
#: the device started, or time since the device entered its current state.
ClockName = Literal["absolute", "elapsed", "state"]


def _positive(v: float) -> float:
    if v <= 0:
        raise ValueError("must be greater than 0")
    return v


#: A duration that must be longer than zero (periods, half-lives).
PositiveDuration = Annotated[Duration, AfterValidator(_positive)]


class _Gen(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)
    round: int | None = Field(
        default=None, ge=0, le=12, description="Round numeric output to this many decimals."
    )


class Constant(_Gen):
    gen: Literal["constant"] = Field(alias="$gen")
    value: Any = None


class Sequence(_Gen):
    """A counter: start, start+step, ...; wraps to start after passing ``end``."""

    gen: Literal["sequence"] = Field(alias="$gen")
    start: float = 0
    step: float = 1
    end: float | None = None

    @model_validator(mode="after")
    def _check(self) -> Sequence:
        if self.step == 0:
            raise ValueError("step must not be 0")
        if self.end is not None and (self.end - self.start) * self.step < 0:
            raise ValueError("end lies behind start in the direction of step")
        return self


class Uniform(_Gen):
    gen: Literal["uniform"] = Field(alias="$gen")
    min: float = 0
    max: float = 1
    integer: bool = Field(default=False, description="Draw whole numbers in [min, max].")

    @model_validator(mode="after")
    def _check(self) -> Uniform:
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) is below min ({self.min})")
        return self


class Normal(_Gen):
    gen: Literal["normal"] = Field(alias="$gen")
    mean: float = 0
    stddev: float = Field(default=1, ge=0)
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _check(self) -> Normal:
        if self.min is not None and self.max is not None and self.max < self.min:
            raise ValueError(f"max ({self.max}) is below min ({self.min})")
        return self


class RandomWalk(_Gen):
    """Each value moves from the last by a normal step, kept within [min, max]."""

    gen: Literal["randomWalk"] = Field(alias="$gen")
    start: float = 0
    step: float = Field(default=1, ge=0, description="Standard deviation of one step.")
    drift: float = Field(default=0, description="Mean of one step.")
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _check(self) -> RandomWalk:
        if self.min is not None and self.max is not None:
            if self.max < self.min:
                raise ValueError(f"max ({self.max}) is below min ({self.min})")
            if not self.min <= self.start <= self.max:
                raise ValueError(f"start ({self.start}) is outside [min, max]")
        return self


class Sine(_Gen):
    """offset + amplitude * sin(2*pi*(t - phase)/period) + normal noise."""

    gen: Literal["sine"] = Field(alias="$gen")
    period: PositiveDuration
    amplitude: float = 1
    offset: float = 0
    phase: Duration = 0
    noise: float = Field(default=0, ge=0, description="Standard deviation of added noise.")
    randomPhase: bool = Field(default=False, description="Give each device its own phase.")
    clock: ClockName = "absolute"


class Ramp(_Gen):
    """Linear from ``start`` to ``end`` over ``period``; a sawtooth when ``repeat``."""

    gen: Literal["ramp"] = Field(alias="$gen")
    start: float = 0
    end: float = 1
    period: PositiveDuration
    repeat: bool = True
    clock: ClockName = "elapsed"


class Decay(_Gen):
    """target + (start - target) * 0.5 ** (t / halfLife)."""

    gen: Literal["decay"] = Field(alias="$gen")
    start: float = 100
    target: float = 0
    halfLife: PositiveDuration
    clock: ClockName = "elapsed"


class WeightedOption(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    value: Any = None
    weight: float = Field(default=1, ge=0)


class Choice(_Gen):
    """A random pick, weighted: options [{value, weight}] or plain values."""

    gen: Literal["choice"] = Field(alias="$gen")
    options: list[WeightedOption] = Field(min_length=1)

    @field_validator("options", mode="before")
    @classmethod
    def _plain(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [
                o if isinstance(o, dict) and "value" in o else {"value": o, "weight": 1} for o in v
            ]
        return v

    @model_validator(mode="after")
    def _check(self) -> Choice:
        if sum(o.weight for o in self.options) <= 0:
            raise ValueError("the weights of options add up to 0")
        return self


class Bucket(_Gen):
    """Values from a list, cycled in order or drawn at random."""

    gen: Literal["bucket"] = Field(alias="$gen")
    values: list[Any] = Field(min_length=1)
    order: Literal["cycle", "random"] = "cycle"


class Curve(_Gen):
    """A hand-drawn graph: points (time into period, value), linearly interpolated.

    Times are durations or fractions of the period (numbers in [0, 1] when
    ``fractions`` is true). The curve wraps from the last point to the first.
    """

    gen: Literal["curve"] = Field(alias="$gen")
    period: PositiveDuration
    points: list[tuple[Any, float]] = Field(min_length=1)
    fractions: bool = False
    clock: ClockName = "absolute"

    @model_validator(mode="after")
    def _check(self) -> Curve:
        from mockfleet.mock.durations import parse_duration

        last = -1.0
        for i, (at, _value) in enumerate(self.points):
            t = float(at) if self.fractions else parse_duration(at)
            limit = 1.0 if self.fractions else self.period
            if not 0 <= t <= limit:
                raise ValueError(f"points[{i}]: time {at!r} lies outside the period")
            if t < last:
                raise ValueError(f"points[{i}]: times must not go backwards")
            last = t
        return self


class Timestamp(_Gen):
    gen: Literal["timestamp"] = Field(alias="$gen")
    format: Literal["iso", "epoch", "epochMs"] = "iso"
    offset: float = Field(default=0, description="Seconds added to the clock.")


class Uuid(_Gen):
    gen: Literal["uuid"] = Field(alias="$gen")


class DeviceField(_Gen):
    """The device's id, index or lot name, or one of its constants/variables (var)."""

    gen: Literal["device"] = Field(alias="$gen")
    field: Literal["id", "index", "lot", "state", "seq"] = "id"


class Var(_Gen):
    gen: Literal["var"] = Field(alias="$gen")
    name: str


class Gps(_Gen):
    """Moves along waypoints [lat, lon] at ``speed`` km/h, looping or bouncing.

    Output: {"lat", "lon", "heading", "speed"} or only the ``field`` asked for.
    """

    gen: Literal["gps"] = Field(alias="$gen")
    waypoints: list[tuple[float, float]] = Field(min_length=2)
    speed: float = Field(gt=0, description="km/h")
    loop: bool = True
    field: Literal["lat", "lon", "heading", "speed", "all"] = "all"
    clock: ClockName = "elapsed"

    @field_validator("waypoints")
    @classmethod
    def _coords(cls, v: list[tuple[float, float]]) -> list[tuple[float, float]]:
        for i, (lat, lon) in enumerate(v):
            if not -90 <= lat <= 90 or not -180 <= lon <= 180:
                raise ValueError(f"waypoints[{i}]: ({lat}, {lon}) is not a latitude/longitude")
        return v


class Fake(_Gen):
    """Seeded fake data from Faker: provider is a Faker method such as 'name'."""

    gen: Literal["fake"] = Field(alias="$gen")
    provider: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    locale: str = "en_US"
    args: dict[str, Any] = Field(default_factory=dict)


class Expr(_Gen):
    """A value computed from other fields of the same message (safe evaluator)."""

    gen: Literal["expr"] = Field(alias="$gen")
    expr: str = Field(min_length=1)

    @field_validator("expr")
    @classmethod
    def _parse(cls, v: str) -> str:
        from mockfleet.mock.generators.expr import compile_expr

        compile_expr(v)  # raises ValueError naming the problem
        return v


class Format(_Gen):
    """A string from a template such as 'SN-{index:05d}' (device fields, vars, seq)."""

    gen: Literal["format"] = Field(alias="$gen")
    template: str

    @field_validator("template")
    @classmethod
    def _safe(cls, v: str) -> str:
        check_format_template(v)
        return v


GeneratorSpec = Annotated[
    Constant
    | Sequence
    | Uniform
    | Normal
    | RandomWalk
    | Sine
    | Ramp
    | Decay
    | Choice
    | Bucket
    | Curve
    | Timestamp
    | Uuid
    | DeviceField
    | Var
    | Gps
    | Fake
    | Expr
    | Format,
    Field(discriminator="gen"),
]

GENERATOR_ADAPTER: TypeAdapter[Any] = TypeAdapter(GeneratorSpec)
GENERATOR_NAMES = sorted(
    m.model_fields["gen"].annotation.__args__[0]  # type: ignore[union-attr]
    for m in _Gen.__subclasses__()
)
