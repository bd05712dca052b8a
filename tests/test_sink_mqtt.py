"""The MQTT sink against a real mosquitto on loopback."""

from __future__ import annotations

import json
import os
import queue
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from support.certs import TlsFiles
from support.polling import wait_for
from support.recording_http import free_port
from support.sink_broker import SinkBroker, Subscriber

from mockfleet.mock import lot
from mockfleet.mock.plainlot import to_plain
from mockfleet.mock.sinks.base import FatalSinkError, SinkError
from mockfleet.mock.sinks.factory import make_sink
from mockfleet.mock.sinks.mqtt import MqttSink, command_from_message

_counter = iter(range(1_000_000))


def names() -> dict[str, Any]:
    """Unique device names per test: the session broker is shared."""
    n = next(_counter)
    return {"id": f"dev-{os.getpid()}-{n}", "index": n, "lot": "mqtt-tests"}


def go_on(seconds: float) -> bool:
    return True


class RecordingWait:
    def __init__(self, answer: bool = True) -> None:
        self.delays: list[float] = []
        self.answer = answer

    def __call__(self, seconds: float) -> bool:
        self.delays.append(seconds)
        return self.answer


def mqtt_spec(broker: SinkBroker, **fields: Any) -> lot.MqttSink:
    """A validated spec in its plain mirror, as devices get it (mockfleet.mock.plain)."""
    data = {"type": "mqtt", "host": broker.host, "port": broker.port, **fields}
    mirror: lot.MqttSink = to_plain(lot.MqttSink.model_validate(data))
    return mirror


@pytest.fixture
def sinks() -> Iterator[list[MqttSink]]:
    """Sinks appended here are closed after the test."""
    made: list[MqttSink] = []
    yield made
    for s in made:
        s.close(2)


@pytest.fixture
def subscribers() -> Iterator[list[Subscriber]]:
    made: list[Subscriber] = []
    yield made
    for s in made:
        s.close()


def new_sink(made: list[MqttSink], spec: lot.MqttSink, device: dict[str, Any]) -> MqttSink:
    sink = make_sink(spec, device)
    assert isinstance(sink, MqttSink)
    made.append(sink)
    return sink


def collect_commands(sink: MqttSink, want: int, timeout: float = 10) -> list[str]:
    """Run the device side of the loop: select on the sink's socket."""
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        fd = sink.fileno()
        assert fd is not None, "connection lost"
        ready, _, _ = select.select([fd], [], [], min(0.2, sink.next_service_in() or 0.2))
        if ready:
            got.extend(sink.on_readable())
        got.extend(sink.service())
    return got


# --------------------------------------------------------------------------- publishing


def test_qos1_messages_arrive_on_the_device_topic(
    mqtt_broker: SinkBroker, sinks: list[MqttSink], subscribers: list[Subscriber]
) -> None:
    device = names()
    topic = f"fleet/mqtt-tests/{device['id']}/up"
    sub = Subscriber(mqtt_broker, "fleet/#")
    subscribers.append(sub)
    sink = new_sink(sinks, mqtt_spec(mqtt_broker, topic="fleet/{lot}/{id}/up", qos=1), device)
    sink.open(go_on)
    for i in range(5):
        out = sink.send(json.dumps({"i": i}).encode(), go_on)
        assert out.ok, out.error
        assert out.retries == 0
    wait_for(lambda: len(sub.received(topic)) == 5)
    assert [json.loads(p)["i"] for p in sub.received(topic)] == list(range(5))
    assert sink.topic == topic and sink.client_id == device["id"]


def test_mqtt5_qos2_retained_with_a_persistent_session(
    mqtt_broker: SinkBroker, sinks: list[MqttSink], subscribers: list[Subscriber]
) -> None:
    device = names()
    spec = mqtt_spec(
        mqtt_broker, protocol="5", qos=2, retain=True, cleanStart=False, topic="r/{id}"
    )
    sink = new_sink(sinks, spec, device)
    sink.open(go_on)
    assert sink.send(b'{"v": 1}', go_on).ok
    # A subscriber arriving later still gets it: it was retained.
    late = Subscriber(mqtt_broker, f"r/{device['id']}")
    subscribers.append(late)
    wait_for(lambda: late.messages)
    assert late.messages[0] == (f"r/{device['id']}", b'{"v": 1}', True)
    late.publish(f"r/{device['id']}", b"", qos=1)  # clear the retained message


