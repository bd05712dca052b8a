"""A tiny HTTP/1.0 server living in the tower's selector loop (no threads).

One request per connection, GET only, small requests; enough for health
checks, a status page and Prometheus scrapes.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
from collections.abc import Callable

Handler = Callable[[str, str], tuple[int, str, bytes]]
MAX_REQUEST = 16 * 1024
MAX_CONNECTIONS = 64
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class _Conn:
    __slots__ = ("inbuf", "outbuf", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbuf = bytearray()
        self.outbuf = b""


class HttpServer:
    def __init__(self, host: str, port: int, handler: Handler, sel: selectors.BaseSelector) -> None:
        self.handler = handler
        self.sel = sel
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(64)
        self.sock.setblocking(False)
        self.address = "{}:{}".format(*self.sock.getsockname()[:2])
        self.conns: dict[int, _Conn] = {}
        sel.register(self.sock, selectors.EVENT_READ, self._accept)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if len(self.conns) >= MAX_CONNECTIONS:
                oldest = next(iter(self.conns.values()))
                self._close(oldest)
            sock.setblocking(False)
            conn = _Conn(sock)
            self.conns[sock.fileno()] = conn
            self.sel.register(sock, selectors.EVENT_READ, lambda c=conn: self._read(c))

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not data:
            self._close(conn)
            return
        conn.inbuf += data
        if b"\r\n\r\n" not in conn.inbuf and b"\n\n" not in conn.inbuf:
            if len(conn.inbuf) > MAX_REQUEST:
                self._respond(conn, 400, "text/plain", b"request too large\n")
            return
        line = bytes(conn.inbuf).split(b"\n", 1)[0].decode("latin-1").strip()
        parts = line.split()
        if len(parts) < 2:
            self._respond(conn, 400, "text/plain", b"bad request\n")
            return
        method, target = parts[0], parts[1]
        try:
            status, ctype, body = self.handler(method, target.split("?", 1)[0])
        except Exception as exc:  # a page bug must not take the tower down
            status, ctype, body = 500, "text/plain", f"error: {exc}\n".encode()
        self._respond(conn, status, ctype, body if method != "HEAD" else b"")

    def _respond(self, conn: _Conn, status: int, ctype: str, body: bytes) -> None:
        head = (
            f"HTTP/1.0 {status} {_REASONS.get(status, 'Error')}\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        conn.outbuf = head + body
        self.sel.modify(conn.sock, selectors.EVENT_WRITE, lambda c=conn: self._write(c))
        self._write(conn)

    def _write(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.outbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        conn.outbuf = conn.outbuf[sent:]
        if not conn.outbuf:
            self._close(conn)

    def _close(self, conn: _Conn) -> None:
        fd = conn.sock.fileno()
        if fd >= 0:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(conn.sock)
            self.conns.pop(fd, None)
        conn.sock.close()

    def close(self) -> None:
        for conn in list(self.conns.values()):
            self._close(conn)
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(self.sock)
        self.sock.close()
