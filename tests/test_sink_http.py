"""The HTTP sink against real loopback servers (plain, TLS, mutual TLS)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.certs import TlsFiles
from support.recording_http import (
    RecordingServer,
    Reply,
    free_port,
    running_server,
    server_tls_context,
)

from mockfleet.mock import lot
from mockfleet.mock.plainlot import to_plain
from mockfleet.mock.sinks.base import FatalSinkError, SendOutcome
from mockfleet.mock.sinks.factory import make_sink
from mockfleet.mock.sinks.http import HttpSink, commands_from_response, warm_up

NAMES = {"id": "dev-7", "index": 7, "lot": "thermo", "site": "north"}


def go_on(seconds: float) -> bool:
    """A wait that does not wait: retries in these tests are about counting."""
    return True


class RecordingWait:
    """Records the delays asked for; never stops."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> bool:
        self.delays.append(seconds)
        return True


def http_sink(url: str, **fields: Any) -> HttpSink:
    # the plain mirror, as devices get it (mockfleet.mock.plain)
    spec = to_plain(lot.HttpSink.model_validate({"type": "http", "url": url, **fields}))
    sink = make_sink(spec, NAMES)
    assert isinstance(sink, HttpSink)
    return sink


@pytest.fixture
def opened() -> Iterator[list[HttpSink]]:
    """Sinks appended here are closed after the test."""
    sinks: list[HttpSink] = []
    yield sinks
    for s in sinks:
        s.close(1)


def open_sink(opened: list[HttpSink], url: str, **fields: Any) -> HttpSink:
    sink = http_sink(url, **fields)
    sink.open(go_on)
    opened.append(sink)
    return sink


# --------------------------------------------------------------------------- requests


