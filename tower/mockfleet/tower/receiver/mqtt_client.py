"""The MQTT side of a receiver: subscribe to device topics and audit every message.

paho's own network thread delivers messages straight into ``Stats`` (which
holds a lock), so the receiver needs no asyncio integration for MQTT. paho
reconnects by itself after a lost connection and ``on_connect`` subscribes
again, so a broker restart costs the messages sent meanwhile, which the
report then shows as lost.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

from mockfleet.tower.receiver.stats import Stats

DEFAULT_TOPIC = "devices/+/telemetry"


class MqttReceiverError(Exception):
    """The receiver could not connect or subscribe; the message says why."""


@dataclass(frozen=True)
class MqttConfig:
    """Where and what to subscribe.

    ``qos`` is the subscription's maximum QoS: the broker delivers at
    min(publish QoS, this), so the default 1 keeps QoS 1 publishes at QoS 1
    (a lower value would add losses the devices did not cause).
    """

    host: str = "127.0.0.1"
    port: int = 1883
    topics: tuple[str, ...] = (DEFAULT_TOPIC,)
    qos: int = 1
    username: str | None = None
    password: str | None = None
    tls: bool = False
    tls_ca: str | None = None
    client_id: str = field(default_factory=lambda: f"mockfleet-receive-{uuid.uuid4().hex[:8]}")
    keepalive: int = 60

    def __post_init__(self) -> None:
        if not self.topics:
            raise ValueError("at least one MQTT topic filter is needed")
        for topic in self.topics:
            if (
                not topic
                or "#" in topic[:-1]
                or any("+" in level and level != "+" for level in topic.split("/"))
            ):
                raise ValueError(f"invalid MQTT topic filter {topic!r}")
        if self.qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, got {self.qos}")


@dataclass(slots=True)
class MqttCounters:
    messages: int = 0
    connects: int = 0
    disconnects: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "messages": self.messages,
            "connects": self.connects,
            "disconnects": self.disconnects,
        }


class MqttReceiver:
    """Subscribes to ``config.topics`` and feeds every message to ``stats``."""

    def __init__(self, stats: Stats, config: MqttConfig) -> None:
        self.stats = stats
        self.config = config
        self.counters = MqttCounters()
        self._ready = threading.Event()
        self._error: str | None = None
        client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=config.client_id,
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        if config.username is not None:
            client.username_pw_set(config.username, config.password)
        if config.tls or config.tls_ca:
            try:
                client.tls_set(ca_certs=config.tls_ca)
            except (OSError, ValueError) as exc:
                raise MqttReceiverError(f"cannot use TLS CA {config.tls_ca}: {exc}") from None
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect
        self._client = client

    @property
    def where(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    def start(self, timeout: float = 10.0) -> None:
        """Connect and subscribe; return once the broker acknowledged the subscription."""
        try:
            self._client.connect(self.config.host, self.config.port, self.config.keepalive)
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise MqttReceiverError(
                f"cannot connect to MQTT broker {self.where}: {reason}"
            ) from None
        self._client.loop_start()
        if not self._ready.wait(timeout):
            self.stop()
            raise MqttReceiverError(
                f"MQTT broker {self.where} did not acknowledge the subscription in {timeout:g}s"
            )
        if self._error is not None:
            self.stop()
            raise MqttReceiverError(self._error)

    def stop(self) -> None:
        """Disconnect and stop paho's thread."""
        self._client.disconnect()
        self._client.loop_stop()

    # ------------------------------------------------------------ paho callbacks

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            self._error = f"MQTT broker {self.where} refused the connection: {reason}"
            self._ready.set()
            client.disconnect()
            return
        self.counters.connects += 1
        client.subscribe([(topic, self.config.qos) for topic in self.config.topics])

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, properties: Any
    ) -> None:
        refused = [
            topic for topic, rc in zip(self.config.topics, reasons, strict=False) if rc.is_failure
        ]
        if refused:
            self._error = f"MQTT broker {self.where} refused subscriptions to {refused}"
        self._ready.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: Any) -> None:
        self.counters.messages += 1
        self.stats.observe(message.payload, time.time())

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self.counters.disconnects += 1
