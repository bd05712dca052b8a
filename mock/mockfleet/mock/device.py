"""One device's behaviour on a simulated clock: samples, states, faults, envelope.

Pure and deterministic: the engine is driven by the times it is given and
does no I/O, so ``mockfleet preview`` and the live runtime share every line
of it, and tests can run a day of device life in milliseconds.

The runtime asks :meth:`DeviceEngine.next_due` when to wake, calls
:meth:`DeviceEngine.tick` at that (simulated) time and sends what comes back;
downlink commands go to :meth:`DeviceEngine.on_command`.
"""

from __future__ import annotations

import random
from collections import deque
from typing import TYPE_CHECKING, Any, cast

from mockfleet.mock import faults as faultlib
from mockfleet.mock import jsonenc, seeding
from mockfleet.mock.generators.base import Context
from mockfleet.mock.generators.syntax import ExprError
from mockfleet.mock.plain import PlainLot
from mockfleet.mock.record import FrozenRecord, Record
from mockfleet.mock.template import TemplateInstance, compile_states, render_variables

if TYPE_CHECKING:
    # Only for typing: a compiled lot holds the plain mirror of these models
    # (mockfleet.mock.plain), with the same fields, so devices never load pydantic.
    from mockfleet.mock.lot import Fault, MockLot, State

#: The state name used when a lot defines no states.
DEFAULT_STATE = "default"
_DUMPS = jsonenc.encoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class Message(Record):
    """One message ready to send (sent_at is stamped by :meth:`DeviceEngine.encode`)."""

    __slots__ = ("due", "duplicate", "malformed", "obj", "oversize", "seq")

    def __init__(
        self,
        obj: Any,
        seq: int,
        due: float = 0.0,
        malformed: bool = False,
        oversize: int = 0,
        duplicate: bool = False,
    ) -> None:
        self.obj = obj
        self.seq = seq
        #: simulated time the message was scheduled for
        self.due = due
        self.malformed = malformed
        self.oversize = oversize
        #: True for the second copy of a duplicated message
        self.duplicate = duplicate


class CompiledLot(FrozenRecord):
    """What all devices of a lot share: built once (in the tower's zygote).

    ``lot`` is the lot's plain mirror (typed as the model it mirrors)."""

    __slots__ = ("initial", "lot", "states", "templates")
    lot: MockLot
    templates: dict[str, Any]
    states: dict[str, State]
    initial: str

    def __init__(
        self, lot: MockLot, templates: dict[str, Any], states: dict[str, State], initial: str
    ) -> None:
        self._init(lot=lot, templates=templates, states=states, initial=initial)

    @classmethod
    def build(cls, lot: MockLot | PlainLot) -> CompiledLot:
        """Compile a lot: its plain mirror, or a validated model (mirrored here)."""
        if not isinstance(lot, PlainLot):
            from mockfleet.mock.plainlot import plain_lot

            lot = plain_lot(lot)
        default_state = lot.default_state
        lot = cast("MockLot", lot)
        spec = lot.spec
        if spec.states:
            states = dict(spec.states)
            initial = spec.initialState or next(iter(states))
        else:
            states = {DEFAULT_STATE: cast("State", default_state)}
            initial = DEFAULT_STATE
        compiled = compile_states(lot)
        templates = {name: compiled.get(name, compiled.get("")) for name in states}
        return cls(lot=lot, templates=templates, states=states, initial=initial)


