"""The bytes of HTTP/1.1 for one client: request framing, response heads and
body decoders. Pure code, no sockets (the HTTP sink does the I/O).

Why not http.client: it parses every response head with email.feedparser
and builds several objects per request. A device forked from a preloaded
parent that runs that code touches (reference counts of) objects spread over
many shared pages, and each touched page is copied into the device. This
module is small and reads only the few headers the sink acts on.

Decoders work in place on the caller's buffer: ``feed(buf, start, end)``
consumes bytes from ``buf[start:end]`` and returns the position it stopped
at, which is ``end`` unless the body ended before it.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import NamedTuple, Protocol

#: the response headers the sink acts on (lower case); others are skipped
RESPONSE_HEADERS = frozenset(
    {"content-length", "transfer-encoding", "connection", "content-type", "retry-after"}
)
#: body bytes kept per response (a command fits easily); the rest is read and dropped
BODY_CAP = 64 * 1024
#: longest line accepted in a chunked body (size lines, trailers)
MAX_LINE = 8 * 1024

_TCHAR = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~")
_HEX = frozenset(string.hexdigits)
#: kept as they are in a request target: RFC 3986 reserved characters and '%'
#: (so existing escapes survive); spaces, controls and non-ASCII are escaped
_TARGET_SAFE = "/?#[]@!$&'()*+,;=:%~"
#: stripped from the start of a URL, as urlsplit does
_C0_OR_SPACE = "".join(map(chr, range(0x21)))
#: headers the sink frames itself
_FRAMING = frozenset({"content-length", "transfer-encoding"})


class ProtocolError(Exception):
    """The server sent bytes that are not an HTTP/1.x response we can read."""


class RemoteDisconnected(ConnectionResetError):
    """The server closed the connection without starting a response (typically
    an idle keep-alive connection it had dropped)."""


# --------------------------------------------------------------------------- URLs


class Url(NamedTuple):
    """What the sink needs from an http(s) URL."""

    https: bool
    #: lower case; an IPv6 literal without its brackets
    host: str
    port: int
    #: path and query, percent-encoded where needed (see :func:`request_target`)
    target: str
    #: the URL for messages: no user info, no query string (it may carry a key)
    where: str


def split_url(url: str) -> Url:
    """Split an ``http://`` or ``https://`` URL as urllib.parse.urlsplit does
    (tab, CR and LF removed; the fragment dropped; a missing or zero port
    means the scheme's default). Raises ValueError naming what is wrong.

    Done here rather than with urlsplit because every device parses its own
    URL after the fork, and urlsplit's first run touches many shared objects.
    """
    url = url.lstrip(_C0_OR_SPACE)
    for c in "\t\r\n":
        url = url.replace(c, "")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("http", "https"):
        raise ValueError("must start with http:// or https://")
    rest = rest.partition("#")[0]
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    netloc, rest = rest[:cut], rest[cut:]
    path, _, query = rest.partition("?")
    hostinfo = netloc.rpartition("@")[2]
    if "[" in hostinfo:
        before, _, bracketed = hostinfo.partition("[")
        host, close, after = bracketed.partition("]")
        if before or not close or (after and not after.startswith(":")):
            raise ValueError("invalid IPv6 address in brackets")
        port_text = after[1:]
    elif "]" in hostinfo:
        raise ValueError("invalid IPv6 address in brackets")
    else:
        host, _, port_text = hostinfo.partition(":")
    if not host:
        raise ValueError("has no host")
    https = scheme == "https"
    port = 0
    if port_text:
        if not (port_text.isascii() and port_text.isdigit()):
            raise ValueError(f"port {port_text!r} is not a number")
        port = int(port_text)
        if port > 65535:
            raise ValueError(f"port {port} is out of range 0-65535")
    return Url(
        https,
        host.lower(),
        port or (443 if https else 80),
        request_target(path, query),
        f"{scheme}://{netloc.rpartition('@')[2]}{path or '/'}",
    )


# --------------------------------------------------------------------------- requests


def host_header(host: str, port: int, https: bool) -> str:
    """The Host header value: IPv6 literals in brackets, the port only when it
    is not the scheme's default."""
    name = f"[{host}]" if ":" in host else host
    return name if port == (443 if https else 80) else f"{name}:{port}"


def request_target(path: str, query: str = "") -> str:
    """``path?query`` with spaces, control and non-ASCII characters
    percent-encoded (UTF-8); everything else is sent as written."""
    target = quote(path or "/")
    return f"{target}?{quote(query)}" if query else target


#: bytes sent as they are: urllib.parse's always-safe set plus _TARGET_SAFE
_UNQUOTED = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~"
    + _TARGET_SAFE.encode("ascii")
)


