"""``mockfleet receive`` as a real process, and its command file."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from support.polling import wait_for
from support.receiver_broker import free_port

from mockfleet.tower.receive_cli import parse_hostport, register, run_receive
from mockfleet.tower.receiver.commands import CommandFile, CommandFileError


def envelope(device: str, seq: int) -> bytes:
    return json.dumps({"device_id": device, "seq": seq, "sent_at": time.time()}).encode()


class Running:
    """A ``receive`` process whose stdout lines are collected by a thread."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mockfleet.tower.receive_cli", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        assert self.proc.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def line_matching(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        def find() -> re.Match[str] | None:
            exited = self.proc.poll() is not None
            if exited:
                self._reader.join(5)  # every line it printed is collected
            for line in list(self.lines):
                if match := re.search(pattern, line):
                    return match
            if exited:
                assert self.proc.stderr is not None
                raise AssertionError(f"receive exited: {self.proc.stderr.read()}")
            return None

        match = wait_for(find, timeout)
        assert match is not None
        return match

    def finish(self, timeout: float = 20.0) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(timeout)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def launch() -> Iterator[Any]:
    started: list[Running] = []

    def start(*args: str) -> Running:
        running = Running(list(args))
        started.append(running)
        return running

    yield start
    for running in started:
        running.kill()


def post_all(port: int, items: list[bytes]) -> list[bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    replies = []
    for item in items:
        conn.request("POST", "/t", item)
        replies.append(conn.getresponse().read())
    conn.close()
    return replies


def test_sigterm_writes_the_report_and_exits_0(launch: Any, tmp_path: Path) -> None:
    report = tmp_path / "out" / "report.json"
    rx = launch("--http", "127.0.0.1:0", "--report", str(report), "--expect-sent", "6")
    port = int(rx.line_matching(r"receive listening http=http://127\.0\.0\.1:(\d+)")[1])
    items = [envelope("a", s) for s in (0, 1, 3, 3)] + [envelope("b", 0), b"junk"]
    assert post_all(port, items) == [b"{}"] * 6
    rx.line_matching(r"^receive elapsed=\S+ devices=2 received=6 sent=6 ")
    rx.proc.send_signal(signal.SIGTERM)
    assert rx.finish() == 0
    doc = json.loads(report.read_text())
    assert doc["schema"] == "mockfleet.receive/v1"
    assert (doc["received"], doc["unique"], doc["lost"], doc["duplicates"]) == (6, 4, 1, 1)
    assert (doc["malformed"], doc["sent"], doc["lost_vs_sent"]) == (1, 6, 2)
    assert doc["per_device"]["a"]["lost"] == 1
    assert doc["http"]["requests"] == 6
    assert doc["mqtt"] is None
    out = "\n".join(rx.lines)
    assert "lost by a" in out  # the final table names the device that lost messages
    assert f"receive report={report}" in out


def test_duration_ends_the_run(launch: Any, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    started = time.monotonic()
    rx = launch("--http", "127.0.0.1:0", "--duration", "1.5s", "--report", str(report), "--quiet")
    assert rx.finish() == 0
    assert time.monotonic() - started >= 1.5
    assert json.loads(report.read_text())["received"] == 0
    assert not any(line.startswith("receive elapsed=") for line in rx.lines)  # --quiet


def test_sigint_and_custom_fields(launch: Any, tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    rx = launch(
        "--http", "127.0.0.1:0", "--report", str(report), "--device-field", "id",
        "--seq-field", "n", "--sent-at-field", "ts", "--ack", "204",
    )  # fmt: skip
    port = int(rx.line_matching(r"http=http://127\.0\.0\.1:(\d+)")[1])
    body = json.dumps({"id": "x", "n": 4, "ts": time.time()}).encode()
    assert post_all(port, [body, envelope("x", 5)]) == [b"", b""]
    rx.line_matching(r"received=2 ")
    rx.proc.send_signal(signal.SIGINT)
    assert rx.finish() == 0
    doc = json.loads(report.read_text())
    assert (doc["unique"], doc["malformed"]) == (1, 1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--http", "localhost:http"], "invalid port"),
        (["--http", "localhost"], "a port is needed"),
        (["--duration", "soon"], "invalid duration"),
        (["--window", "100"], "power of two"),
        (["--expect-sent", "-3"], "whole number"),
        (["--topic", "a/b"], "--topic needs --mqtt"),
        (["--command-file", "/nonexistent/commands.json"], "cannot read command file"),
        (["--mqtt", "127.0.0.1:1", "--mqtt-password-env", "NO_SUCH_VAR_X"], "NO_SUCH_VAR_X"),
    ],
)
def test_bad_input_gets_a_clear_error(launch: Any, args: list[str], message: str) -> None:
    rx = launch("--http", "127.0.0.1:0", *args)
    assert rx.finish() == 2
    assert rx.proc.stderr is not None
    err = rx.proc.stderr.read()
    assert message in err
    assert "Traceback" not in err


def test_unreachable_broker_exits_2(launch: Any) -> None:
    port = free_port()
    rx = launch("--mqtt", f"127.0.0.1:{port}")
    assert rx.finish() == 2
    assert rx.proc.stderr is not None
    assert f"cannot connect to MQTT broker 127.0.0.1:{port}" in rx.proc.stderr.read()


def test_register_adds_the_subcommand() -> None:
    parser = argparse.ArgumentParser(prog="mockfleet")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["receive", "--http", ":9000", "--mqtt", "broker", "--topic", "t/#"])
    assert args.handler is run_receive
    assert args.http == ("127.0.0.1", 9000)
    assert args.mqtt == ("broker", 1883)
    assert args.topic == ["t/#"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8080", ("127.0.0.1", 8080)),
        ("0.0.0.0:81", ("0.0.0.0", 81)),
        ("[::1]:82", ("::1", 82)),
        ("[::1]", ("::1", 1883)),
        ("broker", ("broker", 1883)),
    ],
)
def test_parse_hostport(text: str, expected: tuple[str, int]) -> None:
    assert parse_hostport(text, "127.0.0.1", 1883) == expected


# --------------------------------------------------------------------------- command file


def test_command_file_sends_each_command_once_and_reloads(tmp_path: Path) -> None:
    path = tmp_path / "commands.json"
    path.write_text(json.dumps({"d1": "reboot", "*": "ping"}))
    commands = CommandFile(path)
    commands.CHECK_EVERY = 0.0
    assert [commands("d1"), commands("d2"), commands("d1"), commands("d2")] == [
        "reboot", "ping", None, None,
    ]  # fmt: skip
    path.write_text(json.dumps({"d2": "calibrate"}))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))  # a surely newer mtime
    assert [commands("d1"), commands("d2"), commands("d2")] == [None, "calibrate", None]
    path.write_text("{broken")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
    assert commands("d3") is None  # the previous commands stay in force
    assert commands.last_error is not None and "not valid JSON" in commands.last_error


@pytest.mark.parametrize(
    ("text", "message"),
    [("[]", "JSON object"), ('{"a": 1}', "non-empty string"), ("{", "not valid JSON")],
)
def test_invalid_command_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.json"
    path.write_text(text)
    with pytest.raises(CommandFileError, match=message):
        CommandFile(path)


def test_command_file_through_the_cli(launch: Any, tmp_path: Path) -> None:
    path = tmp_path / "commands.json"
    path.write_text(json.dumps({"*": "ping"}))
    rx = launch("--http", "127.0.0.1:0", "--command-file", str(path), "--quiet")
    port = int(rx.line_matching(r"http=http://127\.0\.0\.1:(\d+)")[1])
    replies = post_all(port, [envelope("a", 0), envelope("a", 1), envelope("b", 0)])
    assert [json.loads(r) for r in replies] == [{"command": "ping"}, {}, {"command": "ping"}]
    rx.proc.send_signal(signal.SIGTERM)
    assert rx.finish() == 0
