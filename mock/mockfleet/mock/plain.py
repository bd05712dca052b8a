"""A validated lot as plain Python objects, for processes that never load pydantic.

The tower's zygote forks every mock, and a fork costs in proportion to what
the forking process holds: its memory and its mappings. pydantic and the
lot's schema add about 9 MiB and some 60 mappings (its compiled core and the
extension modules it imports) that a running device never needs. So lots are
validated with the pydantic models elsewhere (``mockfleet.mock.plainlot``: in
the CLI, or in a short-lived child of the zygote), and the device runtime
reads this mirror instead: one :class:`Spec` per model instance, with the
same field names as attributes and every default already filled in.

This module imports nothing heavy. The validator child sends its mirror
back with :func:`dumps` / :func:`loads` (marshal, built into the
interpreter), so the zygote does not even import pickle.
"""

from __future__ import annotations

import marshal
from typing import Any


class Spec:
    """One validated model instance: its fields as attributes.

    ``_model`` is the name of the pydantic model it mirrors (``HttpSink``,
    ``Sine``, ...). Equality and hashing are by identity, as shared read-only
    objects: caches keyed by a spec (TLS contexts) hit for every device of a lot.
    """

    _model: str

    def __init__(self, model: str, fields: dict[str, Any]) -> None:
        self.__dict__.update(fields)
        self._model = model

    def fields(self) -> dict[str, Any]:
        """The mirrored fields (without ``_model``)."""
        return {k: v for k, v in self.__dict__.items() if k != "_model"}

    def replace(self, **changes: Any) -> Spec:
        """A copy with some fields changed (the original is shared: never mutated)."""
        unknown = set(changes) - set(self.fields())
        if unknown:
            raise AttributeError(f"{self._model} has no field {', '.join(sorted(unknown))}")
        return type(self)(self._model, {**self.fields(), **changes})

    def to_data(self) -> dict[str, Any]:
        """The fields as nested dicts and lists (a model_dump of the mirror)."""
        return {k: _data(v) for k, v in self.fields().items()}

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.fields().items())
        return f"{self._model}~({inner})"


def _data(value: Any) -> Any:
    if isinstance(value, Spec):
        return value.to_data()
    if isinstance(value, dict):
        return {k: _data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_data(v) for v in value]
    return value


class PlainLot(Spec):
    """A whole ``MockLot``, with the two helpers the runtime calls on it.

    ``default_state`` is a ``State`` with every default: the one state of a
    lot that defines none (built by the validator, so no default lives here).
    """

    metadata: Any
    spec: Any
    default_state: Spec

    @property
    def name(self) -> str:
        name: str = self.metadata.name
        return name

    def device_id(self, index: int) -> str:
        device_id: str = self.spec.deviceId.format(lot=self.name, index=index)
        return device_id


def make(model: str, fields: dict[str, Any]) -> Spec:
    """The mirror of one model instance (``MockLot`` gets :class:`PlainLot`)."""
    return PlainLot(model, fields) if model == "MockLot" else Spec(model, fields)


# --------------------------------------------------------------------------- transport

#: types sent as they are (exact types: a subclass, an enum say, is not one)
_SCALARS = (str, int, float, bool, bytes, type(None))


def dumps(value: Any) -> bytes:
    """``value`` (mirrors, dicts, lists, tuples, scalars) as marshal bytes.

    Raises TypeError for anything else (a date that YAML read from an
    unquoted value, say): the caller then falls back to pickle.
    """
    return marshal.dumps(_pack(value))


def loads(data: bytes) -> Any:
    """The value :func:`dumps` was given (Specs rebuilt, PlainLot included)."""
    return _unpack(marshal.loads(data))


def _pack(value: Any) -> Any:
    # Containers become tagged tuples; scalars are never tuples, so they go as they are.
    kind = type(value)
    if kind in _SCALARS:
        return value
    if isinstance(value, Spec):
        return ("s", value._model, tuple((k, _pack(v)) for k, v in value.fields().items()))
    if kind is dict:
        return ("d", tuple((_pack(k), _pack(v)) for k, v in value.items()))
    if kind is list:
        return ("l", tuple(_pack(v) for v in value))
    if kind is tuple:
        return ("t", tuple(_pack(v) for v in value))
    raise TypeError(f"{kind.__name__} values are not sent as a plain mirror")


def _unpack(value: Any) -> Any:
    if type(value) is not tuple:
        return value
    tag, *rest = value
    if tag == "s":
        model, items = rest
        return make(model, {k: _unpack(v) for k, v in items})
    if tag == "d":
        return {_unpack(k): _unpack(v) for k, v in rest[0]}
    if tag == "l":
        return [_unpack(v) for v in rest[0]]
    if tag == "t":
        return tuple(_unpack(v) for v in rest[0])
    raise ValueError(f"not a plain mirror: tag {tag!r}")
