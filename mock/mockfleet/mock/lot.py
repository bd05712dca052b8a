"""The MockLot schema: one model for local lot files and the Kubernetes CRD.

A lot file *is* a MockLot manifest, so the YAML a user runs with
``mockfleet run`` works unchanged with ``kubectl apply``. The models here are
the single source of the CRD's openAPIV3Schema (see ``mockfleet crd``), so
they stay expressible as a structural schema: templates and payload overrides
are free-form JSON (``x-kubernetes-preserve-unknown-fields``) and are checked
by validators that walk them and name the path of every problem.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonDict

from mockfleet.mock.fieldtypes import Duration, Size
from mockfleet.mock.generators.specs import GENERATOR_ADAPTER
from mockfleet.mock.generators.syntax import GEN_KEY, check_format_template
from mockfleet.mock.loterror import LotError

API_GROUP = "mockfleet.dev"
API_VERSION = "v1alpha1"
KIND = "MockLot"
#: Names usable in id/topic/URL templates besides the lot's constants and variables.
DEVICE_TEMPLATE_NAMES = ("id", "index", "lot")

_FREE_JSON: JsonDict = {"x-kubernetes-preserve-unknown-fields": True}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


# --------------------------------------------------------------------------- templates


def walk_generators(node: Any, path: str) -> list[tuple[str, dict[str, Any]]]:
    """Every ``{"$gen": ...}`` object inside a JSON value, with its dotted path."""
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        if GEN_KEY in node:
            found.append((path, node))
            return found
        for key, value in node.items():
            found.extend(walk_generators(value, f"{path}.{key}" if path else str(key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found.extend(walk_generators(value, f"{path}[{i}]"))
    return found


def _validate_generators(node: Any) -> None:
    """Raise one ValueError listing every invalid generator under ``node``."""
    problems = []
    for path, spec in walk_generators(node, ""):
        try:
            GENERATOR_ADAPTER.validate_python(spec)
        except ValidationError as exc:
            for err in exc.errors():
                loc = ".".join(str(p) for p in err["loc"][1:] if p != spec.get(GEN_KEY))
                gen = spec.get(GEN_KEY)
                at = f"@{path}" if path else "@"
                if err["type"] == "union_tag_invalid":
                    from mockfleet.mock.generators.specs import GENERATOR_NAMES

                    problems.append(
                        f"{at}: unknown generator {gen!r}; known: {', '.join(GENERATOR_NAMES)}"
                    )
                else:
                    msg = err["msg"].removeprefix("Value error, ")
                    problems.append(f"{at}: {gen}: {loc + ': ' if loc else ''}{msg}")
    if problems:
        # One line per problem, each "@<path inside the value>: message";
        # _format_errors prefixes the pydantic location of the value.
        raise ValueError("\n".join(problems))


def check_device_template(template: str, extra: set[str]) -> None:
    names = check_format_template(template)
    allowed = set(DEVICE_TEMPLATE_NAMES) | extra
    for name in names:
        if name not in allowed:
            raise ValueError(
                f"template {template!r} uses {{{name}}}; available: " + ", ".join(sorted(allowed))
            )


# --------------------------------------------------------------------------- timing


class Backfill(_Model):
    """Send history for a past window on a simulated clock, then continue live."""

    window: Duration = Field(description="How far back the simulated clock starts.")
    rate: float = Field(default=200, gt=0, description="Backfill messages per second (real).")


class Timing(_Model):
    interval: Duration = Field(default=1.0, description="Time between samples.")
    jitter: Duration = Field(default=0, description="Each wait varies uniformly by +/- this.")
    startOffset: Duration = Field(default=0, description="Wait this long before the first send.")
    startSpread: Duration = Field(
        default=0, description="Each device waits a further random time in [0, startSpread)."
    )
    duration: Duration | None = Field(default=None, description="Each device ends after this.")
    maxMessages: int | None = Field(default=None, ge=1, description="End after this many.")
    backfill: Backfill | None = None

    @model_validator(mode="after")
    def _check(self) -> Timing:
        if self.interval <= 0:
            raise ValueError("interval must be greater than 0")
        if self.jitter >= self.interval:
            raise ValueError("jitter must be smaller than interval")
        return self


# --------------------------------------------------------------------------- payload


class Envelope(_Model):
    """Verification fields added to every JSON message so a receiver can audit it."""

    enabled: bool = True
    deviceField: str = "device_id"
    seqField: str = "seq"
    sentAtField: str = Field(default="sent_at", description="Epoch seconds (float) of the send.")
    scheduledAtField: str | None = Field(
        default=None,
        description="If set, also stamp the sample's scheduled time (epoch seconds): "
        "sent_at minus it is how far the device lagged behind its schedule.",
    )


class Payload(_Model):
    format: Literal["json", "text"] = "json"
    template: Any = Field(
        default_factory=dict,
        json_schema_extra=_FREE_JSON,
        description="Any JSON value; objects with a '$gen' key are generators.",
    )
    text: str | None = Field(
        default=None,
        description="For format 'text': a line template over the template's fields, "
        "e.g. '{id},{temperature},{seq}'.",
    )
    bulk: int = Field(default=1, ge=1, le=10000, description="Samples packed per message.")
    bulkField: str = "samples"

    @field_validator("template")
    @classmethod
    def _gens(cls, v: Any) -> Any:
        _validate_generators(v)
        return v

    @model_validator(mode="after")
    def _check(self) -> Payload:
        if self.format == "text":
            if not self.text:
                raise ValueError("format 'text' needs a 'text' line template")
            check_format_template(self.text)
        elif self.text is not None:
            raise ValueError("'text' is only used with format 'text'")
        return self


# --------------------------------------------------------------------------- faults


FaultType = Literal[
    "malformed",
    "drop",
    "duplicate",
    "outOfOrder",
    "lateTimestamp",
    "clockSkew",
    "oversize",
    "offline",
]


class Fault(_Model):
    """A fault injected at ``rate`` (probability per message; per device for clockSkew)."""

    type: FaultType
    rate: float = Field(default=0.01, ge=0, le=1)
    delay: Duration = Field(default=300, description="lateTimestamp: how late.")
    skew: Duration = Field(default=30, description="clockSkew: how far the clock is off.")
    skewSign: Literal["ahead", "behind", "random"] = "random"
    size: Size = Field(default=256 * 1024, description="oversize: message size to reach.")
    offlineFor: Duration = Field(default=60, description="offline: how long connectivity drops.")
    buffer: bool = Field(default=True, description="offline: keep messages, burst on reconnect.")
    bufferLimit: int = Field(default=1000, ge=0, description="offline: oldest dropped beyond.")


# --------------------------------------------------------------------------- states


class Transition(_Model):
    """Leave the state when exactly one trigger fires: after, probability, when or command."""

    to: str
    after: Duration | None = Field(default=None, description="Time spent in the state.")
    probability: float | None = Field(default=None, ge=0, le=1, description="Per message.")
    when: str | None = Field(default=None, description="Condition over the message's fields.")
    command: str | None = Field(
        default=None, description="A downlink command (MQTT or HTTP response) with this name."
    )

    @field_validator("when")
    @classmethod
    def _expr(cls, v: str | None) -> str | None:
        if v is not None:
            from mockfleet.mock.generators.expr import compile_expr

            compile_expr(v)
        return v

    @model_validator(mode="after")
    def _one_trigger(self) -> Transition:
        given = [
            k for k in ("after", "probability", "when", "command") if getattr(self, k) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "a transition needs exactly one of after, probability, when, command; "
                f"got {', '.join(given) or 'none'}"
            )
        return self


class State(_Model):
    payload: Any = Field(
        default=None,
        json_schema_extra=_FREE_JSON,
        description="Deep-merged over the lot's template while in this state.",
    )
    interval: Duration | None = None
    offline: bool = Field(default=False, description="Send nothing while in this state.")
    terminal: bool = Field(default=False, description="Entering this state ends the device.")
    faults: list[Fault] = Field(default_factory=list)
    transitions: list[Transition] = Field(default_factory=list)

    @field_validator("payload")
    @classmethod
    def _gens(cls, v: Any) -> Any:
        if v is not None:
            _validate_generators(v)
        return v


# --------------------------------------------------------------------------- sinks


class Tls(_Model):
    verify: bool = True
    caFile: str | None = None
    certFile: str | None = Field(default=None, description="Client certificate (mutual TLS).")
    keyFile: str | None = None

    @model_validator(mode="after")
    def _pair(self) -> Tls:
        if (self.certFile is None) != (self.keyFile is None):
            raise ValueError("certFile and keyFile go together")
        return self


_INLINE_SECRETS = {"password", "token", "secret", "apiKey"}


def _no_inline_secrets(data: Any) -> Any:
    if isinstance(data, dict):
        for key in _INLINE_SECRETS & set(data):
            raise ValueError(
                f"inline credential {key!r} is not allowed: use {key}Env (an environment "
                f"variable) or {key}File (a mounted secret file)"
            )
    return data


class HttpAuth(_Model):
    type: Literal["bearer", "basic", "header"]
    header: str = Field(default="Authorization", description="For type 'header'.")
    username: str | None = None
    usernameEnv: str | None = None
    passwordEnv: str | None = None
    passwordFile: str | None = None
    tokenEnv: str | None = None
    tokenFile: str | None = None

    _reject_inline = model_validator(mode="before")(_no_inline_secrets)

    @model_validator(mode="after")
    def _check(self) -> HttpAuth:
        if self.type == "basic":
            if not (self.passwordEnv or self.passwordFile):
                raise ValueError("basic auth needs passwordEnv or passwordFile")
            if not (self.username or self.usernameEnv):
                raise ValueError("basic auth needs username or usernameEnv")
        elif not (self.tokenEnv or self.tokenFile):
            raise ValueError(f"{self.type} auth needs tokenEnv or tokenFile")
        return self


class Retries(_Model):
    max: int = Field(default=3, ge=0, le=100)
    backoff: Duration = 0.2
    maxBackoff: Duration = 5.0


class StdoutSink(_Model):
    type: Literal["stdout"]


class FileSink(_Model):
    type: Literal["file"]
    path: str = Field(description="JSON lines; may use {id}, {index}, {lot}.")


class HttpSink(_Model):
    type: Literal["http"]
    url: str = Field(description="May use {id}, {index}, {lot} and the lot's variables.")
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    auth: HttpAuth | None = None
    tls: Tls = Field(default_factory=Tls)
    keepAlive: bool = True
    timeout: Duration = Field(
        default=5.0,
        gt=0,
        description="Longest wait to connect, send or receive (a duration such as '5s').",
    )
    retries: Retries = Field(default_factory=Retries)
    commandField: str = Field(
        default="command", description="Field of a JSON response body that carries a command."
    )

    _reject_inline = model_validator(mode="before")(_no_inline_secrets)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"url {v!r} must start with http:// or https://")
        return v


class MqttWill(_Model):
    topic: str
    payload: str = ""
    qos: Literal[0, 1, 2] = 0
    retain: bool = False


class MqttSink(_Model):
    type: Literal["mqtt"]
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    clientId: str = "{id}"
    topic: str = "devices/{id}/telemetry"
    qos: Literal[0, 1, 2] = 0
    retain: bool = False
    keepalive: Duration = 60
    cleanStart: bool = True
    username: str | None = None
    usernameEnv: str | None = None
    passwordEnv: str | None = None
    passwordFile: str | None = None
    tls: Tls | None = None
    will: MqttWill | None = None
    commandTopic: str | None = Field(default=None, description="Subscribed for commands.")
    commandField: str = Field(default="command", description="Field of a JSON command message.")
    connectTimeout: Duration = 10.0

    _reject_inline = model_validator(mode="before")(_no_inline_secrets)


Sink = Annotated[StdoutSink | FileSink | HttpSink | MqttSink, Field(discriminator="type")]


# --------------------------------------------------------------------------- supervision & k8s


class Restart(_Model):
    policy: Literal["Never", "OnFailure", "Always"] = "OnFailure"
    maxRestarts: int = Field(default=5, ge=0)
    backoff: Duration = 1.0
    maxBackoff: Duration = 60.0
    resetAfter: Duration = Field(default=60.0, description="A run this long resets the backoff.")


class Toleration(_Model):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: str | None = None
    tolerationSeconds: int | None = None


class Artifact(_Model):
    """Where towers fetch ``spec.version`` from to upgrade in place."""

    source: str = Field(description="s3://bucket/key, or an absolute path on the nodes.")
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    endpointUrl: str | None = Field(
        default=None, description="An S3-compatible endpoint (http:// or https://)."
    )

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        if v.startswith("s3://"):
            bucket, _, key = v[5:].partition("/")
            if not bucket or not key:
                raise ValueError(f"source {v!r} must look like s3://bucket/key")
        elif not v.startswith("/"):
            raise ValueError(f"source {v!r} must be s3://bucket/key or an absolute path")
        return v

    @field_validator("endpointUrl")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError(f"endpointUrl {v!r} must be an http(s) URL")
        return v


#: Where the tower container mounts its plan, its state and its scratch space on
#: Kubernetes (the operator's builders use these; secret volumes must keep clear).
TOWER_PLAN_DIR = "/etc/mockfleet/plan"
TOWER_STATE_DIR = "/var/lib/mockfleet"
TOWER_TMP_DIR = "/tmp"
TOWER_OWN_MOUNTS = (TOWER_PLAN_DIR, TOWER_STATE_DIR, TOWER_TMP_DIR)
#: Variables the operator sets on the tower container itself.
TOWER_OWN_ENV = (
    "NODE_NAME",
    "POD_NAME",
    "POD_NAMESPACE",
    "MOCKFLEET_LOT",
    "PYTHONDONTWRITEBYTECODE",
    "TMPDIR",
)
#: Prefixes of variables that steer the tower and Python themselves (the in-place
#: upgrade sets MOCKFLEET_TOWER_* and PYTHONPATH): a lot must not override them.
TOWER_RESERVED_ENV_PREFIXES = ("MOCKFLEET_", "PYTHON")
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_SECRET_KEY = r"^[-._a-zA-Z0-9]+$"


def _must_match(pattern: str, what: str) -> Callable[[str], str]:
    """A check of ``pattern`` whose error says ``what`` the value must be (not the regex)."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if len(value) > 253 or not compiled.match(value):
            raise ValueError(f"{value!r} must be {what}")
        return value

    return check


