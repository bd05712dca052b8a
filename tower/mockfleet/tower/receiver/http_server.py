"""A small, fast HTTP/1.1 server that feeds posted messages to ``Stats``.

Thousands of mock devices keep a connection open and post every second, so
the server is a single-threaded ``asyncio.Protocol`` with a minimal parser
instead of ``http.server`` (a thread per connection, far too slow here). It
understands exactly what devices send: a request line, headers and a body
delimited by Content-Length, on keep-alive connections, with pipelined
requests answered in order. Chunked bodies are refused with 411; anything
unparsable gets a 400 and the connection is closed (the server goes on).

Routes: any POST/PUT/PATCH is a device message (the body is audited; the
path is ignored because the envelope names the device); ``GET /stats`` is
the current report (``?per_device=1`` adds each device); ``GET /healthz``.
"""

from __future__ import annotations

import asyncio
import json
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mockfleet.tower.receiver.commands import CommandHook
from mockfleet.tower.receiver.stats import Stats

#: Largest request head (request line and headers) accepted.
MAX_HEAD = 64 * 1024
#: Largest body accepted by default; a bulk message of 10,000 samples fits.
DEFAULT_MAX_BODY = 16 * 1024 * 1024

_MESSAGE_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})
_READ_METHODS = frozenset({b"GET", b"HEAD"})
_REASONS = {
    100: "Continue",
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    505: "HTTP Version Not Supported",
}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def raise_nofile_limit() -> tuple[int, int]:
    """Raise the open-files soft limit to the hard limit; return (soft, hard).

    Each keep-alive device holds a socket: the common default soft limit of
    1024 would refuse the 1,021st device.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass  # keep the soft limit: a container may forbid raising it
    return soft, hard


def build_response(
    status: int,
    body: bytes = b"",
    *,
    content_type: str = "application/json",
    close: bool = False,
    keep_alive_header: bool = False,
    extra: str = "",
) -> bytes:
    """Serialize a response; ``keep_alive_header`` is for HTTP/1.0 clients."""
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}"]
    if status != 204:
        lines.append(f"Content-Type: {content_type}")
        lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    elif keep_alive_header:
        lines.append("Connection: keep-alive")
    if extra:
        lines.append(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


class _BadRequest(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(slots=True)
class _Head:
    method: bytes
    target: bytes
    length: int
    keep_alive: bool
    http10: bool
    expect_continue: bool


def parse_head(head: bytes) -> _Head:
    """Parse a request line and headers (without the final blank line)."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[1]:
        raise _BadRequest(400, "malformed request line")
    method, target, version = parts
    if version == b"HTTP/1.1":
        http10 = False
    elif version == b"HTTP/1.0":
        http10 = True
    elif version.startswith(b"HTTP/"):
        raise _BadRequest(505, "unsupported HTTP version")
    else:
        raise _BadRequest(400, "malformed request line")
    keep_alive = not http10
    length: int | None = None
    expect_continue = False
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        # A name must be a bare token: whitespace before the colon or a folded
        # continuation line is a classic request-smuggling vector (RFC 9112).
        if not sep or not name or name != name.strip() or b" " in name:
            raise _BadRequest(400, "malformed header line")
        lname = name.lower()
        if lname == b"content-length":
            value = value.strip()
            if not value.isdigit():
                raise _BadRequest(400, "invalid Content-Length")
            n = int(value)
            if length is not None and n != length:
                raise _BadRequest(400, "conflicting Content-Length headers")
            length = n
        elif lname == b"transfer-encoding":
            raise _BadRequest(411, "chunked bodies are not supported: send a Content-Length")
        elif lname == b"connection":
            tokens = value.lower()
            if b"close" in tokens:
                keep_alive = False
            elif b"keep-alive" in tokens:
                keep_alive = True
        elif lname == b"expect":
            expect_continue = value.strip().lower() == b"100-continue"
    return _Head(method, target, length or 0, keep_alive, http10, expect_continue)


@dataclass(slots=True)
class HttpCounters:
    """What the server itself saw (messages are counted by ``Stats``)."""

    connections_open: int = 0
    connections_total: int = 0
    requests: int = 0
    bad_requests: int = 0
    commands_sent: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "connections_open": self.connections_open,
            "connections_total": self.connections_total,
            "requests": self.requests,
            "bad_requests": self.bad_requests,
            "commands_sent": self.commands_sent,
        }


#: One receive buffer per server, lent to whichever connection is being read:
#: the loop handles one read at a time and consumes it before the next.
RECV_BUFFER = 64 * 1024