def test_qos0_is_sent_without_waiting_for_acks(
    mqtt_broker: SinkBroker, sinks: list[MqttSink], subscribers: list[Subscriber]
) -> None:
    device = names()
    sub = Subscriber(mqtt_broker, f"devices/{device['id']}/telemetry")
    subscribers.append(sub)
    sink = new_sink(sinks, mqtt_spec(mqtt_broker), device)
    sink.open(go_on)
    for i in range(50):
        assert sink.send(b"%d" % i, go_on).ok
    wait_for(lambda: len(sub.received()) == 50)


# --------------------------------------------------------------------------- auth, TLS


def test_password_auth_accepts_the_right_password(
    mqtt_broker: SinkBroker, sinks: list[MqttSink], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MF_MQTT_PASSWORD", mqtt_broker.password)
    spec = mqtt_spec(
        mqtt_broker,
        port=mqtt_broker.auth_port,
        username=mqtt_broker.username,
        passwordEnv="MF_MQTT_PASSWORD",
        qos=1,
    )
    sink = new_sink(sinks, spec, names())
    sink.open(go_on)
    assert sink.send(b"{}", go_on).ok


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_a_bad_password_is_fatal(
    protocol: str,
    mqtt_broker: SinkBroker,
    sinks: list[MqttSink],
    tmp_path: Any,
) -> None:
    secret = tmp_path / "pw"
    secret.write_text("wrong-password\n")
    spec = mqtt_spec(
        mqtt_broker,
        port=mqtt_broker.auth_port,
        protocol=protocol,
        username=mqtt_broker.username,
        passwordFile=str(secret),
    )
    sink = new_sink(sinks, spec, names())
    with pytest.raises(FatalSinkError, match="refused") as err:
        sink.open(go_on)
    assert "wrong-password" not in str(err.value)


def test_no_credentials_where_they_are_required_is_fatal(
    mqtt_broker: SinkBroker, sinks: list[MqttSink]
) -> None:
    sink = new_sink(sinks, mqtt_spec(mqtt_broker, port=mqtt_broker.auth_port), names())
    with pytest.raises(FatalSinkError, match="refused"):
        sink.open(go_on)


def test_a_broker_that_never_answers_connect_times_out(sinks: list[MqttSink]) -> None:
    with socket.socket() as silent:  # listening, never accepting, never answering
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        spec = lot.MqttSink(
            type="mqtt", host="127.0.0.1", port=silent.getsockname()[1], connectTimeout=0.5
        )
        sink = new_sink(sinks, spec, names())
        started = time.monotonic()
        with pytest.raises(SinkError, match="no answer to CONNECT"):
            sink.open(go_on)
        assert time.monotonic() - started < 5
        assert sink.fileno() is None


def test_an_unreachable_broker_is_a_transient_error(sinks: list[MqttSink]) -> None:
    spec = lot.MqttSink(type="mqtt", host="127.0.0.1", port=free_port(), connectTimeout=2)
    sink = new_sink(sinks, spec, names())
    with pytest.raises(SinkError, match="cannot connect") as err:
        sink.open(go_on)
    assert not isinstance(err.value, FatalSinkError)


def test_mutual_tls_publishes_and_receives_commands(
    mqtt_broker: SinkBroker,
    test_certs: TlsFiles,
    sinks: list[MqttSink],
    subscribers: list[Subscriber],
) -> None:
    device = names()
    sub = Subscriber(mqtt_broker, f"devices/{device['id']}/telemetry")
    subscribers.append(sub)
    tls = {
        "caFile": test_certs.ca,
        "certFile": test_certs.client_cert,
        "keyFile": test_certs.client_key,
    }
    spec = mqtt_spec(
        mqtt_broker, port=mqtt_broker.tls_port, tls=tls, qos=1, commandTopic="cmd/{id}"
    )
    sink = new_sink(sinks, spec, device)
    sink.open(go_on)
    assert sink.fileno() is not None
    assert sink.send(b'{"secure": true}', go_on).ok
    wait_for(lambda: sub.received() == [b'{"secure": true}'])
    # Several commands in a burst: TLS may hand them over in one record.
    for i in range(5):
        sub.publish(f"cmd/{device['id']}", f"c{i}")
    assert collect_commands(sink, 5) == [f"c{i}" for i in range(5)]


def test_tls_without_a_client_certificate_is_refused_but_not_fatal(
    mqtt_broker: SinkBroker, test_certs: TlsFiles, sinks: list[MqttSink]
) -> None:
    spec = mqtt_spec(mqtt_broker, port=mqtt_broker.tls_port, tls={"caFile": test_certs.ca})
    sink = new_sink(sinks, spec, names())
    with pytest.raises(SinkError) as err:
        sink.open(go_on)
    assert not isinstance(err.value, FatalSinkError)


def test_tls_with_the_wrong_ca_fails_verification(
    mqtt_broker: SinkBroker, test_certs: TlsFiles, sinks: list[MqttSink]
) -> None:
    tls = {
        "caFile": test_certs.other_ca,
        "certFile": test_certs.client_cert,
        "keyFile": test_certs.client_key,
    }
    sink = new_sink(sinks, mqtt_spec(mqtt_broker, port=mqtt_broker.tls_port, tls=tls), names())
    with pytest.raises(SinkError, match="CERTIFICATE_VERIFY_FAILED"):
        sink.open(go_on)


# --------------------------------------------------------------------------- commands


def test_commands_on_the_command_topic_come_back_from_on_readable(
    mqtt_broker: SinkBroker, sinks: list[MqttSink], subscribers: list[Subscriber]
) -> None:
    device = names()
    sub = Subscriber(mqtt_broker, "nothing/here")
    subscribers.append(sub)
    spec = mqtt_spec(mqtt_broker, commandTopic="devices/{id}/cmd", commandField="cmd")
    sink = new_sink(sinks, spec, device)
    sink.open(go_on)
    cmd_topic = f"devices/{device['id']}/cmd"
    sub.publish(cmd_topic, '{"cmd": "reboot", "delay": 3}')
    sub.publish(cmd_topic, "  calibrate \n")
    sub.publish(f"devices/{device['id']}-other/cmd", "not-mine")
    fd = sink.fileno()
    assert fd is not None
    ready, _, _ = select.select([fd], [], [], 10)
    assert ready, "the socket never became readable"
    assert collect_commands(sink, 2) == ["reboot", "calibrate"]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b'{"command": "stop"}', "stop"),
        (b'{"command": ""}', '{"command": ""}'),
        (b'{"other": 1}', '{"other": 1}'),
        (b"  go\n", "go"),
        (b"   ", None),
        (b"\xff\xfe", "\ufffd\ufffd"),
    ],
)
def test_command_from_message(payload: bytes, expected: str | None) -> None:
    assert command_from_message(payload, "command") == expected