def _string_schema(pattern: str) -> JsonDict:
    """The same rule for the CRD: a coarse gate at ``kubectl apply``."""
    return {"type": "string", "pattern": pattern, "maxLength": 253}


EnvName = Annotated[
    str,
    AfterValidator(_must_match(_ENV_NAME, "letters, digits and '_', not starting with a digit")),
    WithJsonSchema(_string_schema(_ENV_NAME)),
]
SecretName = Annotated[
    str,
    AfterValidator(
        _must_match(_DNS_SUBDOMAIN, "a Secret name (lowercase letters, digits, '-' and '.')")
    ),
    WithJsonSchema(_string_schema(_DNS_SUBDOMAIN)),
]
SecretKey = Annotated[
    str,
    AfterValidator(_must_match(_SECRET_KEY, "a Secret key (letters, digits, '-', '_' and '.')")),
    WithJsonSchema(_string_schema(_SECRET_KEY)),
]


class SecretKeyRef(_Model):
    """One key of a Secret in the lot's namespace."""

    name: SecretName = Field(description="The Secret.")
    key: SecretKey = Field(description="The key in it.")


class EnvValueFrom(_Model):
    secretKeyRef: SecretKeyRef


class TowerEnv(_Model):
    """A variable of the tower container; devices inherit the tower's environment."""

    name: EnvName
    value: str | None = Field(
        default=None, description="A literal; for credentials use valueFrom.secretKeyRef."
    )
    valueFrom: EnvValueFrom | None = None

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, v: str) -> str:
        if v in TOWER_OWN_ENV or v.startswith(TOWER_RESERVED_ENV_PREFIXES):
            raise ValueError(
                f"{v!r} is reserved for the tower itself (its own variables and names "
                f"starting with {' or '.join(TOWER_RESERVED_ENV_PREFIXES)}); choose another name"
            )
        return v

    @model_validator(mode="after")
    def _one_source(self) -> TowerEnv:
        if (self.value is None) == (self.valueFrom is None):
            raise ValueError(f"env {self.name!r} needs exactly one of value and valueFrom")
        return self


