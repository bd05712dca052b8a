"""`mockfleet mock`, `validate` and `preview` as real processes."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.polling import wait_for
from support.recording_http import RecordingServer, Reply

from mockfleet.mock.counters import CounterFile
from mockfleet.mock.exitcodes import EXIT_INVALID_LOT, EXIT_OK, EXIT_SINK_FATAL

ROOT = Path(__file__).resolve().parent.parent
MOCKFLEET = [sys.executable, "-m", "mockfleet.operator.entry"]


def write_lot(tmp_path: Path, spec: dict[str, Any], name: str = "proc") -> Path:
    doc = {
        "apiVersion": "mockfleet.dev/v1alpha1",
        "kind": "MockLot",
        "metadata": {"name": name},
        "spec": {"devices": 4, "payload": {"template": {"n": {"$gen": "sequence"}}}, **spec},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait(10)


def start(procs: list[subprocess.Popen[bytes]], *args: str) -> subprocess.Popen[bytes]:
    p = subprocess.Popen([*MOCKFLEET, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    procs.append(p)
    return p


def lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.endswith("}")]


def test_stop_file_is_consumed_and_exit_is_clean(tmp_path: Path, procs: list[Any]) -> None:
    out = tmp_path / "out.jsonl"
    lot = write_lot(
        tmp_path, {"timing": {"interval": "50ms"}, "sink": {"type": "file", "path": str(out)}}
    )
    stop = tmp_path / "stop"
    counters = tmp_path / "counters.bin"
    p = start(
        procs,
        "mock",
        "--lot",
        str(lot),
        "--index",
        "2",
        "--stop-file",
        str(stop),
        "--counters",
        str(counters),
        "--slot",
        "2",
    )
    wait_for(lambda: len(lines(out)) >= 5, 20)
    stop.write_text("")
    assert p.wait(10) == EXIT_OK
    assert not stop.exists()
    got = lines(out)
    assert [m["seq"] for m in got] == list(range(len(got)))
    assert {m["device_id"] for m in got} == {"proc-00002"}
    c = CounterFile.open_existing(counters).read(2)
    assert c.sent == len(got) and c.pid == p.pid and c.bytes > 0
    log = [json.loads(x) for x in p.stderr.read().decode().splitlines()]  # type: ignore[union-attr]
    assert log[-1]["event"] == "finished" and log[-1]["reason"] == "stop file"
    assert all(r["device"] == "proc-00002" and r["lot"] == "proc" for r in log)


def test_sigterm_stops_promptly(tmp_path: Path, procs: list[Any]) -> None:
    out = tmp_path / "out.jsonl"
    lot = write_lot(
        tmp_path, {"timing": {"interval": "1h"}, "sink": {"type": "file", "path": str(out)}}
    )
    p = start(procs, "mock", "--lot", str(lot), "--index", "0")
    wait_for(lambda: len(lines(out)) >= 1, 20)
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    assert p.wait(10) == EXIT_OK
    assert time.monotonic() - t0 < 3


def test_natural_end_by_message_count(tmp_path: Path, procs: list[Any]) -> None:
    out = tmp_path / "out.jsonl"
    lot = write_lot(
        tmp_path,
        {
            "timing": {"interval": "10ms", "maxMessages": 25},
            "sink": {"type": "file", "path": str(out)},
        },
    )
    p = start(procs, "mock", "--lot", str(lot), "--index", "1")
    assert p.wait(30) == EXIT_OK
    assert len(lines(out)) == 25


def test_backfill_sends_history_fast_then_goes_live(tmp_path: Path, procs: list[Any]) -> None:
    out = tmp_path / "out.jsonl"
    lot = write_lot(
        tmp_path,
        {
            "timing": {"interval": "1m", "backfill": {"window": "2h", "rate": 1000}},
            "payload": {"template": {"ts": {"$gen": "timestamp", "format": "epoch"}}},
            "sink": {"type": "file", "path": str(out)},
        },
    )
    t0 = time.time()
    p = start(procs, "mock", "--lot", str(lot), "--index", "0")
    got = wait_for(lambda: len(lines(out)) >= 120 and lines(out), 30)
    assert got[0]["ts"] == pytest.approx(t0 - 7200, abs=5)
    assert [round(b["ts"] - a["ts"]) for a, b in itertools.pairwise(got[:120])] == [60] * 119
    p.send_signal(signal.SIGTERM)
    assert p.wait(10) == EXIT_OK


def test_http_command_in_response_changes_state(
    tmp_path: Path, procs: list[Any], http_server: RecordingServer
) -> None:
    http_server.script(Reply(200, b'{"command": "alarm"}', {"Content-Type": "application/json"}))
    lot = write_lot(
        tmp_path,
        {
            "timing": {"interval": "50ms", "maxMessages": 5},
            "payload": {"template": {"state": {"$gen": "device", "field": "state"}}},
            "initialState": "calm",
            "states": {
                "calm": {"transitions": [{"to": "alarmed", "command": "alarm"}]},
                "alarmed": {},
            },
            "sink": {"type": "http", "url": http_server.url("/in/{id}")},
        },
    )
    p = start(procs, "mock", "--lot", str(lot), "--index", "3")
    assert p.wait(30) == EXIT_OK
    states = [json.loads(r.body)["state"] for r in http_server.requests]
    assert states == ["calm", "alarmed", "alarmed", "alarmed", "alarmed"]
    assert http_server.requests[0].path == "/in/proc-00003"


def test_rejected_credentials_exit_with_the_sink_code(
    tmp_path: Path, procs: list[Any], http_server: RecordingServer
) -> None:
    http_server.default = Reply(401)
    os.environ["MF_TEST_TOKEN"] = "nope"
    lot = write_lot(
        tmp_path,
        {
            "sink": {
                "type": "http",
                "url": http_server.url(),
                "auth": {"type": "bearer", "tokenEnv": "MF_TEST_TOKEN"},
            }
        },
    )
    p = start(procs, "mock", "--lot", str(lot), "--index", "0")
    assert p.wait(30) == EXIT_SINK_FATAL
    err = p.stderr.read().decode()  # type: ignore[union-attr]
    assert "fatal sink error" in err and "nope" not in err


def test_invalid_lot_exit_code_and_message(tmp_path: Path) -> None:
    lot = write_lot(tmp_path, {"timing": {"interval": "soon"}})
    r = subprocess.run(
        [*MOCKFLEET, "mock", "--lot", str(lot), "--index", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == EXIT_INVALID_LOT
    assert "spec.timing.interval: invalid duration 'soon'" in r.stderr
    assert "Traceback" not in r.stderr


def test_validate_cli(tmp_path: Path) -> None:
    good = [str(p) for p in sorted((ROOT / "examples").glob("*.yaml"))]
    r = subprocess.run([*MOCKFLEET, "validate", *good], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("ok: ") == len(good)
    bad = write_lot(tmp_path, {"devices": -1, "sink": {"type": "carrier-pigeon"}})
    r = subprocess.run(
        [*MOCKFLEET, "validate", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == EXIT_INVALID_LOT
    assert "spec.devices" in r.stderr and "spec.sink" in r.stderr and "Traceback" not in r.stderr


def test_preview_is_deterministic_and_sends_nothing() -> None:
    cmd = [
        *MOCKFLEET,
        "preview",
        str(ROOT / "examples" / "thermostats.yaml"),
        "--device",
        "3",
        "--count",
        "5",
    ]
    a = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    b = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    assert a == b
    rows = a.splitlines()
    assert len(rows) == 5
    assert rows[0].startswith("2026-01-01T00:00:0")
    assert '"device_id": "thermo-0003"' in rows[0]


@pytest.mark.parametrize("example", sorted(p.name for p in (ROOT / "examples").glob("*.yaml")))
def test_every_example_previews(example: str) -> None:
    r = subprocess.run(
        [*MOCKFLEET, "preview", str(ROOT / "examples" / example), "--count", "3"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 3


def test_mqtt_command_causes_a_transition(
    tmp_path: Path, procs: list[Any], mqtt_broker: Any
) -> None:
    from support.sink_broker import Subscriber

    lot = write_lot(
        tmp_path,
        {
            "timing": {"interval": "100ms"},
            "payload": {"template": {"state": {"$gen": "device", "field": "state"}}},
            "initialState": "idle",
            "states": {
                "idle": {"transitions": [{"to": "busy", "command": "work"}]},
                "busy": {"transitions": [{"to": "done", "command": "finish"}]},
                "done": {"terminal": True},
            },
            "sink": {
                "type": "mqtt",
                "port": mqtt_broker.port,
                "qos": 1,
                "topic": "mp/{id}/up",
                "commandTopic": "mp/{id}/down",
            },
        },
        name="mqttcmd",
    )
    sub = Subscriber(mqtt_broker, "mp/+/up")
    try:
        p = start(procs, "mock", "--lot", str(lot), "--index", "1")

        def states() -> list[str]:
            return [json.loads(b)["state"] for b in sub.received("mp/mqttcmd-00001/up")]

        wait_for(lambda: "idle" in states(), 20)
        sub.publish("mp/mqttcmd-00001/down", json.dumps({"command": "work"}))
        wait_for(lambda: "busy" in states(), 20)
        sub.publish("mp/mqttcmd-00001/down", "finish")  # plain text works too
        assert p.wait(20) == EXIT_OK
        seen = states()
        assert seen == sorted(seen, key=["idle", "busy"].index)  # idle..., then busy...
    finally:
        sub.close()
