"""The HTTP sink's wire format: request bytes, response heads, body decoders, URLs."""

from __future__ import annotations

from urllib.parse import quote as urllib_quote
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mockfleet.mock.sinks.http_wire import (
    _TARGET_SAFE,
    BodyDecoder,
    ChunkedBody,
    Head,
    LengthBody,
    ProtocolError,
    UntilCloseBody,
    body_decoder,
    build_request,
    host_header,
    keeps_alive,
    parse_head,
    quote,
    request_head,
    request_target,
    split_url,
)

# --------------------------------------------------------------------------- requests


def test_build_request_frames_head_headers_and_body() -> None:
    raw = build_request(
        "PUT", "/in/dev-1?k=1", "127.0.0.1:8080", {"X-A": "1", "Content-Type": "text/plain"}, b"hi"
    )
    assert raw == (
        b"PUT /in/dev-1?k=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept-Encoding: identity\r\n"
        b"X-A: 1\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
    )


def test_given_host_and_accept_encoding_replace_the_defaults() -> None:
    head = request_head("POST", "/", "h", {"host": "virtual", "Accept-Encoding": "gzip"})
    assert b"Host: h" not in head
    assert b"host: virtual\r\n" in head and b"Accept-Encoding: gzip\r\n" in head
    assert head.count(b"ccept-") == 1


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        ({"X-Bad": "a\r\nInjected: 1"}, "CR, LF or NUL"),
        ({"Bad Name": "x"}, "not a valid HTTP token"),
        ({"": "x"}, "not a valid HTTP token"),
        ({"X-Euro": "\u20ac"}, "Latin-1"),
        ({"content-length": "3"}, "set by the sink"),
        ({"Transfer-Encoding": "chunked"}, "set by the sink"),
    ],
)
def test_headers_that_cannot_be_sent_are_named(headers: dict[str, str], problem: str) -> None:
    name = next(iter(headers))
    with pytest.raises(ValueError, match=problem) as info:
        request_head("POST", "/", "h", headers)
    assert name in str(info.value) or not name


def test_host_header_omits_default_ports_and_brackets_ipv6() -> None:
    assert host_header("example.com", 80, False) == "example.com"
    assert host_header("example.com", 443, True) == "example.com"
    assert host_header("example.com", 443, False) == "example.com:443"
    assert host_header("::1", 8443, True) == "[::1]:8443"


def test_request_target_escapes_only_what_cannot_be_sent() -> None:
    assert request_target("") == "/"
    assert request_target("/a b/\u00e9", "q=1&r=%41") == "/a%20b/%C3%A9?q=1&r=%41"
    assert request_target("/x\n") == "/x%0A"


# --------------------------------------------------------------------------- URLs


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/ingest/dev-1?k=1",
        "https://Example.COM/x",
        "http://user:pw@host:81/p#frag",
        "http://[::1]:9000/v6",
        "http://[fe80::1]/",
        "https://host:/empty-port",
        "http://host?only=query",
        "http://host",
        "http://host:0/zero-port",
        "  http://host/lead\tspace",
    ],
)
def test_split_url_agrees_with_urlsplit(url: str) -> None:
    mine = split_url(url)
    ref = urlsplit(url)
    assert mine.https == (ref.scheme == "https")
    assert mine.host == ref.hostname
    assert mine.port == (ref.port or (443 if mine.https else 80))
    assert mine.target == (ref.path or "/") + (f"?{ref.query}" if ref.query else "")
    assert mine.where == f"{ref.scheme}://{ref.netloc.rpartition('@')[2]}{ref.path or '/'}"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://host:99999/x", "out of range"),
        ("http://host:8o/x", "not a number"),
        ("http:///x", "no host"),
        ("http://user@/x", "no host"),
        ("http://[::1/x", "IPv6"),
        ("http://::1]/x", "IPv6"),
        ("ftp://host/x", "http://"),
    ],
)
def test_split_url_names_the_problem(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        split_url(url)


@given(
    host=st.from_regex(r"[a-z0-9][a-z0-9.-]{0,20}", fullmatch=True),
    port=st.integers(0, 65535) | st.none(),
    path=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="?#"))
    .map(lambda p: "/" + p)
    .filter(lambda p: "\\" not in p),
    query=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="#")),
)
def test_split_url_matches_urlsplit_on_generated_urls(
    host: str, port: int | None, path: str, query: str
) -> None:
    url = f"http://{host}{'' if port is None else f':{port}'}{path}" + (
        f"?{query}" if query else ""
    )
    mine = split_url(url)
    ref = urlsplit(url)
    assert (mine.host, mine.port) == (ref.hostname, ref.port or 80)
    assert mine.target == request_target(ref.path, ref.query)


