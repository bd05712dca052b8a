"""Telling an IP address from a host name, without resolving anything."""

from __future__ import annotations

import socket


def literal_family(host: str) -> int | None:
    """AF_INET or AF_INET6 when ``host`` is an IP address written out, else None
    (a name, which would need a lookup)."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return family
    return None
