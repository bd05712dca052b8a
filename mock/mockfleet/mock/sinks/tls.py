"""TLS client contexts built from a sink's ``tls`` settings.

Contexts are cached by their (frozen, hashable) spec: a preloaded parent
builds each one once, before forking, and thousands of devices share it
copy-on-write instead of each parsing the CA bundle again.
"""

from __future__ import annotations

import ssl
from functools import lru_cache
from typing import TYPE_CHECKING

from mockfleet.mock.sinks.base import FatalSinkError

if TYPE_CHECKING:
    from mockfleet.mock.lot import Tls


def _readable(path: str, role: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise FatalSinkError(
            f"tls.{role}: cannot read {path}: {exc.strerror or exc}; "
            f"point tls.{role} at a readable PEM file (a mounted secret?)"
        ) from None


@lru_cache(maxsize=32)
def ssl_context(tls: Tls, purpose: ssl.Purpose = ssl.Purpose.SERVER_AUTH) -> ssl.SSLContext:
    """A client-side context for ``tls`` (``purpose`` is what the peer proves).

    Raises FatalSinkError naming the file when a CA, certificate or key file is
    missing, unreadable or not valid PEM.
    """
    if tls.caFile:
        _readable(tls.caFile, "caFile")
    if tls.certFile and tls.keyFile:
        _readable(tls.certFile, "certFile")
        _readable(tls.keyFile, "keyFile")
    try:
        ctx = ssl.create_default_context(purpose, cafile=tls.caFile)
    except ssl.SSLError as exc:
        raise FatalSinkError(
            f"tls.caFile: {tls.caFile} holds no usable CA certificate ({exc.reason or exc}); "
            "it must be PEM"
        ) from None
    if not tls.verify:
        # Order matters: check_hostname must be off before verification is.
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if tls.certFile and tls.keyFile:
        try:
            ctx.load_cert_chain(tls.certFile, tls.keyFile)
        except ssl.SSLError as exc:
            raise FatalSinkError(
                f"tls.certFile/keyFile: cannot load {tls.certFile} with {tls.keyFile} "
                f"({exc.reason or exc}); both must be PEM and the key must match the certificate"
            ) from None
    return ctx
