"""Per-device strings (URL, path, topic, client id) from the lot's templates."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mockfleet.mock.sinks.base import FatalSinkError


def render(template: str, names: Mapping[str, Any], field: str) -> str:
    """``template.format(**names)``; a name that is not there is a FatalSinkError
    naming the sink field, so a bad template stops the device with a clear reason."""
    try:
        return template.format(**names)
    except KeyError as exc:
        raise FatalSinkError(
            f"sink.{field}: template {template!r} uses {{{exc.args[0]}}}, which is not "
            f"available; available: {', '.join(sorted(names))}"
        ) from None
    except (IndexError, ValueError, AttributeError) as exc:
        raise FatalSinkError(f"sink.{field}: cannot render template {template!r}: {exc}") from None