def quote(text: str) -> str:
    """``urllib.parse.quote(text, safe=_TARGET_SAFE)``, byte for byte (a test
    compares them). Not imported from there: urllib.parse imports ipaddress,
    together about 0.5 MiB that the zygote would hold and every mock inherit."""
    return "".join(chr(b) if b in _UNQUOTED else f"%{b:02X}" for b in text.encode("utf-8"))


def _check_header(name: str, value: str) -> None:
    if not name or not all(c in _TCHAR for c in name):
        raise ValueError(f"header name {name!r} is not a valid HTTP token")
    if any(c in "\r\n\0" for c in value):
        raise ValueError(f"header {name}: value must not contain CR, LF or NUL")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"header {name}: value must be Latin-1 text") from None
    if name.lower() in _FRAMING:
        raise ValueError(f"header {name} is set by the sink itself; remove it")


def request_head(method: str, target: str, host: str, headers: Mapping[str, str]) -> bytes:
    """Request line and header lines, without Content-Length and the blank line
    (:func:`frame_request` adds them per body).

    ``Host`` and ``Accept-Encoding: identity`` are sent unless ``headers`` sets
    them (as http.client did). Raises ValueError naming a header that cannot be
    sent (bad name, CR/LF in the value, not Latin-1, a framing header).
    """
    lines = [f"{method} {target} HTTP/1.1"]
    given = {k.lower() for k in headers}
    if "host" not in given:
        lines.append(f"Host: {host}")
    if "accept-encoding" not in given:
        lines.append("Accept-Encoding: identity")
    for name, value in headers.items():
        _check_header(name, value)
        lines.append(f"{name}: {value}")
    lines.append("")
    return "\r\n".join(lines).encode("latin-1")


def frame_request(head: bytes, body: bytes) -> bytes:
    """A complete request: ``head`` (from :func:`request_head`), Content-Length, body."""
    return b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body)


def build_request(
    method: str, target: str, host: str, headers: Mapping[str, str], body: bytes
) -> bytes:
    """The bytes of one request (see :func:`request_head`)."""
    return frame_request(request_head(method, target, host, headers), body)


# --------------------------------------------------------------------------- response head


class Head(NamedTuple):
    """A parsed response status line and the headers of :data:`RESPONSE_HEADERS`."""

    version: str
    status: int
    reason: str
    #: lower-case name -> value; repeated headers are joined with ", "
    headers: dict[str, str]
    #: bytes the head took, blank line included: the body starts here
    size: int


def parse_head(
    buf: bytes | bytearray, end: int | None = None, keep: frozenset[str] = RESPONSE_HEADERS
) -> Head | None:
    """Parse the response head at the start of ``buf[:end]``; None while it is
    incomplete. Raises ProtocolError for a malformed status line or header."""
    if end is None:
        end = len(buf)
    stop = buf.find(b"\r\n\r\n", 0, end)
    if stop >= 0:
        size = stop + 4
    else:
        # Bare LF line ends: tolerated, as http.client does.
        stop = buf.find(b"\n\n", 0, end)
        if stop < 0:
            return None
        size = stop + 2
    lines = bytes(buf[:stop]).decode("latin-1").split("\n")
    version, status, reason = _status_line(lines[0].rstrip("\r"))
    headers: dict[str, str] = {}
    last: str | None = None
    for raw in lines[1:]:
        line = raw.rstrip("\r")
        if line[:1] in (" ", "\t"):
            # Obsolete line folding: continues the previous header's value.
            if last is None:
                raise ProtocolError(f"header continuation line first: {line!r}")
            if last in headers:
                headers[last] = f"{headers[last]} {line.strip()}"
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise ProtocolError(f"malformed header line {line!r}")
        last = name.lower()
        if last in keep:
            value = value.strip()
            headers[last] = f"{headers[last]}, {value}" if last in headers else value
    return Head(version, status, reason, headers, size)


def _status_line(line: str) -> tuple[str, int, str]:
    version, _, rest = line.partition(" ")
    code, _, reason = rest.partition(" ")
    if (
        version not in ("HTTP/1.1", "HTTP/1.0")
        or len(code) != 3
        or not (code.isascii() and code.isdigit())
    ):
        raise ProtocolError(f"not an HTTP/1.x status line: {line[:80]!r}")
    return version, int(code), reason.strip()


def tokens(value: str | None) -> list[str]:
    """The lower-case comma-separated tokens of a header value."""
    return [t.strip().lower() for t in value.split(",")] if value else []


# --------------------------------------------------------------------------- bodies


class BodyDecoder(Protocol):
    """Collects one response body from bytes fed as they arrive."""

    #: the body's first bytes, at most the decoder's cap
    body: bytearray
    #: body bytes seen, kept or not
    total: int
    #: the body is complete
    done: bool

    def feed(self, buf: bytes | bytearray, start: int, end: int) -> int:
        """Consume from ``buf[start:end]``; return where it stopped."""
        ...

    def eof(self) -> None:
        """The connection closed: complete a close-delimited body, or raise
        ProtocolError for one cut short."""
        ...


