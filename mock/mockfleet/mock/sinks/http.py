"""HTTP(S) sink over a plain socket and the small client of ``http_wire``.

No requests/urllib3, and not even http.client: a device is one process and a
machine runs thousands forked from one preloaded parent, so both the imported
and the touched (copy-on-write) megabytes count. One keep-alive connection
per device is kept and transparently re-opened when the server closed it
while idle. Responses are read into one small buffer owned by the sink.
"""

from __future__ import annotations

import json
import random
import socket
import struct
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mockfleet.mock.seeding import derive
from mockfleet.mock.sinks.backoff import backoff_delay
from mockfleet.mock.sinks.base import FatalSinkError, SendOutcome, Sink, Wait
from mockfleet.mock.sinks.credentials import read_secret, username
from mockfleet.mock.sinks.hosts import literal_family
from mockfleet.mock.sinks.http_wire import (
    Head,
    ProtocolError,
    RemoteDisconnected,
    body_decoder,
    frame_request,
    host_header,
    keeps_alive,
    parse_head,
    request_head,
    split_url,
)
from mockfleet.mock.sinks.render import render

if TYPE_CHECKING:
    import ssl

    from mockfleet.mock import lot

#: Errors that mean a reused keep-alive connection had been closed by the server
#: while idle; the request is sent again at once on a fresh connection. (Over
#: TLS, ssl.SSLEOFError too: see _stale_errors.)
_STALE: tuple[type[BaseException], ...] = (
    RemoteDisconnected,
    BrokenPipeError,
    ConnectionResetError,
    ConnectionAbortedError,
)
#: receive buffer per sink; also the largest response head accepted
BUFFER_SIZE = 8 * 1024
#: a body longer than this is not read to its end: the connection is closed instead
DRAIN_LIMIT = 1024 * 1024


def commands_from_response(content_type: str, data: bytes, field: str) -> list[str]:
    """Downlink commands carried by a response body: the string ``field`` of a
    JSON object, or a non-empty text/plain body (stripped)."""
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime == "application/json" or mime.endswith("+json"):
        if _plain_utf8(data) and field.encode() not in data:
            # Without escapes the key would appear as written: skip the parse
            # (the common "{}" acknowledgement costs no JSON decoding).
            return []
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


def _plain_utf8(data: bytes) -> bool:
    """No JSON escapes, and not UTF-16/32 (which json.loads also accepts)."""
    return b"\\" not in data and b"\0" not in data[:4] and data[:1] not in (b"\xfe", b"\xff")


