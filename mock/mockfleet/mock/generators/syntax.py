"""Template syntax shared by the lot schema and the runtime, without pydantic:
the key that marks a generator, the check of ``str.format`` templates, and
the error of expressions (here rather than in expr, which imports ast: a
zygote whose lots use no expression never loads it, see mockfleet.mock.record)."""

from __future__ import annotations

import string

GEN_KEY = "$gen"


class ExprError(ValueError):
    """An expression that cannot be compiled or evaluated, with the reason."""


def check_format_template(template: str) -> list[str]:
    """Validate a str.format template; return the field names it uses.

    Only plain names are allowed: attribute and index access ('{x.__class__}')
    would let a lot file reach into Python objects.
    """
    names = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"invalid template {template!r}: {exc}") from None
    for _literal, field, _spec, _conv in parsed:
        if field is None:
            continue
        if not field.isidentifier():
            raise ValueError(
                f"invalid template {template!r}: field {{{field}}} must be a plain name "
                "such as {index} or {lot}"
            )
        names.append(field)
    return names
