"""MQTT sink on paho-mqtt 2.x, driven by the device's own loop: no threads.

paho's ``loop_start`` would add a thread per device; with thousands of devices
per machine that is thousands of threads and stacks. Instead the device
selects on ``fileno()`` and calls ``on_readable``/``service``; while connecting
or waiting for an acknowledgement this module pumps paho itself.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import select
import ssl
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from mockfleet.mock.seeding import derive
from mockfleet.mock.sinks.backoff import backoff_delay
from mockfleet.mock.sinks.base import FatalSinkError, SendOutcome, Sink, SinkError, Wait
from mockfleet.mock.sinks.credentials import read_secret, username
from mockfleet.mock.sinks.render import render
from mockfleet.mock.sinks.tls import ssl_context

if TYPE_CHECKING:
    from mockfleet.mock import lot

#: CONNACK reasons that no retry can fix (v3.1.1 codes arrive mapped to these):
#: unsupported protocol, client id rejected, bad user name or password, not
#: authorized, banned, bad authentication method.
FATAL_CONNACK = frozenset({0x84, 0x85, 0x86, 0x87, 0x8A, 0x8C})
#: How long a v5 broker keeps a session of a device connecting with cleanStart
#: false (v3.1.1 brokers keep it until the client connects clean).
SESSION_EXPIRY = 3600
#: Reconnect backoff: first retry at once, then from this, doubling, capped.
RECONNECT_BASE = 0.5
RECONNECT_CAP = 30.0


def _live(client: mqtt.Client | None) -> Any:
    """The client's socket while it is open. (A socket this module closed
    itself, after a failed connect, stays referenced by paho until its next
    reconnect; it must not reach select().)"""
    sock = client.socket() if client is not None else None
    if sock is None or sock.fileno() < 0:
        return None
    return sock


def command_from_message(payload: bytes | bytearray, field: str) -> str | None:
    """A command from a message on the command topic: the string ``field`` of
    a JSON object, else the payload's text (stripped); None when empty."""
    text = payload.decode("utf-8", "replace")
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get(field), str) and doc[field]:
        return str(doc[field])
    text = text.strip()
    return text or None


