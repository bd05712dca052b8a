"""Duration and size field types for the pydantic lot schema."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

from mockfleet.mock.durations import parse_duration, parse_size

_DURATION_SCHEMA = {
    "anyOf": [{"type": "integer"}, {"type": "string"}],
    "x-kubernetes-int-or-string": True,
    "description": "A duration: whole seconds, or a string such as '500ms', '5s', '1m30s'.",
}
_SIZE_SCHEMA = {
    "anyOf": [{"type": "integer"}, {"type": "string"}],
    "x-kubernetes-int-or-string": True,
    "description": "A size: bytes as an integer, or a string such as '64KiB' or '1MiB'.",
}

#: Seconds, accepted as "5s"/"500ms"/number; serialised back as seconds.
Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(lambda v: v, return_type=float),
    WithJsonSchema(_DURATION_SCHEMA),
]
#: Bytes, accepted as "64KiB"/number.
Size = Annotated[int, BeforeValidator(parse_size), WithJsonSchema(_SIZE_SCHEMA)]