def auth_header(auth: lot.HttpAuth | None) -> tuple[str, str] | None:
    """The (name, value) header for ``auth``, secrets read from env or file."""
    if auth is None:
        return None
    if auth.type == "basic":
        user = username(auth.username, auth.usernameEnv, "sink.auth.usernameEnv") or ""
        password = read_secret("sink.auth password", auth.passwordEnv, auth.passwordFile) or ""
        import base64  # here: only lots with basic auth need it in the zygote

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
        try:
            url = split_url(self.url)
        except ValueError as exc:
            raise FatalSinkError(f"sink.url: {self.url!r}: {exc}") from None
        self._https = url.https
        #: what a stale keep-alive connection raises (see _STALE)
        self._stale = _stale_errors(url.https)
        self._host = url.host
        self._port = url.port
        self._target = url.target
        #: The URL without its query string (which may carry a key) for messages.
        self.where = url.where
        # The backoff Random is made on the first retry: most devices never need one.
        self._rng = rng
        self._rng_seed = names.get("id")
        #: request line and headers, built by open(); each send adds its body
        self._head = b""
        self._context: ssl.SSLContext | None = None
        self._sock: socket.socket | None = None
        # One receive buffer for the sink's life: no per-response buffer objects.
        self._buf = bytearray(BUFFER_SIZE)
        self._view = memoryview(self._buf)
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
        try:
            self._head = request_head(
                self.spec.method,
                self._target,
                host_header(self._host, self._port, self._https),
                headers,
            )
        except ValueError as exc:
            raise FatalSinkError(f"sink.headers: {exc}") from None
        if self._https:
            self._context = _client_context(self.spec.tls)

    def close(self, timeout: float) -> None:
        self._drop()

    # ------------------------------------------------------------------ sending

    def send(self, body: bytes, wait: Wait) -> SendOutcome:
        retries = self.spec.retries
        attempt = 0
        while True:
            retry_after: float | None = None
            try:
                head, data = self._exchange(body)
            except (OSError, ProtocolError) as exc:
                self._drop()
                if self._https and _is_tls_error(exc):
                    # Certificate or handshake problems: trying again will not help.
                    return SendOutcome(ok=False, retries=attempt, error=f"{self.where}: TLS: {exc}")
                error = f"{self.where}: {type(exc).__name__}: {exc}".rstrip(": ")
                retryable = True
            else:
                status = head.status
                if 200 <= status < 300:
                    commands = commands_from_response(
                        head.headers.get("content-type", ""), data, self.spec.commandField
                    )
                    return SendOutcome(ok=True, retries=attempt, commands=commands)
                if status in (401, 403):
                    self._drop()
                    raise FatalSinkError(
                        f"{self.where}: HTTP {status} {head.reason}: the server rejected the "
                        "credentials; check sink.auth and the secret it names"
                    )
                error = f"{self.where}: HTTP {status} {head.reason}".rstrip()
                retryable = status >= 500 or status == 429
                retry_after = _retry_after(head.headers.get("retry-after"))
            if not retryable or attempt >= retries.max:
                return SendOutcome(ok=False, retries=attempt, error=error)
            delay = backoff_delay(attempt, retries.backoff, retries.maxBackoff, self._backoff_rng())
            if retry_after is not None:
                delay = max(delay, min(retry_after, retries.maxBackoff))
            if not wait(delay):
                return SendOutcome(
                    ok=False, retries=attempt, error=f"{error} (stopped while waiting to retry)"
                )
            attempt += 1

    def _backoff_rng(self) -> random.Random:
        if self._rng is None:
            # Seeded from the device id: the same device backs off the same way.
            self._rng = random.Random(derive("http-backoff", self._rng_seed))
        return self._rng

    def _exchange(self, body: bytes) -> tuple[Head, bytes]:
        """One request/response; a stale keep-alive connection is replaced once."""
        sock = self._connection()
        reused = self._answered > 0
        try:
            return self._request(sock, body)
        except self._stale:
            if not reused:
                raise
            self._drop()
            return self._request(self._connection(), body)

    def _request(self, sock: socket.socket, body: bytes) -> tuple[Head, bytes]:
        try:
            sock.sendall(frame_request(self._head, body))
            head, data, reusable = self._response(sock)
        except BlockingIOError:
            # the kernel's send/receive timeout (see _kernel_timeouts)
            raise TimeoutError("timed out") from None
        if reusable and self.spec.keepAlive:
            self._answered += 1
        else:
            # The server (or we) asked to close: start afresh next time.
            self._drop()
        return head, data

    def _response(self, sock: socket.socket) -> tuple[Head, bytes, bool]:
        """Read one final response: its head, its body (at most BODY_CAP bytes
        kept) and whether the connection can carry another request."""
        buf, view = self._buf, self._view
        filled = 0
        while True:
            head = parse_head(buf, filled) if filled else None
            if head is not None:
                if 100 <= head.status < 200:
                    # An interim response (100 Continue): the final one follows.
                    rest = filled - head.size
                    buf[:rest] = buf[head.size : filled]
                    filled = rest
                    continue
                break
            if filled == len(buf):
                raise ProtocolError(f"response head longer than {len(buf)} bytes")
            n = sock.recv_into(view[filled:])
            if not n:
                if filled:
                    raise ProtocolError("connection closed in the middle of the response head")
                raise RemoteDisconnected("the server closed the connection without a response")
            filled += n
        decoder = body_decoder(head)
        pos = decoder.feed(buf, head.size, filled) if filled > head.size else head.size
        while not decoder.done:
            if decoder.total > DRAIN_LIMIT:
                # Not worth reading to its end: what we keep is enough.
                return head, bytes(decoder.body), False
            n = sock.recv_into(view)
            if not n:
                decoder.eof()
                break
            pos, filled = decoder.feed(buf, 0, n), n
        # Bytes after the response were never asked for: do not trust the connection.
        return head, bytes(decoder.body), pos == filled and keeps_alive(head, decoder)

    def _connection(self) -> socket.socket:
        if self._sock is None:
            self._answered = 0
            self.connections_opened += 1
            sock = _connect(self._host, self._port, self.spec.timeout)
            if not self._https:
                _kernel_timeouts(sock, self.spec.timeout)
            if self._https:
                if self._context is None:
                    self._context = _client_context(self.spec.tls)
                try:
                    sock = self._context.wrap_socket(sock, server_hostname=self._host)
                except BaseException:
                    sock.close()
                    raise
            self._sock = sock
        return self._sock

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._answered = 0


