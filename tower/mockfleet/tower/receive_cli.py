"""``mockfleet receive``: run a verifying receiver until Ctrl-C, SIGTERM or --duration.

It accepts HTTP posts and/or subscribes to MQTT topics, audits each message's
envelope (device id, sequence number, send time), shows a live summary every
second and writes the final JSON report. The tower's ``cli`` module calls
``register`` to add the subcommand.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

#: Where ``mockfleet receive`` listens when neither --http nor --mqtt is given.
DEFAULT_HTTP = ("127.0.0.1", 8080)
EXIT_OK = 0
#: The receiver could not start (address in use, broker unreachable, bad file).
EXIT_START = 2


def parse_hostport(text: str, default_host: str, default_port: int | None) -> tuple[str, int]:
    """``HOST:PORT``, ``[v6]:PORT``, ``:PORT``, ``PORT`` or (with a default port) ``HOST``."""
    value = text.strip()
    host, port_text = default_host, ""
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise argparse.ArgumentTypeError(f"invalid address {text!r}: missing ']'")
        host, rest = value[1:end], value[end + 1 :]
        if rest and not rest.startswith(":"):
            raise argparse.ArgumentTypeError(f"invalid address {text!r}")
        port_text = rest[1:]
    elif value.isdigit():
        port_text = value
    elif value.count(":") == 1:
        head, port_text = value.split(":")
        host = head or default_host
    elif ":" not in value and value:
        host = value
    else:
        raise argparse.ArgumentTypeError(f"invalid address {text!r}: write HOST:PORT")
    if not port_text:
        if default_port is None:
            raise argparse.ArgumentTypeError(f"invalid address {text!r}: a port is needed")
        return host, default_port
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port in {text!r}: use 0-65535")
    return host, int(port_text)


def _http_address(text: str) -> tuple[str, int]:
    return parse_hostport(text, "127.0.0.1", None)


def _mqtt_address(text: str) -> tuple[str, int]:
    return parse_hostport(text, "127.0.0.1", 1883)


def _duration(text: str) -> float:
    from mockfleet.mock.durations import parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError("--duration must be greater than 0")
    return seconds


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return int(text)


def _window(text: str) -> int:
    if not text.isdigit() or int(text) < 8 or int(text) & (int(text) - 1):
        raise argparse.ArgumentTypeError(f"--window must be a power of two >= 8, got {text!r}")
    return int(text)


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``receive`` to the ``mockfleet`` command's subparsers."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "receive",
        help="receive and verify what a fleet sends (loss, duplicates, order, latency)",
        description=(
            "Accept HTTP posts and/or subscribe to MQTT topics, audit each message's "
            "envelope (device id, seq, sent_at) and report received, lost, duplicated, "
            "reordered and malformed messages with latency percentiles. Without --http "
            f"or --mqtt it listens for HTTP on {DEFAULT_HTTP[0]}:{DEFAULT_HTTP[1]}."
        ),
    )
    p.add_argument("--http", metavar="HOST:PORT", type=_http_address, help="listen for posts")
    p.add_argument("--mqtt", metavar="HOST:PORT", type=_mqtt_address, help="broker to subscribe")
    p.add_argument(
        "--topic",
        metavar="FILTER",
        action="append",
        help="MQTT topic filter (repeatable; default devices/+/telemetry)",
    )
    p.add_argument("--qos", type=int, choices=(0, 1, 2), default=1, help="subscription QoS")
    p.add_argument("--mqtt-username-env", metavar="VAR", help="env var holding the username")
    p.add_argument("--mqtt-password-env", metavar="VAR", help="env var holding the password")
    p.add_argument("--mqtt-ca", metavar="FILE", help="CA bundle: connect to the broker with TLS")
    p.add_argument("--duration", metavar="D", type=_duration, help="stop after this (e.g. 5m)")
    p.add_argument("--report", metavar="PATH", type=Path, help="write the final JSON report here")
    p.add_argument(
        "--expect-sent", metavar="N", type=_count, help="messages the fleet sent, for comparison"
    )
    p.add_argument("--device-field", default="device_id", help="envelope field of the device id")
    p.add_argument("--seq-field", default="seq", help="envelope field of the sequence number")
    p.add_argument("--sent-at-field", default="sent_at", help="envelope field of the send time")
    p.add_argument(
        "--window",
        type=_window,
        default=None,
        help="duplicate-detection window per device, in sequence numbers (default 4096)",
    )
    p.add_argument(
        "--command-file",
        metavar="PATH",
        type=Path,
        help='JSON {"device-id" or "*": "command"}: sent once per device in an HTTP response',
    )
    p.add_argument("--command-field", default="command", help="response field of a command")
    p.add_argument(
        "--ack", type=int, choices=(200, 204), default=200, help="status of a plain acknowledgement"
    )
    p.add_argument("--quiet", action="store_true", help="no live summary, only the final one")
    p.set_defaults(handler=run_receive)
    return p


def _env(name: str | None, what: str) -> str | None:
    if name is None:
        return None
    value = os.environ.get(name)
    if value is None:
        raise ValueError(f"{what}: environment variable {name} is not set")
    return value


def run_receive(args: argparse.Namespace) -> int:
    """Handler of ``mockfleet receive``."""
    from rich.console import Console

    from mockfleet.tower.receiver.commands import CommandFile, CommandFileError
    from mockfleet.tower.receiver.mqtt_client import DEFAULT_TOPIC, MqttConfig
    from mockfleet.tower.receiver.report import summary_table, write_report
    from mockfleet.tower.receiver.sequence import DEFAULT_WINDOW
    from mockfleet.tower.receiver.service import Receiver, ReceiverStartError
    from mockfleet.tower.receiver.stats import EnvelopeFields

    err = Console(stderr=True)
    http = args.http
    if http is None and args.mqtt is None:
        http = DEFAULT_HTTP
    try:
        mqtt = None
        if args.mqtt is not None:
            mqtt = MqttConfig(
                host=args.mqtt[0],
                port=args.mqtt[1],
                topics=tuple(args.topic or (DEFAULT_TOPIC,)),
                qos=args.qos,
                username=_env(args.mqtt_username_env, "--mqtt-username-env"),
                password=_env(args.mqtt_password_env, "--mqtt-password-env"),
                tls_ca=args.mqtt_ca,
            )
        elif args.topic:
            raise ValueError("--topic needs --mqtt HOST:PORT")
        commands = CommandFile(args.command_file) if args.command_file else None
        receiver = Receiver(
            http,
            mqtt,
            fields=EnvelopeFields(args.device_field, args.seq_field, args.sent_at_field),
            window=args.window or DEFAULT_WINDOW,
            commands=commands,
            command_field=args.command_field,
            ack_status=args.ack,
        )
        receiver.stats.expected_sent = args.expect_sent
        bound = receiver.start()
    except (ValueError, CommandFileError, ReceiverStartError) as exc:
        err.print(f"mockfleet receive: {exc}", markup=False, highlight=False)
        return EXIT_START

    where = []
    if bound.http:
        where.append(f"http={bound.http_url}")
    if bound.mqtt and mqtt is not None:
        where.append(f"mqtt={bound.mqtt[0]}:{bound.mqtt[1]} topics={','.join(mqtt.topics)}")
    print("receive listening " + " ".join(where), flush=True)

    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        _watch(receiver, stop, args.duration, quiet=args.quiet)
    finally:
        receiver.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    report = receiver.report(per_device=True)
    if args.report is not None:
        try:
            write_report(args.report, report)
        except OSError as exc:
            err.print(
                f"mockfleet receive: cannot write report {args.report}: {exc.strerror}",
                markup=False,
            )
            return EXIT_START
    Console().print(summary_table(report))
    if args.report is not None:
        print(f"receive report={args.report}", flush=True)
    return EXIT_OK


def _watch(receiver: Any, stop: threading.Event, duration: float | None, *, quiet: bool) -> None:
    """Show the summary every second until ``stop`` is set or ``duration`` elapses."""
    from rich.live import Live
    from rich.text import Text

    from mockfleet.tower.receiver.report import summary_line

    deadline = None if duration is None else time.monotonic() + duration

    def remaining() -> float:
        return 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))

    def done() -> bool:
        return deadline is not None and time.monotonic() >= deadline

    if quiet:
        while not stop.wait(remaining()) and not done():
            pass
        return
    if sys.stdout.isatty():
        with Live(Text(""), auto_refresh=False, transient=False) as live:
            while not stop.wait(remaining()) and not done():
                live.update(Text(summary_line(receiver.report(per_device=False))), refresh=True)
        return
    while not stop.wait(remaining()) and not done():
        print(summary_line(receiver.report(per_device=False)), flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run ``receive`` alone: ``python -m mockfleet.tower.receive_cli [options]``."""
    parser = argparse.ArgumentParser(prog="mockfleet")
    sub = parser.add_subparsers(dest="command")
    register(sub)
    args = parser.parse_args(["receive", *(sys.argv[1:] if argv is None else argv)])
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
