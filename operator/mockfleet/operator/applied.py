"""What the operator wrote last into a child object, so it can take fields back (pure).

A JSON merge patch only adds and changes keys: a key the builders stop
producing (the user removed ``spec.tower.nodeSelector``, a version label, ...)
would stay in the child forever. So every applied child records the *shape*
of what was applied — its keys, nested, without values — in the
``mockfleet.dev/applied-fields`` annotation, and the next apply sets every key
that was applied before but is no longer produced to ``null``.

Keys the operator never wrote (status, server defaults, other controllers'
annotations) are not in the shape and are left alone. Lists are replaced
whole by a merge patch, so inside lists nothing needs removing; their items'
shapes are still recorded so that a key dropped inside a list item (a
container's ``resources.limits``) counts as a change worth a write.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mockfleet.mock.lot import API_GROUP

APPLIED_ANNOTATION = f"{API_GROUP}/applied-fields"

#: A shape: ``{key: shape}`` for objects, ``[shape, ...]`` for lists, ``1`` for values.
Shape = dict[str, Any] | list[Any] | int


def shape(value: Any) -> Shape:
    """The keys of ``value``, nested, with every scalar replaced by ``1``."""
    if isinstance(value, Mapping):
        return {str(k): shape(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [shape(v) for v in value]
    return 1


def encode_shape(value: Shape) -> str:
    """The annotation value: compact, stable JSON."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def recorded_shape(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """The shape recorded on a stored object; None when absent or unreadable.

    Objects written before the operator recorded shapes have none: nothing can
    be removed from them safely until the next apply records one.
    """
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    raw = annotations.get(APPLIED_ANNOTATION)
    if not isinstance(raw, str):
        return None
    try:
        found = json.loads(raw)
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def with_shape(desired: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``desired`` that records its own shape (the annotation is not part of it)."""
    doc = json.loads(json.dumps(desired))
    meta = doc.setdefault("metadata", {})
    annotations = meta.setdefault("annotations", {})
    annotations.pop(APPLIED_ANNOTATION, None)
    recorded = encode_shape(shape(doc))
    annotations[APPLIED_ANNOTATION] = recorded
    return dict(doc)


def removals(previous: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch of ``null`` for every key in ``previous`` (a shape) gone from ``desired``."""
    out: dict[str, Any] = {}
    for key, sub in previous.items():
        if key not in desired:
            out[key] = None
        elif isinstance(sub, dict) and isinstance(desired[key], Mapping):
            inner = removals(sub, desired[key])
            if inner:
                out[key] = inner
    return out


def merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` merged in (objects recursively; ``extra`` wins otherwise)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_patch(desired: Mapping[str, Any], stored: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch that makes ``stored`` hold exactly ``desired`` in the fields we manage.

    ``desired`` must come from :func:`with_shape`; the removals are computed
    from the shape recorded on ``stored`` (none when it has no record).
    """
    previous = recorded_shape(stored) or {}
    return merge(removals(previous, desired), desired)
