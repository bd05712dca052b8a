"""The receiver's HTTP server, with real clients on loopback."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from support.polling import wait_for

from mockfleet.tower.receiver import Receiver, ReceiverStartError


def body(device: str, seq: int, **extra: Any) -> bytes:
    return json.dumps({"device_id": device, "seq": seq, "sent_at": time.time(), **extra}).encode()


def raw_post(payload: bytes, path: str = "/telemetry", extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n{extra}\r\n"
    ).encode() + payload


def read_until_closed(sock: socket.socket, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def read_responses(sock: socket.socket, count: int, timeout: float = 10.0) -> list[bytes]:
    """Read ``count`` responses with Content-Length bodies off a raw socket."""
    sock.settimeout(timeout)
    buf = b""
    out: list[bytes] = []
    while len(out) < count:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            head = buf[:end].decode()
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            if len(buf) >= end + 4 + length:
                out.append(buf[: end + 4 + length])
                buf = buf[end + 4 + length :]
                continue
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed after {len(out)} responses")
        buf += chunk
    return out


def start_receiver(**kwargs: Any) -> Receiver:
    receiver = Receiver(("127.0.0.1", 0), **kwargs)
    receiver.start()
    return receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rx = start_receiver()
    yield rx
    rx.stop()


def connect(rx: Receiver) -> http.client.HTTPConnection:
    assert rx.bound is not None and rx.bound.http is not None
    return http.client.HTTPConnection(*rx.bound.http, timeout=10)


def raw_socket(rx: Receiver) -> socket.socket:
    assert rx.bound is not None and rx.bound.http is not None
    return socket.create_connection(rx.bound.http, timeout=10)


def test_many_posts_on_one_keep_alive_connection(receiver: Receiver) -> None:
    conn = connect(receiver)
    for seq in range(300):
        conn.request("POST", "/devices/d1/telemetry", body("d1", seq))
        response = conn.getresponse()
        assert response.status == 200
        assert response.read() == b"{}"
    conn.close()
    snap = receiver.report()
    assert (snap["received"], snap["unique"], snap["lost"], snap["malformed"]) == (300, 300, 0, 0)
    assert snap["http"]["connections_total"] == 1
    assert snap["http"]["requests"] == 300
    assert snap["latency_ms"]["count"] == 300
    assert snap["latency_ms"]["max"] < 10_000


def test_two_hundred_concurrent_keep_alive_connections(receiver: Receiver) -> None:
    clients, posts = 200, 10
    all_open = threading.Barrier(clients + 1, timeout=60)
    # Clients hold their connections until the count is read: a fast client
    # finishing its posts and closing would otherwise race the assertion.
    counted = threading.Event()

    def device(index: int) -> int:
        conn = connect(receiver)
        ok = 0
        for seq in range(posts):
            conn.request("POST", "/t", body(f"dev-{index}", seq))
            response = conn.getresponse()
            response.read()
            ok += response.status == 200
            if seq == 0:
                all_open.wait()  # every client holds its connection open at once
        counted.wait(60)  # ... until the open connections have been counted
        conn.close()
        return ok

    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(device, i) for i in range(clients)]
        all_open.wait()
        assert receiver.http is not None
        try:
            assert receiver.http.counters.connections_open == clients
        finally:
            counted.set()
        assert sum(f.result() for f in futures) == clients * posts
    snap = receiver.report()
    assert snap["devices"] == clients
    assert (snap["received"], snap["unique"], snap["lost"]) == (clients * posts,) * 2 + (0,)
    assert snap["http"]["connections_total"] == clients
    wait_for(lambda: receiver.report(per_device=False)["http"]["connections_open"] == 0)


def test_pipelined_requests_are_answered_in_order(receiver: Receiver) -> None:
    with raw_socket(receiver) as sock:
        burst = b"".join(raw_post(body("p", seq)) for seq in range(50))
        burst += b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        sock.sendall(burst)
        responses = read_responses(sock, 51)
    assert all(r.startswith(b"HTTP/1.1 200 OK\r\n") for r in responses)
    assert responses[-1].endswith(b'{"ok":true}')
    assert receiver.stats.snapshot()["unique"] == 50


def test_requests_split_into_tiny_writes(receiver: Receiver) -> None:
    with raw_socket(receiver) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        data = raw_post(body("slow", 0)) + raw_post(body("slow", 1))
        for i in range(0, len(data), 7):
            sock.sendall(data[i : i + 7])
        responses = read_responses(sock, 2)
    assert len(responses) == 2
    assert receiver.stats.snapshot()["unique"] == 2


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", b"400"),
        (b"POST /x HTTP/1.1 extra\r\n\r\n", b"400"),
        (b"POST /x HTTP/2.0\r\nContent-Length: 0\r\n\r\n", b"505"),
        (b"POST /x HTTP/1.1\r\nContent-Length: ten\r\n\r\n", b"400"),
        (b"POST /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", b"400"),
        (b"POST /x HTTP/1.1\r\nBad Header: 1\r\n\r\n", b"400"),
        (b"POST /x HTTP/1.1\r\nNoColon\r\n\r\n", b"400"),
        (b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", b"411"),
        (b"POST /x HTTP/1.1\r\nContent-Length: 999999999999\r\n\r\n", b"413"),
    ],
)
def test_bad_requests_get_an_error_and_a_closed_connection(
    receiver: Receiver, request_bytes: bytes, status: bytes
) -> None:
    with raw_socket(receiver) as sock:
        sock.sendall(raw_post(body("ok", 0)) + request_bytes + raw_post(body("ok", 1)))
        data = read_until_closed(sock)
    first, _, rest = data.partition(b"{}")
    assert first.startswith(b"HTTP/1.1 200")
    assert rest.startswith(b"HTTP/1.1 " + status)
    assert b"Connection: close" in rest
    assert b'"error"' in rest
    assert rest.count(b"HTTP/1.1") == 1  # nothing after the bad request was processed
    # The server survives and serves the next client.
    conn = connect(receiver)
    conn.request("POST", "/t", body("ok", 2))
    assert conn.getresponse().status == 200
    conn.close()
    snap = receiver.report()
    assert snap["unique"] == 2  # seq 1 came after the bad request: never read
    assert snap["http"]["bad_requests"] == 1


def test_oversized_head_is_refused(receiver: Receiver) -> None:
    with raw_socket(receiver) as sock:
        sock.sendall(b"POST /x HTTP/1.1\r\nX-Big: " + b"a" * 70_000)
        data = read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 431")


def test_stats_and_healthz_endpoints(receiver: Receiver) -> None:
    conn = connect(receiver)
    for seq in (0, 1, 3, 3):
        conn.request("POST", "/t", body("s", seq))
        conn.getresponse().read()
    conn.request("POST", "/t", b"nonsense")
    conn.getresponse().read()
    conn.request("GET", "/stats")
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type") == "application/json"
    snap = json.loads(response.read())
    assert (snap["received"], snap["lost"], snap["duplicates"], snap["malformed"]) == (5, 1, 1, 1)
    assert "per_device" not in snap
    assert snap["http"]["requests"] == 6
    conn.request("GET", "/stats?per_device=1")
    assert json.loads(conn.getresponse().read())["per_device"]["s"]["lost"] == 1
    conn.request("GET", "/healthz")
    assert json.loads(conn.getresponse().read()) == {"ok": True}
    conn.request("HEAD", "/healthz")
    response = conn.getresponse()
    assert (response.status, response.read()) == (200, b"")
    conn.request("GET", "/nope")
    response = conn.getresponse()
    response.read()
    assert response.status == 404
    conn.request("GET", "/healthz")  # the connection is still usable after a 404
    assert conn.getresponse().status == 200
    conn.close()
    assert receiver.report()["http"]["connections_total"] == 1


def test_other_methods_are_not_allowed_but_keep_the_connection(receiver: Receiver) -> None:
    conn = connect(receiver)
    conn.request("DELETE", "/t")
    response = conn.getresponse()
    response.read()
    assert response.status == 405
    assert "POST" in (response.getheader("Allow") or "")
    conn.request("PUT", "/t", body("m", 0))
    assert conn.getresponse().status == 200
    conn.close()
    assert receiver.report()["http"]["connections_total"] == 1


def test_http10_closes_unless_keep_alive_is_asked(receiver: Receiver) -> None:
    payload = body("old", 0)
    with raw_socket(receiver) as sock:
        sock.sendall(
            f"POST /t HTTP/1.0\r\nContent-Length: {len(payload)}\r\n\r\n".encode() + payload
        )
        data = read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 200") and b"Connection: close" in data
    payload = body("old", 1)
    with raw_socket(receiver) as sock:
        head = (
            f"POST /t HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: {len(payload)}\r\n\r\n"
        )
        sock.sendall(head.encode() + payload + head.encode() + payload)
        responses = read_responses(sock, 2)
    assert all(b"Connection: keep-alive" in r for r in responses)
    assert receiver.stats.snapshot()["duplicates"] == 1


def test_expect_continue_gets_an_interim_response(receiver: Receiver) -> None:
    payload = body("big", 0, pad="x" * 5000)
    with raw_socket(receiver) as sock:
        head = f"POST /t HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: {len(payload)}\r\n"
        sock.sendall(head.encode() + b"\r\n")
        sock.settimeout(10)
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(payload)
        assert read_responses(sock, 1)[0].startswith(b"HTTP/1.1 200")
    assert receiver.stats.snapshot()["bytes"] == len(payload)


def test_commands_travel_in_the_response() -> None:
    pending = {"d1": "reboot"}

    def commands(device_id: str) -> str | None:
        return pending.pop(device_id, None)

    rx = start_receiver(commands=commands, command_field="cmd")
    try:
        conn = connect(rx)
        replies: list[Any] = []
        for device in ("d1", "d2", "d1"):
            conn.request("POST", "/t", body(device, 0 if device == "d2" else len(replies)))
            replies.append(json.loads(conn.getresponse().read()))
        conn.request("POST", "/t", b"not json")  # no device: the hook is not asked
        replies.append(json.loads(conn.getresponse().read()))
        conn.close()
        assert replies == [{"cmd": "reboot"}, {}, {}, {}]
        assert rx.report()["http"]["commands_sent"] == 1
    finally:
        rx.stop()


def test_ack_204_has_no_body() -> None:
    rx = start_receiver(ack_status=204)
    try:
        conn = connect(rx)
        for seq in range(3):
            conn.request("POST", "/t", body("n", seq))
            response = conn.getresponse()
            assert (response.status, response.read()) == (204, b"")
        conn.close()
        assert rx.stats.snapshot()["unique"] == 3
    finally:
        rx.stop()


def test_busy_port_is_a_clear_start_error(receiver: Receiver) -> None:
    assert receiver.bound is not None and receiver.bound.http is not None
    port = receiver.bound.http[1]
    other = Receiver(("127.0.0.1", port))
    with pytest.raises(ReceiverStartError, match=f"cannot listen for HTTP on 127.0.0.1:{port}"):
        other.start()
    other.stop()


def test_stop_closes_open_connections_and_the_listener() -> None:
    rx = start_receiver()
    assert rx.http_url is not None and rx.http_url.startswith("http://127.0.0.1:")
    sock = raw_socket(rx)
    sock.sendall(raw_post(body("z", 0)))
    read_responses(sock, 1)
    rx.stop()
    assert read_until_closed(sock) == b""
    sock.close()
    assert rx.bound is not None and rx.bound.http is not None
    with pytest.raises(OSError):
        socket.create_connection(rx.bound.http, timeout=2).close()
    assert rx.report()["received"] == 1  # counters stay readable after stop