# --------------------------------------------------------------------------- will and close


CHILD = """
import json, select, sys
from mockfleet.mock import lot
from mockfleet.mock.plainlot import to_plain
from mockfleet.mock.sinks.factory import make_sink
spec = to_plain(lot.MqttSink.model_validate(json.loads(sys.argv[1])))
sink = make_sink(spec, json.loads(sys.argv[2]))
sink.open(lambda s: True)
print("ready", flush=True)
while True:
    fd = sink.fileno()
    if fd is None:
        print("lost", flush=True)
        break
    ready, _, _ = select.select([fd], [], [], sink.next_service_in())
    for c in (sink.on_readable() if ready else []) + sink.service():
        print("command", c, flush=True)
"""


def _lines(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.strip())

    threading.Thread(target=pump, daemon=True).start()
    return lines


def test_the_will_is_delivered_when_the_device_is_killed(
    mqtt_broker: SinkBroker, subscribers: list[Subscriber]
) -> None:
    device = names()
    keepalive = 1
    spec = mqtt_spec(
        mqtt_broker,
        keepalive=keepalive,
        commandTopic="cmd/{id}",
        will={"topic": "status/{id}", "payload": "offline", "qos": 1},
    ).to_data()
    status = f"status/{device['id']}"
    sub = Subscriber(mqtt_broker, status)
    subscribers.append(sub)
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(spec), json.dumps(device)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        lines = _lines(proc)
        assert lines.get(timeout=30) == "ready"
        # Connected and serviced: a command gets through, no will so far.
        sub.publish(f"cmd/{device['id']}", "still-there")
        assert lines.get(timeout=10) == "command still-there"
        assert sub.received(status) == []
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        wait_for(lambda: sub.received(status), timeout=keepalive * 1.5 + 10)
        assert sub.received(status) == [b"offline"]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_a_clean_close_sends_no_will(
    mqtt_broker: SinkBroker, sinks: list[MqttSink], subscribers: list[Subscriber]
) -> None:
    device = names()
    status = f"status/{device['id']}"
    sub = Subscriber(mqtt_broker, status)
    subscribers.append(sub)
    spec = mqtt_spec(
        mqtt_broker, keepalive=1, qos=1, will={"topic": "status/{id}", "payload": "offline"}
    )
    sink = new_sink(sinks, spec, device)
    sink.open(go_on)
    assert sink.send(b"{}", go_on).ok
    started = time.monotonic()
    sink.close(5)
    assert time.monotonic() - started < 5
    assert sink.fileno() is None
    # A marker published after the close: the broker handled the disconnect
    # first, so a will (had one been sent) would have arrived before it.
    sub.publish(status, "marker")
    wait_for(lambda: sub.received(status))
    assert sub.received(status) == [b"marker"]