class DeviceEngine:
    """The life of device ``index`` of a lot, on simulated time."""

    # Slots, not an instance dict: with 31 attributes the dict outgrows the
    # keys CPython shares between instances, so each device builds a dict of
    # its own and attribute access takes the slower, hint-checked path. With
    # slots a forked device copied about 11 pages fewer on CPython 3.12
    # (bench/start_faults.py: 245-247 page faults against 257-258).
    __slots__ = (
        "_buffering",
        "_bulk",
        "_deadline",
        "_generators",
        "_held",
        "_instances",
        "_next_sample",
        "_offline_buffer",
        "_offline_limit",
        "_offline_until",
        "_rng_faults",
        "_rng_states",
        "_rng_timing",
        "compiled",
        "ctx",
        "device_id",
        "dropped",
        "errors",
        "finished",
        "index",
        "lot",
        "messages",
        "names",
        "samples",
        "seed",
        "skew",
        "started",
        "state",
        "state_since",
        "state_spec",
        "vars",
    )

    def __init__(self, compiled: CompiledLot, index: int, start: float) -> None:
        lot = compiled.lot
        spec = lot.spec
        self.compiled = compiled
        self.lot = lot
        self.index = index
        self.device_id = lot.device_id(index)
        self.seed = seeding.device_seed(spec.seed, index)
        # Each purpose's stream is made on its first use: seeding one costs
        # about 9 us (most of a device's build), and a lot without faults,
        # random transitions, spread or jitter never needs them. Streams are
        # independent, so when one is made does not change what it draws.
        self._rng_faults: random.Random | None = None
        self._rng_states: random.Random | None = None
        self._rng_timing: random.Random | None = None
        self.vars = render_variables(lot, self.seed, index, self.device_id, now=start)
        self.names: dict[str, Any] = {
            "id": self.device_id,
            "index": index,
            "lot": lot.name,
            **self.vars,
        }
        self.ctx = Context(device_id=self.device_id, index=index, lot=lot.name, vars=self.vars)
        self._generators: dict[str, Any] = {}
        self._instances: dict[str, TemplateInstance] = {}
        self.skew = (
            faultlib.skew_for_device(spec.faults, self._faults_rng()) if spec.faults else 0.0
        )
        self.started = start
        self.samples = 0
        self.messages = 0
        self.dropped = 0
        self.errors: list[str] = []
        self.finished: str | None = None
        self.state = ""
        self.state_since = start
        self._bulk: list[Any] = []
        self._held: Message | None = None
        self._offline_until = 0.0
        self._offline_buffer: deque[Message] = deque()
        self._offline_limit = 0
        self._buffering = False
        timing = spec.timing
        first = start + timing.startOffset
        if timing.startSpread > 0:
            first += self._timing_rng().random() * timing.startSpread
        self._next_sample = first
        self._enter(compiled.initial, start)

    def _faults_rng(self) -> random.Random:
        if self._rng_faults is None:
            self._rng_faults = seeding.stream(self.seed, "faults")
        return self._rng_faults

    def _states_rng(self) -> random.Random:
        if self._rng_states is None:
            self._rng_states = seeding.stream(self.seed, "transitions")
        return self._rng_states

    def _timing_rng(self) -> random.Random:
        if self._rng_timing is None:
            self._rng_timing = seeding.stream(self.seed, "timing")
        return self._rng_timing

    # ------------------------------------------------------------------ schedule

    def interval(self) -> float:
        return self.state_spec.interval or self.lot.spec.timing.interval

    def next_due(self) -> float:
        """Simulated time of the next thing to do (a sample, a timed transition,
        the end of the device's duration, or the end of an offline spell)."""
        due = self._next_sample
        deadline = self._deadline
        if deadline is not None and deadline < due:
            due = deadline
        duration = self.lot.spec.timing.duration
        if duration is not None and self.started + duration < due:
            due = self.started + duration
        if self._offline_until and self._offline_until < due:
            due = self._offline_until
        return due

    # ------------------------------------------------------------------ states

    def _enter(self, state: str, now: float) -> None:
        self.state = state
        self.state_since = now
        self.ctx.state = state
        #: the current state's spec (kept here: read several times per message)
        self.state_spec: State = self.compiled.states[state]
        #: when its first timed transition is due (None: it has none)
        deadlines = [now + t.after for t in self.state_spec.transitions if t.after]
        self._deadline = min(deadlines) if deadlines else None
        if self.state_spec.terminal:
            self.finished = f"terminal state {state}"

    def _instance(self) -> TemplateInstance:
        inst = self._instances.get(self.state)
        if inst is None:
            inst = self.compiled.templates[self.state].instantiate(self.seed, self._generators)
            self._instances[self.state] = inst
        return inst

    def _faults(self) -> list[Fault]:
        extra = self.state_spec.faults
        return [*self.lot.spec.faults, *extra] if extra else self.lot.spec.faults

    def on_command(self, command: str, now: float) -> bool:
        """Apply a downlink command; True when it caused a transition."""
        for tr in self.state_spec.transitions:
            if tr.command is not None and tr.command == command:
                self._enter(tr.to, now)
                return True
        return False

    def _transition_after_message(self, fields: Any, now: float) -> None:
        for tr in self.state_spec.transitions:
            if tr.probability is not None:
                if self._states_rng().random() < tr.probability:
                    self._enter(tr.to, now)
                    return
            elif tr.when is not None:
                env = {**self.names, **(fields if isinstance(fields, dict) else {})}
                env.update(state=self.state, seq=self.ctx.seq, t=self.ctx.elapsed)
                from mockfleet.mock.generators.expr import compile_expr  # imports ast

                try:
                    hit = bool(compile_expr(tr.when)(env))
                except (ExprError, ArithmeticError, TypeError, ValueError) as exc:
                    self.errors.append(f"state {self.state}: when {tr.when!r}: {exc}")
                    continue
                if hit:
                    self._enter(tr.to, now)
                    return

    # ------------------------------------------------------------------ ticking

    def tick(self, now: float) -> list[Message]:
        """Do everything due at simulated time ``now``; return messages to send."""
        if self.finished:
            return []
        out: list[Message] = []
        duration = self.lot.spec.timing.duration
        if duration is not None and now >= self.started + duration:
            self.finished = "duration reached"
            return self._flush_pending(out)
        if self._offline_until and now >= self._offline_until:
            self._offline_until = 0.0
            # reconnect: the buffered backlog goes out in one burst
            out.extend(self._offline_buffer)
            self._offline_buffer.clear()
        deadline = self._deadline
        if deadline is not None and now >= deadline:
            for tr in self.state_spec.transitions:
                if tr.after is not None and now >= self.state_since + tr.after:
                    self._enter(tr.to, now)
                    break
            if self.finished:
                return self._flush_pending(out)
        if now >= self._next_sample:
            self._sample(now, out)
            jitter = self.lot.spec.timing.jitter
            step = self.interval()
            if jitter:
                step += (self._timing_rng().random() * 2 - 1) * jitter
            # keep the schedule anchored: late ticks do not push later samples back
            self._next_sample = max(self._next_sample + step, now) if step > 0 else now
        if self.finished:
            return self._flush_pending(out)
        return out

    def _flush_pending(self, out: list[Message]) -> list[Message]:
        """On the way out: whatever was held back or buffered is still sent."""
        if self._held is not None:
            out.append(self._held)
            self._held = None
        out.extend(self._offline_buffer)
        self._offline_buffer.clear()
        if self._bulk:
            out.extend(self._emit_bulk(self._bulk))
            self._bulk = []
        return out

    def _sample(self, now: float, out: list[Message]) -> None:
        if self.state_spec.offline:
            return
        spec = self.lot.spec
        faults = self._faults()
        decision = faultlib.decide(faults, self._faults_rng()) if faults else faultlib.Decision()
        ctx = self.ctx
        ctx.now = now
        ctx.elapsed = now - self.started
        ctx.in_state = now - self.state_since
        ctx.time_offset = self.skew - decision.late_by
        ctx.seq = self.messages
        instance = self._instance()
        sample = instance.render(ctx)
        err = getattr(instance, "last_error", None)
        if err:
            self.errors.append(err)
        self.samples += 1
        if spec.payload.bulk > 1:
            self._bulk.append(sample)
            if len(self._bulk) < spec.payload.bulk:
                self._transition_after_message(sample, now)
                return
            batch, self._bulk = self._bulk, []
            messages = self._emit_bulk(batch)
        else:
            messages = [self._wrap(sample)]
        for msg in messages:
            msg.malformed = decision.malformed
            msg.oversize = decision.oversize
            self._route(msg, decision, now, out)
        max_messages = spec.timing.maxMessages
        if max_messages is not None and self.messages >= max_messages:
            self.finished = "message count reached"
        self._transition_after_message(sample, now)

    def _emit_bulk(self, batch: list[Any]) -> list[Message]:
        return [self._wrap({self.lot.spec.payload.bulkField: batch})]

    def _wrap(self, body: Any) -> Message:
        """Number the message and add the envelope (sent_at is stamped at send)."""
        seq = self.messages
        self.messages += 1
        env = self.lot.spec.envelope
        if env.enabled and isinstance(body, dict):
            body = {env.deviceField: self.device_id, env.seqField: seq, **body}
        return Message(obj=body, seq=seq, due=self.ctx.now)

    def _route(self, msg: Message, d: faultlib.Decision, now: float, out: list[Message]) -> None:
        """Apply drop / offline / out-of-order / duplicate to one message."""
        if d.drop:
            self.dropped += 1
            return
        if d.offline_for and not self._offline_until:
            self._offline_until = now + d.offline_for
            self._buffering = d.offline_buffer
            self._offline_limit = d.offline_limit
        if self._offline_until:
            if self._buffering:
                self._offline_buffer.append(msg)
                if len(self._offline_buffer) > self._offline_limit:
                    self._offline_buffer.popleft()
                    self.dropped += 1
            else:
                self.dropped += 1
            return
        if d.out_of_order and self._held is None:
            self._held = msg
            return
        out.append(msg)
        if d.duplicate:
            out.append(
                Message(msg.obj, msg.seq, msg.due, msg.malformed, msg.oversize, duplicate=True)
            )
        if self._held is not None and self._held is not msg:
            out.append(self._held)
            self._held = None

    # ------------------------------------------------------------------ encoding

    def encode(self, msg: Message, sent_at: float) -> bytes:
        """Serialise a message; faults that change bytes happen here."""
        payload = self.lot.spec.payload
        env = self.lot.spec.envelope
        obj = msg.obj
        if payload.format == "text":
            fields = dict(self.names)
            if isinstance(obj, dict):
                fields.update(obj)
            fields[env.sentAtField] = round(sent_at, 6)
            fields.setdefault("seq", msg.seq)
            try:
                body = payload.text.format_map(fields).encode()  # type: ignore[union-attr]
            except (KeyError, ValueError, IndexError) as exc:
                self.errors.append(f"text template: {exc}")
                body = b""
        else:
            if env.enabled and isinstance(obj, dict):
                obj = dict(obj)
                obj[env.sentAtField] = round(sent_at, 6)
                if env.scheduledAtField:
                    obj[env.scheduledAtField] = round(msg.due, 6)
            body = _DUMPS(obj).encode()
            if msg.oversize and isinstance(obj, dict) and len(body) < msg.oversize:
                obj = dict(obj)
                faultlib.pad_to(obj, msg.oversize, len(body))
                body = _DUMPS(obj).encode()
        if msg.malformed:
            body = faultlib.corrupt(body, self._faults_rng())
        return body


def preview(
    compiled: CompiledLot, index: int, count: int, start: float
) -> list[tuple[float, bytes, str]]:
    """The first ``count`` messages of a device on a simulated clock:
    (simulated send time, body, state). Nothing is sent."""
    engine = DeviceEngine(compiled, index, start)
    out: list[tuple[float, bytes, str]] = []
    guard = 0
    while len(out) < count and not engine.finished:
        now = engine.next_due()
        for msg in engine.tick(now):
            out.append((now, engine.encode(msg, now), engine.state))
            if len(out) >= count:
                break
        guard += 1
        if guard > count * 1000 + 10000:
            break  # e.g. a device that stays offline forever
    return out
