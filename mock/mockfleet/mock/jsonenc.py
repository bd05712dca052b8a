"""JSON encoders built once, for code that encodes on every message.

``json.JSONEncoder.encode`` builds a closure, a dict and a C encoder object
on every call. A device encodes each message, and on a machine whose caches
go cold while a device sleeps, every object and line of code touched per
message costs; so the C encoder is made once here and reused. The output is
byte for byte what ``JSONEncoder(...).encode`` gives with the same options.
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable
from typing import Any


def encoder(
    *,
    separators: tuple[str, str] = (", ", ": "),
    ensure_ascii: bool = True,
    allow_nan: bool = True,
    default: Callable[[Any], Any] | None = None,
) -> Callable[[Any], str]:
    """A reusable ``dumps``: the same text as ``json.JSONEncoder`` with these options."""
    enc = json.JSONEncoder(
        separators=separators, ensure_ascii=ensure_ascii, allow_nan=allow_nan, default=default
    )
    make = getattr(json.encoder, "c_make_encoder", None)  # the C accelerator (untyped)
    if make is None:  # pragma: no cover - CPython always has the C accelerator
        return enc.encode
    markers: dict[int, Any] = {}  # for circular references; emptied before each use
    basestring = (
        json.encoder.encode_basestring_ascii if ensure_ascii else json.encoder.encode_basestring
    )
    item_separator, key_separator = separators
    iterencode = make(
        markers,
        enc.default,
        basestring,
        None,
        key_separator,
        item_separator,
        False,
        False,
        allow_nan,
    )

    def dumps(obj: Any) -> str:
        markers.clear()  # an earlier failure may have left entries behind
        return "".join(iterencode(obj, 0))

    return dumps