class MqttSink(Sink):
    """Publishes each message to a per-device topic; receives commands on an
    optional command topic. ``fileno()`` changes after a reconnect (and is None
    while disconnected): read it again on every turn of the loop."""

    def __init__(self, spec: lot.MqttSink, names: Mapping[str, Any]) -> None:
        self.spec = spec
        self.client_id = render(spec.clientId, names, "clientId")
        self.topic = render(spec.topic, names, "topic")
        self.command_topic = (
            render(spec.commandTopic, names, "commandTopic") if spec.commandTopic else None
        )
        self.will_topic = render(spec.will.topic, names, "will.topic") if spec.will else None
        self.where = f"mqtt{'s' if spec.tls else ''}://{spec.host}:{spec.port}"
        self._keepalive = math.ceil(spec.keepalive)
        self._rng = random.Random(derive("mqtt-backoff", names.get("id")))
        self._client: mqtt.Client | None = None
        self._connected = False
        self._connack: ReasonCode | None = None
        self._sub_mid: int | None = None
        self._subscribed = False
        self._sub_refused = False
        self._commands: list[str] = []
        self._failures = 0
        #: connections made so far (for tests and metrics)
        self.connects = 0

    # ------------------------------------------------------------------ set-up

    def _make_client(self) -> mqtt.Client:
        spec = self.spec
        v5 = spec.protocol == "5"
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            # v5 carries clean start in CONNECT (below); paho refuses both.
            clean_session=None if v5 else spec.cleanStart,
        )
        client.connect_timeout = spec.connectTimeout
        user = username(spec.username, spec.usernameEnv, "sink.usernameEnv")
        password = read_secret("sink password", spec.passwordEnv, spec.passwordFile)
        if user is not None or password is not None:
            client.username_pw_set(user or "", password)
        if spec.tls is not None:
            client.tls_set_context(ssl_context(spec.tls, ssl.Purpose.SERVER_AUTH))
        if spec.will is not None and self.will_topic is not None:
            client.will_set(self.will_topic, spec.will.payload, spec.will.qos, spec.will.retain)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        if v5:
            props = None
            if not spec.cleanStart:
                props = Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = SESSION_EXPIRY
            client.connect_async(
                spec.host,
                spec.port,
                self._keepalive,
                clean_start=spec.cleanStart,
                properties=props,
            )
        else:
            # Stores where to connect without touching the network; every
            # (re)connect is then a reconnect().
            client.connect_async(spec.host, spec.port, self._keepalive)
        return client

    # ------------------------------------------------------------------ callbacks

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        self._connack = reason
        if reason.is_failure:
            return
        self._connected = True
        self.connects += 1
        if self.command_topic is not None:
            self._subscribed = self._sub_refused = False
            _, self._sub_mid = client.subscribe(self.command_topic, qos=1)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        self._connected = False

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode], props: Any
    ) -> None:
        if mid == self._sub_mid:
            self._sub_refused = any(r.is_failure for r in reasons)
            self._subscribed = not self._sub_refused

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if self.command_topic is None or not mqtt.topic_matches_sub(self.command_topic, msg.topic):
            return
        command = command_from_message(msg.payload, self.spec.commandField)
        if command is not None:
            self._commands.append(command)

    # ------------------------------------------------------------------ pumping

    def _step(self, timeout: float) -> None:
        """One select + read/write/keepalive round on the client's socket."""
        client = self._client
        sock = _live(client)
        if client is None or sock is None:
            return
        # Bytes already decrypted inside the TLS layer do not wake select().
        pending = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
        wlist = [sock] if client.want_write() else []
        readable, writable, _ = select.select([sock], wlist, [], 0 if pending else timeout)
        if readable or pending:
            client.loop_read()
        if writable and _live(client) is not None:
            client.loop_write()
        if _live(client) is not None:
            client.loop_misc()

    def _pump(self, done: Callable[[], bool], deadline: float) -> bool:
        """Drive the connection until ``done()`` or the deadline or the socket
        closes; return ``done()``."""
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._client is None or _live(self._client) is None:
                return done()
            self._step(min(remaining, 0.25))
        return True

    def _take_commands(self) -> list[str]:
        commands, self._commands = self._commands, []
        return commands

    # ------------------------------------------------------------------ lifecycle

    def open(self, wait: Wait) -> None:
        """Connect (and subscribe to the command topic) within connectTimeout.
        Rejected credentials are fatal; an unreachable broker is a SinkError."""
        if self._client is None:
            self._client = self._make_client()
        if not self._connected:
            self._connect()

    def _connect(self) -> None:
        client = self._client
        assert client is not None
        deadline = time.monotonic() + self.spec.connectTimeout
        self._connack = None
        try:
            rc = client.reconnect()
        except ssl.SSLError as exc:
            raise SinkError(
                f"{self.where}: TLS handshake failed: {exc}; check sink.tls (caFile, certFile)"
            ) from None
        except (OSError, ValueError) as exc:
            raise SinkError(f"{self.where}: cannot connect: {exc}") from None
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._drop_socket()
            raise SinkError(f"{self.where}: cannot connect: {mqtt.error_string(rc)}")
        self._pump(lambda: self._connack is not None, deadline)
        reason = self._connack
        if reason is None:
            self._drop_socket()
            raise SinkError(
                f"{self.where}: no answer to CONNECT within {self.spec.connectTimeout:g}s"
            )
        if reason.is_failure:
            self._drop_socket()
            if reason.value in FATAL_CONNACK:
                raise FatalSinkError(
                    f"{self.where}: broker refused the connection: {reason}; check the "
                    "user name and password (usernameEnv/passwordEnv/passwordFile), the "
                    "client certificate and the broker's ACL"
                )
            raise SinkError(f"{self.where}: broker refused the connection: {reason}")
        if self.command_topic is None:
            return
        self._pump(lambda: self._subscribed or self._sub_refused, deadline)
        if self._sub_refused:
            self.close(1)
            raise FatalSinkError(
                f"{self.where}: the broker refused the subscription to {self.command_topic}; "
                "allow it in the broker's ACL or change sink.commandTopic"
            )
        if not self._subscribed:
            self._drop_socket()
            self._connected = False
            raise SinkError(
                f"{self.where}: subscription to {self.command_topic} was not acknowledged "
                "(is the topic allowed by the broker's ACL?)"
            )

    def _reconnect(self, wait: Wait) -> str | None:
        """One reconnect attempt after a backoff that grows with each failure;
        an error text when it failed."""
        if self._failures:
            delay = backoff_delay(self._failures - 1, RECONNECT_BASE, RECONNECT_CAP, self._rng)
            if not wait(delay):
                return f"{self.where}: not connected (stopped while waiting to reconnect)"
        try:
            self._connect()
        except FatalSinkError:
            raise
        except SinkError as exc:
            self._failures += 1
            return str(exc)
        self._failures = 0
        return None

    def close(self, timeout: float) -> None:
        """Send DISCONNECT (so the broker drops the will) and close, within timeout."""
        client = self._client
        if client is None:
            return
        if self._connected and _live(client) is not None:
            with contextlib.suppress(OSError):
                client.disconnect()
                # paho closes the socket once DISCONNECT is fully written.
                self._pump(lambda: _live(client) is None, time.monotonic() + timeout)
        self._drop_socket()
        self._connected = False
        self._client = None

    def _drop_socket(self) -> None:
        client = self._client
        sock = _live(client)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    # ------------------------------------------------------------------ running

    def send(self, body: bytes, wait: Wait) -> SendOutcome:
        client = self._client
        if client is None:
            return SendOutcome(ok=False, error=f"{self.where}: sink is not open")
        if self._connected:
            # Notice a connection the broker closed meanwhile before publishing into it.
            self._step(0)
        retries = 0
        if not self._connected:
            error = self._reconnect(wait)
            if error is not None:
                return SendOutcome(ok=False, error=error, commands=self._take_commands())
            retries = 1
        qos = self.spec.qos
        info = client.publish(self.topic, body, qos, self.spec.retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
                self._connected = False
            return SendOutcome(
                ok=False,
                retries=retries,
                error=f"{self.where}: publish failed: {mqtt.error_string(info.rc)}",
                commands=self._take_commands(),
            )
        deadline = time.monotonic() + self.spec.connectTimeout
        if qos == 0:
            # Fire and forget, but do hand the bytes to the kernel.
            self._pump(lambda: not client.want_write(), deadline)
            return SendOutcome(ok=True, retries=retries, commands=self._take_commands())
        if not self._pump(info.is_published, deadline) and not self._connected:
            # Lost while waiting for the acknowledgement: paho re-sends unacknowledged
            # messages after a reconnect, so reconnect once and keep waiting.
            error = self._reconnect(wait)
            retries += 1
            if error is None:
                self._pump(info.is_published, time.monotonic() + self.spec.connectTimeout)
        if info.is_published():
            return SendOutcome(ok=True, retries=retries, commands=self._take_commands())
        return SendOutcome(
            ok=False,
            retries=retries,
            error=f"{self.where}: no acknowledgement for QoS {qos} publish within "
            f"{self.spec.connectTimeout:g}s",
            commands=self._take_commands(),
        )

    def fileno(self) -> int | None:
        sock = _live(self._client)
        return sock.fileno() if sock is not None else None

    def on_readable(self) -> list[str]:
        """Read what has arrived (up to a bound, so a flood cannot starve the
        device's loop); returns the commands among it."""
        client = self._client
        for _ in range(64):
            if client is None or client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
            sock = _live(client)
            if sock is None:
                break
            # Records already decrypted by the TLS layer do not wake select().
            pending = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
            if not pending and not select.select([sock], [], [], 0)[0]:
                break
        if client is not None and _live(client) is not None and client.want_write():
            client.loop_write()  # acknowledgements of QoS 1/2 commands
        return self._take_commands()

    def service(self) -> list[str]:
        client = self._client
        if client is not None and _live(client) is not None:
            client.loop_misc()  # keepalive: PINGREQ when due, drop a dead link
            if _live(client) is not None and client.want_write():
                client.loop_write()
        return self._take_commands()

    def next_service_in(self) -> float | None:
        client = self._client
        if client is None or _live(client) is None:
            return None
        if client.want_write():
            return 0.0
        if self._keepalive <= 0:
            return None
        # paho pings once keepalive has passed since the last packet out; a
        # fifth of it keeps the ping within 1.2x keepalive (brokers allow 1.5x).
        return max(0.05, self._keepalive / 5)