def test_send_arrives_with_method_headers_and_body(
    http_server: RecordingServer, opened: list[HttpSink], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MF_TEST_TOKEN", "s3cret")
    sink = open_sink(
        opened,
        http_server.url("/ingest/{site}/{id}?k=1"),
        method="PUT",
        headers={"X-Lot": "thermo"},
        auth={"type": "bearer", "tokenEnv": "MF_TEST_TOKEN"},
    )
    out = sink.send(b'{"t": 21.5}', go_on)
    assert out == SendOutcome(ok=True, retries=0, error=None, commands=[])
    (req,) = http_server.requests
    assert req.method == "PUT"
    assert req.path == "/ingest/north/dev-7?k=1"
    assert req.body == b'{"t": 21.5}'
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["X-Lot"] == "thermo"
    assert req.headers["Authorization"] == "Bearer s3cret"


def test_basic_auth_from_file_and_custom_content_type(
    http_server: RecordingServer, opened: list[HttpSink], tmp_path: Path
) -> None:
    secret = tmp_path / "password"
    secret.write_text("pa:ss\n")
    sink = open_sink(
        opened,
        http_server.url(),
        headers={"content-type": "text/plain"},
        auth={"type": "basic", "username": "dev", "passwordFile": str(secret)},
    )
    assert sink.send(b"a,b,c", go_on).ok
    (req,) = http_server.requests
    assert req.headers["Authorization"] == "Basic " + base64.b64encode(b"dev:pa:ss").decode()
    assert req.headers["content-type"] == "text/plain"
    assert req.method == "POST"


def test_header_auth_puts_the_token_in_the_named_header(
    http_server: RecordingServer, opened: list[HttpSink], tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("abc123\n")
    sink = open_sink(
        opened,
        http_server.url(),
        auth={"type": "header", "header": "X-Api-Key", "tokenFile": str(token)},
    )
    assert sink.send(b"{}", go_on).ok
    assert http_server.requests[0].headers["X-Api-Key"] == "abc123"
    assert "Authorization" not in http_server.requests[0].headers


def test_missing_token_variable_is_fatal_and_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MF_NO_SUCH_TOKEN", raising=False)
    sink = http_sink(
        "http://127.0.0.1:9/x", auth={"type": "bearer", "tokenEnv": "MF_NO_SUCH_TOKEN"}
    )
    with pytest.raises(FatalSinkError, match="MF_NO_SUCH_TOKEN"):
        sink.open(go_on)


def test_unreadable_password_file_is_fatal_and_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "password"
    sink = http_sink(
        "http://127.0.0.1:9/x",
        auth={"type": "basic", "username": "u", "passwordFile": str(missing)},
    )
    with pytest.raises(FatalSinkError, match=str(missing)):
        sink.open(go_on)


# --------------------------------------------------------------------------- connections


def test_keep_alive_reuses_one_connection(
    http_server: RecordingServer, opened: list[HttpSink]
) -> None:
    sink = open_sink(opened, http_server.url())
    for i in range(20):
        assert sink.send(json.dumps({"i": i}).encode(), go_on).ok
    assert len(http_server.requests) == 20
    assert len({r.peer for r in http_server.requests}) == 1
    assert sink.connections_opened == 1


def test_without_keep_alive_each_send_uses_a_new_connection(
    http_server: RecordingServer, opened: list[HttpSink]
) -> None:
    sink = open_sink(opened, http_server.url(), keepAlive=False)
    for _ in range(3):
        assert sink.send(b"{}", go_on).ok
    assert [r.headers["Connection"] for r in http_server.requests] == ["close"] * 3
    assert len({r.peer for r in http_server.requests}) == 3
    assert sink.connections_opened == 3


def test_reconnects_transparently_when_the_server_dropped_the_idle_connection(
    http_server: RecordingServer, opened: list[HttpSink]
) -> None:
    http_server.script(Reply(close_after=True))
    sink = open_sink(opened, http_server.url())
    assert sink.send(b"1", go_on).ok
    out = sink.send(b"2", go_on)
    assert out.ok and out.retries == 0
    assert [r.body for r in http_server.requests] == [b"1", b"2"]
    assert len({r.peer for r in http_server.requests}) == 2


# --------------------------------------------------------------------------- retries


def test_retries_503_then_succeeds_with_capped_backoff(
    http_server: RecordingServer, opened: list[HttpSink]
) -> None:
    http_server.script(Reply(503), Reply(503), Reply(503), Reply(200))
    sink = open_sink(
        opened, http_server.url(), retries={"max": 5, "backoff": 0.1, "maxBackoff": 0.3}
    )
    wait = RecordingWait()
    out = sink.send(b"{}", wait)
    assert out.ok and out.retries == 3
    assert len(http_server.requests) == 4
    # base * 2**n capped at 0.3, each jittered into [50%, 100%]
    for n, delay in enumerate(wait.delays):
        cap = min(0.3, 0.1 * 2**n)
        assert cap / 2 <= delay <= cap


def test_429_is_retried_and_retry_after_respected_up_to_the_cap(
    http_server: RecordingServer, opened: list[HttpSink]
) -> None:
    http_server.script(Reply(429, headers={"Retry-After": "1"}))
    sink = open_sink(
        opened, http_server.url(), retries={"max": 2, "backoff": 0.01, "maxBackoff": 0.5}
    )
    wait = RecordingWait()
    out = sink.send(b"{}", wait)
    assert out.ok and out.retries == 1
    assert wait.delays == [0.5]


def test_gives_up_after_max_retries_with_a_failed_outcome(
    http_server: RecordingServer, opened: list[HttpSink]
) -> None:
    http_server.default = Reply(503)
    sink = open_sink(opened, http_server.url(), retries={"max": 2, "backoff": 0.01})
    out = sink.send(b"{}", go_on)
    assert not out.ok
    assert out.retries == 2
    assert out.error is not None and "503" in out.error
    assert len(http_server.requests) == 3


def test_other_4xx_fails_without_retry(
    http_server: RecordingServer, opened: list[HttpSink]
) -> None:
    http_server.default = Reply(422, body=b"bad field")
    sink = open_sink(opened, http_server.url())
    out = sink.send(b"{}", go_on)
    assert not out.ok and out.retries == 0
    assert out.error is not None and "422" in out.error
    assert len(http_server.requests) == 1


@pytest.mark.parametrize("status", [401, 403])
def test_rejected_credentials_are_fatal(
    status: int, http_server: RecordingServer, opened: list[HttpSink]
) -> None:
    http_server.default = Reply(status)
    sink = open_sink(opened, http_server.url())
    with pytest.raises(FatalSinkError, match=f"HTTP {status}.*credentials"):
        sink.send(b"{}", go_on)
    assert len(http_server.requests) == 1


def test_connection_refused_is_retried_then_failed(opened: list[HttpSink]) -> None:
    sink = open_sink(
        opened, f"http://127.0.0.1:{free_port()}/x", retries={"max": 2, "backoff": 0.01}
    )
    wait = RecordingWait()
    out = sink.send(b"{}", wait)
    assert not out.ok and out.retries == 2 and len(wait.delays) == 2
    assert out.error is not None and "ConnectionRefused" in out.error


def test_a_server_that_never_answers_times_out(opened: list[HttpSink]) -> None:
    # A listening socket that is never accepted: connects succeed, nothing replies.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        sink = open_sink(
            opened, f"http://127.0.0.1:{port}/x", timeout=0.3, retries={"max": 1, "backoff": 0.01}
        )
        started = time.monotonic()
        out = sink.send(b"{}", go_on)
        elapsed = time.monotonic() - started
    assert not out.ok and out.retries == 1
    assert out.error is not None and "timed out" in out.error
    assert elapsed < 5


def test_plain_http_leaves_its_timeouts_to_the_kernel(
    http_server: RecordingServer, opened: list[HttpSink]
) -> None:
    """A blocking socket with SO_SNDTIMEO/SO_RCVTIMEO: CPython then makes no
    poll() before each send and receive (two system calls a message saved)."""
    sink = open_sink(opened, http_server.url("/k"), timeout=2.5)
    assert sink.send(b"{}", go_on).ok
    sock = sink._sock
    assert sock is not None and sock.gettimeout() is None
    for opt in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO):
        sec, usec = struct.unpack("ll", sock.getsockopt(socket.SOL_SOCKET, opt, 16))
        assert (sec, usec) == (2, 500_000)


