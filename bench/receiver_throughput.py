"""How many messages per second the receiver's HTTP server handles on loopback.

Starts ``mockfleet receive`` in its own process (as it runs for real), then N
client processes, each driving many keep-alive connections the way devices
do: one request in flight per connection, each connection a device with its
own increasing ``seq``. Bounded by a message count and a time limit. Prints
the client-side rate and the receiver's own verdict (lost must be 0).

    python bench/receiver_throughput.py --clients 2 --connections 100 --messages 100000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import re
import resource
import selectors
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass


def _request(device: str, seq: int) -> bytes:
    body = json.dumps(
        {"device_id": device, "seq": seq, "sent_at": time.time(), "temperature": 21.5}
    ).encode()
    head = (
        f"POST /devices/{device}/telemetry HTTP/1.1\r\nHost: bench\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class _Device:
    name: str
    seq: int = 0
    pending: bytes = b""


def _client(port: int, index: int, connections: int, messages: int, deadline: float) -> int:
    """One client process: ``connections`` devices, ``messages`` posts in total."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # many sockets per client
    sel = selectors.DefaultSelector()
    state: dict[socket.socket, _Device] = {}
    for c in range(connections):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setblocking(False)
        state[sock] = _Device(f"bench-{index}-{c}")
        sel.register(sock, selectors.EVENT_READ)
    sent = done = 0
    for sock, st in state.items():
        if sent < messages:
            sock.sendall(_request(st.name, 0))
            sent += 1
    while done < sent and time.time() < deadline:
        for key, _ in sel.select(timeout=1.0):
            ready = key.fileobj
            assert isinstance(ready, socket.socket)
            st = state[ready]
            data = st.pending + ready.recv(65536)
            # Responses are small and one per request in flight: parse one at a time.
            while True:
                end = data.find(b"\r\n\r\n")
                if end < 0:
                    break
                match = re.search(rb"Content-Length: (\d+)", data[:end])
                length = int(match.group(1)) if match else 0
                if len(data) < end + 4 + length:
                    break
                data = data[end + 4 + length :]
                done += 1
                if sent < messages and time.time() < deadline:
                    st.seq += 1
                    ready.sendall(_request(st.name, st.seq))
                    sent += 1
            st.pending = data
    for sock in state:
        sock.close()
    return done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--connections", type=int, default=100, help="connections per client")
    parser.add_argument("--messages", type=int, default=100_000, help="total messages")
    parser.add_argument("--seconds", type=float, default=30.0, help="time limit")
    args = parser.parse_args()

    server = subprocess.Popen(
        [sys.executable, "-m", "mockfleet.tower.receive_cli", "--http", "127.0.0.1:0", "--quiet"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        match = re.search(r"http://127\.0\.0\.1:(\d+)", server.stdout.readline())
        if not match:
            print("receiver did not start", file=sys.stderr)
            return 1
        port = int(match.group(1))
        per_client = args.messages // args.clients
        started = time.time()
        deadline = started + args.seconds
        with multiprocessing.get_context("spawn").Pool(args.clients) as pool:
            results = pool.starmap(
                _client,
                [(port, i, args.connections, per_client, deadline) for i in range(args.clients)],
            )
        elapsed = time.time() - started
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as response:
            stats = json.loads(response.read())
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    total = sum(results)
    lat = stats["latency_ms"]
    print(
        f"clients={args.clients} connections={args.clients * args.connections} "
        f"messages={total} seconds={elapsed:.2f} rate={total / elapsed:.0f}/s "
        f"server_received={stats['received']} lost={stats['lost']} "
        f"duplicates={stats['duplicates']} malformed={stats['malformed']} "
        f"p50={lat['p50']}ms p99={lat['p99']}ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
