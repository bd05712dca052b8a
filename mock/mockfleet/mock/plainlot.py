"""Validated lots turned into their plain mirror (``mockfleet.mock.plain``).

This side imports pydantic and the lot schema; what it returns does not need
them. Generator objects inside templates (``{"$gen": ...}``) are parsed here
too, so compiling a lot and starting a device never validate anything again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mockfleet.mock import plain
from mockfleet.mock.generators.specs import GENERATOR_ADAPTER
from mockfleet.mock.generators.syntax import GEN_KEY
from mockfleet.mock.lot import MockLot, State, load_lot


def to_plain(value: Any) -> Any:
    """The mirror of a model instance (and of the lists and dicts around it)."""
    if isinstance(value, BaseModel):
        fields = {name: to_plain(getattr(value, name)) for name in type(value).model_fields}
        for name, extra in (value.model_extra or {}).items():
            fields.setdefault(name, to_plain(extra))
        return plain.make(type(value).__name__, fields)
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(to_plain(v) for v in value)
    return value


def parse_generator(spec: Any) -> plain.Spec:
    """The mirror of one generator, from a ``{"$gen": ...}`` dict or a spec model.
    Raises ValueError (pydantic's ValidationError) for an invalid one."""
    if isinstance(spec, plain.Spec):
        return spec
    if not isinstance(spec, BaseModel):
        spec = GENERATOR_ADAPTER.validate_python(spec)
    mirrored: plain.Spec = to_plain(spec)
    return mirrored


def with_generators(value: Any) -> Any:
    """A JSON template with each ``{"$gen": ...}`` object replaced by its parsed
    mirror (not descending into a generator: its fields are its own)."""
    if isinstance(value, dict):
        if GEN_KEY in value:
            return parse_generator(value)
        return {k: with_generators(v) for k, v in value.items()}
    if isinstance(value, list):
        return [with_generators(v) for v in value]
    return value


def plain_lot(lot: MockLot) -> plain.PlainLot:
    """The whole lot's mirror, its templates' generators parsed."""
    mirrored: plain.PlainLot = to_plain(lot)
    spec = mirrored.spec
    spec.payload.template = with_generators(lot.spec.payload.template)
    spec.variables = {k: with_generators(v) for k, v in lot.spec.variables.items()}
    for name, state in lot.spec.states.items():
        if state.payload is not None:
            spec.states[name].payload = with_generators(state.payload)
    mirrored.default_state = to_plain(State())
    return mirrored


def load_plain_lot(path: str | Path) -> plain.PlainLot:
    """Read, validate and mirror a lot file; every problem is a LotError."""
    return plain_lot(load_lot(path))