def test_a_stop_during_backoff_returns_promptly(
    http_server: RecordingServer, opened: list[HttpSink]
) -> None:
    http_server.default = Reply(503)
    sink = open_sink(
        opened, http_server.url(), retries={"max": 10, "backoff": 30, "maxBackoff": 60}
    )
    stop = threading.Event()

    def wait(seconds: float) -> bool:
        return not stop.wait(seconds)

    timer = threading.Timer(0.2, stop.set)
    timer.start()
    started = time.monotonic()
    try:
        out = sink.send(b"{}", wait)
    finally:
        timer.cancel()
    assert time.monotonic() - started < 5
    assert not out.ok and out.retries == 0
    assert out.error is not None and "stopped" in out.error
    assert len(http_server.requests) == 1


# --------------------------------------------------------------------------- commands


def test_command_in_a_json_response_is_returned(
    http_server: RecordingServer, opened: list[HttpSink]
) -> None:
    http_server.script(
        Reply(200, b'{"cmd": "reboot", "other": 1}', {"Content-Type": "application/json"}),
        Reply(200, b"  firmware-update\n", {"Content-Type": "text/plain; charset=utf-8"}),
        Reply(200, b'{"command": "ignored-field-name"}', {"Content-Type": "application/json"}),
    )
    sink = open_sink(opened, http_server.url(), commandField="cmd")
    assert sink.send(b"{}", go_on).commands == ["reboot"]
    assert sink.send(b"{}", go_on).commands == ["firmware-update"]
    assert sink.send(b"{}", go_on).commands == []


@pytest.mark.parametrize(
    ("ctype", "body", "expected"),
    [
        ("application/json", b'{"command": "stop"}', ["stop"]),
        ("application/vnd.x+json", b'{"command": "stop"}', ["stop"]),
        ("application/json", b'{"command": 3}', []),
        ("application/json", b'["stop"]', []),
        ("application/json", b"not json", []),
        ("text/plain", b"   \n", []),
        ("text/html", b"stop", []),
        ("", b"stop", []),
    ],
)
def test_commands_from_response(ctype: str, body: bytes, expected: list[str]) -> None:
    assert commands_from_response(ctype, body, "command") == expected


# --------------------------------------------------------------------------- TLS


def test_https_with_the_test_ca_verifies(test_certs: TlsFiles, opened: list[HttpSink]) -> None:
    ctx = server_tls_context(test_certs.server_cert, test_certs.server_key)
    with running_server(ctx) as server:
        sink = open_sink(opened, server.url(), tls={"caFile": test_certs.ca})
        assert sink.send(b'{"a": 1}', go_on).ok
        assert sink.send(b'{"a": 2}', go_on).ok
        assert [r.body for r in server.requests] == [b'{"a": 1}', b'{"a": 2}']
        # localhost is in the certificate too
        local = open_sink(
            opened, f"https://localhost:{server.port}/x", tls={"caFile": test_certs.ca}
        )
        assert local.send(b"{}", go_on).ok


def test_https_with_the_wrong_ca_fails_without_retry(
    test_certs: TlsFiles, opened: list[HttpSink]
) -> None:
    ctx = server_tls_context(test_certs.server_cert, test_certs.server_key)
    with running_server(ctx) as server:
        sink = open_sink(opened, server.url(), tls={"caFile": test_certs.other_ca})
        out = sink.send(b"{}", go_on)
        assert not out.ok and out.retries == 0
        assert out.error is not None and "CERTIFICATE_VERIFY_FAILED" in out.error
        assert server.requests == []
        # verify: false accepts any certificate
        lax = open_sink(opened, server.url(), tls={"verify": False})
        assert lax.send(b"{}", go_on).ok