def test_service_keeps_the_connection_alive(
    mqtt_broker: SinkBroker, sinks: list[MqttSink], subscribers: list[Subscriber]
) -> None:
    device = names()
    sub = Subscriber(mqtt_broker, "none")
    subscribers.append(sub)
    sink = new_sink(sinks, mqtt_spec(mqtt_broker, keepalive=1, commandTopic="c/{id}"), device)
    sink.open(go_on)
    assert sink.next_service_in() == pytest.approx(0.2)
    pings = f"Received PINGREQ from {device['id']}"
    # Idle past 1.5 x keepalive with only the device loop running: service()
    # pings (the broker sees it) and the connection stays up.
    assert collect_commands(sink, 1, timeout=2.5) == []
    wait_for(lambda: mqtt_broker.log_text().count(pings) >= 1)
    sub.publish(f"c/{device['id']}", "alive")
    assert collect_commands(sink, 1) == ["alive"]
    assert sink.connects == 1


# --------------------------------------------------------------------------- reconnect


def test_reconnects_with_backoff_after_the_broker_restarts(
    own_mqtt_broker: SinkBroker, sinks: list[MqttSink]
) -> None:
    broker = own_mqtt_broker
    device = names()
    sink = new_sink(sinks, mqtt_spec(broker, qos=1, connectTimeout=3), device)
    sink.open(go_on)
    assert sink.send(b"before", go_on).ok
    broker.stop()
    wait = RecordingWait()
    first = sink.send(b"lost", wait)
    assert not first.ok and first.error
    second = sink.send(b"lost too", wait)
    assert not second.ok
    assert len(wait.delays) == 1 and 0.25 <= wait.delays[0] <= 0.5
    broker.start()
    sub = Subscriber(broker, f"devices/{device['id']}/telemetry")
    try:
        third = sink.send(b"after", wait)
        assert third.ok, third.error
        assert third.retries == 1
        wait_for(lambda: b"after" in sub.received())
    finally:
        sub.close()
    assert sink.connects == 2


def test_a_stop_while_waiting_to_reconnect_returns_promptly(
    own_mqtt_broker: SinkBroker, sinks: list[MqttSink]
) -> None:
    sink = new_sink(sinks, mqtt_spec(own_mqtt_broker, qos=1, connectTimeout=3), names())
    sink.open(go_on)
    own_mqtt_broker.stop()
    assert not sink.send(b"x", go_on).ok  # notices the loss; reconnect fails
    stop = RecordingWait(answer=False)
    out = sink.send(b"y", stop)
    assert not out.ok
    assert out.error is not None and "stopped" in out.error
    assert len(stop.delays) == 1
