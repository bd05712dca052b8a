"""Faker behind the ``fake`` generator: imported only by lots that use it.

One Faker per locale per process (building one costs tens of milliseconds and
megabytes); determinism comes from reseeding it from the device's own stream
before every value, so devices sharing a process never disturb each other.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from typing import Any

_FAKERS: dict[str, Any] = {}

#: Faker methods that change the instance or read files rather than make data.
_FORBIDDEN_PREFIXES = ("seed", "add_", "del_", "set_", "get_", "provider", "parse", "format")


def faker_for(locale: str) -> Any:
    """The process-wide Faker for ``locale``; a clear ValueError for an unknown locale."""
    fk = _FAKERS.get(locale)
    if fk is None:
        from faker import Faker

        try:
            fk = Faker(locale)
        except AttributeError:
            raise ValueError(f"fake: unknown locale {locale!r}") from None
        _FAKERS[locale] = fk
    return fk


def provider_method(locale: str, provider: str) -> Any:
    """The bound Faker method for ``provider``; ValueError naming it when unknown."""
    fk = faker_for(locale)
    if provider.startswith(_FORBIDDEN_PREFIXES):
        raise ValueError(f"fake: {provider!r} is not a data provider")
    try:
        method = getattr(fk, provider)
    except AttributeError:
        method = None
    if not callable(method):
        raise ValueError(
            f"fake: unknown provider {provider!r} (a Faker method such as 'name', 'city' or 'ipv4')"
        )
    return method


def to_json(value: Any) -> Any:
    """Faker returns dates, Decimals, tuples, UUIDs...; make them JSON values."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [to_json(v) for v in value]
    return str(value)