def test_mutual_tls_with_a_client_certificate(test_certs: TlsFiles, opened: list[HttpSink]) -> None:
    ctx = server_tls_context(test_certs.server_cert, test_certs.server_key, test_certs.ca)
    with running_server(ctx) as server:
        with_cert = open_sink(
            opened,
            server.url(),
            tls={
                "caFile": test_certs.ca,
                "certFile": test_certs.client_cert,
                "keyFile": test_certs.client_key,
            },
        )
        assert with_cert.send(b"{}", go_on).ok
        assert len(server.requests) == 1
        without = open_sink(opened, server.url(), tls={"caFile": test_certs.ca})
        out = without.send(b"{}", go_on)
        assert not out.ok
        assert len(server.requests) == 1


def test_a_missing_ca_file_is_fatal_and_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "ca.pem"
    sink = http_sink("https://127.0.0.1:9/x", tls={"caFile": str(missing)})
    with pytest.raises(FatalSinkError, match=rf"{missing}.*readable"):
        sink.open(go_on)


def test_a_garbage_key_file_is_fatal(test_certs: TlsFiles, tmp_path: Path) -> None:
    bad = tmp_path / "key.pem"
    bad.write_text("not a key\n")
    sink = http_sink(
        "https://127.0.0.1:9/x",
        tls={"caFile": test_certs.ca, "certFile": test_certs.client_cert, "keyFile": str(bad)},
    )
    with pytest.raises(FatalSinkError, match="keyFile"):
        sink.open(go_on)


# --------------------------------------------------------------------------- raw responses