class _Kept:
    __slots__ = ("_cap", "body", "done", "total")

    def __init__(self, cap: int = BODY_CAP) -> None:
        self.body = bytearray()
        self.total = 0
        self.done = False
        self._cap = cap

    def _keep(self, buf: bytes | bytearray, start: int, stop: int) -> None:
        room = self._cap - len(self.body)
        if room > 0:
            self.body += buf[start : min(stop, start + room)]
        self.total += stop - start


class LengthBody(_Kept):
    """A body of a known Content-Length."""

    __slots__ = ("_left",)

    def __init__(self, length: int, cap: int = BODY_CAP) -> None:
        super().__init__(cap)
        self._left = length
        self.done = length == 0

    def feed(self, buf: bytes | bytearray, start: int, end: int) -> int:
        stop = min(end, start + self._left)
        self._keep(buf, start, stop)
        self._left -= stop - start
        self.done = self._left == 0
        return stop

    def eof(self) -> None:
        if not self.done:
            raise ProtocolError(f"connection closed {self._left} bytes before the body's end")


class UntilCloseBody(_Kept):
    """A body delimited by the server closing the connection."""

    __slots__ = ()

    def feed(self, buf: bytes | bytearray, start: int, end: int) -> int:
        self._keep(buf, start, end)
        return end

    def eof(self) -> None:
        self.done = True


_SIZE, _DATA, _DATA_END, _TRAILER = range(4)


class ChunkedBody(_Kept):
    """A ``Transfer-Encoding: chunked`` body: chunk extensions and trailers are
    read and ignored."""

    __slots__ = ("_left", "_line", "_state")

    def __init__(self, cap: int = BODY_CAP) -> None:
        super().__init__(cap)
        self._state = _SIZE
        self._left = 0
        self._line = bytearray()

    def feed(self, buf: bytes | bytearray, start: int, end: int) -> int:
        pos = start
        while pos < end and not self.done:
            if self._state == _DATA:
                stop = min(end, pos + self._left)
                self._keep(buf, pos, stop)
                self._left -= stop - pos
                pos = stop
                if self._left == 0:
                    self._state = _DATA_END
                continue
            nl = buf.find(b"\n", pos, end)
            if nl < 0:
                self._line += buf[pos:end]
                if len(self._line) > MAX_LINE:
                    raise ProtocolError("chunked body: line too long")
                return end
            self._line += buf[pos:nl]
            pos = nl + 1
            line = bytes(self._line).rstrip(b"\r")
            self._line.clear()
            self._on_line(line)
        return pos

    def _on_line(self, line: bytes) -> None:
        if self._state == _SIZE:
            digits = line.split(b";", 1)[0].strip()
            if not digits or not all(chr(c) in _HEX for c in digits):
                raise ProtocolError(f"chunked body: bad chunk size line {line[:40]!r}")
            self._left = int(digits, 16)
            self._state = _DATA if self._left else _TRAILER
        elif self._state == _DATA_END:
            if line:
                raise ProtocolError("chunked body: chunk data longer than its size")
            self._state = _SIZE
        elif not line:  # _TRAILER: a blank line ends the body
            self.done = True

    def eof(self) -> None:
        if not self.done:
            raise ProtocolError("connection closed before the chunked body's end")


def body_decoder(head: Head, cap: int = BODY_CAP) -> BodyDecoder:
    """How the body after ``head`` is delimited (RFC 9112 section 6.3)."""
    if head.status < 200 or head.status in (204, 304):
        return LengthBody(0, cap)
    coding = tokens(head.headers.get("transfer-encoding"))
    if coding:
        # Chunked must come last; any other coding runs until the server closes.
        return ChunkedBody(cap) if coding[-1] == "chunked" else UntilCloseBody(cap)
    length = head.headers.get("content-length")
    if length is None:
        return UntilCloseBody(cap)
    # Repeated identical values ("5, 5") are allowed; differing ones are not.
    values = {v.strip() for v in length.split(",")}
    value = values.pop()
    if values or not (value.isascii() and value.isdigit()):
        raise ProtocolError(f"bad Content-Length {length!r}")
    return LengthBody(int(value), cap)


def keeps_alive(head: Head, decoder: BodyDecoder) -> bool:
    """Whether the connection may carry another request after this response."""
    if isinstance(decoder, UntilCloseBody):
        return False
    conn = tokens(head.headers.get("connection"))
    if "close" in conn:
        return False
    return head.version == "HTTP/1.1" or "keep-alive" in conn