def _overlaps(a: str, b: str) -> bool:
    """One path is the other or inside it (compared by components)."""
    pa, pb = PurePosixPath(a).parts, PurePosixPath(b).parts
    short = min(len(pa), len(pb))
    return pa[:short] == pb[:short]


class SecretVolume(_Model):
    """A Secret mounted read-only into the tower container (for the sink's file credentials)."""

    secretName: SecretName
    mountPath: str = Field(
        description="An absolute directory of its own, e.g. /etc/mockfleet/secrets/broker.",
        json_schema_extra={"pattern": "^/"},
    )

    @field_validator("mountPath")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"mountPath {v!r} must be an absolute path")
        parts = v.split("/")[1:]
        if v == "/" or any(p in {"", ".", ".."} for p in parts):
            raise ValueError(
                f"mountPath {v!r} must be a plain directory below / "
                "(no '.', '..', '//' or trailing '/')"
            )
        for own in TOWER_OWN_MOUNTS:
            if _overlaps(v, own):
                raise ValueError(
                    f"mountPath {v!r} overlaps the tower's own mount {own}; "
                    f"keep clear of {', '.join(TOWER_OWN_MOUNTS)}"
                )
        return v


class TowerSettings(_Model):
    """How towers run this lot on Kubernetes (ignored by ``mockfleet run``)."""

    image: str | None = None
    resources: dict[str, dict[str, str]] = Field(default_factory=dict)
    nodeSelector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    affinity: dict[str, Any] | None = Field(default=None, json_schema_extra=_FREE_JSON)
    maxDevicesPerTower: int = Field(default=2000, ge=1)
    maxStartRate: float = Field(default=200, gt=0, description="Device starts per second.")
    stopGracePeriod: Duration = 10.0
    env: list[TowerEnv] = Field(
        default_factory=list,
        description="Extra variables of the tower container (sink credentials via "
        "valueFrom.secretKeyRef); devices inherit them.",
    )
    secretVolumes: list[SecretVolume] = Field(
        default_factory=list, description="Secrets mounted read-only into the tower container."
    )

    @model_validator(mode="after")
    def _distinct(self) -> TowerSettings:
        seen: set[str] = set()
        for i, env in enumerate(self.env):
            if env.name in seen:
                raise ValueError(f"env.{i}.name: {env.name!r} is given twice")
            seen.add(env.name)
        for i, vol in enumerate(self.secretVolumes):
            for j, other in enumerate(self.secretVolumes[:i]):
                if _overlaps(vol.mountPath, other.mountPath):
                    raise ValueError(
                        f"secretVolumes.{i}.mountPath: {vol.mountPath!r} overlaps "
                        f"secretVolumes.{j}.mountPath {other.mountPath!r}"
                    )
        return self