def _stale_errors(https: bool) -> tuple[type[BaseException], ...]:
    if not https:
        return _STALE
    import ssl

    return (*_STALE, ssl.SSLEOFError)


def _is_tls_error(exc: BaseException) -> bool:
    """An ssl.SSLError; ssl is looked up, not imported: plain HTTP never loads it."""
    ssl = sys.modules.get("ssl")
    return ssl is not None and isinstance(exc, ssl.SSLError)


def _client_context(tls: Any) -> ssl.SSLContext:
    """The TLS context for an https URL. The ssl module (and OpenSSL with it)
    is imported here, not at the top: a zygote serving only plain-HTTP lots
    never loads it, so no mock inherits its memory (see preload_sink)."""
    import ssl

    from mockfleet.mock.sinks.tls import ssl_context

    return ssl_context(tls, ssl.Purpose.SERVER_AUTH)


def _connect(host: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection with ``timeout`` on every operation. An IP literal is
    connected to directly: no name resolution (and no resolver libraries
    loaded into the device)."""
    family = literal_family(host)
    if family is None:
        sock = socket.create_connection((host, port), timeout)
    else:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect((host, port))
        except BaseException:
            sock.close()
            raise
    # The request goes out in one write; do not let Nagle hold back its tail.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _kernel_timeouts(sock: socket.socket, timeout: float) -> None:
    """Leave timeouts on send and receive to the kernel (SO_SNDTIMEO and
    SO_RCVTIMEO) and make the socket blocking: with a Python-level timeout
    CPython polls before every send and every receive, two system calls more
    per message, and thousands of devices each pay them every second. A
    timed-out call then fails with EAGAIN, which ``_request`` reports as a
    timeout."""
    sec = int(timeout)
    usec = int((timeout - sec) * 1_000_000)
    if not sec and not usec:
        usec = 1  # zero would mean no timeout at all
    tv = struct.pack("ll", sec, usec)
    sock.settimeout(None)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header given in seconds (dates are ignored)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def warm_up(rounds: int = 16, like: Any = None) -> None:
    """Run a sink's connect, request and response code here, over loopback
    sockets, so that a preloading parent compiles and specialises it once:
    devices forked afterwards then share that code instead of each writing
    to (and so copying) the pages it lives on when they first run it.

    ``like`` is a lot's sink spec in its plain mirror (mockfleet.mock.plain):
    the warm-up then sends its headers, to a loopback URL, without its
    credentials. Without it, a default spec is built with the lot schema.
    """
    wait: Wait = _never_stop
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(rounds + 1)
        host, port = listener.getsockname()
        url = f"http://{host}:{port}/warm-up?x=1"
        if like is not None:
            spec = like.replace(url=url, auth=None, keepAlive=True)
        else:
            from mockfleet.mock import lot as schema

            spec = schema.HttpSink(type="http", url=url)
        sink = HttpSink(spec, {"id": "warm-up"})
        sink.open(wait)
        for _ in range(rounds):
            sink._drop()
            sink._connection()  # the kernel completes it: nothing needs to accept
        sink._drop()
        ours, theirs = socket.socketpair()
        with ours, theirs:
            ours.settimeout(5)
            sink._sock = ours
            replies = (
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b'Content-Length: 19\r\n\r\n{"command": "warm"}',
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
            )
            for i in range(rounds):
                theirs.sendall(replies[i % len(replies)])
                sink._answered = 1
                sink._sock = ours
                sink.send(b'{"warm": "up"}', wait)
                theirs.recv(65536)
        sink._sock = None
        sink.close(0)


def _never_stop(seconds: float) -> bool:
    return True
