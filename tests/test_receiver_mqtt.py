"""The receiver's MQTT subscriber against a real mosquitto on loopback."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from support.polling import wait_for
from support.receiver_broker import Broker, free_port, running_broker

from mockfleet.tower.receiver import MqttConfig, Receiver, ReceiverStartError


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with running_broker(tmp_path) as b:
        yield b


@pytest.fixture
def publisher(broker: Broker) -> Iterator[mqtt.Client]:
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id="test-publisher"
    )
    client.connect(broker.host, broker.port)
    client.loop_start()
    wait_for(client.is_connected)
    yield client
    client.disconnect()
    client.loop_stop()


def envelope(device: str, seq: int, **extra: Any) -> bytes:
    return json.dumps({"device_id": device, "seq": seq, "sent_at": time.time(), **extra}).encode()


def publish_all(client: mqtt.Client, items: list[tuple[str, bytes]], qos: int = 1) -> None:
    infos = [client.publish(topic, payload, qos=qos) for topic, payload in items]
    for info in infos:
        info.wait_for_publish(10)


def test_counts_messages_from_subscribed_topics(broker: Broker, publisher: mqtt.Client) -> None:
    rx = Receiver(http=None, mqtt=MqttConfig(broker.host, broker.port))
    rx.start()
    try:
        items = [("devices/a/telemetry", envelope("a", seq)) for seq in range(100)]
        items += [("devices/b/telemetry", envelope("b", seq)) for seq in (0, 1, 2, 5, 5, 4)]
        items += [("devices/c/telemetry", b"\x00binary")]
        items += [("other/a/telemetry", envelope("a", 1000))]  # not subscribed
        items += [("devices/z/telemetry", envelope("z", 0))]  # arrives after the one above
        publish_all(publisher, items)
        wait_for(lambda: rx.stats.snapshot()["received"] >= 108)
        snap = rx.report()
        assert snap["received"] == 108
        assert snap["devices"] == 3
        assert snap["per_device"]["a"]["lost"] == 0
        assert snap["per_device"]["b"]["lost"] == 1  # seq 3
        assert (snap["duplicates"], snap["reordered"], snap["malformed"]) == (1, 1, 1)
        assert snap["mqtt"]["messages"] == 108
        assert snap["mqtt"]["connects"] == 1
        assert snap["http"] is None
        assert snap["latency_ms"]["count"] == 107
    finally:
        rx.stop()


def test_several_topic_filters_and_qos0(broker: Broker, publisher: mqtt.Client) -> None:
    config = MqttConfig(broker.host, broker.port, topics=("fleet/#", "x/+/up"), qos=0)
    rx = Receiver(http=None, mqtt=config)
    rx.start()
    try:
        publish_all(
            publisher,
            [
                ("fleet/a/b/c", envelope("f", 0)),
                ("x/1/up", envelope("f", 1)),
                ("x/1/down", envelope("f", 2)),
            ],
            qos=0,
        )
        wait_for(lambda: rx.stats.snapshot()["received"] >= 2)
        # The unsubscribed x/1/down was published last on the same connection:
        # once x/1/up has arrived, anything of x/1/down would have too.
        publish_all(publisher, [("fleet/z", envelope("f", 3))], qos=0)
        wait_for(lambda: rx.stats.snapshot()["received"] >= 3)
        snap = rx.stats.snapshot()
        assert (snap["received"], snap["lost"]) == (3, 1)
    finally:
        rx.stop()


def test_http_and_mqtt_feed_one_report(broker: Broker, publisher: mqtt.Client) -> None:
    rx = Receiver(("127.0.0.1", 0), MqttConfig(broker.host, broker.port))
    bound = rx.start()
    try:
        assert bound.http is not None and bound.mqtt == (broker.host, broker.port)
        conn = http.client.HTTPConnection(*bound.http, timeout=10)
        for seq in (0, 2):
            conn.request("POST", "/t", envelope("mixed", seq))
            conn.getresponse().read()
        conn.close()
        publish_all(publisher, [("devices/mixed/telemetry", envelope("mixed", 1))])
        wait_for(lambda: rx.stats.snapshot()["received"] == 3)
        snap = rx.report()
        assert (snap["unique"], snap["lost"], snap["reordered"]) == (3, 0, 1)
        assert snap["http"]["requests"] == 2
        assert snap["mqtt"]["messages"] == 1
    finally:
        rx.stop()


def test_unreachable_broker_is_a_clear_start_error() -> None:
    port = free_port()
    rx = Receiver(http=("127.0.0.1", 0), mqtt=MqttConfig("127.0.0.1", port))
    with pytest.raises(ReceiverStartError, match=f"cannot connect to MQTT broker 127.0.0.1:{port}"):
        rx.start()
    rx.stop()


@pytest.mark.parametrize("topic", ["", "a/#/b", "a/b+/c"])
def test_invalid_topic_filters_are_refused(topic: str) -> None:
    with pytest.raises(ValueError, match="topic"):
        MqttConfig(topics=(topic,))
