"""HTTP(S) sink on the standard library's http.client.

No requests/urllib3: a device is one process and a machine runs thousands, so
every imported megabyte counts. One keep-alive connection per device is kept
and transparently re-opened when the server closed it while idle.
"""

from __future__ import annotations

import base64
import http.client
import json
import random
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from mockfleet.mock import lot
from mockfleet.mock.seeding import derive
from mockfleet.mock.sinks.backoff import backoff_delay
from mockfleet.mock.sinks.base import FatalSinkError, SendOutcome, Sink, Wait
from mockfleet.mock.sinks.credentials import read_secret, username
from mockfleet.mock.sinks.render import render
from mockfleet.mock.sinks.tls import ssl_context

#: Errors that mean a reused keep-alive connection had been closed by the server
#: while idle; the request is sent again at once on a fresh connection.
_STALE = (
    http.client.RemoteDisconnected,
    BrokenPipeError,
    ConnectionResetError,
    ConnectionAbortedError,
    ssl.SSLEOFError,
)


def commands_from_response(content_type: str, data: bytes, field: str) -> list[str]:
    """Downlink commands carried by a response body: the string ``field`` of a
    JSON object, or a non-empty text/plain body (stripped)."""
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime == "application/json" or mime.endswith("+json"):
        try:
            doc = json.loads(data)
        except ValueError:
            return []
        value = doc.get(field) if isinstance(doc, dict) else None
        return [value] if isinstance(value, str) and value else []
    if mime == "text/plain":
        text = data.decode("utf-8", "replace").strip()
        return [text] if text else []
    return []


def auth_header(auth: lot.HttpAuth | None) -> tuple[str, str] | None:
    """The (name, value) header for ``auth``, secrets read from env or file."""
    if auth is None:
        return None
    if auth.type == "basic":
        user = username(auth.username, auth.usernameEnv, "sink.auth.usernameEnv") or ""
        password = read_secret("sink.auth password", auth.passwordEnv, auth.passwordFile) or ""
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        return "Authorization", f"Basic {token}"
    secret = read_secret("sink.auth token", auth.tokenEnv, auth.tokenFile) or ""
    if auth.type == "bearer":
        return "Authorization", f"Bearer {secret}"
    return auth.header, secret


class HttpSink(Sink):
    """Sends each message as one request; retries connection errors, timeouts,
    5xx and 429 with capped exponential backoff; 401/403 are fatal."""

    def __init__(
        self,
        spec: lot.HttpSink,
        names: Mapping[str, Any],
        rng: random.Random | None = None,
    ) -> None:
        self.spec = spec
        self.url = render(spec.url, names, "url")
        parts = urlsplit(self.url)
        try:
            port = parts.port
        except ValueError as exc:
            raise FatalSinkError(f"sink.url: {self.url!r}: {exc}") from None
        if not parts.hostname:
            raise FatalSinkError(f"sink.url: {self.url!r} has no host")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = port or (443 if self._https else 80)
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        #: The URL without its query string (which may carry a key) for messages.
        self.where = f"{parts.scheme}://{parts.netloc}{parts.path or '/'}"
        if rng is None:
            # Seeded from the device id: the same device backs off the same way.
            rng = random.Random(derive("http-backoff", names.get("id")))
        self._rng = rng
        self._headers: dict[str, str] = {}
        self._context: ssl.SSLContext | None = None
        self._conn: http.client.HTTPConnection | None = None
        #: requests answered on the current connection (0: fresh or none)
        self._answered = 0
        #: connections opened so far (for tests and metrics)
        self.connections_opened = 0

    # ------------------------------------------------------------------ lifecycle

    def open(self, wait: Wait) -> None:
        """Read credentials and build the TLS context (fatal errors surface here).
        The connection itself is made by the first send."""
        headers = dict(self.spec.headers)
        if not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = self.content_type
        auth = auth_header(self.spec.auth)
        if auth is not None:
            headers[auth[0]] = auth[1]
        if not self.spec.keepAlive:
            headers["Connection"] = "close"
        self._headers = headers
        if self._https:
            self._context = ssl_context(self.spec.tls, ssl.Purpose.SERVER_AUTH)

    def close(self, timeout: float) -> None:
        self._drop()

    # ------------------------------------------------------------------ sending

    def send(self, body: bytes, wait: Wait) -> SendOutcome:
        retries = self.spec.retries
        attempt = 0
        while True:
            retry_after: float | None = None
            try:
                status, reason, headers, data = self._exchange(body)
            except ssl.SSLError as exc:
                # Certificate or handshake problems: trying again will not help.
                self._drop()
                return SendOutcome(ok=False, retries=attempt, error=f"{self.where}: TLS: {exc}")
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                error = f"{self.where}: {type(exc).__name__}: {exc}".rstrip(": ")
                retryable = True
            else:
                if 200 <= status < 300:
                    commands = commands_from_response(
                        headers.get("Content-Type", ""), data, self.spec.commandField
                    )
                    return SendOutcome(ok=True, retries=attempt, commands=commands)
                if status in (401, 403):
                    self._drop()
                    raise FatalSinkError(
                        f"{self.where}: HTTP {status} {reason}: the server rejected the "
                        "credentials; check sink.auth and the secret it names"
                    )
                error = f"{self.where}: HTTP {status} {reason}"
                retryable = status >= 500 or status == 429
                retry_after = _retry_after(headers.get("Retry-After"))
            if not retryable or attempt >= retries.max:
                return SendOutcome(ok=False, retries=attempt, error=error)
            delay = backoff_delay(attempt, retries.backoff, retries.maxBackoff, self._rng)
            if retry_after is not None:
                delay = max(delay, min(retry_after, retries.maxBackoff))
            if not wait(delay):
                return SendOutcome(
                    ok=False, retries=attempt, error=f"{error} (stopped while waiting to retry)"
                )
            attempt += 1

    def _exchange(self, body: bytes) -> tuple[int, str, http.client.HTTPMessage, bytes]:
        """One request/response; a stale keep-alive connection is replaced once."""
        conn = self._connection()
        reused = self._answered > 0
        try:
            return self._request(conn, body)
        except _STALE:
            if not reused:
                raise
            self._drop()
            return self._request(self._connection(), body)

    def _request(
        self, conn: http.client.HTTPConnection, body: bytes
    ) -> tuple[int, str, http.client.HTTPMessage, bytes]:
        conn.request(self.spec.method, self._target, body=body, headers=self._headers)
        resp = conn.getresponse()
        # Read it all: the connection is reusable only once the body is consumed.
        data = resp.read()
        if not self.spec.keepAlive or conn.sock is None:
            # The server (or we) asked to close: start afresh next time.
            self._drop()
        else:
            self._answered += 1
        return resp.status, resp.reason, resp.headers, data

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._https:
                self._conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self.spec.timeout, context=self._context
                )
            else:
                self._conn = http.client.HTTPConnection(
                    self._host, self._port, timeout=self.spec.timeout
                )
            self._answered = 0
            self.connections_opened += 1
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._answered = 0


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header given in seconds (dates are ignored)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