# --------------------------------------------------------------------------- response heads

RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"X-Ignored: yes\r\n"
    b"retry-after:  7 \r\n"
    b"Content-Length: 2\r\n"
    b"\r\n"
    b"{}"
)


def test_parse_head_reads_status_reason_and_the_wanted_headers() -> None:
    head = parse_head(RESPONSE)
    assert head == Head(
        "HTTP/1.1",
        503,
        "Service Unavailable",
        {"content-type": "application/json", "retry-after": "7", "content-length": "2"},
        len(RESPONSE) - 2,
    )


@given(st.data())
def test_parse_head_is_none_until_the_head_is_complete_at_every_split(data: st.DataObject) -> None:
    head = parse_head(RESPONSE)
    assert head is not None
    for end in range(len(RESPONSE) + 1):
        got = parse_head(bytearray(RESPONSE), end)
        assert got == (head if end >= head.size else None)
    # and the same with bare LF line ends
    lf = RESPONSE.replace(b"\r\n", b"\n")
    cut = data.draw(st.integers(0, len(lf)))
    got = parse_head(lf, cut)
    if cut < lf.index(b"\n\n") + 2:
        assert got is None
    else:
        assert got is not None and got.status == 503 and got.headers["content-length"] == "2"


def test_parse_head_joins_repeats_and_folded_lines() -> None:
    raw = (
        b"HTTP/1.0 200\r\nConnection: keep-alive\r\nconnection: x\r\n"
        b"Content-Type: text/plain;\r\n charset=utf-8\r\n\r\n"
    )
    head = parse_head(raw)
    assert head is not None
    assert (head.version, head.status, head.reason) == ("HTTP/1.0", 200, "")
    assert head.headers == {
        "connection": "keep-alive, x",
        "content-type": "text/plain; charset=utf-8",
    }


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/2 200 OK\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\n\r\n",
        b"HTTP/1.1 \xb2\xb2\xb2 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n continuation first\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nName : spaced\r\n\r\n",
    ],
)
def test_malformed_heads_are_protocol_errors(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_head(raw)


# --------------------------------------------------------------------------- bodies


def feed_all(decoder: BodyDecoder, wire: bytes, pieces: list[int]) -> int:
    """Feed ``wire`` cut at ``pieces``; return where the decoder stopped overall."""
    pos = 0
    for cut in [*sorted(pieces), len(wire)]:
        if cut < pos:
            continue
        stop = decoder.feed(wire, pos, cut)
        if decoder.done:
            return stop
        assert stop == cut
        pos = cut
    return len(wire)


def chunked(body: bytes, sizes: list[int], ext: bool, trailer: bool) -> bytes:
    out = []
    pos = 0
    for size in [*sizes, len(body)]:
        part = body[pos : pos + max(size, 1)]
        if not part:
            break
        out.append(b"%x%s\r\n%s\r\n" % (len(part), b";name=v" if ext else b"", part))
        pos += len(part)
    out.append(b"0\r\n" + (b"X-Trailer: 1\r\n" if trailer else b"") + b"\r\n")
    return b"".join(out)


@given(
    body=st.binary(max_size=300),
    sizes=st.lists(st.integers(1, 40), max_size=10),
    ext=st.booleans(),
    trailer=st.booleans(),
    extra=st.binary(max_size=5),
)
def test_chunked_body_decodes_at_every_split_point(
    body: bytes, sizes: list[int], ext: bool, trailer: bool, extra: bytes
) -> None:
    wire = chunked(body, sizes, ext, trailer)
    for cut in range(len(wire) + 1):
        dec = ChunkedBody()
        stop = feed_all(dec, wire + extra, [cut])
        assert dec.done
        assert bytes(dec.body) == body and dec.total == len(body)
        assert stop == len(wire)  # bytes after the body are left alone


@given(wire=st.binary(max_size=60), pieces=st.lists(st.integers(0, 60), max_size=6))
def test_chunked_body_never_misreads_garbage(wire: bytes, pieces: list[int]) -> None:
    dec = ChunkedBody()
    try:
        feed_all(dec, wire, pieces)
    except ProtocolError:
        return
    if not dec.done:
        with pytest.raises(ProtocolError):
            dec.eof()


def test_chunked_body_byte_by_byte_with_lf_only_lines() -> None:
    wire = b"3\n{}\n\n0\n\n"
    dec = ChunkedBody()
    for i in range(len(wire)):
        dec.feed(wire, i, i + 1)
    assert dec.done and bytes(dec.body) == b"{}\n"


@pytest.mark.parametrize(
    "wire",
    [b"zz\r\n", b"0x5\r\nhello\r\n", b"+5\r\nhello\r\n", b"2\r\nabc\r\n", b"\r\n"],
)
def test_bad_chunked_bodies_are_protocol_errors(wire: bytes) -> None:
    with pytest.raises(ProtocolError):
        ChunkedBody().feed(wire, 0, len(wire))


def test_a_chunk_size_line_without_end_is_refused() -> None:
    dec = ChunkedBody()
    with pytest.raises(ProtocolError, match="too long"):
        for _ in range(100):
            dec.feed(b"0" * 1000, 0, 1000)


def test_bodies_keep_at_most_the_cap_and_count_the_rest() -> None:
    data = bytes(range(256)) * 4
    length = LengthBody(len(data), cap=100)
    assert length.feed(data + b"extra", 0, len(data) + 5) == len(data)
    assert length.done and bytes(length.body) == data[:100] and length.total == len(data)
    chunks = ChunkedBody(cap=10)
    wire = chunked(data, [7, 300], False, False)
    assert chunks.feed(wire, 0, len(wire)) == len(wire)
    assert bytes(chunks.body) == data[:10] and chunks.total == len(data)


def test_length_and_close_delimited_bodies_at_eof() -> None:
    cut = LengthBody(5)
    cut.feed(b"abc", 0, 3)
    with pytest.raises(ProtocolError, match="2 bytes before"):
        cut.eof()
    rest = UntilCloseBody()
    rest.feed(b"abc", 1, 3)
    assert not rest.done
    rest.eof()
    assert rest.done and bytes(rest.body) == b"bc"
    assert LengthBody(0).done


def head(status: int = 200, version: str = "HTTP/1.1", **headers: str) -> Head:
    return Head(version, status, "", {k.replace("_", "-"): v for k, v in headers.items()}, 0)


@pytest.mark.parametrize(
    ("h", "kind", "alive"),
    [
        (head(content_length="5"), LengthBody, True),
        (head(content_length="5, 5"), LengthBody, True),
        (head(transfer_encoding="chunked", content_length="9"), ChunkedBody, True),
        (head(transfer_encoding="gzip, chunked"), ChunkedBody, True),
        (head(transfer_encoding="chunked, gzip"), UntilCloseBody, False),
        (head(), UntilCloseBody, False),
        (head(204), LengthBody, True),
        (head(304, content_length="10"), LengthBody, True),
        (head(content_length="0", connection="close"), LengthBody, False),
        (head(content_length="0", connection="Keep-Alive, Close"), LengthBody, False),
        (head(version="HTTP/1.0", content_length="0"), LengthBody, False),
        (head(version="HTTP/1.0", content_length="0", connection="keep-alive"), LengthBody, True),
    ],
)
def test_body_framing_and_keep_alive(h: Head, kind: type, alive: bool) -> None:
    dec = body_decoder(h)
    assert type(dec) is kind
    assert keeps_alive(h, dec) is alive
    if h.status in (204, 304):
        assert dec.done


@pytest.mark.parametrize("value", ["-1", "5, 6", "x", "\u00b2", ""])
def test_bad_content_length_is_a_protocol_error(value: str) -> None:
    with pytest.raises(ProtocolError, match="Content-Length"):
        body_decoder(head(content_length=value))


@given(st.text())
def test_quote_matches_urllib(text: str) -> None:
    try:
        expected = urllib_quote(text, safe=_TARGET_SAFE)
    except UnicodeEncodeError:  # lone surrogates: both refuse them
        with pytest.raises(UnicodeEncodeError):
            quote(text)
        return
    assert quote(text) == expected
