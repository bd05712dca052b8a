"""A real mosquitto for the MQTT sink tests, with three loopback listeners:
anonymous, user name + password, and TLS requiring a client certificate.
It can be stopped and started again on the same ports (reconnect tests)."""

from __future__ import annotations

import contextlib
import getpass
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from support.certs import TlsFiles

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class SinkBroker:
    """One mosquitto process; ``port`` anonymous, ``auth_port`` needs
    ``username``/``password``, ``tls_port`` needs a client certificate signed
    by the test CA."""

    host = "127.0.0.1"
    username = "device"
    password = "right-password"

    def __init__(self, workdir: Path, certs: TlsFiles) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.certs = certs
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = self.auth_port = self.tls_port = 0
        self.log = workdir / "mosquitto.log"
        self.passwd = workdir / "passwd"
        subprocess.run(
            [MOSQUITTO_PASSWD, "-c", "-b", str(self.passwd), self.username, self.password],
            check=True,
            capture_output=True,
        )

    def _write_conf(self) -> Path:
        c = self.certs
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            "per_listener_settings true\n"
            "persistence false\n"
            f"user {getpass.getuser()}\n"
            # debug: tests read PINGREQs and disconnects from the log
            "log_type all\n"
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            f"listener {self.auth_port} 127.0.0.1\n"
            "allow_anonymous false\n"
            f"password_file {self.passwd}\n"
            f"listener {self.tls_port} 127.0.0.1\n"
            "allow_anonymous true\n"
            f"cafile {c.ca}\ncertfile {c.server_cert}\nkeyfile {c.server_key}\n"
            "require_certificate true\n"
        )
        return conf

    def start(self, timeout: float = 10.0) -> None:
        """Start (again, on the same ports once chosen); wait until all listen."""
        fresh = self.port == 0
        for _attempt in range(3 if fresh else 1):
            if fresh:
                self.port, self.auth_port, self.tls_port = (_free_port() for _ in range(3))
            conf = self._write_conf()
            with self.log.open("ab") as out:
                self.proc = subprocess.Popen(
                    [MOSQUITTO, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT
                )
            deadline = time.monotonic() + timeout
            ports = (self.port, self.auth_port, self.tls_port)
            while self.proc.poll() is None and not all(_accepts(p) for p in ports):
                if time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError(f"mosquitto did not listen: {self.log.read_text()}")
                time.sleep(0.02)
            if self.proc.poll() is None:
                return
            self.proc = None  # a port was taken meanwhile: try others
        raise AssertionError(f"mosquitto would not start: {self.log.read_text()}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        """Terminate (kill if it lingers) and reap the broker."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def sink_broker(workdir: Path, certs: TlsFiles) -> Iterator[SinkBroker]:
    """A started broker, always stopped on exit."""
    broker = SinkBroker(workdir, certs)
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


class Subscriber:
    """A test-side paho client (threaded: tests may use threads) recording
    every message on ``topics``."""

    def __init__(self, broker: SinkBroker, *topics: str) -> None:
        import threading

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)

        def on_connect(c: mqtt.Client, u: object, f: object, rc: object, p: object) -> None:
            c.subscribe([(t, 2) for t in topics])

        def on_subscribe(c: mqtt.Client, u: object, mid: int, rcs: object, p: object) -> None:
            self._ready.set()

        def on_message(c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
            with self._lock:
                self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if not self._ready.wait(10):
            self.close()
            raise AssertionError("test subscriber was not subscribed within 10s")

    def received(self, topic: str | None = None) -> list[bytes]:
        with self._lock:
            return [p for t, p, _ in self.messages if topic is None or t == topic]

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