class RawServer:
    """A loopback server answering each request with the next scripted raw
    bytes (then ``default``); a reply of None hangs up without answering.
    Records each request's head and which connection (1, 2, ...) carried it."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.replies: list[tuple[bytes | None, bool]] = []
        self.default: tuple[bytes | None, bool] = (b"HTTP/1.1 204 No Content\r\n\r\n", False)
        self.requests: list[tuple[int, bytes, bytes]] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def url(self, path: str = "/raw") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, *replies: bytes | None, close: bool = False) -> None:
        with self._lock:
            self.replies.extend((r, close) for r in replies)

    def _accept(self) -> None:
        number = 0
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            number += 1
            with self._lock:
                self._conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn, number), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        data = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in data:
                    try:
                        more = conn.recv(65536)
                    except OSError:
                        return
                    if not more:
                        return
                    data += more
                head, _, data = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(data) < length:
                    more = conn.recv(65536)
                    if not more:
                        return
                    data += more
                body, data = data[:length], data[length:]
                with self._lock:
                    self.requests.append((number, head, body))
                    reply, close = self.replies.pop(0) if self.replies else self.default
                if reply is None:
                    return
                try:
                    conn.sendall(reply)
                except OSError:
                    return
                if close:
                    return

    def close(self) -> None:
        # shutdown wakes the thread blocked in accept(); close alone does not
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        with self._lock:
            for c in self._conns:
                with contextlib.suppress(OSError):
                    c.shutdown(socket.SHUT_RDWR)
        self._accepter.join(5)
        for t in self._threads:
            t.join(5)


@pytest.fixture
def raw_server() -> Iterator[RawServer]:
    server = RawServer()
    yield server
    server.close()


def connections(server: RawServer) -> list[int]:
    return [number for number, _, _ in server.requests]


def test_chunked_response_with_a_command(raw_server: RawServer, opened: list[HttpSink]) -> None:
    raw_server.script(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        b'\r\n5;x=y\r\n{"com\r\n10\r\nmand": "reboot"}\r\n0\r\nX-T: 1\r\n\r\n'
    )
    sink = open_sink(opened, raw_server.url())
    assert sink.send(b"{}", go_on).commands == ["reboot"]
    assert sink.send(b"{}", go_on).ok
    assert connections(raw_server) == [1, 1]  # the chunked body was read to its end


def test_connection_close_and_http_1_0_responses_open_a_new_connection(
    raw_server: RawServer, opened: list[HttpSink]
) -> None:
    raw_server.script(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}",
    )
    raw_server.script(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n")
    raw_server.script(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil-close", close=True)
    sink = open_sink(opened, raw_server.url())
    outs = [sink.send(b"x", go_on) for _ in range(5)]
    assert all(o.ok and o.retries == 0 for o in outs)
    assert outs[3].commands == ["until-close"]
    # close, 1.0 without keep-alive, 1.0 with keep-alive (kept), close-delimited
    assert connections(raw_server) == [1, 2, 3, 3, 4]
    assert sink.connections_opened == 4


def test_interim_100_continue_is_skipped(raw_server: RawServer, opened: list[HttpSink]) -> None:
    raw_server.script(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Busy\r\nRetry-After: 0\r\n"
        b"Content-Length: 0\r\n\r\n",
    )
    raw_server.default = (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", False)
    sink = open_sink(opened, raw_server.url(), retries={"max": 3, "backoff": 0.01})
    out = sink.send(b"x", go_on)
    assert out.ok and out.retries == 1


def test_a_large_body_is_capped_and_the_connection_stays_usable(
    raw_server: RawServer, opened: list[HttpSink]
) -> None:
    big = b'{"command": "go", "pad": "' + b"x" * 300_000 + b'"}'
    raw_server.script(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (len(big), big)
    )
    sink = open_sink(opened, raw_server.url())
    out = sink.send(b"x", go_on)
    assert out.ok and out.commands == []  # only the first 64 KiB is kept: not JSON
    assert sink.send(b"x", go_on).ok
    assert connections(raw_server) == [1, 1]


def test_a_body_beyond_the_drain_limit_closes_the_connection(
    raw_server: RawServer, opened: list[HttpSink]
) -> None:
    raw_server.script(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 50000000\r\n\r\n"
        + b"y" * 2_000_000
    )
    sink = open_sink(opened, raw_server.url())
    out = sink.send(b"x", go_on)
    assert out.ok and out.commands == ["y" * 64 * 1024]
    assert sink.send(b"x", go_on).ok
    assert connections(raw_server) == [1, 2]


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        (b"SSH-2.0-OpenSSH\r\n\r\n", "ProtocolError: not an HTTP/1.x status line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", "ProtocolError: connection closed"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1", "ProtocolError: connection closed"),
        (b"HTTP/1.1 200 OK\r\n" + b"X-Big: y\r\n" * 1000, "ProtocolError: response head longer"),
        (None, "RemoteDisconnected"),
    ],
)
def test_broken_responses_are_retried_then_reported(
    raw_server: RawServer, opened: list[HttpSink], reply: bytes | None, problem: str
) -> None:
    raw_server.script(reply, close=True)
    raw_server.default = (reply, True)
    sink = open_sink(opened, raw_server.url(), retries={"max": 1, "backoff": 0.01})
    out = sink.send(b"x", go_on)
    assert not out.ok and out.retries == 1
    assert out.error is not None and problem in out.error
    assert len(raw_server.requests) == 2


def test_a_request_is_sent_as_one_well_formed_message(
    raw_server: RawServer, opened: list[HttpSink]
) -> None:
    sink = open_sink(opened, raw_server.url("/a b/{id}?q=1"), headers={"X-One": "1"})
    assert sink.send(b'{"v": 1}', go_on).ok
    ((_, head, body),) = raw_server.requests
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /a%20b/dev-7?q=1 HTTP/1.1"
    assert f"Host: 127.0.0.1:{raw_server.port}".encode() in lines
    assert b"Content-Length: 8" in lines and b"X-One: 1" in lines
    assert body == b'{"v": 1}'


def test_a_header_that_cannot_be_sent_is_fatal_and_named() -> None:
    sink = http_sink("http://127.0.0.1:9/x", headers={"X-Evil": "a\r\nHost: other"})
    with pytest.raises(FatalSinkError, match=r"sink\.headers.*X-Evil"):
        sink.open(go_on)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://127.0.0.1:70000/x", "out of range"),
        ("http://[::1/x", "IPv6"),
        ("http:///x", "host"),
    ],
)
def test_a_bad_url_is_fatal_and_named(url: str, problem: str) -> None:
    with pytest.raises(FatalSinkError, match=rf"sink\.url.*{problem}"):
        http_sink(url)


def test_the_backoff_is_the_same_for_the_same_device(
    http_server: RecordingServer, opened: list[HttpSink]
) -> None:
    http_server.default = Reply(503)
    delays = []
    for _ in range(2):
        sink = open_sink(opened, http_server.url(), retries={"max": 3, "backoff": 1})
        wait = RecordingWait()
        sink.send(b"{}", wait)
        delays.append(wait.delays)
    assert delays[0] == delays[1] and len(delays[0]) == 3


def test_warm_up_runs_in_process_and_leaves_nothing_open() -> None:
    before = len(os.listdir("/proc/self/fd"))
    warm_up()
    assert len(os.listdir("/proc/self/fd")) == before
