"""A throwaway mosquitto on a free loopback port, for the receiver's MQTT tests."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from support.sink_broker import MOSQUITTO, _accepts
from support.sink_broker import _free_port as free_port


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    log: Path


@contextlib.contextmanager
def running_broker(workdir: Path, timeout: float = 10.0) -> Iterator[Broker]:
    """Start mosquitto, wait until its port accepts, kill it on exit.

    A free port can be taken between probing and binding, so a broker that
    exits at start is retried on another port.
    """
    for _attempt in range(3):
        port = free_port()
        conf = workdir / f"mosquitto-{port}.conf"
        log = workdir / f"mosquitto-{port}.log"
        conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 100000\n"
        )
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT
            )
        try:
            deadline = time.monotonic() + timeout
            while proc.poll() is None and not _accepts(port):
                if time.monotonic() > deadline:
                    raise AssertionError(f"mosquitto did not listen on {port}: {log.read_text()}")
                time.sleep(0.02)
            if proc.poll() is not None:
                continue  # port lost to someone else: try another
            yield Broker("127.0.0.1", port, log)
            return
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    raise AssertionError(f"mosquitto would not start; last log: {log.read_text()}")