# --------------------------------------------------------------------------- spec


class LotSpec(_Model):
    devices: int = Field(ge=0, le=1_000_000, description="How many devices (scale: replicas).")
    seed: int = Field(default=0, ge=0, description="Same seed + same index => same data.")
    deviceId: str = "{lot}-{index:05d}"
    constants: dict[str, Any] = Field(default_factory=dict, json_schema_extra=_FREE_JSON)
    variables: dict[str, Any] = Field(
        default_factory=dict,
        json_schema_extra=_FREE_JSON,
        description="Generators evaluated once per device; fixed for its life.",
    )
    timing: Timing = Field(default_factory=Timing)
    payload: Payload = Field(default_factory=Payload)
    initialState: str | None = None
    states: dict[str, State] = Field(default_factory=dict)
    faults: list[Fault] = Field(default_factory=list)
    envelope: Envelope = Field(default_factory=Envelope)
    sink: Sink = Field(default_factory=lambda: StdoutSink(type="stdout"))
    restart: Restart = Field(default_factory=Restart)
    paused: bool = False
    version: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._-]{1,64}$",
        description="mockfleet version towers run; with artifact, changing it upgrades "
        "running towers in place (no device restarts).",
    )
    artifact: Artifact | None = Field(default=None, description="Where to fetch version from.")
    tower: TowerSettings = Field(default_factory=TowerSettings)

    @field_validator("variables")
    @classmethod
    def _gens(cls, v: dict[str, Any]) -> dict[str, Any]:
        _validate_generators(v)
        return v

    @field_validator("constants", "variables")
    @classmethod
    def _names(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name in v:
            if not name.isidentifier() or name.startswith("_"):
                raise ValueError(f"{name!r} must be a plain name (letters, digits, _)")
            if name in DEVICE_TEMPLATE_NAMES:
                raise ValueError(f"{name!r} is reserved for the device's own field")
        return v

    @model_validator(mode="after")
    def _check(self) -> LotSpec:
        names = set(self.constants) | set(self.variables)
        clash = set(self.constants) & set(self.variables)
        if clash:
            raise ValueError(f"{', '.join(sorted(clash))} is both a constant and a variable")
        try:
            for name in check_format_template(self.deviceId):
                if name not in {"lot", "index", *self.constants}:
                    raise ValueError(
                        f"{{{name}}} is not available; use {{lot}}, {{index}} or a constant"
                    )
        except ValueError as exc:
            raise ValueError(f"deviceId: {exc}") from None
        sink = self.sink
        for field in ("url", "path", "topic", "clientId", "commandTopic"):
            value = getattr(sink, field, None)
            if isinstance(value, str):
                try:
                    check_device_template(value, names)
                except ValueError as exc:
                    raise ValueError(f"sink.{field}: {exc}") from None
        if self.states:
            if self.initialState is None:
                raise ValueError("initialState is required when states are given")
            if self.initialState not in self.states:
                raise ValueError(
                    f"initialState {self.initialState!r} is not one of the states: "
                    + ", ".join(self.states)
                )
            for name, state in self.states.items():
                for i, tr in enumerate(state.transitions):
                    if tr.to not in self.states:
                        raise ValueError(
                            f"states.{name}.transitions[{i}].to: unknown state {tr.to!r}"
                        )
                    if tr.command is not None and not _has_command_channel(sink):
                        raise ValueError(
                            f"states.{name}.transitions[{i}]: command transitions need an "
                            "http sink or an mqtt sink with commandTopic"
                        )
        elif self.initialState is not None:
            raise ValueError("initialState is given but there are no states")
        if self.artifact is not None and self.version is None:
            raise ValueError("artifact is given but version is not: say which version it holds")
        if self.payload.bulk > 1 and not isinstance(self.payload.template, dict):
            raise ValueError("payload.bulk needs a JSON object template")
        if (
            self.envelope.enabled
            and self.payload.format == "json"
            and not isinstance(self.payload.template, dict)
        ):
            raise ValueError(
                "envelope needs a JSON object template (or set envelope.enabled: false)"
            )
        return self


def _has_command_channel(sink: Any) -> bool:
    return isinstance(sink, HttpSink) or (isinstance(sink, MqttSink) and bool(sink.commandTopic))


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class MockLot(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    apiVersion: Literal["mockfleet.dev/v1alpha1"]
    kind: Literal["MockLot"]
    metadata: ObjectMeta
    spec: LotSpec
    status: dict[str, Any] | None = Field(default=None, json_schema_extra=_FREE_JSON)

    @property
    def name(self) -> str:
        return self.metadata.name

    def device_id(self, index: int) -> str:
        return self.spec.deviceId.format(lot=self.name, index=index)


# --------------------------------------------------------------------------- loading


def _format_errors(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not _is_union_tag(p))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field (check its spelling and indentation)"
        elif err["type"] == "union_tag_invalid":
            ctx = err.get("ctx", {})
            msg = f"unknown {ctx.get('discriminator', 'type')} {ctx.get('tag')!r}; " + (
                f"expected one of {ctx.get('expected_tags')}"
            )
        elif err["type"] == "union_tag_not_found":
            msg = f"missing {err.get('ctx', {}).get('discriminator', 'type')}"
        if msg.startswith("@"):
            for line in msg.splitlines():
                sub, _, text = line[1:].partition(": ")
                lines.append(f"{loc}{'.' + sub if sub else ''}: {text}")
            continue
        lines.append(f"{loc}: {msg}" if loc else msg)
    return lines


def _is_union_tag(part: Any) -> bool:
    return part in {"stdout", "file", "http", "mqtt"}


def parse_lot(data: Any, source: str = "<lot>") -> MockLot:
    """Validate a manifest already loaded from YAML/JSON."""
    if not isinstance(data, dict):
        raise LotError(source, ["the document must be a MockLot mapping (apiVersion, kind, ...)"])
    try:
        return MockLot.model_validate(data)
    except ValidationError as exc:
        raise LotError(source, _format_errors(exc)) from None


def load_lot(path: str | Path) -> MockLot:
    """Read and validate a lot file; every problem is a :class:`LotError`."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise LotError(source, [f"cannot read the file: {exc.strerror or exc}"]) from None
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise LotError(source, [f"{where}not valid YAML: {problem}"]) from None
    if len(docs) != 1:
        raise LotError(source, [f"expected exactly one YAML document, found {len(docs)}"])
    return parse_lot(docs[0], source)


def template_names(lot: MockLot) -> dict[str, Any]:
    """Static names a device template may use (before per-device variables)."""
    return {"lot": lot.name, **lot.spec.constants}


__all__ = [
    "API_GROUP",
    "API_VERSION",
    "KIND",
    "Fault",
    "HttpSink",
    "LotError",
    "LotSpec",
    "MockLot",
    "MqttSink",
    "State",
    "Transition",
    "load_lot",
    "parse_lot",
]