class _Connection(asyncio.BufferedProtocol):
    """One client connection: buffer bytes, answer each complete request in order.

    A buffered protocol: asyncio reads into the server's one buffer
    (``recv_into``). A plain protocol gets a new bytes object per read, which
    asyncio allocates at 256 KiB and then shrinks: three memory-mapping system
    calls per request, thousands of times a second under a fleet's load.
    """

    __slots__ = ("_buf", "_head", "_server", "_transport")

    def __init__(self, server: HttpReceiver) -> None:
        self._server = server
        self._buf = bytearray()
        self._head: _Head | None = None
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._server._opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server._closed(self)
        self._transport = None

    def pause_writing(self) -> None:
        # The client is not reading its responses: stop reading its requests.
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._server._rx_view

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self._server._rx_view[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        server = self._server
        buf = self._buf
        buf += data
        out: list[bytes] = []
        pos = 0
        close = False
        # Every message in one read arrived at the same moment: one clock call.
        now = time.time()
        while True:
            head = self._head
            if head is None:
                while buf.startswith(b"\r\n", pos):  # tolerated before a request line
                    pos += 2
                end = buf.find(b"\r\n\r\n", pos)
                if end < 0:
                    if len(buf) - pos > MAX_HEAD:
                        out.append(server._error(431, "request head too large"))
                        close = True
                    break
                if end - pos > MAX_HEAD:
                    out.append(server._error(431, "request head too large"))
                    close = True
                    break
                try:
                    head = parse_head(bytes(buf[pos:end]))
                except _BadRequest as exc:
                    out.append(server._error(exc.status, str(exc)))
                    close = True
                    break
                pos = end + 4
                if head.length > server.max_body:
                    out.append(server._error(413, f"body larger than {server.max_body} bytes"))
                    close = True
                    break
                self._head = head
                if head.expect_continue and len(buf) - pos < head.length:
                    out.append(_CONTINUE)
            if len(buf) - pos < head.length:
                break
            body = bytes(buf[pos : pos + head.length])
            pos += head.length
            self._head = None
            out.append(server._handle(head, body, now))
            if not head.keep_alive:
                close = True
                break
        if pos:
            del buf[:pos]
        if out:
            transport.write(b"".join(out) if len(out) > 1 else out[0])
        if close:
            buf.clear()
            transport.close()


class HttpReceiver:
    """The HTTP side of a receiver: ``await start()``, then ``await stop()``."""

    def __init__(
        self,
        stats: Stats,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        commands: CommandHook | None = None,
        command_field: str = "command",
        ack_status: int = 200,
        max_body: int = DEFAULT_MAX_BODY,
        report: Callable[[bool], dict[str, Any]] | None = None,
    ) -> None:
        if ack_status not in (200, 204):
            raise ValueError(f"ack_status must be 200 or 204, got {ack_status}")
        self.stats = stats
        self.host = host
        self.port = port
        self.commands = commands
        self.command_field = command_field
        self.max_body = max_body
        self.counters = HttpCounters()
        self._report = report or (lambda per_device: stats.snapshot(per_device=per_device))
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._rx_view = memoryview(bytearray(RECV_BUFFER))
        ack_body = b"{}" if ack_status == 200 else b""
        # Pre-built acknowledgements: the common path allocates nothing.
        self._acks = {
            (close, ka10): build_response(
                ack_status, ack_body, close=close, keep_alive_header=ka10 and not close
            )
            for close in (False, True)
            for ka10 in (False, True)
        }

    async def start(self) -> int:
        """Listen; return the bound port (useful with port 0)."""
        raise_nofile_limit()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), self.host, self.port, backlog=4096, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        """Stop listening and close every open connection."""
        if self._server is None:
            return
        self._server.close()
        for conn in list(self._connections):
            conn.close()
        await self._server.wait_closed()
        self._server = None

    # ------------------------------------------------------------- connection hooks

    def _opened(self, conn: _Connection) -> None:
        self._connections.add(conn)
        self.counters.connections_open += 1
        self.counters.connections_total += 1

    def _closed(self, conn: _Connection) -> None:
        if conn in self._connections:
            self._connections.discard(conn)
            self.counters.connections_open -= 1

    def _error(self, status: int, reason: str) -> bytes:
        self.counters.bad_requests += 1
        body = json.dumps({"error": reason}).encode()
        return build_response(status, body, close=True)

    def _handle(self, head: _Head, body: bytes, now: float) -> bytes:
        self.counters.requests += 1
        close = not head.keep_alive
        ka10 = head.http10 and head.keep_alive
        method = head.method
        if method in _MESSAGE_METHODS:
            device_id = self.stats.observe(body, now)
            if self.commands is not None and device_id is not None:
                command = self.commands(device_id)
                if command is not None:
                    self.counters.commands_sent += 1
                    payload = json.dumps({self.command_field: command}).encode()
                    return build_response(200, payload, close=close, keep_alive_header=ka10)
            return self._acks[(close, ka10)]
        path, _, query = head.target.partition(b"?")
        if method in _READ_METHODS:
            if path == b"/stats":
                per_device = b"per_device=1" in query or b"per_device=true" in query
                payload = json.dumps(self._report(per_device)).encode()
            elif path == b"/healthz":
                payload = b'{"ok":true}'
            else:
                payload = json.dumps({"error": "not found"}).encode()
                return build_response(404, payload, close=close, keep_alive_header=ka10)
            response = build_response(200, payload, close=close, keep_alive_header=ka10)
            if method == b"HEAD":
                return response[: len(response) - len(payload)]
            return response
        payload = json.dumps({"error": f"method {method.decode()} not allowed"}).encode()
        return build_response(
            405,
            payload,
            close=close,
            keep_alive_header=ka10,
            extra="Allow: GET, HEAD, POST, PUT, PATCH",
        )
